"""The Airflow pools that bound each cluster's queued SLURM jobs: made by ``pools sync``, or on demand.

Generated batch and bundle tasks run in their cluster's pool (``slurm_<name>``, or the profile's
``pool``) with ``max_queued_jobs`` slots, deferred tasks counted: a job waiting in SLURM's queue
keeps its slot. DAG parsing cannot reach the metadata database, so the pools are made here:

- :func:`sync_pools` (``airflow-desc pools sync``, run by the deployment after ``airflow db
  migrate`` and after a profile changes) creates or resizes one pool per cluster profile;
- :func:`on_dag_run_running`, a listener the plugin registers, runs in the scheduler when a DAG run
  starts: a cluster pool its task instances name that does not exist yet is created from the
  profile, with a warning saying to run ``pools sync`` (Airflow would otherwise never schedule
  them, saying only "non-existent pool" in the scheduler's log). A missing pool that no profile
  names is logged as an error saying what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.listeners import hookimpl

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfile, ClusterProfiles

__all__ = ["PoolChange", "on_dag_run_running", "pools_of_run", "sync_pools"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolChange:
    """What :func:`sync_pools` did to one pool.

    :param pool: the pool name.
    :param slots: its slots now.
    :param before: its slots before (``None``: created).
    """

    pool: str
    slots: int
    before: int | None

    def __str__(self) -> str:
        was = "created" if self.before is None else f"was {self.before}"
        return f"pool {self.pool}: {self.slots} slots (deferred tasks included; {was})"


def _description(profile: ClusterProfile) -> str:
    return f"airflow-desc: jobs queued or running on cluster {profile.name}"


def sync_pools(profiles: ClusterProfiles, *, dry_run: bool = False) -> list[PoolChange]:
    """Create or resize one pool per cluster profile, sized by its ``max_queued_jobs``.

    :param profiles: the cluster profiles.
    :param dry_run: say what would change, change nothing.
    """
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    changes: list[PoolChange] = []
    with create_session() as session:
        for profile in profiles:
            held = Pool.get_pool(profile.pool_name, session=session)
            changes.append(
                PoolChange(profile.pool_name, profile.max_queued_jobs, held.slots if held else None)
            )
            if not dry_run:
                Pool.create_or_update_pool(
                    profile.pool_name, profile.max_queued_jobs, _description(profile), True, session=session
                )
        if dry_run:
            session.rollback()
    return changes


def pools_of_run(dag_id: str, run_id: str, session: Any) -> set[str]:
    """Return the pools the task instances of one DAG run are in."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    query = select(TaskInstance.pool).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    return {name for name in session.scalars(query.distinct()) if name}


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    """Create the missing cluster pools of a DAG run that starts (in the scheduler); never raise."""
    dag_id, run_id = dag_run.dag_id, dag_run.run_id
    try:
        # The DAG's tasks when the scheduler attached it; else the run's task instances.
        dag = dag_run.__dict__.get("dag")
        named = {task.pool for task in getattr(dag, "tasks", ()) if getattr(task, "pool", None)}
        _ensure_pools(dag_id, run_id, named)
    except Exception:
        log.exception("airflow-desc: could not check the pools of %s %s", dag_id, run_id)


def _ensure_pools(dag_id: str, run_id: str, named: set[str]) -> None:
    from airflow import settings
    from airflow.models.pool import Pool
    from sqlalchemy.orm import Session

    from airflow_desc.config import configured_cluster_profiles

    # A session of its own: the scheduler's (Airflow's scoped session) is inside its critical
    # section, where a commit is refused and a rollback would undo the scheduler's work.
    with Session(bind=settings.engine) as session, session.begin():
        wanted = named | pools_of_run(dag_id, run_id, session)
        missing = sorted(p for p in wanted if Pool.get_pool(p, session=session) is None)
        if not missing:
            return
        try:
            by_pool = {profile.pool_name: profile for profile in configured_cluster_profiles()}
        except Exception:  # no clusters file: nothing to size them from
            by_pool = {}
        for name in missing:
            profile = by_pool.get(name)
            if profile is None:
                log.error(
                    "airflow-desc: %s %s: pool %r does not exist, and no cluster profile names it: its tasks "
                    "will not be scheduled; create it (airflow pools set %s <slots> <description>) or fix "
                    "the task's pool",
                    dag_id, run_id, name, name,
                )  # fmt: skip
                continue
            Pool.create_or_update_pool(
                name, profile.max_queued_jobs, _description(profile), True, session=session
            )
            log.warning(
                "airflow-desc: %s %s: created the missing pool %s (%d slots, max_queued_jobs of cluster %s); "
                "run `airflow-desc pools sync` after `airflow db migrate` to make and size every pool",
                dag_id, run_id, name, profile.max_queued_jobs, profile.name,
            )  # fmt: skip
