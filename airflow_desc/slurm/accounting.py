"""One job with its steps, as sacct reports them: :class:`JobAccounting`, and its JSON round trip.

:func:`group_accounting` gathers the rows of :func:`~airflow_desc.slurm.parse.parse_sacct` by job;
:func:`accounting_to_payload` / :func:`accounting_from_payload` carry a job's accounting through a
trigger event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_desc.slurm.parse import SacctRow, parse_sacct
from airflow_desc.slurm.states import ParsedState, StateClass

__all__ = ["JobAccounting", "accounting_from_payload", "accounting_to_payload", "group_accounting"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class JobAccounting:
    """One job with its steps, as sacct reports them, and the values derived from both.

    :param job_id: the job id (``123`` or ``123_4`` for an array task).
    :param job: the job line; ``None`` if sacct printed only steps.
    :param steps: the step lines in output order (``batch``, ``extern``, ``0``, ...).
    """

    job_id: str
    job: SacctRow | None
    steps: tuple[SacctRow, ...] = ()

    @property
    def _main(self) -> SacctRow:
        if self.job is not None:
            return self.job
        return self.step("batch") or self.steps[0]

    def step(self, name: str) -> SacctRow | None:
        """Return the step called ``name`` (``"batch"``, ``"extern"``, ``"0"``), if present.

        :param name: the step part of the JobID.
        :return: the row, or ``None``.
        """
        return next((row for row in self.steps if row.step == name), None)

    @property
    def rows(self) -> tuple[SacctRow, ...]:
        """The job line (if any) followed by the steps."""
        return ((self.job,) if self.job is not None else ()) + self.steps

    @property
    def state(self) -> ParsedState:
        """The job's state (the job line's, else the batch step's)."""
        return self._main.state

    @property
    def state_class(self) -> StateClass:
        """The class of :attr:`state`."""
        return self.state.state_class

    @property
    def is_placeholder(self) -> bool:
        """Whether the job line is slurmdbd's stand-in, not the job's real record.

        When a job's step records reach slurmdbd before its own start record, sacct shows a job
        line named ``allocation`` with no partition, no time limit and a ReqMem of 2^64: recorded
        from this site in ``tests/data/site/sacct-placeholder-allocation.txt``. The real line
        replaces it within seconds, so a poller must wait rather than believe its state.
        """
        job = self.job
        if job is None:
            return False
        asked = {name.lower() for name in job.raw}
        # Only a line that was asked for Partition and Timelimit and has neither is a stand-in.
        return {"partition", "timelimit"} <= asked and job.partition is None and job.time_limit_s is None

    @property
    def is_terminal(self) -> bool:
        """Whether SLURM is done with this job id."""
        return self.state.is_terminal

    @property
    def exit_code(self) -> int | None:
        """The job's exit code."""
        return self._main.exit_code

    @property
    def signal(self) -> int | None:
        """The signal that ended the job, 0 if none."""
        return self._main.signal

    @property
    def cancelled_by_uid(self) -> int | None:
        """The uid that cancelled the job or one of its steps (``CANCELLED by <uid>``)."""
        for row in self.rows:
            if row.cancelled_by_uid is not None:
                return row.cancelled_by_uid
        return None

    @property
    def elapsed_s(self) -> float | None:
        """Wall-clock time of the job."""
        return self._main.elapsed_s

    @property
    def total_cpu_s(self) -> float | None:
        """CPU time used: the job line's TotalCPU (sacct sums the steps), else the steps' sum."""
        if self.job is not None and self.job.total_cpu_s is not None:
            return self.job.total_cpu_s
        values = [row.total_cpu_s for row in self.steps if row.total_cpu_s is not None]
        return sum(values) if values else None

    @property
    def max_rss_bytes(self) -> int | None:
        """Peak resident memory of any task of any step (the job line's MaxRSS is empty)."""
        values = [row.max_rss_bytes for row in self.rows if row.max_rss_bytes is not None]
        return max(values) if values else None

    @property
    def req_mem_bytes(self) -> int | None:
        """ReqMem as printed on the job line (or a step), in bytes."""
        for row in self.rows:
            if row.req_mem_bytes is not None:
                return row.req_mem_bytes
        return None

    @property
    def mem_limit_per_node_bytes(self) -> int | None:
        """The memory one node of the job may use, to compare with MaxRSS.

        slurm >= 21.08 prints the job's total (TRES) memory, divided here by NNodes;
        older versions print it per node (``n``) or per CPU (``c``, times AllocCPUS per node).
        """
        row = next((r for r in self.rows if r.req_mem_bytes is not None), None)
        if row is None or row.req_mem_bytes is None:
            return None
        nnodes = self._first(lambda r: r.nnodes) or 1
        if row.req_mem_scope == "node":
            return row.req_mem_bytes
        if row.req_mem_scope == "cpu":
            cpus = self._first(lambda r: r.alloc_cpus)
            return None if cpus is None else row.req_mem_bytes * max(1, cpus // nnodes)
        return row.req_mem_bytes // nnodes

    @property
    def node_list(self) -> str | None:
        """The nodes the job ran on."""
        return self._first(lambda r: r.node_list)

    @property
    def cluster(self) -> str | None:
        """The cluster, when the Cluster field was requested."""
        return self._first(lambda r: r.cluster)

    @property
    def job_name(self) -> str | None:
        """The job's name (from the job line)."""
        return self._main.job_name

    def _first(self, get: Callable[[SacctRow], _T | None]) -> _T | None:
        for row in self.rows:
            value = get(row)
            if value is not None:
                return value
        return None


def group_accounting(rows: Iterable[SacctRow]) -> dict[str, JobAccounting]:
    """Gather sacct rows into one :class:`JobAccounting` per job.

    :param rows: rows from :func:`parse_sacct`, in any order.
    :return: by job id, in order of first appearance.
    """
    jobs: dict[str, SacctRow | None] = {}
    steps: dict[str, list[SacctRow]] = {}
    for row in rows:
        jobs.setdefault(row.job_id, None)
        steps.setdefault(row.job_id, [])
        if row.step is None:
            jobs[row.job_id] = row
        else:
            steps[row.job_id].append(row)
    return {job_id: JobAccounting(job_id, job, tuple(steps[job_id])) for job_id, job in jobs.items()}


def accounting_to_payload(accounting: JobAccounting) -> dict[str, Any]:
    """Turn a job's accounting into a JSON-able dict (the raw sacct fields of each row)."""
    return {"job_id": accounting.job_id, "rows": [dict(row.raw) for row in accounting.rows]}


def accounting_from_payload(payload: Mapping[str, Any]) -> JobAccounting:
    """Rebuild a job's accounting from :func:`accounting_to_payload` output (e.g. a trigger event)."""
    rows = payload["rows"]
    fields = tuple(rows[0].keys()) if rows else ()
    text = "\n".join("|".join(row[f] for f in fields) for row in rows)
    job_id = str(payload["job_id"])
    found = group_accounting(parse_sacct(text, fields)).get(job_id)
    if found is None:
        raise ValueError(f"the event carries no accounting rows for job {job_id}")
    return found
