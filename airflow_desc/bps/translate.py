"""A ctrl_bps GenericWorkflow as an airflow-desc workflow spec (YAML text our spec loader accepts).

The jobs (:mod:`airflow_desc.bps.jobs`) become::

    name: <the BPS run name>          one DAG per submission, one DAG run
    processes:
      pipetaskInit: {type: batch, deferrable: false}
                                      each job that runs no quanta (the init job), a SLURM job
                                      waited for in the worker slot (it takes seconds)
      bpsQuanta: {type: script}       returns the streams of every label (kwargs: the quanta)
      finalJob: {type: batch, after: [every label]}   runs whatever became of the labels
    tasks:
      <label>:                        one sub-task per label (a task's, or a cluster's)
        streams_from: bpsQuanta
        stream_var: quantum           a stream per job: "<data id>@<node ids>"
        expected_streams: <jobs>      so that a big label is packed into bundles (``bundling``)
        depends_on: [<parent labels>, pipetaskInit]
        processes:
          <label>: {type: batch, command: ..., resources: ..., retries: ..., escalation: ...}

With ``chains`` (the BPS config's ``airflowChains: true``), quanta that make chains by data id
(every data id has one quantum of each label, and a quantum depends only on quanta of its own data
id, and on init jobs) run as one sub-task instead, a stream per data id, a process per label::

    tasks:
      bpsChains:                      streams_from: bpsQuanta; a stream per data id:
                                      "<data id>@<label 1's node ids>+<label 2's>+..."
        processes:
          <label>: {type: batch, depends_on: [<labels its quanta depend on>], command: ...}

so that a bundle runs whole chains (no wait for a label's last quantum before the next label
starts; a failed quantum skips only what depends on it, in its own data id), each quantum still
recorded as its label (the process) and data id (the stream). Quanta that do not make such chains
are rendered per label whatever the setting.

A stream is the job's data id (its tags, ``instrument=HSC,visit=903342,detector=10``, which the
history shows as the stream) then ``@`` and its quantum node ids, which the command takes from its
stream value (``"${quantum##*@}"``). The jobs of a label must run one command but for their node
ids (:func:`~airflow_desc.bps.commands.job_command`); their resources are the largest any of them
asks for. Dependencies are kept per label: a label waits for every label a job of it depends on
(ctrl_bps's per-quantum edges are coarsened; a failed quantum skips the labels below it, and a
restart reruns what did not succeed).
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from airflow_desc.bps.commands import job_command
from airflow_desc.bps.jobs import BpsJob
from airflow_desc.exceptions import BpsWorkflowError

__all__ = [
    "OTHER_WMS_KEYS",
    "QUANTA_PROCESS",
    "STREAM_VAR",
    "SpecSettings",
    "LAUNCHERS",
    "dag_file_text",
    "overlay_text",
    "job_counts",
    "refuse_other_wms_options",
    "spec_text",
    "workflow_spec",
]

#: The script process that makes the streams of every label.
QUANTA_PROCESS = "bpsQuanta"
#: The stream variable of a label's sub-task.
STREAM_VAR = "quantum"
#: The sub-task that runs chains of quanta, a stream per data id (``SpecSettings.chains``).
CHAINS_TASK = "bpsChains"
#: Shell text for the node ids held in a stream (after the last ``@``).
_NODE_IDS = '"${quantum##*@}"'
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_BAD_STREAM_CHARS = ("/", ":", "@", "{{")


@dataclasses.dataclass(frozen=True)
class SpecSettings:
    """How a submission is rendered (the BPS config's ``airflow*`` keys, :mod:`airflow_desc.bps.service`).

    :param name: the workflow's name (the DAG id); default: the run name.
    :param cluster: the cluster profile every job runs on; default: each job's ``computeSite``.
    :param memory_mb: memory of a job that asks for none (BPS's default requestMemory).
    :param walltime: walltime of a job that asks for none.
    :param bundling: the spec's ``bundling`` settings (``threshold``, ``target_instances`` ...).
    :param chains: run quanta that make chains by data id as one sub-task, a stream per data id
        (see the module docs).
    """

    name: str | None = None
    cluster: str | None = None
    memory_mb: int = 2048
    walltime: str = "1:00:00"
    bundling: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    chains: bool = False


#: BPS config keys that only another WMS plugin reads, anywhere in the config (ctrl_bps leaves them
#: out of the GenericWorkflow: the HTCondor plugin reads them from the config itself), and what to do.
OTHER_WMS_KEYS: dict[str, str] = {
    "profile": "WMS-specific options (HTCondor's profile) are for other plugins",
    "attrs": "WMS job attributes (HTCondor's attrs) are for other plugins",
    "provisionResources": "provisioning (HTCondor glideins) is for other plugins; bundles pack the work",
}
#: Keys of a ``site`` section that only another WMS plugin reads.
OTHER_WMS_SITE_KEYS: dict[str, str] = {
    "class": "a ctrl_bps_parsl site class is for the Parsl plugin",
}


def refuse_other_wms_options(config: Mapping[str, Any]) -> None:
    """Refuse a BPS config that sets what only another WMS plugin runs, naming each key.

    :param config: the BPS config as a mapping (``BpsConfig.toDict()``).
    :raises BpsWorkflowError: one line per key, its dotted path and what to do.
    """
    found: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if not isinstance(node, Mapping):
            return
        for key, value in node.items():
            where = (*path, str(key))
            advice = OTHER_WMS_KEYS.get(str(key))
            if advice is None and len(path) == 2 and path[0] == "site":
                advice = OTHER_WMS_SITE_KEYS.get(str(key))
            if advice is not None and value not in (None, False, "", {}, []):
                found.append(f"{'.'.join(where)} ({value!r}): {advice}; remove it from the BPS config")
            else:
                walk(value, where)

    walk(config, ())
    if found:
        raise BpsWorkflowError(
            "the BPS config sets what airflow-desc does not run (cluster settings come from its cluster "
            "profiles: computeSite or airflowCluster names one):\n" + "\n".join(f"  {f}" for f in found)
        )


def _refuse_unsupported(jobs: Sequence[BpsJob]) -> None:
    # One line per label and feature: a config value usually reaches every job of a label.
    users: dict[tuple[str, str], list[str]] = defaultdict(list)
    for job in jobs:
        for what in job.unsupported:
            users[job.label, what].append(job.name)
    problems = [
        f"label {label} ({len(names)} job(s), e.g. {names[0]!r}): {what}"
        for (label, what), names in users.items()
    ]
    if problems:
        raise BpsWorkflowError(
            "the GenericWorkflow uses what airflow-desc does not run:\n"
            + "\n".join(f"  {p}" for p in problems)
        )


def _check_name(name: str, what: str) -> str:
    if not _NAME_RE.match(name):
        raise BpsWorkflowError(
            f"{what} {name!r} cannot name a task of a workflow spec; use letters, digits, '_' and '-', "
            "starting with a letter"
        )
    return name


def _data_id(job: BpsJob) -> str:
    data_id = ",".join(f"{key}={value}" for key, value in job.data_id.items())
    bad = [c for c in _BAD_STREAM_CHARS if c in data_id]
    if bad:
        raise BpsWorkflowError(
            f"job {job.name!r}: its data id {data_id!r} holds {' '.join(bad)}, which a stream value "
            "cannot; airflow-desc cannot run this data id yet"
        )
    return data_id


def _stream(job: BpsJob) -> str:
    data_id = _data_id(job)
    return f"{data_id}@{job.node_ids}" if data_id else str(job.node_ids)


@dataclasses.dataclass(frozen=True)
class _Chains:
    """Quanta grouped by data id: each group one quantum per label (in ``labels`` order)."""

    labels: list[str]
    groups: list[tuple[str, list[BpsJob]]]
    parents: dict[str, list[str]]  # each label's labels upstream within a data id
    upstream: list[str]  # init jobs the quanta depend on


def _chains(by_label: Mapping[str, Sequence[BpsJob]], unit_of: Mapping[str, str]) -> _Chains | None:
    """Return the quanta as chains by data id, or None when they do not make such chains."""
    labels = list(by_label)
    if len(labels) < 2:
        return None
    groups: dict[str, dict[str, BpsJob]] = defaultdict(dict)
    group_of: dict[str, str] = {}
    for label, members in by_label.items():
        for job in members:
            key = _data_id(job)
            if not key or label in groups[key] or "+" in str(job.node_ids):
                return None
            groups[key][label] = job
            group_of[job.name] = key
    parents: dict[str, set[str]] = {}
    upstream: set[str] = set()
    for key, group in groups.items():
        if len(group) != len(labels):
            return None
        for label, job in group.items():
            if any(group_of.get(p, key) != key for p in job.parents):
                return None
            upstream |= {unit_of[p] for p in job.parents if p not in group_of}
            inside = {unit_of[p] for p in job.parents if p in group_of}
            if parents.setdefault(label, inside) != inside:
                return None
    return _Chains(
        labels=labels,
        groups=[(key, [group[label] for label in labels]) for key, group in groups.items()],
        parents={label: sorted(names) for label, names in parents.items()},
        upstream=sorted(upstream),
    )


def _chain_stream(data_id: str, jobs: Sequence[BpsJob]) -> str:
    return f"{data_id}@{'+'.join(str(job.node_ids) for job in jobs)}"


def _chain_task(chains: _Chains, settings: SpecSettings) -> dict[str, Any]:
    processes: dict[str, Any] = {}
    for index, label in enumerate(chains.labels):
        members = [jobs[index] for _, jobs in chains.groups]
        # The label's node ids: the stream's index-th "+"-separated field after the "@".
        nodes = f'"$(printf %s {_NODE_IDS} | cut -d+ -f{index + 1})"'
        process = _batch(members, label, _label_command(label, members, nodes), settings)
        if chains.parents[label]:
            process["depends_on"] = chains.parents[label]
        processes[label] = process
    return {
        "description": f"{len(chains.groups)} data id(s), a quantum of each of {len(chains.labels)} labels",
        "streams_from": QUANTA_PROCESS,
        "stream_var": STREAM_VAR,
        "expected_streams": str(len(chains.groups)),
        **({"depends_on": chains.upstream} if chains.upstream else {}),
        "processes": processes,
    }


def _largest(values: Iterable[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _one(jobs: Sequence[BpsJob], field: str, label: str) -> Any:
    values = {getattr(job, field) for job in jobs} - {None}
    if len(values) > 1:
        raise BpsWorkflowError(
            f"label {label}: its jobs ask for different {field} values "
            f"({', '.join(sorted(map(str, values)))}); give the label one value in the BPS config"
        )
    return next(iter(values), None)


def _batch(jobs: Sequence[BpsJob], label: str, command: str, settings: SpecSettings) -> dict[str, Any]:
    """Return a batch process running ``command`` with the largest resources the ``jobs`` ask for."""
    cluster = settings.cluster or _one(jobs, "compute_site", label)
    if cluster is None:
        raise BpsWorkflowError(
            f"label {label}: no cluster to run on; set computeSite (a cluster profile name) or airflowCluster"
        )
    walltime = _largest(job.walltime_minutes for job in jobs)
    resources = {
        "cluster": cluster,
        "cpus": _largest(job.cpus for job in jobs),
        "memory_mb": _largest(job.memory_mb for job in jobs),
        "walltime": walltime,
        "partition": _one(jobs, "queue", label),
    }
    multiplier = _largest(job.memory_multiplier for job in jobs)
    return {
        "type": "batch",
        "command": command,
        "resources": {key: value for key, value in resources.items() if value is not None},
        "retries": _largest(job.retries for job in jobs) or 0,
        "escalation": {"memory_factor": max(1.0, float(multiplier or 1.0)), "walltime_factor": 1.0},
    }


def _label_command(label: str, jobs: Sequence[BpsJob], nodes: str = _NODE_IDS) -> str:
    commands = {job.name: job_command(job, nodes) for job in jobs}
    first = jobs[0]
    others = [name for name, command in commands.items() if command != commands[first.name]]
    if others:
        raise BpsWorkflowError(
            f"label {label}: jobs {first.name!r} and {others[0]!r} run different commands besides their "
            "quanta; airflow-desc runs one command per label (the same runQuantumCommand for the label)"
        )
    return f"{STREAM_VAR}={{{{ {STREAM_VAR} }}}}; {commands[first.name]}"


def workflow_spec(
    run_name: str, jobs: Sequence[BpsJob], settings: SpecSettings | None = None
) -> dict[str, Any]:
    """Return the workflow spec of a GenericWorkflow's jobs, as data (see the module docs).

    :param run_name: the BPS run name (``GenericWorkflow.name``).
    :param jobs: the jobs, from :func:`~airflow_desc.bps.jobs.jobs_from_generic_workflow`.
    :param settings: how to render it.
    :raises BpsWorkflowError: naming each job that uses what airflow-desc does not run, or a label
        whose jobs cannot share one command.
    """
    settings = settings or SpecSettings()
    _refuse_unsupported(jobs)
    name = settings.name or (
        run_name if _NAME_RE.match(run_name) else f"bps_{re.sub(r'[^A-Za-z0-9_-]', '_', run_name)}"
    )
    _check_name(name, "the workflow name")
    final = [job for job in jobs if job.final]
    top = [job for job in jobs if not job.final and job.node_ids is None]
    by_label: dict[str, list[BpsJob]] = defaultdict(list)
    for job in jobs:
        if not job.final and job.node_ids is not None:
            by_label[_check_name(job.label, "label")].append(job)
    unit_of = {job.name: job.label for job in jobs}
    taken = [*(j.label for j in top), *by_label, *(j.label for j in final), QUANTA_PROCESS]
    clash = sorted({n for n in taken if taken.count(n) > 1})
    if clash:
        raise BpsWorkflowError(
            f"labels {', '.join(clash)} name more than one part of the workflow (a label of quanta, an init "
            f"or final job, or {QUANTA_PROCESS}); give them different labels"
        )

    def upstream(members: Sequence[BpsJob], own: str) -> dict[str, list[str]]:
        names = sorted({unit_of[parent] for job in members for parent in job.parents} - {own})
        return {"depends_on": names} if names else {}

    def single(job: BpsJob, **extra: Any) -> dict[str, Any]:
        return _batch([job], _check_name(job.label, "label"), job_command(job), settings) | extra

    # An init job takes seconds and everything waits for it: its task waits in the worker slot
    # (no second start of the task when it ends), polling from the first second.
    processes: dict[str, Any] = {
        job.label: single(job, **upstream([job], job.label), deferrable=False) for job in top
    }
    chains = _chains(by_label, unit_of) if settings.chains else None
    if chains is not None:
        if CHAINS_TASK in taken:
            raise BpsWorkflowError(f"a label is named {CHAINS_TASK}, as airflowChains' sub-task; rename it")
        processes[QUANTA_PROCESS] = {
            "type": "script",
            "description": "the quanta by data id, as streams (data id @ each label's node ids, '+' between)",
            "callable": "airflow_desc.bps.streams:quanta_by_label",
            "kwargs": {"quanta": {CHAINS_TASK: [_chain_stream(key, group) for key, group in chains.groups]}},
        }
    elif by_label:
        processes[QUANTA_PROCESS] = {
            "type": "script",
            "description": "the quanta of each label, as streams (data id @ quantum node ids)",
            "callable": "airflow_desc.bps.streams:quanta_by_label",
            "kwargs": {
                "quanta": {label: [_stream(job) for job in members] for label, members in by_label.items()}
            },
        }
    tasks = {CHAINS_TASK: _chain_task(chains, settings)} if chains is not None else {
        label: {
            "description": f"the {len(members)} job(s) of label {label}",
            "streams_from": QUANTA_PROCESS,
            "stream_var": STREAM_VAR,
            "expected_streams": str(len(members)),
            **upstream(members, label),
            "processes": {label: _batch(members, label, _label_command(label, members), settings)},
        }
        for label, members in by_label.items()
    }  # fmt: skip
    for job in final:
        processes[job.label] = single(
            job,
            description="the BPS final job: runs whatever became of the quanta",
            after=[*(j.label for j in top), *([CHAINS_TASK] if chains is not None else by_label)],
        )
    spec: dict[str, Any] = {
        "name": name,
        "version": "1",
        "description": f"ctrl_bps submission {run_name}: {len(jobs)} jobs, {len(by_label)} labels",
        "defaults": {
            "resources": {"cpus": 1, "memory_mb": settings.memory_mb, "walltime": settings.walltime},
            "retries": 0,
        },
    }
    # A label's run times come from every submission of it: each submission is a workflow of its own.
    # A BPS walltime request is a label's, often many times a quantum's run: bundles take each
    # other over rather than wait in the queue behind an allocation that ran out of work.
    spec["bundling"] = {"run_times_from": "any", "take_over": True, **settings.bundling}
    return spec | {"processes": processes, "tasks": tasks}


def job_counts(jobs: Sequence[BpsJob]) -> dict[str, int]:
    """Return each label's number of jobs in the workflow's order: init jobs, labels of quanta, final jobs."""
    counts: dict[str, int] = {}
    for job in sorted(jobs, key=lambda j: (j.final, j.node_ids is not None)):
        counts[job.label] = counts.get(job.label, 0) + 1
    return counts


def spec_text(spec: Mapping[str, Any], run_name: str) -> str:
    """Return the spec as YAML text, with a header saying where it comes from."""
    header = (
        f"# Written by airflow_desc.bps (the ctrl_bps WMS plugin) for BPS run {run_name}.\n"
        "# Regenerated by `bps prepare` / `bps submit`: do not edit.\n"
    )
    return header + yaml.safe_dump(dict(spec), sort_keys=False, width=1_000_000, allow_unicode=True)


#: The bundles' pilot launchers (workflow.overlays.LAUNCHERS: this distribution does not ship it).
LAUNCHERS = ("srun", "direct")


def overlay_text(spec_file: str, launcher: str) -> str:
    """Return the render overlay of the spec ``spec_file`` (a name beside it): the bundles' launcher."""
    header = "# Written by airflow_desc.bps (the BPS config's airflowLauncher): do not edit.\n"
    return header + yaml.safe_dump({"extends": spec_file, "launcher": launcher}, sort_keys=False)


def dag_file_text(spec_file: str) -> str:
    """Return the one-line DAG file that renders the spec ``spec_file`` (a name beside it)."""
    return (
        '"""A ctrl_bps submission, written by airflow_desc.bps: the DAG of the spec beside this file."""\n\n'
        "from airflow_desc.workflow.render import load_workflow_dags\n\n"
        f"globals().update(load_workflow_dags(__file__, {spec_file!r}))\n"
    )
