"""Fallback clusters: where a try's job goes when its cluster is in maintenance or its retries are spent.

A process may name fallback clusters (``resources.fallback_clusters: [s3df]`` after
``cluster: perlmutter``; the operators' ``fallback_clusters``). Before sbatch each try is placed:
:func:`place_job` decides, with no I/O, from what :class:`ClusterAnswers` asks each cluster (once,
and only when the decision needs it):

- **Retries spent.** The last tries of a task instance go to the fallbacks, one each, in order
  (:func:`retry_fallback`): with ``retries: 2`` and one fallback, tries 1 and 2 run on the cluster
  and try 3 on the fallback. The first try always runs on the cluster: a task without retries never
  moves for this reason.
- **Maintenance.** A try that its cluster would hold (a maintenance window over its walltime, its
  partition down: :func:`~airflow_desc.slurm.maintenance.submission_hold`) goes to the first fallback
  that would not hold it and has room, instead of waiting deferred.
- **Queue bound.** A fallback has room while fewer than its ``max_queued_jobs`` airflow-desc jobs are
  queued or running there (``squeue --me`` on its login, jobs named by
  :func:`~airflow_desc.operators.job_names.job_name_for`): a task's Airflow pool bounds only its own
  cluster's queue. A full fallback is passed over, and the log says so; so is one that cannot be
  reached or cannot run the job.

When nothing can take the job now it waits deferred on the first hold met (usually its own
cluster's maintenance), and the log says which fallbacks were passed over and why. A job moved to a
fallback asks for what it asked for on its cluster (raised by earlier escalations), capped to the
fallback's node and walltime (:meth:`~airflow_desc.clusters.ClusterProfile.fit`), on the fallback
profile's partition; its record keeps ``extra["fallback"]`` (from, to, why).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_desc.exceptions import DescError
from airflow_desc.operators.job_names import is_job_name
from airflow_desc.operators.submission_hold import HoldRequest, hold_before_submit
from airflow_desc.slurm.maintenance import SubmissionHold
from airflow_desc.slurm.parse import SqueueRow

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfile
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.operators.job_checks import TaskLog

__all__ = [
    "MAINTENANCE",
    "RETRIES_SPENT",
    "ClusterAnswers",
    "Placement",
    "place_job",
    "queue_room",
    "retry_fallback",
]

#: Why a job moved: its cluster would hold it (maintenance, a partition down).
MAINTENANCE = "maintenance"
#: Why a job moved: its tries on its cluster are spent.
RETRIES_SPENT = "retries-spent"


@dataclass(frozen=True)
class Placement:
    """Where a try's job goes.

    :param cluster: the cluster it is submitted to (or waits for, with ``hold``).
    :param moved_from: the process's own cluster when ``cluster`` is a fallback, else ``None``.
    :param why: :data:`MAINTENANCE` or :data:`RETRIES_SPENT` for a move, else ``""``.
    :param reason: what the task log and the record say of the move, or of the fallbacks passed over.
    :param hold: what the job waits for (deferred) when no cluster can take it now.
    """

    cluster: str
    moved_from: str | None = None
    why: str = ""
    reason: str = ""
    hold: SubmissionHold | None = None

    def record(self) -> dict[str, Any] | None:
        """Return what the job's history record keeps of a move (``extra["fallback"]``); ``None``: none."""
        if self.moved_from is None:
            return None
        return {"from": self.moved_from, "to": self.cluster, "why": self.why, "reason": self.reason}


def retry_fallback(fallbacks: Sequence[str], *, try_number: int, max_tries: int, retries: int) -> str | None:
    """Return the fallback this try goes to because the tries on its cluster are spent, else ``None``.

    The last ``min(len(fallbacks), retries)`` tries go to the fallbacks in order; Airflow's
    ``max_tries`` counts from the latest clear, so a cleared task starts on its cluster again.

    :param fallbacks: the process's fallback clusters, in order.
    :param try_number: this try (from 1).
    :param max_tries: the task instance's ``max_tries`` (its last try is ``max_tries + 1``).
    :param retries: the task's retries.
    """
    moved = min(len(fallbacks), max(0, retries))
    left = max_tries + 1 - try_number  # tries after this one
    if left >= moved or left < 0:
        return None
    return fallbacks[moved - 1 - left]


def queue_room(cluster: str, rows: Sequence[SqueueRow], max_queued_jobs: int) -> str | None:
    """Return why ``cluster`` has no room for one more job (``None``: it has).

    :param cluster: its name, for the message.
    :param rows: the login user's jobs there (``squeue --me``).
    :param max_queued_jobs: its profile's bound.
    """
    ours = sum(1 for row in rows if is_job_name(row.name) and not row.state.is_terminal)
    if ours < max_queued_jobs:
        return None
    return (
        f"fallback {cluster} is full: {ours} airflow-desc jobs queued or running, "
        f"max_queued_jobs {max_queued_jobs}"
    )


