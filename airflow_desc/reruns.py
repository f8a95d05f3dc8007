"""Bulk reruns: clear the task instances behind the process instances a history query selects.

``airflow-desc rerun --reason TEXT [filters]`` is what an operator runs after fixing a cause:
"rerun every processEimage that ran out of memory in run X". The filters are those of
``airflow-desc history`` and select the latest attempt of each process instance; each selected
instance belongs to a task instance (for a bundled stream: its bundle's), and those task
instances are cleared in Airflow, as the UI's Clear does, with their downstream tasks by default
(a rerun result must reach what used it: the generated DAGs decide per stream whether to run).
A cleared bundle reruns only its streams that did not succeed (``SlurmBundleOperator``).

Before clearing, one :class:`~airflow_desc.history.records.RerunRequest` per task instance goes to
the history: who asked and why. The history writer copies them into the ``triggered_by`` and
``rerun_reason`` of the attempts that follow, so the permanent history says why each rerun ran.

:func:`plan_reruns` is pure (targets + DAG structure -> what to clear); :func:`clear_reruns`
reads the DAGs from Airflow's metadata DB and clears them, as ``airflow tasks clear`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from airflow_desc.history import HistoryStore

__all__ = ["RerunPlan", "cleared_task_instances", "clear_reruns", "plan_reruns", "rerun_targets"]


@dataclass
class RerunPlan:
    """What to clear in one DAG run.

    :param dag_id: the DAG.
    :param run_id: the run.
    :param targets: ``(task_id, map_index)`` of the task instances the query selected.
    :param downstream: task ids below them, cleared at every map index.
    :param instances: how many selected process instances they hold.
    """

    dag_id: str
    run_id: str
    targets: list[tuple[str, int]] = field(default_factory=list)
    downstream: list[str] = field(default_factory=list)
    instances: int = 0

    def task_ids(self) -> list[str | tuple[str, int]]:
        """Return the ``task_ids`` argument of Airflow's ``DAG.clear``."""
        return [*self.targets, *self.downstream]


def rerun_targets(instances: pd.DataFrame) -> pd.DataFrame:
    """Return the task instances behind selected process instances, with how many each holds.

    :param instances: latest attempts (``history.queries.process_instances(latest_only=True)``).
    :return: columns ``dag_id, run_id, task_id, map_index, instances, processes`` (the process
        names, comma-separated), sorted.
    """
    import pandas as pd

    columns = ["dag_id", "run_id", "task_id", "map_index", "instances", "processes"]
    if instances.empty:
        return pd.DataFrame(columns=columns)
    grouped = instances.groupby(["dag_id", "run_id", "task_id", "map_index"], sort=True)
    out = grouped.agg(
        instances=("process", "size"), processes=("process", lambda p: ",".join(sorted(set(map(str, p)))))
    )
    return out.reset_index()[columns]


def plan_reruns(
    targets: pd.DataFrame, downstream_of: Callable[[str, str], Iterable[str]] | None = None
) -> list[RerunPlan]:
    """Group the task instances to clear by DAG run, with what lies downstream of them.

    :param targets: :func:`rerun_targets`.
    :param downstream_of: ``(dag_id, task_id)`` -> the ids of every task downstream of it;
        ``None``: clear the targets alone.
    """
    plans: dict[tuple[str, str], RerunPlan] = {}
    for row in targets.itertuples(index=False):
        plan = plans.setdefault(
            (str(row.dag_id), str(row.run_id)), RerunPlan(str(row.dag_id), str(row.run_id))
        )
        plan.targets.append((str(row.task_id), int(row.map_index)))
        plan.instances += int(row.instances)
    for plan in plans.values():
        if downstream_of is None:
            continue
        chosen = {task_id for task_id, _ in plan.targets}
        below = {t for task_id in chosen for t in downstream_of(plan.dag_id, task_id)}
        plan.downstream = sorted(below - chosen)
    return list(plans.values())


def cleared_task_instances(plan: RerunPlan, session: Any, *, dag: Any = None) -> list[Any]:
    """Return the task instances clearing ``plan`` would clear (Airflow's dry run)."""
    dag = dag or _dag(plan.dag_id)
    return list(dag.clear(task_ids=plan.task_ids(), run_id=plan.run_id, dry_run=True, session=session))


def _dag(dag_id: str) -> Any:
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(dag_id)
    if dag is None:
        raise ValueError(
            f"DAG {dag_id!r} is not in Airflow's metadata DB (deleted, or never parsed): cannot rerun"
        )
    return dag


def downstream_in_airflow(dag_id: str, task_id: str) -> set[str]:
    """Return every task downstream of ``task_id`` in the DAG as Airflow has it serialized."""
    dag = _dag(dag_id)
    if task_id not in dag.task_dict:
        raise ValueError(f"DAG {dag_id!r} has no task {task_id!r} any more: cannot rerun it")
    return set(dag.get_task(task_id).get_flat_relative_ids(upstream=False))


def clear_reruns(
    plans: Sequence[RerunPlan],
    *,
    store: HistoryStore,
    requested_by: str,
    reason: str,
    dry_run: bool = False,
) -> Mapping[tuple[str, str], list[Any]]:
    """Record who and why, then clear each plan's task instances in Airflow.

    :param plans: :func:`plan_reruns`.
    :param store: the history store the requests go to (the one the operators write).
    :param requested_by: who asks.
    :param reason: why.
    :param dry_run: only return what would be cleared.
    :return: (dag_id, run_id) -> the task instances cleared (or that would be).
    """
    from airflow.utils.session import create_session

    from airflow_desc.history.records import RerunRequest

    done: dict[tuple[str, str], list[Any]] = {}
    with create_session() as session:
        for plan in plans:
            dag = _dag(plan.dag_id)
            tis = cleared_task_instances(plan, session, dag=dag)
            done[(plan.dag_id, plan.run_id)] = tis
            if dry_run or not tis:
                continue
            now = datetime.now(timezone.utc)
            chosen = set(plan.targets)
            below = f"{reason} (downstream of the rerun)"
            store.request_reruns([
                RerunRequest(
                    ti.dag_id, ti.run_id, ti.task_id, int(ti.map_index), int(ti.try_number or 0),
                    requested_by, reason if (ti.task_id, int(ti.map_index)) in chosen else below, now,
                )  # fmt: skip
                for ti in tis
            ])  # fmt: skip
            dag.clear(task_ids=plan.task_ids(), run_id=plan.run_id, session=session)
    return done
