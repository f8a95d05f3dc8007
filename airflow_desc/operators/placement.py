"""Where each try's job goes: its own cluster or a fallback, once that cluster may take it.

:class:`PlacesTries` is mixed into :class:`~airflow_desc.operators.slurm.SlurmOperator` (and so into
the bundle operator): before sbatch, :meth:`PlacesTries._placed` asks
:func:`~airflow_desc.operators.fallback.place_job` where the try goes, waits (deferred, or in the
worker) while no cluster can take it, and saves the choice before the job exists, so that a worker
that dies after sbatch finds the job where it went.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_desc.config import configured_cluster_profiles
from airflow_desc.operators.fallback import ClusterAnswers, Placement, place_job, retry_fallback

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_desc.clusters import ClusterProfile
    from airflow_desc.hooks.slurm import SlurmHook

__all__ = ["JOB_KEYS", "PlacesTries"]

#: The saved state's keys that name one job: dropped when the next try goes to another cluster.
JOB_KEYS = ("job_id", "job_name", "try_number", "log_pattern", "log_path", "submit_after", "submitted_at")


class PlacesTries:
    """Mixed into a SLURM operator: place each try's job on its cluster or a fallback (see the module)."""

    if TYPE_CHECKING:  # what the operator gives
        cluster: str | None
        fallback_clusters: Sequence[str]
        nodes: int
        retries: Any
        poll_interval: float | None
        deferrable: bool
        _on_cluster: str | None

        @property
        def log(self) -> Any: ...  # noqa: D102

        def _hook(self, profile: ClusterProfile) -> SlurmHook: ...
        def _resources(self, profile: ClusterProfile, state: Any) -> dict[str, Any]: ...
        def _save_state(self, context: Context, state: dict[str, Any]) -> None: ...
        def defer(self, *, trigger: Any, method_name: str, **kwargs: Any) -> Any: ...  # noqa: D102
        def execute(self, context: Context) -> Any: ...  # noqa: D102

    def _placed(
        self, context: Context, hook: SlurmHook, profile: ClusterProfile, state: dict[str, Any]
    ) -> tuple[SlurmHook, ClusterProfile]:
        """Return the hook and profile of the cluster this try's job goes to, once it may go there.

        Its own cluster, or a fallback (:func:`~airflow_desc.operators.fallback.place_job`); the choice
        is saved before sbatch, so that a crash finds the job where it went. When no cluster can take
        it now, defer until the one it waits for can (or wait in the worker, and choose again).
        """
        profiles = configured_cluster_profiles()
        answers = ClusterAnswers(
            profiles.get(self.cluster).name, profiles.get,
            lambda p: hook if p.name == profile.name else self._hook(p),
            lambda p: self._resources(p, state), self.nodes, self.log,
        )  # fmt: skip
        ti = context["ti"]
        max_tries = getattr(ti, "max_tries", None)
        target = None
        if isinstance(max_tries, int):
            target = retry_fallback(
                self.fallback_clusters,
                try_number=int(ti.try_number),
                max_tries=max_tries,
                retries=int(self.retries or 0),
            )
        while True:
            placement = place_job(
                answers.own, self.fallback_clusters, retry_target=target,
                hold_of=answers.hold, full=answers.full,
            )  # fmt: skip
            if placement.reason:
                self.log.warning("%s", placement.reason)
            request = answers.requests[placement.cluster]
            if placement.hold is None:
                break
            interval = self.poll_interval or request.profile.poll_interval
            if self.deferrable:
                trigger = request.trigger(placement.hold, interval)
                self.defer(trigger=trigger, method_name="execute_after_hold")
            request.wait_in_worker(answers.hook(placement.cluster), placement.hold, interval, self.log)
            answers.forget()
        self._note_placement(context, placement, state)
        return answers.hook(placement.cluster), request.profile

    def _note_placement(self, context: Context, placement: Placement, state: dict[str, Any]) -> None:
        """Save, before sbatch, which cluster the job goes to when it is a fallback (and why).

        On another cluster than the last job's, that job's id and paths go: they were the other
        cluster's (its work_dir may differ), and it was recorded or found gone before this placement.
        """
        moved = placement.record()
        self._on_cluster = placement.cluster if moved else None
        if state.get("cluster") == self._on_cluster and moved is None:
            return
        if state.get("cluster") != self._on_cluster:
            for key in JOB_KEYS:
                state.pop(key, None)
        state.pop("cluster", None)
        state.pop("fallback", None)
        if moved is not None:
            state.update(cluster=placement.cluster, fallback=moved)
        self._save_state(context, state)

    def execute_after_hold(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume once the maintenance ended or the partition came up: start the try over, and submit."""
        self.log.info("done waiting (%s s): %s; submitting now", event.get("waited_s"), event.get("reason"))
        return self.execute(context)