def place_job(
    cluster: str,
    fallbacks: Sequence[str],
    *,
    retry_target: str | None,
    hold_of: Callable[[str], SubmissionHold | None],
    full: Callable[[str], str | None],
) -> Placement:
    """Return where a try's job goes: its cluster, a fallback, or nowhere yet (a hold to wait on).

    :param cluster: the process's own cluster.
    :param fallbacks: its fallback clusters, in order.
    :param retry_target: the fallback its spent retries send it to (:func:`retry_fallback`), if any.
    :param hold_of: what holds a job of this try on a cluster now (``None``: nothing); asked lazily,
        in order, so a cluster that is not needed is not asked.
    :param full: why a fallback has no room now (``None``: it has), asked only of fallbacks.
    """
    if retry_target is not None:
        order = [retry_target, *(f for f in fallbacks if f != retry_target), cluster]
        why = RETRIES_SPENT
    else:
        order = [cluster, *fallbacks]
        why = MAINTENANCE
    passed: list[str] = []
    first_hold: tuple[str, SubmissionHold] | None = None
    for name in order:
        hold = hold_of(name)
        if hold is not None:
            passed.append(hold.reason)
            first_hold = first_hold or (name, hold)
            continue
        no_room = full(name) if name != cluster else None
        if no_room is not None:
            passed.append(no_room)
            continue
        said = "; ".join(passed)
        if name == cluster:
            return Placement(cluster, reason=f"stays on {cluster}: {said}" if said else "")
        if why == RETRIES_SPENT:
            reason = f"its tries on {cluster} are spent: the last go to fallback {name}"
        else:
            reason = f"{cluster} cannot take it now: moved to fallback {name}"
        return Placement(name, moved_from=cluster, why=why, reason=f"{reason} ({said})" if said else reason)
    assert first_hold is not None  # the process's own cluster is in the order: it held the job
    name, hold = first_hold
    return Placement(name, reason=f"no cluster can take it now: {'; '.join(passed)}", hold=hold)


class ClusterAnswers:
    """What each cluster a try may go to says now, asked once each and only when needed.

    A fallback that cannot answer (unreachable, an expired key, a request above its limits) is
    passed over with what went wrong; the task's own cluster's errors are raised, as without fallbacks.

    :param own: the task's own cluster.
    :param profile_of: the profile of a cluster name.
    :param hook_of: a hook of a profile (one connection per cluster, kept here).
    :param resources_of: the try's resources on a profile's cluster.
    :param nodes: the nodes the job asks for.
    :param log: the task log.
    """

    def __init__(
        self,
        own: str,
        profile_of: Callable[[str], ClusterProfile],
        hook_of: Callable[[ClusterProfile], SlurmHook],
        resources_of: Callable[[ClusterProfile], Mapping[str, Any]],
        nodes: int,
        log: TaskLog,
    ) -> None:
        self.own = own
        self._profile_of, self._hook_of, self._resources_of = profile_of, hook_of, resources_of
        self.nodes, self.log = nodes, log
        self._hooks: dict[str, SlurmHook] = {}
        self.requests: dict[str, HoldRequest] = {}
        self._unanswered: dict[str, str] = {}

    def hook(self, name: str) -> SlurmHook:
        """Return the hook of a cluster."""
        if name not in self._hooks:
            self._hooks[name] = self._hook_of(self._profile_of(name))
        return self._hooks[name]

    def hold(self, name: str) -> SubmissionHold | None:
        """Return what holds the job on a cluster now (``None``: nothing, or a fallback that cannot say)."""
        profile = self._profile_of(name)
        try:
            self.requests[name], hold = hold_before_submit(
                self.hook(name), profile, self._resources_of(profile), self.nodes, self.log
            )
        except DescError as exc:
            if name == self.own:
                raise
            self._unanswered[name] = f"fallback {name} cannot take it: {exc}"
            return None
        return hold

    def full(self, name: str) -> str | None:
        """Return why a fallback has no room now (or could not be asked), ``None`` when it has room."""
        if name in self._unanswered:
            return self._unanswered[name]
        try:
            return queue_room(name, self.hook(name).own_queue(), self._profile_of(name).max_queued_jobs)
        except DescError as exc:
            return f"fallback {name} did not say its queue: {exc}"

    def forget(self) -> None:
        """Forget the answers (not the connections): ask again after a wait."""
        self.requests.clear()
        self._unanswered.clear()
