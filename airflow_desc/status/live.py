"""Live process states of DAG runs in progress, read from databases only.

The history store holds what the operators and the listener recorded: attempts that ended (and
skips). The DC1 table's Waiting, Ready and Queued columns, and the Submitted / Running of
processes whose record is not written yet, come from Airflow's task-instance states instead
(Airflow calls listeners only for running / success / failed / skipped).
:func:`live_process_instances` reads them and says which process instances each task instance
stands for; :func:`airflow_desc.status.merge.merge_live` merges them with the history's counts.

Nothing here parses a DAG file or opens SSH: the api-server that serves the status page needs
Airflow's metadata DB and the history DB, no DAG files and no SSH keys. It reads:

* from Airflow's metadata DB: the queued and running DAG runs of DAGs tagged ``desc``, their
  task instances, the XCom of bundled sub-tasks' ``streams`` tasks (which streams each bundle
  runs), and the kwargs of the triggers deferred task instances wait on (the SLURM job and its
  cluster login);
* from the history (:mod:`airflow_desc.history.live`): each DAG's **process plan**
  (:class:`~airflow_desc.status.plans.DagProcesses`: which process instances each task instance
  stands for, and the workflow's order), stored by the plugin's listener in the worker when a
  task of the DAG starts (:mod:`airflow_desc.status.dag_plans` makes it). A DAG with no plan
  stored yet has had no task start: its runs stand for nothing live (said in a debug log);
* from the history too: the **SLURM job states** the triggers' per-cluster pollers write, one
  write per poll per cluster (:class:`~airflow_desc.triggers.slurm.ClusterPoller`). A deferred
  task instance only says that its job is in SLURM; the job's polled state (``slurm_state``)
  says whether it is pending or running, which the status table then counts by
  :data:`~airflow_desc.reports.status.SLURM_STATE_COLUMN`. A state polled more than
  :data:`STALE_AFTER_POLLS` poll intervals (plus :data:`STALE_SLACK_S`) ago is not trusted: the
  job counts as its task instance says (Submitted) and a note says why (is the triggerer up?).

A task instance deferred on a :class:`~airflow_desc.triggers.hold.SubmissionHoldTrigger` submitted
nothing yet: it waits for a maintenance window to end or a partition to come up. It counts as
Queued (column ``hold``: the trigger's reason), and a note per reason says what it waits for.

Only DAG runs that are queued or running are read: a finished run is counted from the history
alone. Airflow's tables are read through the DBAPI where the configuration allows
(:mod:`airflow_desc.status.metadata_db`: no import of Airflow, a second of CPU less for
``airflow-desc status``), else through Airflow's ORM: the same rows either way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_desc.history.records import INSTANCE_KEY
from airflow_desc.status.plans import BundleIdentity, DagProcesses, PlanError, ProcessIdentity

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

__all__ = [
    "LIVE_COLUMNS",
    "SLURM_JOB_TRIGGER",
    "SUBMISSION_HOLD_TRIGGER",
    "BundleIdentity",
    "DagProcesses",
    "ProcessIdentity",
    "TaskInstanceRow",
    "hold_notes",
    "instances_of",
    "live_process_instances",
    "live_rows",
    "order_of",
    "plans_of",
    "process_order",
    "slurm_states",
    "states_of",
    "stored_plans",
]

log = logging.getLogger(__name__)

#: The columns of :func:`live_process_instances`: the identity of a process instance as the
#: history keys it (``stream`` is ``None`` for an instance that is a task instance of its own:
#: the task instance identifies it), what the table shows of it, and its task instance's state.
LIVE_COLUMNS = (
    *INSTANCE_KEY,
    "task",
    "version",
    "process_type",
    "ti_state",
    "try_number",
    "bundled",
    "slurm_state",
    "hold",
)
#: The DAG tag every airflow-desc DAG carries (generated ones get it from the graph).
DESC_TAG = "desc"
#: The class path of :class:`~airflow_desc.triggers.slurm.SlurmJobTrigger` in Airflow's ``trigger``
#: table (named, not imported: the trigger module brings the SSH hook with it).
SLURM_JOB_TRIGGER = "airflow_desc.triggers.slurm.SlurmJobTrigger"
#: The class path of :class:`~airflow_desc.triggers.hold.SubmissionHoldTrigger`: nothing submitted yet.
SUBMISSION_HOLD_TRIGGER = "airflow_desc.triggers.hold.SubmissionHoldTrigger"
#: A polled job state older than this many of its poller's intervals ...
STALE_AFTER_POLLS = 3
#: ... plus these seconds (a poll's own sacct over SSH takes a while) is stale.
STALE_SLACK_S = 60.0


@dataclass(frozen=True)
class TaskInstanceRow:
    """The part of a task instance (Airflow metadata ``task_instance``) this module reads.

    :param dag_id: the DAG.
    :param run_id: the DAG run.
    :param task_id: the task.
    :param map_index: its map index (-1: not mapped, or not expanded yet).
    :param state: the task-instance state, ``None`` for none.
    :param try_number: the try it is on (or last ran).
    :param slurm_state: for a deferred SLURM task, its job's state as sacct prints it, if read.
    :param hold: for a task deferred before submitting, what it waits for (``waiting for maintenance ...``).
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    slurm_state: str | None = None
    hold: str | None = None


