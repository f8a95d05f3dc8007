"""Live process states of DAG runs in progress, read from Airflow's metadata database.

The history store holds what the operators and the listener recorded: attempts that ended (and
skips). The DC1 table's Waiting, Ready and Queued columns, and the Submitted / Running of
processes whose record is not written yet, come from Airflow's task-instance states instead
(Airflow calls listeners only for running / success / failed / skipped).
:func:`live_process_instances` reads them and says which process instances each task instance
stands for; :func:`airflow_desc.status.merge.merge_live` merges them with the history's counts.

Which process instances a task instance stands for
--------------------------------------------------

* **Generated DAGs** (:mod:`airflow_desc.workflow.render`), from the workflow graph:

  - a process that runs as a task: one instance;
  - a mapped process (one task instance per stream): one instance per expanded map index; a
    mapped task not expanded yet stands for streams not made yet, so for none;
  - a bundle task instance: each stream of its bundle (from the XCom of the sub-task's
    ``streams`` task) times each process of the bundled sub-task. Streams of nested sub-tasks
    are made inside the bundle, so they count once recorded.

* **Hand-written DAGs** tagged ``desc``: each :class:`~airflow_desc.operators.slurm.SlurmOperator`
  task (a batch process named by its ``process`` or task id, its task ``workflow_task``) and each
  task marked with :func:`~airflow_desc.plugins.listener.mark_script_process` (a script process).

Only DAG runs that are queued or running are read: a finished run is counted from the history
alone. Reading needs Airflow's metadata database (the ``airflow`` configuration of the process).

A deferred task instance only says that its SLURM job is in SLURM. The job itself says whether it
is pending or running: the trigger's kwargs name the job and its cluster login, and one ``sacct``
per cluster (:func:`slurm_job_states`) gives the state of every such job (``slurm_state``), which
the status table then counts by :data:`~airflow_desc.reports.status.SLURM_STATE_COLUMN`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_desc.history.records import INSTANCE_KEY

if TYPE_CHECKING:
    import pandas as pd

    from airflow_desc.workflow.graph import WorkflowGraph

__all__ = [
    "LIVE_COLUMNS",
    "BundleIdentity",
    "DagProcesses",
    "ProcessIdentity",
    "TaskInstanceRow",
    "dag_processes_from_dag",
    "dag_processes_from_graph",
    "instances_of",
    "live_process_instances",
    "process_order",
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
)
#: The DAG tag every airflow-desc DAG carries (generated ones get it from the graph).
DESC_TAG = "desc"


@dataclass(frozen=True)
class ProcessIdentity:
    """What the status table shows of a process: its row.

    :param process: the process name.
    :param task: its Pipeline II task.
    :param version: that task's version.
    :param process_type: ``batch`` or ``script``.
    :param workflow: the workflow (history ``workflow``) it belongs to.
    :param variant: the workflow variant ("" for none).
    :param mapped: whether it runs as one task instance per stream.
    """

    process: str
    task: str
    version: str
    process_type: str
    workflow: str
    variant: str = ""
    mapped: bool = False


@dataclass(frozen=True)
class BundleIdentity:
    """A bundle task: the processes each stream of its bundles runs, and where the bundles are.

    :param streams_task_id: the task whose return value is the list of bundles (lists of streams).
    :param processes: the processes of the bundled sub-task, in spec order.
    """

    streams_task_id: str
    processes: tuple[ProcessIdentity, ...]


@dataclass(frozen=True)
class DagProcesses:
    """The processes of one DAG, by Airflow task id.

    :param dag_id: the DAG.
    :param workflow: the workflow name the history records for it.
    :param variant: its variant ("" for none).
    :param tasks: task id -> the process that task runs.
    :param bundles: bundle task id -> what its instances run.
    :param order: ``(task, process)`` of every process, in the workflow's order (the spec's,
        depth first: the order of the DC1 status table).
    """

    dag_id: str
    workflow: str
    variant: str = ""
    tasks: Mapping[str, ProcessIdentity] = dataclasses.field(default_factory=dict)
    bundles: Mapping[str, BundleIdentity] = dataclasses.field(default_factory=dict)
    order: tuple[tuple[str, str], ...] = ()


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
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    slurm_state: str | None = None


def dag_processes_from_graph(graph: WorkflowGraph, dag_id: str) -> DagProcesses:
    """Return the processes of a generated DAG, from its workflow graph (no Airflow needed).

    :param graph: the graph the DAG was rendered from.
    :param dag_id: the DAG id it was rendered as (with any render suffix).
    """
    from airflow_desc.workflow.naming import bundle_task_id, streams_task_id, task_id_for

    variant = graph.variant or ""

    def identity(process: Any) -> ProcessIdentity:
        return ProcessIdentity(
            process=process.name,
            task=process.task,
            version=process.task_version,
            process_type=process.type,
            workflow=graph.name,
            variant=variant,
            mapped=process.runs_as == "mapped",
        )

    tasks = {task_id_for(p.path): identity(p) for p in graph.iter_processes() if p.runs_as != "in-bundle"}
    bundles = {
        bundle_task_id(t): BundleIdentity(streams_task_id(t), tuple(identity(p) for p in t.processes))
        for t in graph.iter_tasks()
        if t.bundling.state == "bundle" and t.processes
    }
    order = tuple((p.task, p.name) for p in graph.iter_processes())
    return DagProcesses(
        dag_id=dag_id, workflow=graph.name, variant=variant, tasks=tasks, bundles=bundles, order=order
    )


def dag_processes_from_dag(dag: Any) -> DagProcesses:
    """Return the processes of a hand-written DAG: its SLURM tasks and its marked script tasks.

    :param dag: an Airflow DAG (``airflow.sdk.DAG``).
    """
    from airflow_desc.operators.identity import ATTR, DescProcess
    from airflow_desc.operators.slurm import SlurmOperator

    tasks: dict[str, ProcessIdentity] = {}
    workflow = dag.dag_id
    for task in dag.tasks:
        partial = getattr(task, "partial_kwargs", None)  # a MappedOperator keeps its arguments there
        fields: Mapping[str, Any] = partial if isinstance(partial, Mapping) else vars(task)
        operator_class = getattr(task, "operator_class", type(task))
        name = task.task_id.rsplit(".", 1)[-1]
        mapped = isinstance(partial, Mapping)
        meta = getattr(task, ATTR, None)
        if isinstance(meta, DescProcess):
            tasks[task.task_id] = ProcessIdentity(
                process=meta.process or name, task=meta.task or "", version=meta.version,
                process_type="script", workflow=meta.workflow or workflow, mapped=mapped,
            )  # fmt: skip
        elif isinstance(operator_class, type) and issubclass(operator_class, SlurmOperator):
            tasks[task.task_id] = ProcessIdentity(
                process=fields.get("process") or name, task=fields.get("workflow_task") or "",
                version=fields.get("workflow_version") or "", process_type="batch",
                workflow=fields.get("workflow") or workflow, mapped=mapped,
            )  # fmt: skip
    order = tuple(dict.fromkeys((t.task, t.process) for t in tasks.values()))
    return DagProcesses(dag_id=dag.dag_id, workflow=workflow, tasks=tasks, order=order)


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
        "ti_state": ti.state, "try_number": ti.try_number, "slurm_state": ti.slurm_state,
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


def _generated_graph(dag: Any) -> WorkflowGraph | None:
    """Return the workflow graph a DAG was rendered from, or ``None`` for a hand-written DAG."""
    from airflow_desc.workflow.registry import workflow_for

    for task in dag.tasks:
        partial = getattr(task, "partial_kwargs", None)
        fields: Mapping[str, Any] = partial if isinstance(partial, Mapping) else vars(task)
        key = fields.get("workflow_key")
        if isinstance(key, str):
            return workflow_for(key).graph(fields.get("variant"))
    return None


#: Parsed DAG files by path, with the modification time they were parsed at (a long-running
#: api-server parses each file once until it changes).
_PARSED: dict[str, tuple[float, Any]] = {}


def _dag_bag(fileloc: str) -> Any:
    """Parse a DAG file (as ``airflow dags`` commands do), or return it as parsed before if unchanged."""
    import os

    from airflow.models import DagBag

    try:
        mtime = os.stat(fileloc).st_mtime
    except OSError:
        mtime = -1.0
    cached = _PARSED.get(fileloc)
    if cached is None or cached[0] != mtime:
        cached = (mtime, DagBag(dag_folder=fileloc, safe_mode=False, load_op_links=False))
        _PARSED[fileloc] = cached
    return cached[1]


def _dag_processes(dag_id: str, fileloc: str, bags: dict[str, Any]) -> DagProcesses | None:
    """Parse the DAG's file and return its processes."""
    if fileloc not in bags:
        bags[fileloc] = _dag_bag(fileloc)
    dag = bags[fileloc].dags.get(dag_id)
    if dag is None:
        log.warning(
            "live states: DAG %s is no longer in %s; its runs are counted from the history", dag_id, fileloc
        )
        return None
    graph = _generated_graph(dag)
    return dag_processes_from_graph(graph, dag_id) if graph is not None else dag_processes_from_dag(dag)


