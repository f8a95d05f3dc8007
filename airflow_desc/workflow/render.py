"""Render workflow specs into Airflow DAGs: one DAG per variant, task groups as the task hierarchy.

A DAG file in ``dags/`` is one line (and its import)::

    from airflow_desc.workflow.render import load_workflow_dags

    globals().update(load_workflow_dags(__file__, "workflows/dc1.yaml"))

and :func:`render_dags` does the work: spec -> :func:`~airflow_desc.workflow.graph.build_graph`
per variant -> one ``DAG`` each (id ``DC1-DM12_imsim-dithered``; tags ``desc``, the workflow,
``version:1.16``, ``variant:imsim-dithered``; a ``Param`` per variable, so that a run's conf
overrides any of them, e.g. ``{"scale": 0.001}``, and ``desc_payload``, ``emulate`` or ``dm``: what
the batch processes run, the spec's ``payload`` by default). How the spec becomes Airflow work:

====================================  ===========================================================
spec                                  DAG
====================================  ===========================================================
top-level batch process               :class:`~airflow_desc.operators.workflow.WorkflowBatchOperator`
                                      (in its cluster's pool, as bundles are: see below)
top-level script process              :class:`~airflow_desc.operators.workflow.WorkflowScriptOperator`
                                      (a ``PythonOperator``,
                                      marked with ``mark_script_process``: the listener records it)
sub-task                              a ``TaskGroup`` named after it, nested as the tasks are
                                      (``level1`` > ``level1ProcessFilter`` > ``level1ProcessPatch``)
its streams                           the group's ``streams`` task (``WorkflowStreamsOperator``):
                                      the values the feeding script returned, each with its
                                      parent's stream values (``{"filter": "r", "patch": "1,2"}``)
process of a sub-task not bundled     the operator above, mapped: ``.expand(stream=streams)``,
                                      one task instance per stream (map index shown as the
                                      stream path, ``filter=r/patch=1,2``)
bundled sub-task                      ``streams`` returns bundles (``TaskNode.split_streams``);
                                      one mapped :class:`~airflow_desc.operators.bundle.SlurmBundleOperator`
                                      instance per bundle (``<group>.bundle``) runs the sub-task
                                      and everything below it in one allocation
(the run)                             a last task ``verdict``
                                      (:class:`~airflow_desc.operators.verdict.WorkflowVerdictOperator`,
                                      ``all_done``, downstream of every leaf): the run fails when
                                      a process instance ended Failed / Terminated, not tolerated
``depends_on`` / ``after``            Airflow dependencies with trigger rule ``all_done``; the
                                      operator then decides *per stream*: it is Skipped (and
                                      recorded so) when something it ``depends_on`` did not
                                      succeed for its stream, or when ``skip_if`` holds
====================================  ===========================================================

Why ``all_done`` and not ``all_success``: sub-task processes are mapped tasks outside mapped
task groups (the streams of nested sub-tasks multiply at run time, the patches of each filter,
which nested mapped task groups cannot express), and Airflow judges a trigger rule on every
instance of the upstream task at once, so one failed patch would fail every other patch's
dependents. Each operator instead reads the states of its own stream's upstream instances (task
instance states through the Task SDK, streams and bundle summaries through XCom) and skips with
the reason recorded in the history, as Pipeline II counted Skipped.

**Queues bounded per cluster**: every batch and bundle task runs in its cluster's Airflow pool
(``slurm_<cluster>``, ``max_queued_jobs`` slots, deferred tasks counted: at most that many jobs
of the cluster wait in SLURM's queue or run), which ``airflow-desc pools sync`` creates; a task in
a pool that does not exist is never scheduled (the scheduler logs "non-existent pool"), so the
deployment runs ``pools sync`` after ``airflow db migrate`` and after changing a profile. A
profile's ``max_queued_per_task`` also bounds each such task across the DAG's runs
(``max_active_tis_per_dag``).

**Variables of a run** are, in order: the spec's defaults, the variant's, a render overlay's
(below), then the run's conf (or the trigger form's params). They are read once per task
instance (``LoadedWorkflow.run_variables`` in :mod:`airflow_desc.workflow.registry`). A spec whose
variables include ``survey_start`` and ``survey_years`` (``twinkles.yaml``) is scheduled by
:class:`~airflow_desc.timetables.SurveyYearTimetable` (start date the survey start, catchup on), and
its ``year`` is the run's survey year, from its data interval (a conf ``year`` that disagrees is an
error).

**Render overlays** (:mod:`airflow_desc.workflow.overlays`) render a spec for a site
(``dags/workflows/dc1-local.yaml``: a DAG id suffix, variables, retry and resource caps, the
bundles' launcher); ``load_workflow_dags`` takes specs and overlays alike (an overlay has
``extends``). **Run time**: operators carry names, not objects, and find their workflow in the
registry (:mod:`airflow_desc.workflow.registry`) that rendering fills; the operators themselves
live in :mod:`airflow_desc.operators.workflow` and :mod:`airflow_desc.operators.bundle`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator, Param, TaskGroup, get_parsing_context

from airflow_desc.clusters import ClusterProfiles
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.operators.bundle import SlurmBundleOperator
from airflow_desc.operators.identity import mark_script_process
from airflow_desc.operators.notify import check_notifiers
from airflow_desc.operators.verdict import WorkflowVerdictOperator
from airflow_desc.operators.workflow import (
    WorkflowBatchOperator,
    WorkflowScriptOperator,
    WorkflowStreamsOperator,
)
from airflow_desc.workflow.estimates import estimate_task_instances
from airflow_desc.workflow.graph import (
    ProcessNode,
    ResolvedResources,
    TaskNode,
    WorkflowGraph,
)
from airflow_desc.workflow.naming import BUNDLE_TASK, STREAMS_TASK, VERDICT_TASK
from airflow_desc.workflow.overlays import RenderOptions
from airflow_desc.workflow.registry import LoadedWorkflow, load_workflow, register, timetable_for
from airflow_desc.workflow.scripts import import_callable
from airflow_desc.workflow.spec_models import PAYLOAD_CONF_KEY, PAYLOADS, WorkflowSpec
from airflow_desc.workflow.spec_templates import Scalar

__all__ = ["load_workflow_dags", "render_dags"]

# Map indexes shown as stream paths; the label is set in the context by the running task (also
# when it resumes after deferral, which renders the template again).
_STREAM_LABEL = "{{ desc_stream | default('') }}"
_BUNDLE_LABEL = "{{ desc_bundle | default('') }}"


def render_dags(
    spec: str | os.PathLike[str] | WorkflowSpec,
    *,
    clusters: ClusterProfiles | None = None,
    options: RenderOptions | None = None,
) -> dict[str, DAG]:
    """Build the DAGs of a workflow: one per variant.

    :param spec: a spec file, a render overlay file, or a loaded spec (registered under its
        ``source`` and name, so that one DAG file may render several inline specs).
    :param clusters: cluster profiles; default: the configured ones.
    :param options: render options (an overlay file's replace them).
    :return: DAGs by DAG id; in a task process, only the DAG of its task instance (see below).
    :raises WorkflowSpecError: for a bad spec or overlay, or a process named ``streams`` /
        ``bundle`` in a sub-task.

    A task process parses its DAG file before it runs its task (twice for a deferred task), and
    Airflow tells the file which DAG it needs (``get_parsing_context().dag_id``): only that DAG
    is built then, as Airflow's "dynamic DAG generation" guide advises; each other DAG would cost
    ~50 ms of the task's CPU (``benchmarks/parse_cost.py``). The spec is still loaded and
    registered, so that the operators find their workflow. The DAG processor sets no DAG id and
    gets every DAG.
    """
    if isinstance(spec, WorkflowSpec):
        workflow = register(spec, options, clusters)
    else:
        workflow = load_workflow(spec, clusters=clusters, options=options)
    wanted = get_parsing_context().dag_id
    if wanted is None:  # the DAG processor: a bad notifier is an import error of the DAG file
        check_notifiers(workflow.spec.notify, workflow.spec.source)
    dags: dict[str, DAG] = {}
    for variant in workflow.variants:
        if wanted is not None and workflow.dag_id(variant) != wanted:
            continue
        dag = _DagBuilder(workflow, variant).build()
        dags[dag.dag_id] = dag
    return dags


def load_workflow_dags(dag_file: str, *paths: str, clusters: ClusterProfiles | None = None) -> dict[str, DAG]:
    """Return the DAGs of the specs or overlays at ``paths``, relative to ``dag_file``'s directory.

    A DAG file is then one line:
    ``globals().update(load_workflow_dags(__file__, "workflows/dc1.yaml"))``.
    """
    here = Path(dag_file).resolve().parent
    dags: dict[str, DAG] = {}
    rendered_by: dict[str, str] = {}
    for path in paths:
        for dag_id, dag in render_dags(here / path, clusters=clusters).items():
            if dag_id in rendered_by:
                raise WorkflowSpecError(
                    f"{here / path}: DAG {dag_id!r} is rendered by {rendered_by[dag_id]} too; to run two "
                    "versions of a workflow beside each other give both specs side_by_side: true (the DAG "
                    "ids then carry the version), else load only one of them"
                )
            rendered_by[dag_id] = str(here / path)
            dags[dag_id] = dag
    return dags


class _DagBuilder:
    def __init__(self, workflow: LoadedWorkflow, variant: str | None) -> None:
        self.workflow = workflow
        self.variant = variant
        self.graph = workflow.graph(variant)
        self.key = workflow.key

    def build(self) -> DAG:
        graph, options = self.graph, self.workflow.options
        _check_names(graph)
        tags = [*graph.tags, *options.tags]
        dag_kwargs: dict[str, Any] = {}
        defaults = self.workflow.param_defaults(self.variant)
        patterns = self.workflow.spec.patterns
        timetable = timetable_for(self.workflow.spec.variables_for(self.variant, dict(options.variables)))
        if timetable is not None:
            dag_kwargs.update(schedule=timetable, start_date=timetable.survey_start, catchup=True)
        else:
            dag_kwargs.update(schedule=None)
        dag = DAG(
            dag_id=self.workflow.dag_id(self.variant),
            description=(graph.description or graph.name)[:200],
            tags=tags,
            params={
                **{name: _param(value, patterns.get(name)) for name, value in defaults.items()},
                # What the batch processes run; a run's conf chooses, the form offers the two.
                PAYLOAD_CONF_KEY: Param(self.workflow.spec.payload, type="string", enum=list(PAYLOADS)),
            },
            default_args={"retry_delay": timedelta(seconds=options.retry_delay_s)},
            doc_md=self._doc(),
            max_active_runs=16,
            **dag_kwargs,
        )
        with dag:
            self._contents(graph.root, None)
            leaves = [task for task in dag.tasks if not task.downstream_list]
            verdict = WorkflowVerdictOperator(
                task_id=VERDICT_TASK,
                doc_md="Fails the run when a process instance ended Failed or Terminated (not tolerated).",
                **self._common(),
            )
            leaves >> verdict
        return dag

    def _doc(self) -> str:
        graph = self.graph
        table = estimate_task_instances(graph).format()
        return (
            f"**{graph.name}** version {graph.version}"
            + (f", variant `{graph.variant}`" if graph.variant else "")
            + f" — {graph.description}\n\nSpec: `{graph.source}` (digest `{self.workflow.spec_digest}`, "
            f"kept on each run in the history). Payload: `{self.workflow.spec.payload}`. Conf overrides "
            'variables, e.g. `{"scale": 0.001}`, and the payload, `{"desc_payload": "dm"}` (each '
            'batch process\'s `dm_command`) or `"emulate"`.\n\n```\n' + table + "\n```\n"
        )

    def _common(self) -> dict[str, Any]:
        return {"workflow_key": self.key, "variant": self.variant}

    def _queue_bounds(self, cluster: str | None) -> dict[str, Any]:
        """Return the pool (``max_queued_jobs`` slots) and per-task bound of a cluster's SLURM tasks.

        Pools are made by ``airflow-desc pools sync`` (DAG parsing cannot reach the metadata DB).
        ``max_queued_per_task`` is ``max_active_tis_per_dag``: Airflow counts deferred task
        instances against it (a job waiting in SLURM's queue), and a task has one pool, which must
        stay the cluster's.
        """
        profiles = self.workflow.clusters
        if profiles is None:
            return {"pool": f"slurm_{cluster}"} if cluster else {}
        profile = profiles.get(cluster)
        bounds: dict[str, Any] = {"pool": profile.pool_name}
        if profile.max_queued_per_task is not None:
            bounds["max_active_tis_per_dag"] = profile.max_queued_per_task
        return bounds

    def _contents(self, task: TaskNode, streams: Any) -> dict[str, Any]:
        """Add the tasks of one Pipeline II task (inside its group); return them by name."""
        nodes: dict[str, Any] = {}
        for process in task.processes:
            nodes[process.name] = self._process(process, streams)
        for child in task.children:
            nodes[child.name] = self._subtask(child)
        for child in task.children:
            names = [child.streams_from] if child.streams_from else []
            for name in dict.fromkeys((*names, *child.depends_on, *child.after)):
                _airflow_node(nodes[name]) >> nodes[child.name]["streams"]
        for process in task.processes:
            for name in dict.fromkeys((*process.depends_on, *process.after)):
                _airflow_node(nodes[name]) >> nodes[process.name]
        return nodes

    def _subtask(self, task: TaskNode) -> dict[str, Any]:
        with TaskGroup(group_id=task.name, tooltip=task.description or task.bundling.reason) as group:
            streams = WorkflowStreamsOperator(
                task_id=STREAMS_TASK, task_path=task.path, trigger_rule="all_done", **self._common()
            )
            if task.bundling.state == "bundle":
                self._bundle(task, streams)
            else:
                self._contents(task, streams)
        return {"group": group, "streams": streams}

    def _bundle(self, task: TaskNode, streams: BaseOperator) -> None:
        batch = [p for t in task.iter_tasks() for p in t.processes if p.resources is not None]
        res = batch[0].resources if batch and batch[0].resources else ResolvedResources()
        cluster = res.cluster
        retries = max((p.retries for p in batch), default=0)
        bundle = SlurmBundleOperator.partial(
            task_id=BUNDLE_TASK,
            bundle_task=task.path,
            cluster=cluster,
            fallback_clusters=res.fallback_clusters,
            **self._queue_bounds(cluster),
            launcher=self.workflow.options.launcher,
            retries=retries,
            workflow=self.graph.name,
            workflow_task=task.name,
            workflow_version=self.graph.version,
            spec_digest=self.workflow.spec_digest,
            take_over=self.graph.settings.take_over,
            map_index_template=_BUNDLE_LABEL,
            **self._common(),
        ).expand(streams=streams.output)
        streams >> bundle

    def _process(self, process: ProcessNode, streams: Any) -> Any:
        has_upstream = bool(process.depends_on or process.after)
        common: dict[str, Any] = {
            "task_id": process.name,
            "process_path": process.path,
            "retries": process.retries,
            "trigger_rule": "all_done" if has_upstream else "all_success",
            "doc_md": process.description or None,
            **self._common(),
        }
        if process.type == "script":
            import_callable(process.callable or "")  # a missing callable fails the DAG import, with its name
            if streams is None:
                operator = WorkflowScriptOperator(**common)
                return mark_script_process(
                    operator, process=process.name, workflow=self.graph.name, task=process.task,
                    version=process.task_version, variant=self.variant or "",
                    workflow_version=self.graph.version, spec_digest=self.workflow.spec_digest,
                )  # fmt: skip
            mapped = WorkflowScriptOperator.partial(map_index_template=_STREAM_LABEL, **common)
            return mapped.expand(stream=streams.output)
        res = process.resources or ResolvedResources()
        batch: dict[str, Any] = {
            **common,
            **self._queue_bounds(res.cluster),
            "cluster": res.cluster,
            "fallback_clusters": res.fallback_clusters,
            "cpus": res.cpus,
            "mem_mb": res.memory_mb,
            "time_limit": -(-res.walltime_s // 60) if res.walltime_s else None,
            "partition": res.partition,
            "container_image": res.container,
            "timeout_factor": process.escalation.walltime_factor,
            "memory_factor": process.escalation.memory_factor,
            "workflow": self.graph.name,
            "workflow_task": process.task,
            "workflow_version": process.task_version,
            "top_version": self.graph.version,
            "spec_digest": self.workflow.spec_digest,
            "process": process.name,
            "deferrable": process.deferrable,
        }
        if streams is None:
            return WorkflowBatchOperator(**batch)
        return WorkflowBatchOperator.partial(map_index_template=_STREAM_LABEL, **batch).expand(
            stream=streams.output
        )


def _airflow_node(node: Any) -> Any:
    """Return a task, or a sub-task's group (``{"group": ..., "streams": ...}``)."""
    return node["group"] if isinstance(node, dict) else node


def _param(value: Scalar, pattern: str | None = None) -> Param:
    """Return a DAG param of the variable's type; a pattern is checked when a run is triggered."""
    kind = "boolean" if isinstance(value, bool) else "integer" if isinstance(value, int) else (
        "number" if isinstance(value, float) else "string"
    )  # fmt: skip
    if kind == "integer":
        return Param(value, type=["integer", "number"])
    if kind == "string" and pattern is not None:
        # JSON schema patterns search; the spec's patterns match the whole value.
        return Param(value, type=kind, pattern=f"^(?:{pattern})$")
    return Param(value, type=kind)


def _check_names(graph: WorkflowGraph) -> None:
    for name in (*(p.name for p in graph.root.processes), *(c.name for c in graph.root.children)):
        if name == VERDICT_TASK:
            raise WorkflowSpecError(
                f"{graph.source}: {graph.root.path}/{name}: '{name}' is the name of the run's last task, "
                "which the renderer adds; rename it"
            )
    for task in graph.iter_tasks():
        if task.parent_path is None:
            continue
        for process in task.processes:
            if process.name in (STREAMS_TASK, BUNDLE_TASK):
                raise WorkflowSpecError(
                    f"{graph.source}: {process.path}: '{process.name}' is the name of the task the renderer "
                    "adds to each sub-task group; rename the process"
                )
        for child in task.children:
            if child.name in (STREAMS_TASK, BUNDLE_TASK):
                raise WorkflowSpecError(f"{graph.source}: {child.path}: rename this sub-task")
