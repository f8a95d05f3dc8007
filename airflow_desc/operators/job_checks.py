"""What a try asks SLURM before it trusts, records or reruns a job (the rules live in ``slurm/``).

- :func:`candidate_jobs`: the unrecorded jobs that may be the task instance's: the saved one, and
  after a crash those named after each of its tries (:func:`~airflow_desc.operators.job_names.job_name_for`).
- :func:`own_jobs`: of the jobs a try might re-attach to or adopt, those that are its own
  (:func:`~airflow_desc.slurm.ownership.foreign_job_reason`: the name it submitted them with, a
  submit time after its record); each other one is named in the task log.
- :func:`owner_uid_of`: the uid a cancelled job ran as, so that a cancel by its owner is Cancelled.
- :func:`partition_nodes_of`: the job's partition's nodes, for the node-failure exclusion rule.
- :func:`with_node_notice` / :func:`partition_notice`: a node SLURM left DOWN / DRAIN said plainly.

Each SLURM call that fails here is logged and read as "unknown", never as a verdict: an unknown
owner's cancel counts as Terminated, unknown nodes exclude nothing, an unknown node state adds no
notice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from airflow_desc.exceptions import DescError
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.operators.resume import CLAIMED_AT, saved_time
from airflow_desc.slurm import JobAccounting, SlurmState
from airflow_desc.slurm.diagnose import Diagnosis
from airflow_desc.slurm.nodes import NodeState, expand_hostlist, unavailable_notice
from airflow_desc.slurm.ownership import foreign_job_reason

__all__ = [
    "TaskLog",
    "candidate_jobs",
    "own_jobs",
    "owner_uid_of",
    "partition_nodes_of",
    "partition_notice",
    "with_node_notice",
]


class TaskLog(Protocol):
    """The task's logger (``BaseOperator.log``), as far as these checks write to it."""

    def info(self, event: Any, *args: Any, **kw: Any) -> Any:
        """Log a line of information."""

    def warning(self, event: Any, *args: Any, **kw: Any) -> Any:
        """Log a warning."""

    def error(self, event: Any, *args: Any, **kw: Any) -> Any:
        """Log an error."""


def candidate_jobs(
    hook: SlurmHook, state: Mapping[str, Any], this_try: int, name_of_try: Callable[[int], str]
) -> dict[str, tuple[str, datetime | None]]:
    """Return the unrecorded jobs that may be this task instance's.

    Each with the name it must carry and when its try started submitting it (``None``: no record).

    :param hook: the cluster's hook.
    :param state: the task's saved state.
    :param this_try: the running try's number.
    :param name_of_try: the job name of each try of the task instance.
    """
    recorded = set(state.get("recorded") or [])
    expected: dict[str, tuple[str, datetime | None]] = {}
    if state.get("job_id") and state["job_id"] not in recorded:
        saved_try = int(state.get("try_number") or this_try)
        after = saved_time(state.get("submit_after") or state.get("submitted_at"))
        expected[state["job_id"]] = (name_of_try(saved_try), after)
    if this_try > 1 or set(state) - {CLAIMED_AT}:
        # The worker may have died between sbatch and writing the id down: ask by name. A job of
        # the name submitted before this Airflow first ran the task instance is another Airflow's
        # run of the same run id (a scheduled run's id is the same in every Airflow).
        claimed = saved_time(state.get(CLAIMED_AT))
        for try_number in range(1, this_try + 1):
            name = name_of_try(try_number)
            for job_id in hook.find_jobs_by_name(name):
                if job_id not in recorded:
                    expected.setdefault(job_id, (name, claimed))
    return expected


def own_jobs(hook: SlurmHook, expected: Mapping[str, tuple[str, datetime | None]], log: TaskLog) -> list[str]:
    """Return the candidates that are the task instance's own jobs; log why each other one is not.

    :param hook: the cluster's hook.
    :param expected: each candidate job id with the name it must carry and when its try started
        submitting it (``None``: no record).
    :param log: the task's logger.

    A job neither sacct nor squeue knows is kept: it is neither re-attached nor adopted anyway.
    """
    if not expected:
        return []
    owners = hook.owners(list(expected))
    # The controller's live job wins over accounting: in the second or so before slurmdbd records a
    # new job, sacct may still answer with an older job that held the same id before the controller
    # lost its state (seen on the site: our own job of 2 s judged "named 'allocation'").
    queued = {row.job_id: row.name for row in hook.squeue(list(expected))}
    ours = []
    for job_id, (name, after) in expected.items():
        owner = owners.get(job_id)
        if owner is None and job_id not in queued:
            ours.append(job_id)
            continue
        live = job_id in queued
        why = foreign_job_reason(
            job_id,
            name=queued[job_id] if live else owner.name if owner else None,
            submit=None if live or owner is None else owner.submit,
            expected_name=name,
            submitted_after=after,
        )
        if why is None:
            ours.append(job_id)
        else:
            log.warning(
                "not re-attaching to SLURM job %s: %s; submitting this task's job afresh", job_id, why
            )
    return ours


def owner_uid_of(hook: SlurmHook, accounting: JobAccounting, log: TaskLog) -> int | None:
    """Return the uid a cancelled job ran as (sacct UID); ``None`` for other jobs, or when unknown."""
    if accounting.state.state is not SlurmState.CANCELLED:
        return None
    try:
        owner = hook.owners([accounting.job_id]).get(accounting.job_id)
    except DescError as exc:
        log.warning(
            "could not read who owns job %s, so its cancel counts as Terminated: %s", accounting.job_id, exc
        )
        return None
    return owner.uid if owner else None


def partition_nodes_of(hook: SlurmHook, state: Mapping[str, Any], log: TaskLog) -> list[NodeState] | None:
    """Return the nodes of the partition the task's job ran in, as sinfo reports them (``None``: unknown).

    :param state: the task's saved state (its ``resources`` name the partition).
    """
    partition = (state.get("resources") or {}).get("partition")
    try:
        return hook.nodes(partition=partition if isinstance(partition, str) else None)
    except (DescError, ValueError) as exc:
        log.warning("sinfo failed, so no node is excluded and no node state is told: %s", exc)
        return None


def with_node_notice(
    hook: SlurmHook, cluster: str, accounting: JobAccounting, diagnosis: Diagnosis, log: TaskLog
) -> Diagnosis:
    """Return a failed job's diagnosis, saying (and logging) that SLURM left its node down or drained."""
    if not accounting.node_list:
        return diagnosis
    try:
        nodes = hook.nodes(nodes=expand_hostlist(accounting.node_list))
    except (DescError, ValueError) as exc:
        log.warning("sinfo failed, node states of job %s unknown: %s", accounting.job_id, exc)
        return diagnosis
    notice = unavailable_notice(nodes, cluster)
    if notice is None:
        return diagnosis
    log.error("%s", notice)
    return dataclasses.replace(diagnosis, message=f"{diagnosis.message}. {notice}")


def partition_notice(hook: SlurmHook, cluster: str, state: Mapping[str, Any], log: TaskLog) -> str | None:
    """Say (and log) which nodes of the job's partition SLURM left down or drained, and why.

    For a job that vanished: a controller that lost its state also drains the nodes its lost
    jobs ran on ("Duplicate jobid").
    """
    nodes = partition_nodes_of(hook, state, log)
    notice = unavailable_notice(nodes, cluster) if nodes else None
    if notice:
        log.error("%s", notice)
    return notice