def _active_runs(session: Any, dag_ids: Iterable[str] | None, run_id: str | None) -> dict[str, list[str]]:
    """Return the queued and running runs of the DAGs tagged ``desc``, by DAG id."""
    import sqlalchemy as sa
    from airflow.models import DagRun
    from airflow.models.dag import DagTag

    tagged = sa.select(DagTag.dag_id).where(DagTag.name == DESC_TAG)
    if dag_ids is not None:
        tagged = tagged.where(DagTag.dag_id.in_(list(dag_ids)))
    query = sa.select(DagRun.dag_id, DagRun.run_id).where(
        DagRun.state.in_(["queued", "running"]), DagRun.dag_id.in_(tagged)
    )
    if run_id is not None:
        query = query.where(DagRun.run_id == run_id)
    active: dict[str, list[str]] = {}
    for dag_id, run in session.execute(query):
        active.setdefault(dag_id, []).append(run)
    return active


def _made_bundles(
    session: Any, processes: DagProcesses, runs: Sequence[str]
) -> dict[tuple[str, str], list[Any]]:
    """Return the bundles each ``streams`` task of the DAG returned, by (run id, task id)."""
    import sqlalchemy as sa
    from airflow.models.xcom import XComModel

    streams_ids = sorted({b.streams_task_id for b in processes.bundles.values()})
    if not streams_ids:
        return {}
    query = sa.select(XComModel).where(
        XComModel.dag_id == processes.dag_id, XComModel.run_id.in_(runs), XComModel.task_id.in_(streams_ids),
        XComModel.map_index == -1, XComModel.key == "return_value",
    )  # fmt: skip
    out: dict[tuple[str, str], list[Any]] = {}
    for xcom in session.scalars(query):
        value = XComModel.deserialize_value(xcom)
        if isinstance(value, list):
            out[(xcom.run_id, xcom.task_id)] = value
    return out


