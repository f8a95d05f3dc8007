"""Wait for a job from the worker (``deferrable=False``), as the trigger's poller does.

A job sacct and squeue lack is asked of the controller (``scontrol``) before it is declared
vanished: its accounting may have been purged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from airflow_desc.exceptions import DescError, SlurmJobFailed
from airflow_desc.slurm import CONTROLLER_NOTE, ControllerJob, JobAccounting

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfile
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.operators.job_checks import TaskLog

__all__ = ["FAST_POLL_FOR_S", "FAST_POLL_S", "poll_in_worker", "poll_waits"]

#: Seconds between the first polls of a job waited for in the worker (one command on the open SSH
#: connection each): a short job, the reason to wait in the worker, is seen ending this soon.
FAST_POLL_S = 0.5
#: For how long after the submission the polls come every :data:`FAST_POLL_S`; then each wait is
#: twice the one before, up to the profile's poll interval.
FAST_POLL_FOR_S = 10.0


def poll_waits(interval: float) -> Iterator[float]:
    """Yield the waits before each poll: :data:`FAST_POLL_S` for :data:`FAST_POLL_FOR_S`, then doubling.

    >>> import itertools
    >>> list(itertools.islice(poll_waits(5.0), 19, 24))
    [0.5, 1.0, 2.0, 4.0, 5.0]
    """
    wait = min(FAST_POLL_S, interval)
    waited = 0.0
    while True:
        yield wait
        waited += wait
        if waited >= FAST_POLL_FOR_S:
            wait = min(wait * 2, interval)


def poll_in_worker(
    hook: SlurmHook, profile: ClusterProfile, job_id: str, interval: float, log: TaskLog
) -> tuple[JobAccounting, str | None]:
    """Poll until the job ends; return its accounting and the record's note.

    The note is :data:`~airflow_desc.slurm.CONTROLLER_NOTE` for a job settled from the
    controller's answer (see :class:`~airflow_desc.operators.slurm.FinishedJob`), else ``None``.

    :param hook: the cluster's hook.
    :param profile: the cluster's profile (its ``vanish_grace``).
    :param job_id: the job.
    :param interval: seconds between polls, at most: every :data:`FAST_POLL_S` for the first
        :data:`FAST_POLL_FOR_S` seconds, then each wait twice the one before until it reaches
        ``interval`` (a short job, the reason to wait in the worker, is seen ending at once).
    :param log: the task's logger.
    :raises SlurmJobFailed: when no command has known the job for ``vanish_grace`` seconds.
    """
    first_missing: float | None = None
    waits = poll_waits(interval)
    while True:
        time.sleep(next(waits))
        try:
            acct = hook.sacct([job_id]).get(job_id)
            queued = acct is None and bool(hook.squeue([job_id]))
        except DescError as exc:
            log.warning("poll of job %s failed, will retry: %s", job_id, exc)
            continue
        if acct is not None and acct.job is not None:
            if acct.is_terminal and not acct.is_placeholder:
                return acct, None
            first_missing = None
        elif queued:
            first_missing = None
        elif (controller := _controller_job(hook, job_id, log)) is not None:
            first_missing = None
            if controller.is_terminal:
                return controller.to_accounting(), CONTROLLER_NOTE
        else:
            first_missing = first_missing or time.monotonic()
            if time.monotonic() - first_missing > profile.vanish_grace:
                raise SlurmJobFailed(
                    f"job {job_id} vanished: neither sacct, squeue nor scontrol on {profile.name} has "
                    f"known it for {profile.vanish_grace:.0f} s; rerun the task.",
                    job_id=job_id, state="UNKNOWN", exit_code=None, reason="unknown-state",
                )  # fmt: skip


def _controller_job(hook: SlurmHook, job_id: str, log: TaskLog) -> ControllerJob | None:
    try:
        return hook.controller_jobs([job_id]).get(job_id)
    except DescError as exc:
        log.warning("asking the controller about job %s failed: %s", job_id, exc)
        return None
