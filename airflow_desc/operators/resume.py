"""What a try decides of its task instance's jobs: which to re-attach to, and what follows a failure.

Pure rules, no SLURM call and no Airflow; the operator asks SLURM
(:mod:`~airflow_desc.operators.job_checks`) and acts on the answers.

- :func:`live_job`: of the task instance's own unrecorded jobs, the one to re-attach to.
- :func:`try_of_job`: the try a finished job is recorded for.
- :func:`counts_node_failure`: whether a try resubmits a node-failed job itself (retries unspent).
- :func:`after_failure`: what a try does once a failed job is recorded.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_desc.slurm.diagnose import Diagnosis, ReasonClass

if TYPE_CHECKING:
    from airflow_desc.slurm import JobAccounting

__all__ = [
    "NODE_FAILURE_RESUBMITS",
    "AfterFailure",
    "after_failure",
    "counts_node_failure",
    "live_job",
    "saved_time",
    "try_of_job",
]

#: How many times one try resubmits its job after a node failure before the failure spends a retry.
NODE_FAILURE_RESUBMITS = 2


def saved_time(text: Any) -> datetime | None:
    """Read a saved ISO time (ours are UTC); anything else is no record at all."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def live_job(
    candidates: Sequence[str], accounting: Mapping[str, JobAccounting], queued: Collection[str]
) -> str | None:
    """Return the first candidate SLURM still queues or runs: the job to re-attach to.

    A job only squeue knows is live, and so is one whose accounting is not terminal or still
    slurmdbd's stand-in (:attr:`~airflow_desc.slurm.JobAccounting.is_placeholder`).

    :param candidates: the task instance's own unrecorded jobs, in order of preference.
    :param accounting: what sacct knows of them, by job id.
    :param queued: those squeue lists.
    """
    for job_id in candidates:
        acct = accounting.get(job_id)
        if job_id in queued or (acct is not None and (not acct.is_terminal or acct.is_placeholder)):
            return job_id
    return None


def try_of_job(state: Mapping[str, Any], job_id: str, this_try: int) -> int:
    """Return the try that submitted ``job_id``: the saved one for this task's job, else this try."""
    return int(state.get("try_number") or this_try) if state.get("job_id") == job_id else this_try


def counts_node_failure(state: dict[str, Any], diagnosis: Diagnosis, job_id: str, job_try: int) -> bool:
    """Note a node failure of a try's job in ``state``; return whether the try resubmits it itself.

    A node failure is not the payload's fault: the try resubmits, at most
    :data:`NODE_FAILURE_RESUBMITS` times, before the failure spends one of the task's retries.

    :param state: the task's saved state; ``node_failures`` gains ``{try, job_id, message}``.
    :param diagnosis: why the job ended.
    :param job_id: the job.
    :param job_try: the try that submitted it.
    """
    if diagnosis.reason is not ReasonClass.NODE_FAILURE:
        return False
    failures = [f for f in state.get("node_failures") or [] if isinstance(f, Mapping)]
    if len([f for f in failures if f.get("try") == job_try]) >= NODE_FAILURE_RESUBMITS:
        return False
    state["node_failures"] = [*failures, {"try": job_try, "job_id": job_id, "message": diagnosis.message}]
    return True


class AfterFailure(enum.Enum):
    """What a try does once it has recorded a job that did not succeed."""

    #: An earlier try's job this try re-attached to, cancelled by the clear that started this try:
    #: this try now submits its own job.
    RUN_OWN_JOB = "run-own-job"
    #: Cancelled by its own user (a scancel, or a clear / mark-failed in Airflow): fail, no retry.
    FAIL_CANCELLED = "fail-cancelled"
    #: A node failure within :data:`NODE_FAILURE_RESUBMITS`: resubmit within the try.
    RESUBMIT = "resubmit"
    #: Fail the try; Airflow retries it if retries are left.
    FAIL = "fail"


def after_failure(
    *, cancelled: bool, adopted: bool, job_try: int, this_try: int, resubmit: bool
) -> AfterFailure:
    """Decide what a try does after a job that did not succeed.

    :param cancelled: whether the job is recorded Cancelled (by its own user).
    :param adopted: whether this try adopted the job (an earlier try's, finished but never recorded).
    :param job_try: the try that submitted the job.
    :param this_try: the running try.
    :param resubmit: whether the node failure is resubmitted within the try
        (:func:`counts_node_failure`).
    """
    if cancelled and not adopted and job_try != this_try:
        return AfterFailure.RUN_OWN_JOB
    if cancelled:
        return AfterFailure.FAIL_CANCELLED
    if resubmit:
        return AfterFailure.RESUBMIT
    return AfterFailure.FAIL
