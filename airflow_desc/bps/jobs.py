"""What airflow-desc reads of a ctrl_bps GenericWorkflow: one :class:`BpsJob` per job (no LSST import).

:func:`jobs_from_generic_workflow` walks a ``lsst.ctrl.bps.GenericWorkflow`` by its public methods
(``get_job``, ``predecessors``, ``get_job_inputs``, ``get_final``), so that this module, and the
spec built from its jobs, need neither the LSST stack nor Airflow; a job is plain data
(:meth:`BpsJob.to_dict` / :meth:`BpsJob.from_dict`), which is how the unit tests read the jobs of
a real GenericWorkflow saved as JSON.

What a job may use (the rest is refused, naming the job and the feature):

=============================  =================================================================
GenericWorkflowJob field       airflow-desc
=============================  =================================================================
label, quanta, tags            the sub-task (label) and its stream (data id ``@`` node ids)
executable, arguments,         the command, placeholders resolved (:mod:`airflow_desc.bps.commands`)
cmdvals, job inputs (files)
environment                    ``export NAME=value`` before the command
request_cpus / request_memory  ``resources.cpus`` / ``resources.memory_mb``
request_walltime (minutes)     ``resources.walltime``
memory_multiplier              ``escalation.memory_factor`` (the next try after OUT_OF_MEMORY)
number_of_retries              ``retries``
compute_site / queue           ``resources.cluster`` (unless ``airflowCluster`` is set) / ``partition``
=============================  =================================================================

Ignored, as hints with no meaning for SLURM jobs run by Airflow: ``request_disk``, ``priority``,
``category``, ``concurrency_limit``, ``preemptible``, ``accounting_group`` / ``accounting_user``,
``retry_unless_exit`` (retries follow the cause: :mod:`airflow_desc.operators.escalation`) and the
files' transfer flags (the jobs see the submit directory and the butler on a shared filesystem, as
with ctrl_bps_parsl). Refused: see :data:`UNSUPPORTED_FIELDS`, NOOP and GROUP nodes, a final
workflow (not a single job), and inputs at a URL (not a path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_desc.exceptions import BpsWorkflowError

__all__ = ["NODE_ID_KEY", "UNSUPPORTED_FIELDS", "BpsJob", "jobs_from_generic_workflow"]

#: The ``cmdvals`` key of a quantum job's node ids (comma-separated for a cluster of quanta).
NODE_ID_KEY = "qgraphNodeId"

#: GenericWorkflowJob fields refused when set, with what to do instead.
UNSUPPORTED_FIELDS: dict[str, str] = {
    "profile": "WMS-specific options are for other plugins; remove them from the BPS config",
    "attrs": "WMS job attributes are for other plugins; remove them from the BPS config",
    "pre_cmdline": "put the command into the job's command line (runQuantumCommand)",
    "post_cmdline": "put the command into the job's command line (runQuantumCommand)",
    "request_memory_max": "remove requestMemoryMax; escalation is capped at the cluster's node memory",
    "abort_on_value": "remove abortOnValue; a failed quantum skips what depends on it",
    "mail_to": "remove mailTo; the workflow spec's notify section sends mail",
    "when_to_mail": "remove whenToMail; the workflow spec's notify section sends mail",
    "compute_cloud": "remove computeCloud; name a cluster profile with computeSite or airflowCluster",
}

# Tags that are not part of a quantum's data id.
_NOT_DATA_ID = frozenset({"label", "node_number", "quanta_summary"})


@dataclasses.dataclass(frozen=True)
class BpsJob:
    """One job of a GenericWorkflow, as plain data.

    :param name: the job's unique name.
    :param label: its label (a task label, ``pipetaskInit``, ``finalJob``).
    :param executable: the executable's ``src_uri`` (may hold ``<ENV:NAME>``).
    :param arguments: the argument template (``{name}`` from ``cmdvals``, ``<FILE:name>``, ``<ENV:NAME>``).
    :param cmdvals: the values of the ``{name}`` placeholders.
    :param files: the job's input files, logical name -> path (``<FILE:name>``).
    :param environment: variables set for the job.
    :param cpus: ``request_cpus``.
    :param memory_mb: ``request_memory``.
    :param memory_multiplier: ``memory_multiplier``.
    :param walltime_minutes: ``request_walltime``.
    :param retries: ``number_of_retries``.
    :param compute_site: ``compute_site``.
    :param queue: ``queue``.
    :param data_id: the quantum's (or cluster's) data id, from the job's tags.
    :param parents: the names of the jobs it depends on.
    :param final: whether this is the workflow's final job.
    :param unsupported: what the job uses that airflow-desc does not run, one phrase each.
    """

    name: str
    label: str
    executable: str
    arguments: str = ""
    cmdvals: Mapping[str, str] = dataclasses.field(default_factory=dict)
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cpus: int | None = None
    memory_mb: int | None = None
    memory_multiplier: float | None = None
    walltime_minutes: int | None = None
    retries: int | None = None
    compute_site: str | None = None
    queue: str | None = None
    data_id: Mapping[str, str] = dataclasses.field(default_factory=dict)
    parents: tuple[str, ...] = ()
    final: bool = False
    unsupported: tuple[str, ...] = ()

    @property
    def node_ids(self) -> str | None:
        """The quantum node ids the job runs (comma-separated), or None for an init or final job."""
        value = self.cmdvals.get(NODE_ID_KEY)
        return str(value) if value not in (None, "") else None

    def to_dict(self) -> dict[str, Any]:
        """Return the job as JSON-ready data."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)
        } | {k: dict(getattr(self, k)) for k in ("cmdvals", "files", "environment", "data_id")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BpsJob:
        """Read a job written by :meth:`to_dict`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise BpsWorkflowError(f"job {data.get('name')!r}: unknown fields {sorted(unknown)}")
        values: dict[str, Any] = {
            k: tuple(v) if k in ("parents", "unsupported") else v for k, v in data.items()
        }
        return cls(**values)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _whole(value: Any) -> int | None:
    return None if value is None else int(value)


def _unsupported(gwjob: Any, files: Iterable[Any]) -> tuple[str, ...]:
    found = [
        f"{field} ({getattr(gwjob, field)!r}): {advice}"
        for field, advice in UNSUPPORTED_FIELDS.items()
        if getattr(gwjob, field, None) not in (None, "", {}, [])
    ]
    found += [
        f"input {f.name!r} is at {f.src_uri!r}, not a path: put it on the filesystem the clusters share"
        for f in files
        if "://" in _text(f.src_uri) and not _text(f.src_uri).startswith("file://")
    ]
    return tuple(found)


def _path(src_uri: Any) -> str:
    text = _text(src_uri)
    return text.removeprefix("file://")


def _job(gwjob: Any, files: list[Any], parents: tuple[str, ...], *, final: bool) -> BpsJob:
    kind = getattr(getattr(gwjob, "node_type", None), "name", "PAYLOAD")
    if kind != "PAYLOAD":
        return BpsJob(
            name=gwjob.name, label=gwjob.label, executable="", parents=parents, final=final,
            unsupported=(f"a {kind} node: only payload jobs run; cluster the quanta without it",),
        )  # fmt: skip
    executable = gwjob.executable
    return BpsJob(
        name=gwjob.name,
        label=gwjob.label,
        executable=_text(getattr(executable, "src_uri", None) or getattr(executable, "name", "")),
        arguments=_text(gwjob.arguments),
        cmdvals={str(k): _text(v) for k, v in (gwjob.cmdvals or {}).items()},
        files={f.name: _path(f.src_uri) for f in files},
        environment={str(k): _text(v) for k, v in (gwjob.environment or {}).items()},
        cpus=_whole(gwjob.request_cpus),
        memory_mb=_whole(gwjob.request_memory),
        memory_multiplier=None if gwjob.memory_multiplier is None else float(gwjob.memory_multiplier),
        walltime_minutes=_whole(gwjob.request_walltime),
        retries=_whole(gwjob.number_of_retries),
        compute_site=gwjob.compute_site,
        queue=gwjob.queue,
        data_id={str(k): _text(v) for k, v in (gwjob.tags or {}).items() if k not in _NOT_DATA_ID},
        parents=parents,
        final=final,
        unsupported=_unsupported(gwjob, files),
    )


def jobs_from_generic_workflow(workflow: Any) -> list[BpsJob]:
    """Read the jobs of a ``lsst.ctrl.bps.GenericWorkflow``, in dependency order, the final job last.

    :param workflow: the GenericWorkflow (read through its public methods only).
    :raises BpsWorkflowError: when its final part is a workflow, not one job.
    """
    jobs = [
        _job(
            workflow.get_job(name),
            list(workflow.get_job_inputs(name)),
            tuple(workflow.predecessors(name)),
            final=False,
        )
        for name in workflow  # GenericWorkflow iterates in topological order
    ]
    final = workflow.get_final()
    if final is not None:
        if not hasattr(final, "label") or hasattr(final, "get_job"):
            raise BpsWorkflowError(
                f"{workflow.name}: the final part is a workflow, not one job; airflow-desc runs a single "
                "final job (ctrl_bps's default finalJob)"
            )
        jobs.append(_job(final, list(workflow.get_job_inputs(final.name)), (), final=True))
    return jobs