def _task_instances(
    session: Any, dag_id: str, runs: Sequence[str], slurm_states: Mapping[int, str]
) -> list[TaskInstanceRow]:
    import sqlalchemy as sa
    from airflow.models import TaskInstance as TI  # noqa: N814 - as Airflow's own code calls it

    query = sa.select(TI.run_id, TI.task_id, TI.map_index, TI.state, TI.try_number, TI.trigger_id).where(
        TI.dag_id == dag_id, TI.run_id.in_(runs)
    )
    return [
        TaskInstanceRow(
            dag_id,
            run,
            task_id,
            int(map_index),
            None if state is None else str(getattr(state, "value", state)),
            int(try_number or 0),
            slurm_states.get(trigger_id) if trigger_id is not None else None,
        )  # fmt: skip
        for run, task_id, map_index, state, try_number, trigger_id in session.execute(query)
    ]


def _slurm_jobs(session: Any, dag_ids: Iterable[str], runs: Iterable[str]) -> dict[int, tuple[str, str, str]]:
    """Return the SLURM job each deferred task instance waits for: trigger id -> (ssh, jump, job id)."""
    import sqlalchemy as sa
    from airflow.models import TaskInstance as TI  # noqa: N814
    from airflow.models.trigger import Trigger

    from airflow_desc.triggers.slurm import SlurmJobTrigger

    path = f"{SlurmJobTrigger.__module__}.{SlurmJobTrigger.__qualname__}"
    query = (
        sa.select(Trigger)
        .join(TI, TI.trigger_id == Trigger.id)
        .where(TI.dag_id.in_(list(dag_ids)), TI.run_id.in_(list(runs)), Trigger.classpath == path)
    )
    jobs: dict[int, tuple[str, str, str]] = {}
    for trigger in session.scalars(query):
        kwargs = trigger.kwargs
        jobs[int(trigger.id)] = (
            str(kwargs["ssh_conn_id"]),
            str(kwargs.get("jump_conn_id") or ""),
            str(kwargs["job_id"]),
        )
    return jobs


