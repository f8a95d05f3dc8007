"""Make a loaded DAG's process plan (:class:`~airflow_desc.status.plans.DagProcesses`).

Only where the DAG is loaded anyway: the plugin's listener calls :func:`dag_processes` in the
worker when a task starts, and stores the plan in the history. Whoever shows the status table
reads it there (:mod:`airflow_desc.status.live`) and never imports this module, which knows the
operators and the workflow registry.

Which process instances a task instance stands for
--------------------------------------------------

* **Generated DAGs** (:mod:`airflow_desc.workflow.render`), from the workflow graph
  (:func:`dag_processes_from_graph`):

  - a process that runs as a task: one instance;
  - a mapped process (one task instance per stream): one instance per expanded map index; a
    mapped task not expanded yet stands for streams not made yet, so for none;
  - a bundle task instance: each stream of its bundle (from the XCom of the sub-task's
    ``streams`` task) times each process of the bundled sub-task. Streams of nested sub-tasks
    are made inside the bundle, so they count once recorded.

* **Hand-written DAGs** tagged ``desc`` (:func:`dag_processes_from_dag`): each
  :class:`~airflow_desc.operators.slurm.SlurmOperator` task (a batch process named by its
  ``process`` or task id, its task ``workflow_task``) and each task marked with
  :func:`~airflow_desc.operators.identity.mark_script_process` (a script process).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc.status.plans import BundleIdentity, DagProcesses, ProcessIdentity

if TYPE_CHECKING:
    from airflow_desc.workflow.graph import WorkflowGraph

__all__ = ["dag_processes", "dag_processes_from_dag", "dag_processes_from_graph", "generated_graph"]


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
        dag_id=dag_id, workflow=graph.name, variant=variant, workflow_version=graph.version, tasks=tasks,
        bundles=bundles, order=order,
    )  # fmt: skip


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


def generated_graph(dag: Any) -> WorkflowGraph | None:
    """Return the workflow graph a DAG was rendered from, or ``None`` for a hand-written DAG."""
    from airflow_desc.workflow.registry import workflow_for

    for task in dag.tasks:
        partial = getattr(task, "partial_kwargs", None)
        fields: Mapping[str, Any] = partial if isinstance(partial, Mapping) else vars(task)
        key = fields.get("workflow_key")
        if isinstance(key, str):
            return workflow_for(key).graph(fields.get("variant"))
    return None


def dag_processes(dag: Any) -> DagProcesses:
    """Return the plan of a loaded DAG, generated or hand-written.

    :param dag: an Airflow DAG (``airflow.sdk.DAG``), as the worker loaded it.
    """
    graph = generated_graph(dag)
    return dag_processes_from_graph(graph, dag.dag_id) if graph is not None else dag_processes_from_dag(dag)
