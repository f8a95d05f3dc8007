"""Before sbatch: is the cluster in maintenance, or the job's partition down? Then wait, do not fail.

A try about to submit asks the cluster once (:meth:`~airflow_desc.hooks.slurm.SlurmHook.availability`:
``scontrol show reservation`` and ``sinfo`` in one SSH call on the connection the try already
holds; the triggerer's poller reads the same, but its answer lives in another process). When a
reservation would overlap the job's walltime, a window of the profile's ``maintenance`` list would,
or the partition is not up (:func:`~airflow_desc.slurm.maintenance.submission_hold`), nothing is
submitted: the task defers to a :class:`~airflow_desc.triggers.hold.SubmissionHoldTrigger` (no
worker slot, no retry spent; ``deferrable=False`` waits in the worker instead) and its log says
what it waits for. When the trigger fires, the try starts over (``execute``) and submits.

A cluster that cannot say (scontrol or sinfo failed) does not hold the job: sbatch is tried, and
says what is wrong if anything is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_desc.slurm.maintenance import SubmissionHold, submission_hold
from airflow_desc.triggers.hold import SubmissionHoldTrigger

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfile
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.operators.job_checks import TaskLog

__all__ = ["HoldRequest", "hold_before_submit"]


class HoldRequest:
    """What decides whether a job may go: its cluster, partition, walltime and nodes.

    :param profile: the cluster's profile (its own maintenance windows too).
    :param resources: the job's resources (:func:`~airflow_desc.operators.escalation.next_resources`):
        ``partition`` and ``time_limit_s`` (``None``: the cluster's longest walltime counts).
    :param nodes: the nodes it asks for.
    """

    def __init__(self, profile: ClusterProfile, resources: Mapping[str, Any], nodes: int) -> None:
        self.profile = profile
        self.partition: str | None = resources.get("partition")
        self.walltime_s = int(resources.get("time_limit_s") or profile.max_walltime_s)
        self.nodes = max(1, int(nodes))

    def hold(self, hook: SlurmHook, log: TaskLog) -> SubmissionHold | None:
        """Ask the cluster (one SSH call) and judge; ``None`` when the job may be submitted now."""
        started = time.monotonic()
        availability = hook.availability()
        took = time.monotonic() - started
        if availability is None:
            log.warning(
                "cluster %s did not say its reservations and partitions (scontrol or sinfo failed): "
                "submitting without checking for maintenance", self.profile.name,
            )  # fmt: skip
        else:
            log.info("maintenance check of %s: %.3f s", self.profile.name, took)
        return submission_hold(
            availability, cluster=self.profile.name, partition=self.partition, walltime_s=self.walltime_s,
            nodes=self.nodes, now=datetime.now(timezone.utc), windows=self.profile.maintenance_windows,
        )  # fmt: skip

    def trigger(self, hold: SubmissionHold, poll_interval: float) -> SubmissionHoldTrigger:
        """Return the trigger that waits out ``hold`` on the cluster's shared poller."""
        return SubmissionHoldTrigger(
            ssh_conn_id=self.profile.ssh_conn_id, cluster=self.profile.name, reason=hold.reason,
            walltime_s=self.walltime_s, partition=self.partition, nodes=self.nodes,
            windows=[[w.start.isoformat(), w.end.isoformat()] for w in self.profile.maintenance_windows],
            jump_conn_id=self.profile.jump_conn_id, poll_interval=poll_interval,
        )  # fmt: skip

    def wait_in_worker(self, hook: SlurmHook, hold: SubmissionHold, interval: float, log: TaskLog) -> None:
        """Wait from the worker (``deferrable=False``) until the job may go, asking every ``interval`` s."""
        current: SubmissionHold | None = hold
        while current is not None:
            log.warning("%s; asking %s again in %g s", current.reason, self.profile.name, interval)
            time.sleep(interval)
            current = self.hold(hook, log)


def hold_before_submit(
    hook: SlurmHook, profile: ClusterProfile, resources: Mapping[str, Any], nodes: int, log: TaskLog
) -> tuple[HoldRequest, SubmissionHold | None]:
    """Return the request and what holds it now (``None``: submit now), logging what it waits for."""
    request = HoldRequest(profile, resources, nodes)
    hold = request.hold(hook, log)
    if hold is not None:
        log.warning("not submitting to %s now, nothing is sent: %s", profile.name, hold.reason)
    return request, hold
