"""Workflow specs: one YAML file per workflow, checked when it is loaded (no DAG code here).

A spec is what a Pipeline II task XML was: a named, versioned task made of processes
(``batch``: a SLURM job on a cluster; ``script``: a Python function run on the Airflow
worker) and of sub-tasks, each run once per *stream* that a script of its parent makes at
run time (a visit, a raft of that visit, a sensor of that raft...). Sub-tasks nest to any
depth. One spec gives one DAG per variant (see :mod:`airflow_desc.workflow.graph`)::

    name: DC1-DM12                      # the top-level task (DAG id, history, status table)
    version: "1.16"                     # quote versions: YAML reads 1.10 as the number 1.1
    side_by_side: true                  # DAG ids carry the version: DC1-DM12_v1.16_imsim (default false)
    notify:                             # Airflow notifiers the run's verdict calls (on the worker)
      on_failure:                       # when the verdict fails the run
        - notifier: airflow.providers.smtp.notifications.smtp:SmtpNotifier
          kwargs: {to: desc-ops@example.org, from_email: airflow@example.org, smtp_conn_id: smtp_default}
      on_end: []                        # when the run has been judged, green or not
    description: DC1 DM processing
    payload: emulate                    # or dm: run each batch process's dm_command (a run's conf
                                        # {"desc_payload": "dm"} chooses for one run)
    variables:                          # defaults; a variant, then a run's conf, override them
      scale: 1.0                        # fan-out size (1.0 = DC1's counts)
      sim: imsim
      repo: "dc1/{{ sim }}/repo"        # {{ name }} placeholders; quote a value starting with {{
      visits: all
    patterns:                           # the shape of a variable's values (the whole value)
      visits: "all|[0-9^]+"            # a run's conf is checked against it
    variants:                           # named override sets: one DAG each
      imsim: {sim: imsim}
      phosim: {sim: phosim}
    defaults:                           # for every process below (a task may add its own)
      resources: {cluster: perlmutter, cpus: 1, memory_mb: 2000, walltime: "1:00:00"}
                                        # fallback_clusters: [s3df] moves a try in maintenance, and the
                                        # last tries (see airflow_desc.operators.fallback)
      retries: 2
      escalation: {memory_factor: 2, walltime_factor: 2}   # next try after OOM / TIMEOUT
      emulate: {seed: "1"}
    bundling:                           # see airflow_desc.workflow.build
      threshold: 100                    # more streams than this in a busy run: bundled
      target_instances: 64              # batch instances a computed bundle aims at (a node's worth)
      max_walltime: "2:00:00"           # ...lowered so that its work fits one node for this long
      max_task_instances: 1000          # a busy run's task instances, at most (sizes are raised)
      run_times_from: workflow          # a size the walltime lowered, fitted again at run time from
                                        # the history's median run times: this workflow's, or any's
      take_over: false                  # true: a bundle's pilot out of work runs a sibling bundle
                                        # still pending (its task collects from that allocation)
    processes:
      ingest:
        type: batch
        dm_command: ingestDriver.py {{ repo }} --cores 16 --mode link raw/*.fits.gz
        emulate: {cpu_seconds: 2, memory_mb: 100, outputs: ["{{ repo }}/registry.sqlite3"]}
        resources: {cpus: 16, memory_mb: 16000, walltime: "4:00:00"}
        checks:
          - non_empty: "{{ repo }}/registry.sqlite3"
      setupVisits:
        type: script
        callable: mypackage.setup:list_visits      # returns the streams of processVisit
        depends_on: [ingest]
      launchCoadds:
        type: script
        callable: mypackage.coadd:launch
        depends_on: {processVisit: {min_success: 0.95}}   # runs when 95% of the visits succeeded
      report:
        type: script
        callable: mypackage.report:write_report
        after: [processVisit]           # runs whatever became of processVisit
    tasks:
      processVisit:
        version: "1.0"
        streams_from: setupVisits       # a script process of the parent
        stream_var: visit               # each stream's value, as {{ visit }} in commands
        expected_streams: 5115 * scale  # streams per parent stream (for bundling, estimates)
        bundle: auto                    # auto | always | never; bundle_size: N to fix the size
        processes:
          processEimage:
            type: batch
            command: processEimage.py {{ repo }} --id visit={{ visit }}
            skip_if: "sim == 'phosim' and visit == '0'"
            checks:
              - exists: "{{ repo }}/calexp/{{ visit }}.fits"
              - log_lacks: "PSF determination failed"

Keys of the top level: ``name``, ``version``, ``side_by_side``, ``notify``, ``description``,
``payload``, ``variables``, ``patterns``, ``variants``, ``defaults``, ``bundling``, ``processes``, ``tasks``.
Keys of a sub-task: ``version`` (default: the parent's), ``description``, ``streams_from``,
``stream_var``, ``expected_streams``, ``bundle``, ``bundle_size``, ``depends_on``, ``after``,
``defaults``, ``processes``, ``tasks``.
Names of tasks are unique in a workflow; names of processes and sub-tasks, within their task.

Keys of a process: ``type`` (``batch`` | ``script``), ``description``, ``depends_on`` (names
of processes or sub-tasks of the same task; a failure there skips this process; or a mapping
whose sub-tasks may say how much must succeed, ``{processVisit: {min_success: 0.95}}``: a
fraction in (0, 1] of the streams, or a count, see :class:`~airflow_desc.workflow.thresholds.MinSuccess`;
below it the process is Skipped with the counts in its reason; not inside a bundle), ``after``
(same names; waited for whatever their end state, Pipeline II's ``status="DONE"``),
``skip_if``, ``retries``. A batch process also has ``command`` (shell text) or ``emulate``
(the DM-like payload of :mod:`airflow_desc.emulate`: ``cpu_seconds``, ``memory_mb``,
``sleep_seconds``, ``outputs``, ``output_mb``, ``inputs``, ``fail``, ``fail_rate``,
``exit_code``, ``seed``, ``name``), optionally ``dm_command`` (the real DM command line, kept
beside the emulated one; required when the spec says ``payload: dm``), ``resources``
(``cpus``, ``memory_mb``, ``walltime``, ``cluster``, ``partition``, ``container``),
``escalation``, ``checks`` and ``deferrable`` (default ``true``: its job is waited for in the
triggerer; ``false``: in the worker slot that submitted it, polled every second at first, for a
short job whose task would otherwise start a second time to end; a bundled process waits as its
bundle does). A script process has
``callable`` (``module.path:function``; imported at run time, not here) and ``kwargs``.

Output checks run after SLURM says COMPLETED; one kind per list item: ``exists``,
``non_empty``, ``glob`` (with ``min_count``, default 1), ``command`` (a validation command
that must exit 0) or ``log_lacks`` (a regular expression that must not appear in the log),
each with an optional ``message``. A failing check makes the process instance Failed with
reason ``output-check``.

``skip_if`` is a condition over variables, stream variables and the end states of upstream
processes (``'success'``, ``'failed'``, ``'terminated'``, ``'skipped'``...): names, constants,
comparisons (``== != < <= > >= in``, ``not in``), ``and``, ``or``, ``not``. It is parsed, never
``eval``-ed: a function call, an attribute or an index is refused. Inside a bundle it may name
at most 4 processes or sub-tasks run in the same allocation. ``expected_streams`` is an
arithmetic expression (numbers, numeric variables, ``+ - * / //``).

Placeholders are ``{{ name }}``, a variable or a stream variable in scope (the sub-task's and
its ancestors'); filters and Jinja statements are refused. Variables may refer to other
variables. A kwargs value that is only a placeholder keeps the variable's type.

**Payload.** ``payload: emulate`` (the default) runs each batch process's ``command`` or emulated
payload; ``payload: dm`` runs its ``dm_command`` instead, single jobs and bundled instances alike,
and then every batch process must have one (checked when the spec is loaded). A run's conf
``{"desc_payload": "dm"}`` (or ``"emulate"``; the DAGs' param of that name) chooses for one run;
any other value, or ``dm`` for a spec with a batch process lacking ``dm_command``, fails the run's
tasks before anything is submitted, naming them. Each record says which ran
(``extra["payload"]`` in the history).

**Values are data.** In shell text (``command``, ``dm_command``, a check's ``command``) every
value is shell-quoted where it is filled in, so a stream value or a run's conf is one word,
never shell code (``visit=1; rm -rf x`` stays a visit). Write placeholders bare, not inside
quotes (``echo {{ name }}``, not ``echo "{{ name }}"``: that is refused). Shell syntax written
in the spec itself (``$SCRATCH``, pipes, ``&&``) stays shell syntax. ``{{ name | raw }}`` fills a
value in unquoted, allowed only for a name with a ``patterns`` entry; every value is checked
against it first. A run's conf is checked against ``patterns`` (and the variables' types) before
anything runs, and a DAG's params carry the pattern, so a trigger with a bad value is refused.

Script contract (kept by the runtime, recorded here): the function is called with its
``kwargs``; a script named by a sub-task's ``streams_from`` returns the streams of that
sub-task (a list of values of its ``stream_var``), or, when it feeds several sub-tasks, a
mapping of sub-task name to such a list. A function that takes an ``expected_streams``
argument also gets, per sub-task it feeds, that sub-task's ``expected_streams`` for this run
(how the emulated DC1 setup scripts size their fan-outs with ``scale``).

**Versions side by side.** By default a workflow's DAG id is its name (and variant):
deploying version 1.17 of ``DC1-DM12`` replaces 1.16. With ``side_by_side: true`` the DAG id
carries the version, ``<name>_v<version>[_<variant>]`` (``DC1-DM12_v1.16_imsim``), so both are
deployed and run beside each other; the version may then hold letters, digits, ``.``, ``_`` and
``-`` only (it goes in a DAG id). Every DAG's tags carry ``version:<version>`` and
``variant:<variant>`` either way, and every record carries the workflow's version and the run's
spec digest (the SHA-256 of the spec file's text, as ``sha256sum`` prints it), so that
``airflow-desc history|status|report|rerun --version V --variant X`` select one version's runs.
Two specs of one name and version rendered by one DAG file are refused (same DAG ids).

**Notifications.** ``notify.on_failure`` and ``notify.on_end`` name Airflow notifiers
(``BaseNotifier`` subclasses: the SMTP provider's ``SmtpNotifier``, Slack's
``SlackNotifier``, your own) with their ``kwargs``. The run's ``verdict`` task calls them when it
has judged the run (on the worker, where the connections are: Airflow runs a DAG's own
``on_failure_callback`` in the DAG processor, which has neither the connections nor the summary).
Their template fields are rendered with the verdict's context plus ``desc_verdict``
(``success`` / ``failed``), ``desc_summary`` (the verdict's summary: counts per state, the first
failures with their reasons) and ``desc_counts``; a notifier that takes ``subject``,
``html_content`` or ``text`` and is given none gets the verdict and the summary there. A
notifier that fails is logged and does not change the verdict. The DAG processor imports the
classes and builds them with their kwargs when it renders the DAGs: a typo is an import error of
the DAG file, naming the notifier.

Every problem of a file is reported at once, one per line, as
``<file>:<line>: <dotted.path>: <what is wrong>; <what to do>``, in a
:class:`~airflow_desc.exceptions.WorkflowSpecError`; a spec that loads is valid.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import TYPE_CHECKING

from pydantic import ValidationError

from airflow_desc._validation import ErrorWords, problems_of
from airflow_desc._yaml_lines import LocatedYaml, YamlLoadError, YamlProblem, describe_value
from airflow_desc.exceptions import WorkflowSpecError

# The names below were defined here before the spec code was split by concern; they stay
# importable from this module (see __all__) for the modules that still import them here.
from airflow_desc.workflow.spec_models import (
    WorkflowSpec,
)
from airflow_desc.workflow.spec_rules import check_rules

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfiles

__all__ = ["load_spec", "parse_spec"]

_WORDS = ErrorWords(
    missing={
        "name": "add the workflow's task name, e.g. name: DC1-DM12",
        "version": 'add the task version, e.g. version: "1.0"',
        "type": "add type: batch (a job on a cluster) or type: script (a Python function on the worker)",
        "streams_from": "name the script process of the parent task that makes this sub-task's streams",
    },
    literals={"type": "process type", "fail": "failure mode", "bundle": "bundle mode", "payload": "payload"},
    see="the example in airflow_desc.workflow.spec",
)
_UNQUOTED_BRACES_RE = re.compile(r"(?:^|[:\[,-])\s*\{\{")


def _syntax_message(problem: YamlProblem, text: str) -> YamlProblem:
    """Name the usual cause of a YAML error on a line with ``{{``: an unquoted placeholder."""
    lines = text.splitlines()
    nearby = lines[max(problem.line - 2, 0) : problem.line]
    if any(_UNQUOTED_BRACES_RE.search(line) for line in nearby):
        message = (
            "invalid YAML: a value starts with an unquoted '{{', which YAML reads as a mapping; "
            'quote the value, e.g. repo: "{{ root }}/repo"'
        )
        return YamlProblem(problem.line, problem.path, message)
    return problem


def parse_spec(
    text: str, source: str = "<string>", *, clusters: ClusterProfiles | None = None
) -> WorkflowSpec:
    """Read and check a workflow spec from YAML text.

    :param text: the YAML text.
    :param source: the file name to show in messages.
    :param clusters: if given, every ``resources.cluster`` must name one of them.
    :return: the spec; it is valid.
    :raises WorkflowSpecError: listing every problem, one per line, as
        ``<file>:<line>: <dotted.path>: <what is wrong>; <what to do>``.
    """
    try:
        located = LocatedYaml.load(text, source)
        problems: list[YamlProblem] = []
    except YamlLoadError as exc:
        if exc.partial is None:
            raise WorkflowSpecError(
                "\n".join(_syntax_message(p, text).format(source) for p in exc.problems)
            ) from None
        located, problems = exc.partial, list(exc.problems)
    data = located.data
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"expected a mapping, got {describe_value(data)}"
        problems.append(
            located.problem((), f"{what}; write name, version and processes (see airflow_desc.workflow.spec)")
        )
        raise WorkflowSpecError("\n".join(p.format(source) for p in problems))
    spec: WorkflowSpec | None = None
    try:
        spec = WorkflowSpec.model_validate(data, context={"rules_checked": True})
    except ValidationError as exc:
        problems += [located.problem(*problem) for problem in problems_of(exc, WorkflowSpec, _WORDS)]
    problems += [located.problem(*problem) for problem in check_rules(data, clusters)]
    if problems or spec is None:
        unique = sorted(dict.fromkeys(problems), key=lambda p: p.line)
        raise WorkflowSpecError("\n".join(p.format(source) for p in unique))
    spec._source = source
    spec._digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return spec


def load_spec(path: str | os.PathLike[str], *, clusters: ClusterProfiles | None = None) -> WorkflowSpec:
    """Read and check a workflow spec file.

    :param path: the YAML file; messages name it as given.
    :param clusters: if given, every ``resources.cluster`` must name one of them.
    :raises WorkflowSpecError: if the file cannot be read, or for every problem in it.
    """
    try:
        # newline="": the text as it is on disk, so that the spec's digest is the file's sha256sum.
        with open(path, encoding="utf-8", newline="") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowSpecError(f"{os.fspath(path)}: cannot read the workflow spec: {exc}") from None
    return parse_spec(text, os.fspath(path), clusters=clusters)