def instances_of(
    processes: DagProcesses,
    ti: TaskInstanceRow,
    bundles: Mapping[tuple[str, str], Sequence[Sequence[Mapping[str, Any]]]],
) -> list[dict[str, Any]]:
    """Return the process instances a task instance stands for, as rows of :data:`LIVE_COLUMNS`.

    :param processes: the processes of the task instance's DAG.
    :param ti: the task instance.
    :param bundles: ``(run_id, streams task id)`` -> the bundles that task returned (each a list
        of streams); a bundle task instance whose bundles are not known stands for none.
    """
    from airflow_desc.workflow.naming import stream_path

    base = {
        "dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": ti.map_index,
        "ti_state": ti.state, "try_number": ti.try_number, "slurm_state": ti.slurm_state, "hold": ti.hold,
    }  # fmt: skip

    def row(identity: ProcessIdentity, stream: str | None, bundled: bool) -> dict[str, Any]:
        return {
            **base, "stream": stream, "process": identity.process, "task": identity.task,
            "version": identity.version, "process_type": identity.process_type, "bundled": bundled,
        }  # fmt: skip

    identity = processes.tasks.get(ti.task_id)
    if identity is not None:
        if identity.mapped and ti.map_index < 0:
            return []  # not expanded: its streams are not made yet
        return [row(identity, None, False)]
    bundle = processes.bundles.get(ti.task_id)
    if bundle is None or ti.map_index < 0:
        return []
    made = bundles.get((ti.run_id, bundle.streams_task_id))
    if made is None or ti.map_index >= len(made):
        return []
    return [
        row(identity, stream_path(stream), True)
        for stream in made[ti.map_index]
        for identity in bundle.processes
    ]


