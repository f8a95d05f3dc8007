"""Output checks: after a job (or a bundle) succeeded, check on the cluster that it made its outputs.

A spec's process may list checks (``exists``, ``non_empty``, ``glob``, ``command``,
``log_lacks``); one failing makes the instance Failed with reason ``output-check``. All the
checks of a job or a whole bundle run in one SSH call: a small Python program read by
``python3 -c`` gets them as JSON on stdin, in the cluster's work directory, and prints the
failed ones on one marked line (:func:`output_checks_command`, :func:`parse_output_checks`,
:func:`run_output_checks`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_desc.slurm.quoting import quote_path

if TYPE_CHECKING:
    from airflow_desc.hooks.slurm import SlurmHook

__all__ = ["CheckRequest", "output_checks_command", "parse_output_checks", "run_output_checks"]

_CHECKS_MARK = "DESC_CHECKS "


@dataclass(frozen=True)
class CheckRequest:
    """One output check of one process instance, rendered for its stream.

    :param key: what the result is reported under (an instance id).
    :param kind: ``exists``, ``non_empty``, ``glob``, ``command`` or ``log_lacks``.
    :param target: the path, pattern, command or regular expression.
    :param min_count: for ``glob``.
    :param message: what a failure says.
    :param log: the instance's log (``log_lacks``).
    """

    key: str
    kind: str
    target: str
    min_count: int = 1
    message: str = ""
    log: str | None = None


_CHECKS_PROGRAM = r"""
import glob, json, os, re, subprocess, sys
failed = {}
for r in json.load(sys.stdin):
    kind, target, ok = r["kind"], r["target"], True
    try:
        if kind == "exists":
            ok = os.path.exists(target)
        elif kind == "non_empty":
            ok = os.path.isfile(target) and os.path.getsize(target) > 0
        elif kind == "glob":
            ok = len(glob.glob(target)) >= int(r.get("min_count") or 1)
        elif kind == "command":  # the spec author's shell text; every value in it was quoted when filled
            ok = subprocess.run(target, shell=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=600).returncode == 0
        elif kind == "log_lacks":
            log = os.path.expanduser(r.get("log") or "")
            text = open(log, errors="replace").read() if log and os.path.isfile(log) else ""
            ok = re.search(target, text) is None
    except Exception as exc:
        ok, r["message"] = False, "%s (%s)" % (r["message"], exc)
    if not ok and r["key"] not in failed:
        failed[r["key"]] = r["message"]
print("DESC_CHECKS " + json.dumps(failed))
"""


def output_checks_command(work_dir: str, python: str = "python3") -> str:
    """Return shell text that runs the checks read as JSON on stdin, in ``work_dir``.

    Its output is read by :func:`parse_output_checks`.
    """
    where = quote_path(work_dir if work_dir.startswith(("/", "~")) else f"~/{work_dir}")
    return f"cd -- {where} && {shlex.quote(python)} -c {shlex.quote(_CHECKS_PROGRAM)}"


def parse_output_checks(stdout: str) -> dict[str, str]:
    """Return the failed checks, ``{key: message}``, from :func:`output_checks_command` output.

    :raises ValueError: if the output has no result line (the program did not run).
    """
    for line in reversed(stdout.splitlines()):
        if line.startswith(_CHECKS_MARK):
            value = json.loads(line[len(_CHECKS_MARK) :])
            return {str(k): str(v) for k, v in value.items()}
    raise ValueError(f"the output checks printed no result: {stdout[-500:]!r}")


def run_output_checks(
    hook: SlurmHook, work_dir: str, requests: Sequence[CheckRequest], *, log_path: str | None = None
) -> dict[str, str]:
    """Run output checks on the cluster in one SSH call; return the failed ones by key.

    :param hook: the cluster's hook.
    :param work_dir: the cluster's work directory (spec paths are relative to it).
    :param requests: the checks.
    :param log_path: the log of ``log_lacks`` checks that name none.
    """
    if not requests:
        return {}
    payload = [
        {
            "key": r.key,
            "kind": r.kind,
            "target": r.target,
            "min_count": r.min_count,
            "message": r.message,
            "log": _home_path(r.log or log_path),
        }
        for r in requests
    ]
    result = hook.run(output_checks_command(work_dir), stdin=json.dumps(payload), check=False)
    try:
        return parse_output_checks(result.stdout)
    except ValueError:
        detail = (result.stderr.strip() or result.stdout.strip())[-300:]
        return {r.key: f"the output checks could not run: {detail}" for r in requests}


def _home_path(path: str | None) -> str | None:
    if not path:
        return None
    return path if path.startswith(("/", "~")) else f"~/{path}"
