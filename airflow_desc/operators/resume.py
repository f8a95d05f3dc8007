"""What a try decides of its task instance's jobs: which to re-attach to, and what follows a failure.

Pure rules, no SLURM call and no Airflow; the operator asks SLURM
(:mod:`~airflow_desc.operators.job_checks`) and acts on the answers.

- :func:`live_job`: of the task instance's own unrecorded jobs, the one to re-attach to.
- :func:`try_of_job`: the try a finished job is recorded for.
- :func:`counts_node_failure`: whether a try resubmits a node-failed job itself (retries unspent).
- :func:`after_failure`: what a try does once a failed job is recorded.
- :func:`claim_task_instance`: when this Airflow first ran the task instance (older jobs of its
  names are an earlier Airflow's).
- :func:`ended_while_deferred`: whether an earlier try left its running job without a trigger.
- :func:`stale_task_dir`: whether the task instance's directory on the cluster is an earlier Airflow's.

Run ids repeat across Airflows: a scheduled run is ``scheduled__<due time>`` in every deployment, and
a deleted run can be triggered again under its id. So a task instance's job names and its directory
on the cluster (both derived from dag, run, task and map index) may already hold what another
Airflow's run of the same id left there: jobs that must not be adopted, records that must not be
taken for an earlier try's.
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
    "DEFERRED_TRY",
    "NODE_FAILURE_RESUBMITS",
    "AfterFailure",
    "after_failure",
    "claim_task_instance",
    "counts_node_failure",
    "ended_while_deferred",
    "live_job",
    "saved_time",
    "stale_task_dir",
    "try_of_job",
]

#: The saved state's key for when this Airflow first ran the task instance.
CLAIMED_AT = "claimed_at"

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


def claim_task_instance(state: dict[str, Any], now: datetime) -> bool:
    """Note in ``state`` when this Airflow first ran the task instance; return whether it is new.

    Saved before any job is submitted, so every job of this Airflow's task instance is submitted
    after it; a job of the same name submitted before is another Airflow's run of the same run id
    (:func:`~airflow_desc.operators.job_checks.candidate_jobs` refuses it, allowing
    :data:`~airflow_desc.slurm.ownership.CLOCK_SKEW_S` for the cluster's clock: a run re-created
    within that of the old run's last job is not told apart). A state saved before this
    key existed (it holds a job) keeps no claim: its jobs are judged by name alone, as then.

    :param state: the task's saved state (empty for a task instance this Airflow never ran).
    :param now: the time now, aware.
    """
    if state:
        return False
    state[CLAIMED_AT] = now.astimezone(timezone.utc).isoformat()
    return True


#: The saved state's key for the try that handed its job to a trigger and has not resumed since.
DEFERRED_TRY = "deferred_try"


def ended_while_deferred(state: Mapping[str, Any], job_try: int, this_try: int) -> bool:
    """Return whether try ``job_try`` ended while its job waited in a trigger (so nobody cancelled it).

    A try that defers hands its job to a trigger, whose cleanup cancels the job when a user clears
    or marks the deferred task; only a trigger already running in a triggerer can, and a clear made
    right after the deferral comes first. A later try that finds such a try's job still running
    must cancel it rather than wait for it: the user asked for a new run. A try that resumed
    (the trigger fired) is no such try: :data:`DEFERRED_TRY` is dropped when a job is recorded.

    :param state: the task's saved state.
    :param job_try: the try that submitted the running job.
    :param this_try: the running try.
    """
    return job_try < this_try and state.get(DEFERRED_TRY) == job_try


def stale_task_dir(
    *, saved_token: str | None, dir_token: str | None, dir_in_use: bool, saved_state: bool
) -> str | None:
    """Return why a bundle's directory on the cluster is not this Airflow's, or None when it is.

    This Airflow's bundle writes a token (saved in its state) into its directory before anything
    else; a directory holding another token, or files but no token while this Airflow saved nothing
    for the task instance, was left by another Airflow's run of the same run id.

    :param saved_token: the token this task instance's saved state holds, if any.
    :param dir_token: the token the directory holds, if any.
    :param dir_in_use: whether the directory exists with anything in it.
    :param saved_state: whether this Airflow saved any state for the task instance (a state saved
        before tokens existed has none, and its directory is its own).
    """
    if dir_token is not None:
        if dir_token == saved_token:
            return None
        return (
            f"it belongs to another Airflow's run of the same run id (its token {dir_token}, "
            f"this task instance's {saved_token or 'none yet'})"
        )
    if dir_in_use and not saved_state:
        return "it holds files, but this Airflow saved no state for the task instance: another Airflow's run"
    return None


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
