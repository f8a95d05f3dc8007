"""What is recorded about each process instance, and the interface recorders implement.

A :class:`ProcessRecord` is one attempt of one process instance (a SLURM job, a step of a
bundle allocation, or a script run on the worker). Operators build records and hand them
to a :class:`Recorder`; the history store's writer is one, :class:`JsonLinesRecorder`
(the embedded fallback and spool format) is another.

States are those of the DC1 status table (see DESIGN.md): ``success``; ``failed`` (the
payload exited non-zero or an output check failed); ``terminated`` (the system ended it:
time limit, out of memory, node failure, preemption, cancelled by an admin);
``cancelled`` (cancelled by the workflow's own user); ``skipped``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from airflow_desc.slurm import JobAccounting, SlurmState, StateClass
from airflow_desc.slurm.diagnose import Diagnosis, ReasonClass

__all__ = [
    "INSTANCE_KEY",
    "PROCESS_STATES",
    "InstanceIdentity",
    "JsonLinesRecorder",
    "ProcessRecord",
    "Recorder",
    "RerunRequest",
    "RerunSelection",
    "process_state",
]

PROCESS_STATES = (
    "waiting",
    "ready",
    "queued",
    "submitted",
    "running",
    "success",
    "failed",
    "terminated",
    "cancelling",
    "cancelled",
    "skipped",
)

#: What identifies a process instance (all its attempts): its task instance, its stream, its process.
INSTANCE_KEY = ("dag_id", "run_id", "task_id", "map_index", "stream", "process")

# SLURM ended these: the payload was not at fault (or not only).
_TERMINATED = {
    SlurmState.TIMEOUT,
    SlurmState.OUT_OF_MEMORY,
    SlurmState.NODE_FAIL,
    SlurmState.PREEMPTED,
    SlurmState.BOOT_FAIL,
    SlurmState.DEADLINE,
    SlurmState.REVOKED,
}


def process_state(accounting: JobAccounting, diagnosis: Diagnosis, *, job_uid: int | None = None) -> str:
    """Map a finished job to its DC1 status-table state.

    :param accounting: the job's accounting.
    :param diagnosis: its diagnosis.
    :param job_uid: the uid the job ran as; a cancel by that uid is ``cancelled``, by anyone else
        (an admin, root, SLURM itself) ``terminated``.
    """
    state = accounting.state.state
    if diagnosis.reason is ReasonClass.OUTPUT_CHECK:
        return "failed"
    if accounting.state_class is StateClass.SUCCEEDED:
        return "success"
    if state is SlurmState.CANCELLED:
        by = accounting.cancelled_by_uid
        # The OverMemoryKill fallback cancels the batch step as uid 0: that is an out-of-memory kill.
        if diagnosis.reason is ReasonClass.OUT_OF_MEMORY:
            return "terminated"
        return "cancelled" if by is not None and by == job_uid else "terminated"
    if state in _TERMINATED or diagnosis.reason in (ReasonClass.OUT_OF_MEMORY, ReasonClass.TIME_LIMIT):
        return "terminated"
    return "failed"


#: An attempt's identity (:meth:`ProcessRecord.key`): dag_id, run_id, task_id, map_index, stream,
#: process (the process instance), try_number, resubmit (which attempt of it).
AttemptKey = tuple[str, str, str, int, str, str, int, int]


@dataclass(frozen=True)
class ProcessRecord:
    """One attempt of one process instance.

    :param workflow: the workflow (top-level task) name, e.g. ``DC1-DM12``.
    :param process: the process name, e.g. ``processEimage``.
    :param task: the Pipeline II task the process belongs to, e.g. ``processSensor`` (a sub-task of the
        workflow, as the DC1 status table names them); defaults to the workflow.
    :param version: that task's version, e.g. ``1.16``.
    :param variant: the workflow variant (``imsim-dithered`` ...).
    :param state: one of :data:`PROCESS_STATES`.
    :param dag_id: the Airflow DAG.
    :param run_id: the DAG run (a top-level stream).
    :param task_id: the Airflow task that ran it.
    :param map_index: its map index (-1 when not mapped).
    :param try_number: the Airflow try.
    :param resubmit: which SLURM job of the try this is: 0, then 1, 2 ... for the jobs the try
        resubmitted after node failures (each an attempt of its own, counted once per instance).
    :param stream: the stream path, e.g. ``visit=2201/raft=R22/sensor=S11`` ("" at the top level).
    :param process_type: ``batch`` or ``script``.
    :param cluster: the cluster it ran on.
    :param job_id: the SLURM job id.
    :param step: the SLURM step (``batch`` or a step number inside a bundle).
    :param log_tail: the end of the attempt's log, bounded and with secrets redacted
        (:mod:`airflow_desc.slurm.log_tails`); kept in the history's ``log_tails`` table.
    """

    workflow: str
    process: str
    state: str
    dag_id: str = ""
    run_id: str = ""
    task_id: str = ""
    map_index: int = -1
    try_number: int = 1
    task: str = ""
    version: str = ""
    variant: str = ""
    stream: str = ""
    process_type: str = "batch"
    cluster: str | None = None
    job_id: str | None = None
    step: str | None = None
    slurm_state: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    message: str | None = None
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    elapsed_s: float | None = None
    total_cpu_s: float | None = None
    max_rss_bytes: int | None = None
    req_cpus: int | None = None
    req_mem_bytes: int | None = None
    req_walltime_s: float | None = None
    node: str | None = None
    log_path: str | None = None
    triggered_by: str | None = None
    rerun_reason: str | None = None
    resubmit: int = 0
    log_tail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.task:
            object.__setattr__(self, "task", self.workflow)
        if self.state not in PROCESS_STATES:
            raise ValueError(f"state {self.state!r} is not one of {', '.join(PROCESS_STATES)}")

    def key(self) -> AttemptKey:
        """Return the identity of this attempt: writing the same record twice must not count it twice.

        The process instance's identity, then the attempt's order, :meth:`attempt`.
        """
        return (
            self.dag_id,
            self.run_id,
            self.task_id,
            self.map_index,
            self.stream,
            self.process,
            self.try_number,
            self.resubmit,
        )

    def attempt(self) -> tuple[int, int]:
        """Return ``(try_number, resubmit)``: the later attempt of an instance has the larger."""
        return (self.try_number, self.resubmit)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able dict (datetimes as ISO text)."""
        out = dataclasses.asdict(self)
        for name, value in out.items():
            if isinstance(value, datetime):
                out[name] = value.isoformat()
        return out

    def check_types(self) -> None:
        """Raise :class:`TypeError` naming the first field whose value is not of its declared type.

        The dataclass does not check its values, and a wrong type (``try_number="2"``) only fails
        deep in the history writer, where it cannot be told apart from an unreachable database.
        An ``int`` passes for a ``float``; a ``bool`` passes for neither.
        """
        for name, (allowed, optional) in _field_types().items():
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) and bool not in allowed:
                ok = False
            else:
                ok = isinstance(value, allowed)
            if not ok:
                expected = " or ".join(t.__name__ for t in allowed) + (" or null" if optional else "")
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
                raise TypeError(f"field {name}: expected {expected}, got {type(value).__name__} {shown}")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        """Rebuild a record from :meth:`to_json` output, checking each field's type (:meth:`check_types`).

        :raises ValueError: an unknown field, a state or a time that is not one.
        :raises TypeError: a field of the wrong type, or ``data`` not an object.
        """
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown record fields: {', '.join(sorted(unknown))}")
        values = dict(data)
        for name in ("submit_time", "start_time", "end_time"):
            if isinstance(values.get(name), str):
                values[name] = datetime.fromisoformat(values[name])
        record = cls(**values)
        record.check_types()
        return record