def slurm_job_states(jobs: Mapping[Any, tuple[str, str, str]]) -> tuple[dict[Any, str], list[str]]:
    """Ask each cluster for the state of its jobs: one ``sacct`` call per cluster login.

    :param jobs: any key -> (ssh connection id, jump connection id or "", job id).
    :return: key -> the job's state as sacct prints it (jobs sacct does not know are left out),
        and one message per cluster that could not be asked.
    """
    from airflow_desc.hooks.slurm import SlurmHook

    by_login: dict[tuple[str, str], dict[Any, str]] = {}
    for key, (ssh, jump, job_id) in jobs.items():
        by_login.setdefault((ssh, jump), {})[key] = job_id
    states: dict[Any, str] = {}
    problems: list[str] = []
    for (ssh, jump), wanted in by_login.items():
        try:
            accounting = SlurmHook(ssh, jump_conn_id=jump).sacct(sorted(set(wanted.values())))
        except Exception as exc:  # noqa: BLE001 - an unreachable cluster leaves its jobs Submitted
            problems.append(f"{ssh}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}")
            continue
        for key, job_id in wanted.items():
            if job_id in accounting:
                states[key] = accounting[job_id].state.raw
    return states, problems


def process_order(dag_ids: Iterable[str]) -> list[tuple[str, str]]:
    """Return ``(task, process)`` of every process of these DAGs, each DAG in its workflow's order.

    What :func:`~airflow_desc.reports.status.status_table` takes as ``order``, so that the table
    reads as DC1's did (the spec's order, depth first) rather than alphabetically. DAGs Airflow
    no longer has, or whose files cannot be parsed here, add nothing.
    """
    import sqlalchemy as sa
    from airflow.models import DagModel
    from airflow.utils.session import create_session

    order: dict[tuple[str, str], None] = {}
    bags: dict[str, Any] = {}
    with create_session() as session:
        query = sa.select(DagModel.dag_id, DagModel.fileloc).where(DagModel.dag_id.in_(sorted(set(dag_ids))))
        for dag_id, fileloc in session.execute(query.order_by(DagModel.dag_id)):
            processes = _dag_processes(dag_id, str(fileloc or ""), bags)
            if processes is not None:
                order.update(dict.fromkeys(processes.order))
    return list(order)


def live_process_instances(
    *,
    workflow: str | None = None,
    run_id: str | None = None,
    variant: str | None = None,
    dag_ids: Iterable[str] | None = None,
    slurm: bool = True,
    problems: list[str] | None = None,
) -> pd.DataFrame:
    """Return the process instances of the queued and running DAG runs of airflow-desc DAGs.

    :param workflow: only this workflow (the history's workflow name, e.g. ``DC1-DM12``).
    :param run_id: only this DAG run.
    :param variant: only this workflow variant.
    :param dag_ids: only these DAGs (default: every DAG tagged ``desc``).
    :param slurm: ask the clusters (one ``sacct`` per cluster login) for the state of the jobs
        that deferred task instances wait for, so that a job that started counts as Running, not
        Submitted (column ``slurm_state``).
    :param problems: if given, a message is appended for each cluster that could not be asked.
    :return: a DataFrame with columns :data:`LIVE_COLUMNS`, one row per process instance.
    :raises sqlalchemy.exc.SQLAlchemyError: when Airflow's metadata database cannot be read.
    """
    import pandas as pd
    import sqlalchemy as sa
    from airflow.models import DagModel
    from airflow.utils.session import create_session

    rows: list[dict[str, Any]] = []
    bags: dict[str, Any] = {}
    with create_session() as session:
        active = _active_runs(session, dag_ids, run_id)
        states: dict[int, str] = {}
        if slurm and active:
            jobs = _slurm_jobs(session, active, [r for runs in active.values() for r in runs])
            states, trouble = slurm_job_states(jobs)
            if problems is not None:
                problems.extend(trouble)
        files = session.execute(
            sa.select(DagModel.dag_id, DagModel.fileloc).where(DagModel.dag_id.in_(active))
        )
        for dag_id, fileloc in files:
            processes = _dag_processes(dag_id, str(fileloc or ""), bags)
            if processes is None or workflow not in (None, processes.workflow):
                continue
            if variant not in (None, processes.variant):
                continue
            runs = active[dag_id]
            bundles = _made_bundles(session, processes, runs)
            for ti in _task_instances(session, dag_id, runs, states):
                rows.extend(instances_of(processes, ti, bundles))
    return pd.DataFrame.from_records(rows, columns=list(LIVE_COLUMNS))
