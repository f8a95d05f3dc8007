"""SubmissionHoldTrigger: a job not submitted yet waits out a maintenance window or a partition that is down.

An operator that finds its cluster in maintenance (or its partition down) before sbatch defers to
this trigger instead of submitting or failing: the task waits deferred (no worker slot, no retry
spent) and resumes, to submit, once the cluster's shared :class:`~airflow_desc.triggers.slurm.ClusterPoller`
reads reservations and partitions that let the job go
(:func:`~airflow_desc.slurm.maintenance.submission_hold` on each poll's answer). Many tasks held on
one cluster cost one SSH call per interval together, as their jobs will.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_desc.slurm.maintenance import (
    ClusterAvailability,
    MaintenanceWindow,
    SubmissionHold,
    submission_hold,
)
from airflow_desc.triggers.slurm import ClusterPoller

__all__ = ["SubmissionHoldTrigger"]


class SubmissionHoldTrigger(BaseTrigger):
    """Wait until a job of this shape may be submitted to the cluster; fire ``{"status": "clear", ...}``.

    The event: ``{"status": "clear", "reason": <what it waited for>, "waited_s": <seconds>}``.

    :param ssh_conn_id: the cluster's SSH connection.
    :param cluster: the cluster's profile name, for the reason.
    :param reason: why the job waits (``waiting for maintenance to end at ...``), as the operator
        found it; the status page shows it.
    :param walltime_s: the job's walltime in seconds.
    :param partition: its partition (``None``: the cluster's default).
    :param nodes: the nodes it asks for.
    :param windows: the profile's own windows: ``[start, end]`` ISO times with a zone.
    :param jump_conn_id: the cluster's bastion connection, if any.
    :param poll_interval: seconds between polls of the cluster.
    """

    def __init__(
        self,
        *,
        ssh_conn_id: str,
        cluster: str,
        reason: str,
        walltime_s: int,
        partition: str | None = None,
        nodes: int = 1,
        windows: Sequence[Sequence[str]] = (),
        jump_conn_id: str | None = None,
        poll_interval: float = 30.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ssh_conn_id = ssh_conn_id
        self.cluster = cluster
        self.reason = reason
        self.walltime_s = int(walltime_s)
        self.partition = partition
        self.nodes = int(nodes)
        # Read now: a bad window fails this trigger alone, here, not the poll shared by its siblings.
        self.windows = [
            MaintenanceWindow(datetime.fromisoformat(start), datetime.fromisoformat(end), "the profile's")
            for start, end in windows
        ]
        self.jump_conn_id = jump_conn_id
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "cluster": self.cluster,
                "reason": self.reason,
                "walltime_s": self.walltime_s,
                "partition": self.partition,
                "nodes": self.nodes,
                "windows": [[w.start.isoformat(), w.end.isoformat()] for w in self.windows],
                "jump_conn_id": self.jump_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    def hold(self, availability: ClusterAvailability | None, now: datetime) -> SubmissionHold | None:
        """Return what still holds the job on this answer of the cluster; ``None`` when it may go."""
        return submission_hold(
            availability, cluster=self.cluster, partition=self.partition, walltime_s=self.walltime_s,
            nodes=self.nodes, now=now, windows=self.windows,
        )  # fmt: skip

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait on the cluster's poller until the job may go; yield the one event."""
        started = time.monotonic()
        self.log.info("%s; re-checked every %g s", self.reason, self.poll_interval)
        poller = ClusterPoller.for_cluster(self.ssh_conn_id, self.jump_conn_id, self.poll_interval)
        await poller.wait_until_clear(self.hold, interval=self.poll_interval)
        waited = time.monotonic() - started
        yield TriggerEvent({"status": "clear", "reason": self.reason, "waited_s": round(waited, 1)})  # type: ignore[no-untyped-call]