@cache
def _field_types() -> dict[str, tuple[tuple[type, ...], bool]]:
    """Each :class:`ProcessRecord` field: the types its value may have, and whether it may be None."""
    out: dict[str, tuple[tuple[type, ...], bool]] = {}
    for name, hint in typing.get_type_hints(ProcessRecord).items():
        parts = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        allowed: list[type] = []
        for part in parts:
            if part is type(None):
                continue
            base = typing.get_origin(part) or part  # dict[str, Any] -> dict
            allowed.extend((int, float) if base is float else (base,))
        out[name] = (tuple(allowed), type(None) in parts)
    return out


@dataclass(frozen=True)
class InstanceIdentity:
    """Who one attempt of a process instance is, and the Airflow task instance that ran it.

    Its workflow, task, process and stream, with the DAG, run, task, map index and try. Every
    record is made from one (:meth:`attempt`, :meth:`skipped`, :meth:`of_job`), so the identity is
    written in one place.

    :param workflow: the workflow (top-level task) name.
    :param process: the process name.
    :param task: the Pipeline II task the process belongs to (default: the workflow).
    :param version: that task's version.
    :param variant: the workflow variant.
    :param dag_id: the Airflow DAG.
    :param run_id: the DAG run.
    :param task_id: the Airflow task.
    :param map_index: its map index (-1 when not mapped).
    :param try_number: the Airflow try.
    :param stream: the stream path ("" at the top level).
    :param process_type: ``batch`` or ``script``.
    """

    workflow: str
    process: str
    task: str = ""
    version: str = ""
    variant: str = ""
    dag_id: str = ""
    run_id: str = ""
    task_id: str = ""
    map_index: int = -1
    try_number: int = 1
    stream: str = ""
    process_type: str = "batch"

    def attempt(self, state: str, **fields: Any) -> ProcessRecord:
        """Return the record of this attempt ending in ``state``, with its other ``fields``."""
        return ProcessRecord(**dataclasses.asdict(self), state=state, **fields)

    def skipped(self, reason: str, message: str, **fields: Any) -> ProcessRecord:
        """Return the record of this instance Skipped now, for ``reason`` (the skip's kind)."""
        now = datetime.now(timezone.utc)
        return self.attempt("skipped", reason=reason, message=message, start_time=now, end_time=now, **fields)

    def of_job(
        self,
        accounting: JobAccounting,
        diagnosis: Diagnosis,
        *,
        cluster: str,
        log_path: str | None = None,
        job_uid: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ProcessRecord:
        """Return the record of a single SLURM job from its accounting and its diagnosis.

        :param accounting: the job's accounting (sacct).
        :param diagnosis: why it ended (:func:`airflow_desc.slurm.diagnose`, or an output check).
        :param cluster: the cluster it ran on.
        :param log_path: its log on the cluster.
        :param job_uid: the uid it ran as (a cancel by that uid is ``cancelled``; see
            :func:`process_state`).
        :param extra: kept as the record's ``extra``.
        """
        job = accounting.job
        return self.attempt(
            process_state(accounting, diagnosis, job_uid=job_uid),
            cluster=cluster,
            job_id=accounting.job_id,
            step="batch",
            slurm_state=accounting.state.raw,
            exit_code=accounting.exit_code,
            signal=accounting.signal,
            reason=str(diagnosis.reason),
            message=diagnosis.message,
            submit_time=job.submit if job else None,
            start_time=job.start if job else None,
            end_time=job.end if job else None,
            elapsed_s=accounting.elapsed_s,
            total_cpu_s=accounting.total_cpu_s,
            max_rss_bytes=accounting.max_rss_bytes,
            req_cpus=job.req_cpus if job else None,
            req_mem_bytes=accounting.req_mem_bytes,
            req_walltime_s=job.time_limit_s if job else None,
            node=accounting.node_list,
            log_path=log_path,
            extra=dict(extra or {}),
        )


@dataclass(frozen=True)
class RerunRequest:
    """A task instance cleared to run again, by whom and why (``airflow-desc rerun``).

    The history writer copies ``requested_by`` and ``reason`` into the ``triggered_by`` and
    ``rerun_reason`` of every attempt of that task instance with a try after ``after_try``
    (for a bundle: each of its process instances that runs again).

    :param dag_id: the DAG.
    :param run_id: the DAG run.
    :param task_id: the task.
    :param map_index: its map index (-1: not mapped).
    :param after_try: the task instance's try when it was cleared.
    :param requested_by: who asked (a user name).
    :param reason: why, in their words.
    :param requested_at: when (UTC).
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    after_try: int
    requested_by: str
    reason: str
    requested_at: datetime


@dataclass(frozen=True)
class RerunSelection:
    """The process instances of one task instance that a rerun selected.

    A bundle task instance holds many process instances; its next try (``after_try + 1``) reruns
    exactly these, and what depends on them inside the bundle, even those that succeeded. A task
    instance that is one process instance reruns whole, selection or not.

    :param dag_id: the DAG.
    :param run_id: the DAG run.
    :param task_id: the task.
    :param map_index: its map index (-1: not mapped).
    :param after_try: the task instance's try when it was cleared.
    :param instances: the selected instances' ids, ``<stream path>:<process>``.
    :param requested_at: when (UTC).
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    after_try: int
    instances: tuple[str, ...]
    requested_at: datetime


class Recorder(Protocol):
    """Something that keeps process records: the history store's writer, or a JSON-lines file."""

    def record(self, records: Sequence[ProcessRecord]) -> None:
        """Keep ``records``; writing a record whose :meth:`ProcessRecord.key` was seen replaces it."""


class JsonLinesRecorder:
    """Append records to a JSON-lines file (one object per line); safe across threads and processes.

    :param path: the file; its directory is created.
    """

    _lock = threading.Lock()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def record(self, records: Sequence[ProcessRecord]) -> None:
        """Append ``records``; readers keep the last line of each key."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r.to_json(), sort_keys=True) + "\n" for r in records)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            # One write() of the whole batch: appends of this size do not interleave between processes.
            f.write(text)

    def read(self) -> list[ProcessRecord]:
        """Every record in the file, the last write of each key winning."""
        if not self.path.exists():
            return []
        latest: dict[AttemptKey, ProcessRecord] = {}
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = ProcessRecord.from_json(json.loads(line))
                except (ValueError, TypeError) as exc:
                    raise ValueError(f"{self.path}:{number}: not a process record: {exc}") from exc
                latest[record.key()] = record
        return list(latest.values())
