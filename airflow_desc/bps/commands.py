"""A BPS job's command as shell text: placeholders resolved, every value one quoted word.

ctrl_bps gives a job an executable and an argument template with three kinds of placeholders:
``{name}`` (a value of the job's ``cmdvals``), ``<FILE:name>`` (the path of one of its input
files) and ``<ENV:NAME>`` (an environment variable of the job's host). :func:`job_command` fills
them in as ctrl_bps_parsl does (``cmdvals`` first, then files and variables, the latter possibly
inside a file's path), with one difference: the result is shell text whose every value is quoted.
The command line ctrl_bps builds is split into words as a shell would (``shlex``, no expansion),
then each word is written back with its literal parts quoted (``shlex.quote``) and each
``<ENV:NAME>`` as ``"${NAME}"``; so ``-d "{dataQuery}"`` stays one word whatever the query holds,
and a value is never shell code.

The quantum node ids of a job (``{qgraphNodeId}``) are left to the caller: a label's jobs differ
only there, so the workflow spec has one command per label, and the node ids come from the
stream (:mod:`airflow_desc.bps.translate`).
"""

from __future__ import annotations

import re
import shlex

from airflow_desc.bps.jobs import NODE_ID_KEY, BpsJob
from airflow_desc.exceptions import BpsWorkflowError

__all__ = ["job_command"]

_CMDVAL_RE = re.compile(r"\{(\w+)\}")
_TOKEN_RE = re.compile(r"<(ENV|FILE|NODES):([^<>\s]*)>")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NODES = "<NODES:>"
# A file's path may name another file or a variable; more rounds than this is a loop.
_MAX_ROUNDS = 10


def _fill_cmdvals(job: BpsJob) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == NODE_ID_KEY:
            return _NODES
        if name not in job.cmdvals:
            raise BpsWorkflowError(
                f"job {job.name!r} (label {job.label}): its command names {{{name}}}, which the job gives "
                "no value; define it in the BPS config"
            )
        return job.cmdvals[name]

    return _CMDVAL_RE.sub(value, f"{job.executable} {job.arguments}")


def _word(job: BpsJob, text: str, nodes: str | None, rounds: int = 0) -> str:
    if rounds > _MAX_ROUNDS:
        raise BpsWorkflowError(f"job {job.name!r}: its input files name each other in a loop: {text!r}")
    out: list[str] = []
    at = 0
    for match in _TOKEN_RE.finditer(text):
        out.append(_literal(job, text[at : match.start()]))
        kind, name = match.groups()
        if kind == "ENV":
            if not _ENV_NAME_RE.match(name):
                raise BpsWorkflowError(f"job {job.name!r}: <ENV:{name}> is not a variable name")
            out.append(f'"${{{name}}}"')
        elif kind == "FILE":
            if name not in job.files:
                raise BpsWorkflowError(
                    f"job {job.name!r}: its command names <FILE:{name}>, which is not one of its inputs "
                    f"({', '.join(sorted(job.files)) or 'none'})"
                )
            out.append(_word(job, job.files[name], nodes, rounds + 1))
        else:
            if nodes is None:
                raise BpsWorkflowError(
                    f"job {job.name!r}: its command names {{{NODE_ID_KEY}}} but it runs no quanta"
                )
            out.append(nodes)
        at = match.end()
    out.append(_literal(job, text[at:]))
    return "".join(part for part in out if part) or "''"


def _literal(job: BpsJob, text: str) -> str:
    if not text:
        return ""
    if "{{" in text or "{%" in text or "\0" in text or "\n" in text:
        raise BpsWorkflowError(
            f"job {job.name!r}: a value of its command holds '{{{{', '{{%', a NUL byte or a line break "
            f"({text[:80]!r}), which a workflow spec's command cannot carry; change that value"
        )
    return shlex.quote(text)


def _export(job: BpsJob, name: str, value: str) -> str:
    if not _ENV_NAME_RE.match(name):
        raise BpsWorkflowError(f"job {job.name!r}: environment: {name!r} is not a variable name")
    return f"export {name}={_word(job, value, None)};"


def job_command(job: BpsJob, nodes: str | None = None) -> str:
    """Return the job's command as shell text (its environment exported first).

    :param job: the job.
    :param nodes: shell text for the job's quantum node ids (``{qgraphNodeId}``), e.g.
        ``"${quantum##*@}"``; ``None`` for a job that runs no quanta.
    :raises BpsWorkflowError: for a placeholder without a value, an unbalanced quote, or a value
        that a spec's command cannot carry (``{{``, a line break).
    """
    try:
        words = shlex.split(_fill_cmdvals(job))
    except ValueError as exc:
        raise BpsWorkflowError(
            f"job {job.name!r}: its command line cannot be split into words: {exc}"
        ) from None
    exports = [_export(job, name, value) for name, value in sorted(job.environment.items())]
    return " ".join([*exports, *(_word(job, word, nodes) for word in words)])