class _OrmTables:
    """What :class:`~airflow_desc.status.metadata_db.MetadataTables` reads, through Airflow's ORM."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def active_runs(
        self, tag: str, dag_ids: Iterable[str] | None, run_id: str | None
    ) -> list[tuple[str, str]]:
        import sqlalchemy as sa
        from airflow.models import DagRun
        from airflow.models.dag import DagTag

        tagged = sa.select(DagTag.dag_id).where(DagTag.name == tag)
        if dag_ids is not None:
            tagged = tagged.where(DagTag.dag_id.in_(list(dag_ids)))
        query = sa.select(DagRun.dag_id, DagRun.run_id).where(
            DagRun.state.in_(["queued", "running"]), DagRun.dag_id.in_(tagged)
        )
        if run_id is not None:
            query = query.where(DagRun.run_id == run_id)
        return [(dag_id, run) for dag_id, run in self.session.execute(query)]

    def xcom_values(
        self, dag_id: str, runs: Sequence[str], task_ids: Sequence[str]
    ) -> list[tuple[str, str, Any]]:
        import sqlalchemy as sa
        from airflow.models.xcom import XComModel

        query = sa.select(XComModel).where(
            XComModel.dag_id == dag_id, XComModel.run_id.in_(runs), XComModel.task_id.in_(task_ids),
            XComModel.map_index == -1, XComModel.key == "return_value",
        )  # fmt: skip
        return [(x.run_id, x.task_id, XComModel.deserialize_value(x)) for x in self.session.scalars(query)]

    def task_instances(self, dag_id: str, runs: Sequence[str]) -> list[tuple[str, str, int, Any, Any, Any]]:
        import sqlalchemy as sa
        from airflow.models import TaskInstance as TI  # noqa: N814 - as Airflow's own code calls it

        query = sa.select(TI.run_id, TI.task_id, TI.map_index, TI.state, TI.try_number, TI.trigger_id).where(
            TI.dag_id == dag_id, TI.run_id.in_(runs)
        )
        return [tuple(row) for row in self.session.execute(query)]

    def trigger_kwargs(
        self, dag_ids: Sequence[str], runs: Sequence[str], classpath: str
    ) -> list[tuple[int, dict[str, Any]]]:
        import sqlalchemy as sa
        from airflow.models import TaskInstance as TI  # noqa: N814
        from airflow.models.trigger import Trigger

        query = (
            sa.select(Trigger)
            .join(TI, TI.trigger_id == Trigger.id)
            .where(TI.dag_id.in_(list(dag_ids)), TI.run_id.in_(list(runs)), Trigger.classpath == classpath)
        )
        return [(int(t.id), t.kwargs) for t in self.session.scalars(query)]


def _active_runs(tables: Any, dag_ids: Iterable[str] | None, run_id: str | None) -> dict[str, list[str]]:
    """Return the queued and running runs of the DAGs tagged ``desc``, by DAG id."""
    active: dict[str, list[str]] = {}
    for dag_id, run in tables.active_runs(DESC_TAG, dag_ids, run_id):
        active.setdefault(dag_id, []).append(run)
    return active


def _made_bundles(
    tables: Any, processes: DagProcesses, runs: Sequence[str]
) -> dict[tuple[str, str], list[Any]]:
    """Return the bundles each ``streams`` task of the DAG returned, by (run id, task id)."""
    streams_ids = sorted({b.streams_task_id for b in processes.bundles.values()})
    if not streams_ids:
        return {}
    return {
        (run_id, task_id): value
        for run_id, task_id, value in tables.xcom_values(processes.dag_id, list(runs), streams_ids)
        if isinstance(value, list)
    }


def _task_instances(
    tables: Any,
    dag_id: str,
    runs: Sequence[str],
    slurm_states: Mapping[int, str],
    holds: Mapping[int, str] | None = None,
) -> list[TaskInstanceRow]:
    return [
        TaskInstanceRow(
            dag_id,
            run,
            task_id,
            int(map_index),
            None if state is None else str(getattr(state, "value", state)),
            int(try_number or 0),
            slurm_states.get(trigger_id) if trigger_id is not None else None,
            (holds or {}).get(trigger_id) if trigger_id is not None else None,
        )  # fmt: skip
        for run, task_id, map_index, state, try_number, trigger_id in tables.task_instances(
            dag_id, list(runs)
        )
    ]


def _holds(tables: Any, dag_ids: Iterable[str], runs: Iterable[str]) -> dict[int, str]:
    """Return what each task instance deferred before submitting waits for: trigger id -> reason."""
    return {
        id_: str(kwargs.get("reason") or "waiting to submit")
        for id_, kwargs in tables.trigger_kwargs(sorted(dag_ids), sorted(runs), SUBMISSION_HOLD_TRIGGER)
    }


def hold_notes(holds: Iterable[str]) -> list[str]:
    """Return one note per reason task instances wait for, with how many wait for it."""
    counts: dict[str, int] = {}
    for reason in holds:
        counts[reason] = counts.get(reason, 0) + 1
    return [
        f"{n} task instance(s) not submitted yet, counted as Queued: {reason}" for reason, n in counts.items()
    ]


def _slurm_jobs(tables: Any, dag_ids: Iterable[str], runs: Iterable[str]) -> dict[int, tuple[str, str, str]]:
    """Return the SLURM job each deferred task instance waits for: trigger id -> (ssh, jump, job id)."""
    return {
        id_: (str(kwargs["ssh_conn_id"]), str(kwargs.get("jump_conn_id") or ""), str(kwargs["job_id"]))
        for id_, kwargs in tables.trigger_kwargs(sorted(dag_ids), sorted(runs), SLURM_JOB_TRIGGER)
    }


def slurm_states(
    engine: Engine, jobs: Mapping[Any, tuple[str, str, str]], now: datetime | None = None
) -> tuple[dict[Any, str], list[str]]:
    """Return the polled state of each job, from the history's ``slurm_job_states``.

    :param engine: the history's engine.
    :param jobs: any key -> (ssh connection id, jump connection id or "", job id).
    :param now: the time to judge ages by (naive UTC; default now).
    :return: key -> the job's state as sacct printed it (jobs no poll saw yet, and stale states,
        are left out), and one note per cluster login whose states are stale.
    """
    from airflow_desc.history.live import job_states

    return states_of(job_states(engine, set(jobs.values())), jobs, now)


def states_of(
    polled: Mapping[Any, Any], jobs: Mapping[Any, tuple[str, str, str]], now: datetime | None = None
) -> tuple[dict[Any, str], list[str]]:
    """Return :func:`slurm_states` from the polled states already read (``(ssh, jump, job id)`` -> state)."""
    states: dict[Any, str] = {}
    stale: dict[tuple[str, str], list[float]] = {}
    for key, job in jobs.items():
        found = polled.get(job)
        if found is None:
            continue  # deferred a moment ago, not polled yet: Submitted, as its task instance says
        age = found.age_s(now)
        if age > STALE_AFTER_POLLS * found.poll_interval_s + STALE_SLACK_S:
            stale.setdefault(job[:2], []).append(age)
            continue
        states[key] = found.state
    notes = [
        f"{ssh}{f' (via {jump})' if jump else ''}: the SLURM states of {len(ages)} job(s) were last polled "
        f"{min(ages):.0f} s ago or more: counted as Submitted. The triggerer's poller writes them "
        "every poll; is the triggerer running?"
        for (ssh, jump), ages in sorted(stale.items())
    ]
    return states, notes


def stored_plans(engine: Engine, dag_ids: Iterable[str]) -> dict[str, DagProcesses]:
    """Return the process plans the history holds for these DAGs (see the module's docstring).

    A DAG without a plan (none of its tasks started yet) is left out, and said in a debug log; a
    plan this version cannot read is left out with a warning naming the DAG and the field.
    """
    from airflow_desc.history.live import process_plans_of

    return plans_of(process_plans_of(engine, sorted(set(dag_ids))), dag_ids)


def plans_of(found: Mapping[str, Any], dag_ids: Iterable[str]) -> dict[str, DagProcesses]:
    """Return :func:`stored_plans` from the stored plan documents already read (DAG id -> JSON)."""
    wanted = sorted(set(dag_ids))
    plans: dict[str, DagProcesses] = {}
    for dag_id in wanted:
        if dag_id not in found:
            log.debug("live states: no process plan stored for DAG %s yet (no task of it started)", dag_id)
            continue
        try:
            plans[dag_id] = DagProcesses.from_json(found[dag_id])
        except PlanError as exc:
            log.warning("live states: the stored process plan of DAG %s is not read: %s", dag_id, exc)
    return plans


def process_order(engine: Engine, dag_ids: Iterable[str]) -> list[tuple[str, str]]:
    """Return ``(task, process)`` of every process of these DAGs, each DAG in its workflow's order.

    What :func:`~airflow_desc.reports.status.status_table` takes as ``order``, so that the table
    reads as DC1's did (the spec's order, depth first) rather than alphabetically. From the
    plans stored in the history: DAGs with none add nothing.
    """
    return order_of(stored_plans(engine, dag_ids))


def order_of(plans: Mapping[str, DagProcesses]) -> list[tuple[str, str]]:
    """Return :func:`process_order` from the plans already read."""
    order: dict[tuple[str, str], None] = {}
    for dag_id in sorted(plans):
        order.update(dict.fromkeys(plans[dag_id].order))
    return list(order)


def live_process_instances(
    engine: Engine,
    *,
    workflow: str | None = None,
    run_id: str | None = None,
    variant: str | None = None,
    version: str | None = None,
    dag_ids: Iterable[str] | None = None,
    slurm: bool = True,
    problems: list[str] | None = None,
) -> pd.DataFrame:
    """Return the process instances of the queued and running DAG runs of airflow-desc DAGs.

    :param engine: the history's engine (process plans, polled SLURM job states).
    :param workflow: only this workflow (the history's workflow name, e.g. ``DC1-DM12``).
    :param run_id: only this DAG run.
    :param variant: only this workflow variant.
    :param version: only this version of the workflow (from its DAG's plan).
    :param dag_ids: only these DAGs (default: every DAG tagged ``desc``).
    :param slurm: read the polled state of the jobs that deferred task instances wait for, so
        that a job that started counts as Running, not Submitted (column ``slurm_state``).
    :param problems: if given, a note is appended for each cluster login whose states are stale.
    :return: a DataFrame with columns :data:`LIVE_COLUMNS`, one row per process instance.
    :raises sqlalchemy.exc.SQLAlchemyError: when Airflow's metadata database or the history cannot
        be read.
    """
    import pandas as pd

    from airflow_desc.status.metadata_db import NotPlain, open_metadata_tables

    wanted = {"workflow": workflow, "variant": variant, "workflow_version": version}
    read = (_EngineRecords(engine), wanted, dag_ids, run_id, slurm)
    tables = open_metadata_tables()
    rows: list[dict[str, Any]] | None = None
    if tables is not None:
        try:
            with tables:
                rows = live_rows(tables, *read, problems)
        except NotPlain as exc:  # a value only Airflow reads: the ORM reads them all
            log.debug("live states read through Airflow's ORM: %s", exc)
    if rows is None:
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = live_rows(_OrmTables(session), *read, problems)
    return pd.DataFrame.from_records(rows, columns=list(LIVE_COLUMNS))


class _EngineRecords:
    """What :func:`live_rows` reads of the history, through its engine (SQLAlchemy)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def process_plans(self, dag_ids: Iterable[str]) -> dict[str, Any]:
        from airflow_desc.history.live import process_plans_of

        return process_plans_of(self.engine, dag_ids)

    def job_states(self, jobs: Iterable[tuple[str, str, str]]) -> dict[Any, Any]:
        from airflow_desc.history.live import job_states

        return job_states(self.engine, jobs)


def live_rows(
    tables: Any,
    history: Any,
    wanted: Mapping[str, str | None],
    dag_ids: Iterable[str] | None,
    run_id: str | None,
    slurm: bool,
    problems: list[str] | None,
) -> list[dict[str, Any]]:
    """Return :func:`live_process_instances`' rows, as dicts.

    :param tables: Airflow's metadata tables (:class:`~airflow_desc.status.metadata_db.MetadataTables`,
        or through the ORM).
    :param history: the history's reads (``process_plans``, ``job_states``): through its engine, or
        :class:`~airflow_desc.history.live_records.LiveRecords`.
    """
    rows: list[dict[str, Any]] = []
    active = _active_runs(tables, dag_ids, run_id)
    plans = plans_of(history.process_plans(sorted(set(active))), active) if active else {}
    states: dict[int, str] = {}
    holds: dict[int, str] = {}
    notes: list[str] = []
    if slurm and plans:
        runs = [r for d in plans for r in active[d]]
        jobs = _slurm_jobs(tables, plans, runs)
        states, notes = states_of(history.job_states(set(jobs.values())), jobs)
        holds = _holds(tables, plans, runs)
    for dag_id, processes in sorted(plans.items()):
        if any(value is not None and getattr(processes, name) != value for name, value in wanted.items()):
            continue
        runs = active[dag_id]
        bundles = _made_bundles(tables, processes, runs)
        for ti in _task_instances(tables, dag_id, runs, states, holds):
            rows.extend(instances_of(processes, ti, bundles))
    if problems is not None:  # once the rows are read: a reader that gave up adds nothing twice
        problems.extend([*notes, *hold_notes(holds.values())])
    return rows
