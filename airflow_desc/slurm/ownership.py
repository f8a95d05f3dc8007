"""Whose a SLURM job is, and who ended it: the rules that stop a task adopting another task's job.

A job id read back (from the task state store, or found after a crash) proves nothing alone:
a slurmctld that lost its state hands the same ids out again (seen on the local site: a bundle's
second try re-attached "to SLURM job 2573, still PENDING", another task's job). So a job is
re-attached or adopted only when SLURM's own record says it is ours (:func:`foreign_job_reason`):

1. its name is the deterministic name the task submitted it with, and
2. it was submitted no earlier than the task's record of starting the submission, less
   :data:`CLOCK_SKEW_S` for the cluster's clock (an older job of that name is another run's).

Submit times are read with ``TZ=UTC`` (:func:`~airflow_desc.slurm.commands.owner_sacct_command`), so
the comparison holds wherever the cluster is.

Who cancelled a job decides its state (DESIGN.md, States): ``CANCELLED by <uid>`` with the job's
own uid (the workflow's people: a user's ``scancel``, or a clear / mark-failed in Airflow, whose
``scancel`` runs as the login user) is **Cancelled** and never retried; by any other uid (root, an
admin, SLURM itself) **Terminated** (:func:`cancelled_by_owner`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from airflow_desc.slurm.accounting import JobAccounting
from airflow_desc.slurm.commands import OWNER_FIELDS
from airflow_desc.slurm.parse import parse_sacct
from airflow_desc.slurm.states import SlurmState

__all__ = ["CLOCK_SKEW_S", "JobOwner", "cancelled_by_owner", "foreign_job_reason", "parse_owners"]

#: How far the cluster's clock may be behind the worker's, in seconds, before a job submitted
#: "before" our record of submitting it counts as someone else's. Submit has whole seconds.
CLOCK_SKEW_S = 120.0


@dataclass(frozen=True)
class JobOwner:
    """What SLURM says of whose a job is.

    :param job_id: the job id.
    :param name: its JobName.
    :param uid: the uid it runs as (sacct UID).
    :param submit: when it was submitted (UTC).
    """

    job_id: str
    name: str | None
    uid: int | None
    submit: datetime | None


def parse_owners(stdout: str) -> dict[str, JobOwner]:
    """Read ``TZ=UTC sacct -X -P -n -o JobID,JobName,UID,Submit`` output: each job's owner, by id.

    :param stdout: what :func:`~airflow_desc.slurm.commands.owner_sacct_command` printed.
    :raises SlurmOutputError: for a line that is not four fields.
    """
    owners: dict[str, JobOwner] = {}
    for row in parse_sacct(stdout, OWNER_FIELDS):
        if row.step is not None:
            continue
        submit = row.submit.replace(tzinfo=timezone.utc) if row.submit is not None else None
        owners[row.job_id] = JobOwner(row.job_id, row.job_name, row.uid, submit)
    return owners


def foreign_job_reason(
    job_id: str,
    *,
    name: str | None,
    submit: datetime | None,
    expected_name: str,
    submitted_after: datetime | None,
    skew_s: float = CLOCK_SKEW_S,
) -> str | None:
    """Return why job ``job_id`` is not the task's own job, or ``None`` when it is.

    :param job_id: the job.
    :param name: its name as SLURM reports it (``None``: SLURM does not know it).
    :param submit: its submit time, aware (``None``: not known, e.g. only squeue has it yet).
    :param expected_name: the name the task submits with for that try.
    :param submitted_after: when the task started submitting it (aware); ``None``: no record.
    :param skew_s: how far the cluster's clock may lag the worker's.
    """
    if name is None:
        return f"SLURM reports no name for job {job_id}, so it cannot be shown to be this task's"
    if name != expected_name:
        return f"job {job_id} is named {name!r}, not {expected_name!r}: another task's job with a reused id"
    if submit is not None and submitted_after is not None:
        earliest = submitted_after - timedelta(seconds=skew_s)
        if submit < earliest:
            return (
                f"job {job_id} was submitted at {submit.isoformat()}, before this task submitted its job "
                f"({submitted_after.isoformat()}): an older job of the same name"
            )
    return None


def cancelled_by_owner(accounting: JobAccounting, owner_uid: int | None) -> bool:
    """Whether the job was cancelled by its own uid (Cancelled), not by root, an admin or SLURM.

    :param accounting: the job's accounting.
    :param owner_uid: the uid the job ran as (:attr:`JobOwner.uid`); ``None``: unknown, so not shown.
    """
    by = accounting.cancelled_by_uid
    return (
        accounting.state.state is SlurmState.CANCELLED
        and by is not None
        and owner_uid is not None
        and by == owner_uid
    )
