"""Render workflow specs into Airflow DAGs: one DAG per variant, task groups as the task hierarchy.

A DAG file in ``dags/`` is one line (and its import)::

    from airflow_desc.workflow.render import load_workflow_dags

    globals().update(load_workflow_dags(__file__, "workflows/dc1.yaml"))

and :func:`render_dags` does the work: spec -> :func:`~airflow_desc.workflow.graph.build_graph`
per variant -> one ``DAG`` each (id ``DC1-DM12_imsim-dithered``; tags ``desc``, the workflow,
``version:1.16``, ``variant:imsim-dithered``; a ``Param`` per variable, so that a run's conf
overrides any of them, e.g. ``{"scale": 0.001}``). How the spec becomes Airflow work:

====================================  ===========================================================
spec                                  DAG
====================================  ===========================================================
top-level batch process               :class:`WorkflowBatchOperator` (a ``SlurmOperator``)
top-level script process              :class:`WorkflowScriptOperator` (a ``PythonOperator``,
                                      marked with ``mark_script_process``: the listener records it)
sub-task                              a ``TaskGroup`` named after it, nested as the tasks are
                                      (``level1`` > ``level1ProcessFilter`` > ``level1ProcessPatch``)
its streams                           the group's ``streams`` task (:class:`WorkflowStreamsOperator`):
                                      the values the feeding script returned, each with its
                                      parent's stream values (``{"filter": "r", "patch": "1,2"}``)
process of a sub-task not bundled     the operator above, mapped: ``.expand(stream=streams)``,
                                      one task instance per stream (map index shown as the
                                      stream path, ``filter=r/patch=1,2``)
bundled sub-task                      ``streams`` returns bundles (``TaskNode.split_streams``);
                                      one mapped :class:`~airflow_desc.operators.bundle.SlurmBundleOperator`
                                      instance per bundle (``<group>.bundle``) runs the sub-task
                                      and everything below it in one allocation
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

**Variables of a run** are, in order: the spec's defaults, the variant's, a render overlay's
(below), then the run's conf (or the trigger form's params). They are read once per task
instance (:meth:`LoadedWorkflow.run_variables`). A spec whose variables include ``survey_start``
and ``survey_years`` (``twinkles.yaml``) is scheduled by
:class:`~airflow_desc.timetables.SurveyYearTimetable` (start date the survey start, catchup on), and
its ``year`` is the run's survey year, from its data interval (a conf ``year`` that disagrees is an
error).

**Render overlays**: a small YAML file that renders a spec for a particular site, e.g.
``dags/workflows/dc1-local.yaml`` for the two small clusters of the local test site::

    extends: dc1.yaml            # the spec, relative to this file
    dag_id_suffix: _local        # DAG ids: DC1-DM12_imsim-dithered_local
    variants: [imsim-dithered]   # only these (default: all)
    variables: {scale: 0.001}    # defaults of this rendering: they decide bundling, as conf does not
    retries: 0                   # at most this many retries per process
    retry_delay: 10              # seconds between tries (Airflow's default: 300)
    resources_cap: fit           # cap each request to its cluster's node and walltime limit;
                                 # or {cpus: 1, memory_mb: 2000, walltime: "0:10:00"} (applied
                                 # after fitting)
    launcher: srun               # the bundles' pilot launcher: srun | direct
    tags: [local]

``load_workflow_dags`` takes specs and overlays alike (an overlay has ``extends``).

**Run time.** Operators carry names, not objects: the key of the loaded workflow (its file),
the variant and the process / task path. The worker parses the DAG file before it runs a task,
which fills this module's registry; :func:`workflow_for` returns the entry.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, BaseOperator, Param, TaskGroup
from airflow.sdk.exceptions import AirflowSkipException

from airflow_desc._yaml_lines import LocatedYaml, YamlLoadError
from airflow_desc.clusters import ClusterProfiles, load_cluster_profiles, parse_walltime
from airflow_desc.exceptions import ClusterProfileError, SlurmJobFailed, WorkflowSpecError
from airflow_desc.history import ProcessRecord, Recorder, default_recorder
from airflow_desc.operators.slurm import SlurmOperator
from airflow_desc.plugins.listener import ATTR as _DESC_PROCESS_ATTR
from airflow_desc.plugins.listener import DescProcess, mark_script_process, note_skip
from airflow_desc.slurm.diagnose import Diagnosis, ReasonClass
from airflow_desc.timetables import run_survey_year
from airflow_desc.workflow.graph import (
    ProcessNode,
    ResolvedResources,
    TaskNode,
    WorkflowGraph,
    build_graph,
    estimate_task_instances,
)
from airflow_desc.workflow.spec import (
    Expression,
    ExpressionError,
    Scalar,
    WorkflowSpec,
    format_value,
    load_spec,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_desc.clusters import ClusterProfile
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.slurm import JobAccounting

__all__ = [
    "LAUNCHERS",
    "LoadedWorkflow",
    "RenderOptions",
    "RunStates",
    "ScriptOutcome",
    "WorkflowBatchOperator",
    "WorkflowScriptOperator",
    "WorkflowStreamsOperator",
    "bundle_task_id",
    "call_script",
    "combine_states",
    "load_overlay",
    "load_workflow",
    "load_workflow_dags",
    "render_dags",
    "stream_extends",
    "stream_path",
    "streams_task_id",
    "task_id_for",
    "workflow_for",
]

log = logging.getLogger(__name__)

#: The pilot launchers a bundle may use.
LAUNCHERS = ("srun", "direct")
#: Task ids the renderer gives to a sub-task group's own tasks; no process may be named so.
STREAMS_TASK = "streams"
BUNDLE_TASK = "bundle"
#: How a process instance ended, from its Airflow task instance's state.
_FROM_AIRFLOW = {
    "success": "success",
    "failed": "failed",
    "upstream_failed": "skipped",
    "skipped": "skipped",
    "removed": "skipped",
}
# Map indexes shown as stream paths; the label is set in the context by the running task (also
# when it resumes after deferral, which renders the template again).
_STREAM_LABEL = "{{ desc_stream | default('') }}"
_BUNDLE_LABEL = "{{ desc_bundle | default('') }}"
_OVERLAY_KEYS = (
    "extends",
    "dag_id_suffix",
    "variants",
    "variables",
    "retries",
    "retry_delay",
    "resources_cap",
    "launcher",
    "tags",
)


# --- options and overlays --------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceCap:
    """The most any batch process of a rendering may ask for (``None``: no cap on that).

    :param cpus: CPUs.
    :param memory_mb: memory in MB.
    :param walltime_s: walltime in seconds.
    """

    cpus: int | None = None
    memory_mb: int | None = None
    walltime_s: int | None = None


@dataclass(frozen=True)
class RenderOptions:
    """How to render a spec for a site (what a render overlay file says).

    :param dag_id_suffix: appended to every DAG id.
    :param variants: the variants to render; ``None``: all.
    :param variables: variable values of this rendering (they decide bundling; a run's conf
        still overrides them).
    :param max_retries: at most this many retries per process.
    :param retry_delay_s: seconds between the tries of a task.
    :param fit_resources: cap every request to its cluster's node size and maximum walltime.
    :param resources_cap: a further cap.
    :param launcher: the pilot launcher of the bundles (``srun`` or ``direct``).
    :param tags: extra DAG tags.
    """

    dag_id_suffix: str = ""
    variants: tuple[str, ...] | None = None
    variables: Mapping[str, Scalar] = field(default_factory=dict)
    max_retries: int | None = None
    retry_delay_s: float = 300.0
    fit_resources: bool = False
    resources_cap: ResourceCap | None = None
    launcher: str = "srun"
    tags: tuple[str, ...] = ()


def load_overlay(path: str | os.PathLike[str]) -> tuple[Path, RenderOptions]:
    """Read a render overlay: the spec it extends and the options it sets.

    :param path: the overlay file (see the module docstring).
    :return: the absolute path of the spec, and the options.
    :raises WorkflowSpecError: listing every problem as ``file:line: key: what; what to do``.
    """
    source = os.fspath(path)
    try:
        located = LocatedYaml.load_file(path)
    except YamlLoadError as exc:
        raise WorkflowSpecError("\n".join(p.format(source) for p in exc.problems)) from None
    except OSError as exc:
        raise WorkflowSpecError(f"{source}: cannot read the render overlay: {exc}") from None
    data = located.data
    problems: list[str] = []

    def bad(key: str, message: str) -> None:
        problems.append(located.problem((key,), message).format(source))

    if not isinstance(data, dict) or "extends" not in data:
        raise WorkflowSpecError(f"{source}: a render overlay is a mapping with 'extends: <spec file>'")
    for key in data:
        if key not in _OVERLAY_KEYS:
            bad(str(key), f"unknown key; use one of {', '.join(_OVERLAY_KEYS)}")
    base = Path(source).resolve().parent / str(data["extends"])
    if not base.is_file():
        bad("extends", f"{base} does not exist; name the spec file, relative to this overlay")
    options = _overlay_options(data, bad)
    if problems:
        raise WorkflowSpecError("\n".join(problems))
    return base, options


def _overlay_options(data: Mapping[str, Any], bad: Callable[[str, str], None]) -> RenderOptions:
    values: dict[str, Any] = {}
    checks: list[tuple[str, str, Callable[[Any], bool], Callable[[Any], Any], str]] = [
        ("dag_id_suffix", "dag_id_suffix", lambda v: isinstance(v, str), str, "expected text, e.g. _local"),
        ("variants", "variants", _is_names, tuple, "expected a list of variant names, e.g. [imsim-dithered]"),
        (
            "variables",
            "variables",
            lambda v: (
                isinstance(v, dict) and all(isinstance(x, str | int | float | bool) for x in v.values())
            ),
            dict,
            "expected a mapping of variable names to values, e.g. {scale: 0.001}",
        ),
        ("retries", "max_retries", _is_count, int, "expected a whole number of retries, 0 or more"),
        ("retry_delay", "retry_delay_s", _is_seconds, float, "expected seconds, e.g. 10"),
        ("launcher", "launcher", lambda v: v in LAUNCHERS, str, f"expected one of {', '.join(LAUNCHERS)}"),
        ("tags", "tags", _is_names, tuple, "expected a list of tags"),
    ]
    for key, name, valid, convert, message in checks:
        value = data.get(key)
        if value is None:
            continue
        if valid(value):
            values[name] = convert(value)
        else:
            bad(key, message)
    cap = data.get("resources_cap")
    if cap == "fit":
        values["fit_resources"] = True
    elif isinstance(cap, dict):
        values["fit_resources"] = bool(cap.get("fit", True))
        values["resources_cap"] = _cap(cap, bad)
    elif cap is not None:
        bad("resources_cap", "expected 'fit' or a mapping {cpus, memory_mb, walltime, fit}")
    return RenderOptions(**values)


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _cap(cap: Mapping[str, Any], bad: Callable[[str, str], None]) -> ResourceCap:
    unknown = set(cap) - {"cpus", "memory_mb", "walltime", "fit"}
    if unknown:
        bad(
            "resources_cap",
            f"unknown keys {', '.join(sorted(map(str, unknown)))}; use cpus, memory_mb, walltime",
        )
    numbers: dict[str, int | None] = {}
    for key in ("cpus", "memory_mb"):
        value = cap.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            bad("resources_cap", f"{key} must be a positive whole number")
            value = None
        numbers[key] = value
    walltime_s = None
    if cap.get("walltime") is not None:
        try:
            walltime_s = parse_walltime(cap["walltime"])
        except ValueError as exc:
            bad("resources_cap", f"walltime: {exc}; write HH:MM:SS")
    return ResourceCap(cpus=numbers["cpus"], memory_mb=numbers["memory_mb"], walltime_s=walltime_s)


# --- loaded workflows (the run-time registry) --------------------------------------------------------

_REGISTRY: dict[str, LoadedWorkflow] = {}


@dataclass
class LoadedWorkflow:
    """A spec rendered with options: its graphs by variant, and what its tasks need at run time.

    :param key: the registry key (the file it was loaded from).
    :param spec: the workflow spec.
    :param options: the render options.
    :param clusters: the cluster profiles, if known.
    """

    key: str
    spec: WorkflowSpec
    options: RenderOptions
    clusters: ClusterProfiles | None
    graphs: dict[str | None, WorkflowGraph] = field(default_factory=dict)
    _processes: dict[str | None, dict[str, ProcessNode]] = field(default_factory=dict)
    _tasks: dict[str | None, dict[str, TaskNode]] = field(default_factory=dict)
    _variables: dict[tuple[str | None, str], dict[str, Scalar]] = field(default_factory=dict)

    @property
    def variants(self) -> tuple[str | None, ...]:
        """The variants rendered (``(None,)`` for a spec without variants)."""
        names: tuple[str | None, ...] = self.spec.variant_names or (None,)
        if self.options.variants is not None:
            names = tuple(v for v in names if v in self.options.variants)
        return names

    def graph(self, variant: str | None) -> WorkflowGraph:
        """Return the graph of a variant (built once, with the options' variables and caps)."""
        if variant not in self.graphs:
            graph = build_graph(self.spec, variant, overrides=dict(self.options.variables))
            self.graphs[variant] = _adjust(graph, self.options, self.clusters)
            self._processes[variant] = {p.path: p for p in self.graphs[variant].iter_processes()}
            self._tasks[variant] = {t.path: t for t in self.graphs[variant].iter_tasks()}
        return self.graphs[variant]

    def process(self, variant: str | None, path: str) -> ProcessNode:
        """Return a process of a variant's graph by its path (``DC1-DM12/level1/level1SetupFilters``)."""
        self.graph(variant)
        try:
            return self._processes[variant][path]
        except KeyError:
            raise WorkflowSpecError(f"{self.key}: no process {path!r} in variant {variant!r}") from None

    def task(self, variant: str | None, path: str) -> TaskNode:
        """Return a task of a variant's graph by its path."""
        self.graph(variant)
        try:
            return self._tasks[variant][path]
        except KeyError:
            raise WorkflowSpecError(f"{self.key}: no task {path!r} in variant {variant!r}") from None

    def dag_id(self, variant: str | None) -> str:
        """Return the DAG id of a variant, with the options' suffix."""
        return self.graph(variant).dag_id + self.options.dag_id_suffix

    def param_defaults(self, variant: str | None) -> dict[str, Scalar]:
        """Return the values of the variables before expansion: spec, variant, options (the DAG params)."""
        values: dict[str, Scalar] = dict(self.spec.variables)
        if variant is not None:
            values.update(self.spec.variants[variant])
        values.update(self.options.variables)
        return values

    @property
    def yearly(self) -> bool:
        """Whether the spec is processed year by year (variables ``survey_start``, ``survey_years``)."""
        return {"survey_start", "survey_years"} <= set(self.spec.variables)

    def run_variables(self, variant: str | None, context: Context) -> dict[str, Scalar]:
        """Return the variables of the running DAG run: defaults < variant < options < conf / params.

        :raises WorkflowSpecError: for a conf value of the wrong type, or a conf ``year`` that is
            not the survey year of the run's data interval.
        """
        dag_run = context.get("dag_run")
        conf = dict(getattr(dag_run, "conf", None) or {})
        params = context.get("params") or {}
        defaults = self.param_defaults(variant)
        overrides: dict[str, Any] = dict(self.options.variables)
        for name in self.spec.variables:
            if name in conf:
                overrides[name] = conf[name]
            elif name in params and params[name] != defaults.get(name):
                overrides[name] = params[name]
        if self.yearly and "year" in self.spec.variables:
            year = self._survey_year(variant, context)
            if year is not None:
                if "year" in conf and conf["year"] != year:
                    raise WorkflowSpecError(
                        f"{self.spec.source}: run conf: year={conf['year']!r} but this run's data interval "
                        f"is survey year {year}; drop 'year' from the conf, or trigger the run with a "
                        "logical date inside the year to process"
                    )
                overrides["year"] = year
        key = (variant, json.dumps(overrides, sort_keys=True, default=str))
        if key not in self._variables:
            self._variables[key] = self.spec.variables_for(variant, overrides)
        return dict(self._variables[key])

    def _survey_year(self, variant: str | None, context: Context) -> int | None:
        start = context.get("data_interval_start")
        if start is None:
            return None
        timetable = _timetable_for(self.param_defaults(variant))
        return int(timetable.survey_year(start)) if timetable is not None else None

    def expected_streams(self, task_name: str, variables: Mapping[str, Scalar]) -> float:
        """Return the expected streams of a sub-task per parent stream, with a run's variables."""
        for _names, task in self.spec.iter_tasks():
            sub = task.tasks.get(task_name)
            if sub is not None:
                try:
                    value = Expression.parse(sub.expected_streams, "number").evaluate(variables)
                except ExpressionError as exc:
                    raise WorkflowSpecError(
                        f"{self.spec.source}: {task_name}: expected_streams: {exc}"
                    ) from None
                return float(value)
        raise WorkflowSpecError(f"{self.spec.source}: no sub-task {task_name!r}")


def _timetable_for(variables: Mapping[str, Any]) -> Any:
    if not {"survey_start", "survey_years"} <= set(variables):
        return None
    from airflow_desc.timetables import SurveyYearTimetable

    return SurveyYearTimetable.from_variables(variables)


def load_workflow(
    path: str | os.PathLike[str],
    *,
    clusters: ClusterProfiles | None = None,
    options: RenderOptions | None = None,
) -> LoadedWorkflow:
    """Load a spec or a render overlay into the registry (no DAGs); return it.

    :param path: a spec file, or an overlay file (it has ``extends``).
    :param clusters: cluster profiles; default: :func:`~airflow_desc.clusters.load_cluster_profiles`
        when a clusters file is configured.
    :param options: render options; an overlay's replace them.
    """
    source = Path(path).resolve()
    spec_path, opts = source, options or RenderOptions()
    if _is_overlay(source):
        spec_path, opts = load_overlay(source)
    profiles = clusters if clusters is not None else _configured_clusters()
    spec = load_spec(spec_path, clusters=profiles)
    loaded = LoadedWorkflow(key=str(source), spec=spec, options=opts, clusters=profiles)
    _REGISTRY[loaded.key] = loaded
    return loaded


def _is_overlay(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return any(line.startswith("extends:") for line in f)
    except OSError:
        return False


def _configured_clusters() -> ClusterProfiles | None:
    try:
        return load_cluster_profiles()
    except ClusterProfileError as exc:
        log.debug("no cluster profiles: %s", exc)
        return None


def workflow_for(key: str) -> LoadedWorkflow:
    """Return the loaded workflow of an operator's ``workflow_key``, loading it from its file if needed.

    :raises WorkflowSpecError: if it was never loaded here and is no file.
    """
    loaded = _REGISTRY.get(key)
    if loaded is not None:
        return loaded
    # A spec's source alone names the inline spec rendered from it, if there is only one.
    same = [w for k, w in _REGISTRY.items() if k.partition("#")[0] == key]
    if len(same) == 1:
        return same[0]
    path, _, name = key.partition("#")  # an inline spec's key: its source and its name
    if os.path.isfile(path) and not name:
        return load_workflow(path)
    raise WorkflowSpecError(
        f"the workflow {key!r} was not rendered in this process and is not a file; run its tasks from "
        "the DAG file that renders it"
    )


def _adjust(graph: WorkflowGraph, options: RenderOptions, clusters: ClusterProfiles | None) -> WorkflowGraph:
    """Apply the options' retry and resource caps to every process of a graph."""
    if options.max_retries is None and not options.fit_resources and options.resources_cap is None:
        return graph
    if options.fit_resources and clusters is None:
        raise WorkflowSpecError(
            f"{graph.source}: resources_cap: fit needs the cluster profiles; set DESC_CLUSTERS_FILE"
        )

    def process(node: ProcessNode) -> ProcessNode:
        retries = node.retries if options.max_retries is None else min(node.retries, options.max_retries)
        resources = node.resources
        if resources is not None:
            resources = _capped(resources, options, clusters)
        return dataclasses.replace(node, retries=retries, resources=resources)

    def task(node: TaskNode) -> TaskNode:
        return dataclasses.replace(
            node,
            processes=tuple(process(p) for p in node.processes),
            children=tuple(task(c) for c in node.children),
        )

    return dataclasses.replace(graph, root=task(graph.root))


def _capped(
    res: ResolvedResources, options: RenderOptions, clusters: ClusterProfiles | None
) -> ResolvedResources:
    cpus, memory, walltime = res.cpus, res.memory_mb, res.walltime_s
    if options.fit_resources and clusters is not None:
        profile = clusters.get(res.cluster)
        cpus = min(cpus, profile.cores_per_node)
        memory = min(memory, profile.memory_per_node_mb) if memory else memory
        walltime = min(walltime, profile.max_walltime_s) if walltime else walltime
    cap = options.resources_cap
    if cap is not None:
        cpus = min(cpus, cap.cpus) if cap.cpus else cpus
        memory = min(memory, cap.memory_mb) if memory and cap.memory_mb else memory
        walltime = min(walltime, cap.walltime_s) if walltime and cap.walltime_s else walltime
    text = _clock(walltime) if walltime != res.walltime_s and walltime else res.walltime
    return dataclasses.replace(res, cpus=cpus, memory_mb=memory, walltime=text, walltime_s=walltime)


def _clock(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


# --- streams, ids and states ---------------------------------------------------------------------------


def stream_path(stream: Mapping[str, Any]) -> str:
    """Write a stream's values as its path: ``visit=2201/raft=R22/sensor=S11`` ("" at the top level)."""
    return "/".join(f"{name}={format_value(value)}" for name, value in stream.items())


def stream_extends(stream: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
    """Whether ``stream`` lies below ``parent`` (it has each of the parent's values)."""
    return all(stream.get(name) == value for name, value in parent.items())


def task_id_for(path: str) -> str:
    """Return the Airflow task (or group) id of a process or task path (``level1.level1SetupFilters``)."""
    return ".".join(path.split("/")[1:])


def streams_task_id(task: TaskNode) -> str:
    """Return the id of a sub-task group's ``streams`` task."""
    return f"{task_id_for(task.path)}.{STREAMS_TASK}"


def bundle_task_id(task: TaskNode) -> str:
    """Return the id of a bundled sub-task's mapped bundle task."""
    return f"{task_id_for(task.path)}.{BUNDLE_TASK}"


def combine_states(states: Iterable[str]) -> str:
    """Return the state of a stream of a sub-task from the states of its process instances.

    Failed if any failed, else terminated if any was, else success if any succeeded or there was
    nothing to run; skipped only when everything was skipped (a skip caused by a failure is counted
    by that failure).
    """
    seen = set(states)
    for state in ("failed", "terminated"):
        if state in seen:
            return state
    if not seen or "success" in seen:
        return "success"
    if seen <= {"skipped", "cancelled"}:
        return "skipped"
    return "failed"


class RunStates:
    """The states of process instances of one DAG run, per stream, read by a running task.

    Task-instance states come from one Task SDK call; the streams of a sub-task from its
    ``streams`` task's XCom; the streams inside bundles from the bundles' ``bundle_summary`` XComs.

    :param context: the running task's context.
    :param graph: the DAG's graph.
    """

    def __init__(self, context: Context, graph: WorkflowGraph) -> None:
        self.ti: Any = context["ti"]
        self.graph = graph
        self._states: dict[str, Any] | None = None
        self._streams: dict[str, list[dict[str, Any]]] = {}
        self._bundles: dict[str, dict[str, str]] = {}

    def airflow_state(self, task_id: str, map_index: int = -1) -> str | None:
        """Return the raw Airflow state of one task instance (``None`` if it has none)."""
        if self._states is None:
            found = self.ti.get_task_states(dag_id=self.ti.dag_id, run_ids=[self.ti.run_id])
            self._states = dict(found.get(self.ti.run_id) or {})
        key = task_id if map_index < 0 else f"{task_id}_{map_index}"
        state = self._states.get(key)
        return None if state is None else str(state)

    def task_state(self, task_id: str, map_index: int = -1) -> str:
        """Return the process state of one task instance (anything not finished counts as failed)."""
        return _FROM_AIRFLOW.get(self.airflow_state(task_id, map_index) or "", "failed")

    def streams(self, task: TaskNode) -> list[dict[str, Any]]:
        """Return the streams of a sub-task in this run (a bundled one's bundles flattened)."""
        key = streams_task_id(task)
        if key not in self._streams:
            [value] = self.ti.xcom_pull(task_ids=[key], map_indexes=-1) or [None]
            items = list(value or [])
            if task.bundling.state == "bundle":
                items = [stream for bundle in items for stream in bundle]
            self._streams[key] = [dict(s) for s in items]
        return self._streams[key]

    def bundle_states(self, task: TaskNode) -> dict[str, str]:
        """Return the state of each stream of a bundled sub-task, from its bundles' summaries."""
        key = bundle_task_id(task)
        if key not in self._bundles:
            states: dict[str, str] = {}
            for summary in self.ti.xcom_pull(task_ids=[key], key="bundle_summary") or []:
                if isinstance(summary, Mapping):
                    states.update(summary.get("streams") or {})
            self._bundles[key] = states
        return self._bundles[key]

    def subtask(self, task: TaskNode, stream: Mapping[str, Any]) -> str:
        """Return the state of a sub-task for one stream of its parent: all its streams below that one."""
        if self.task_state(streams_task_id(task)) != "success":
            return "skipped" if self.airflow_state(streams_task_id(task)) == "skipped" else "failed"
        below = [(index, s) for index, s in enumerate(self.streams(task)) if stream_extends(s, stream)]
        if task.bundling.state == "bundle":
            done = self.bundle_states(task)
            return combine_states(done.get(stream_path(s), "failed") for _, s in below)
        states = [self.task_state(task_id_for(p.path), index) for p in task.processes for index, _ in below]
        states += [self.subtask(child, stream) for child in task.children]
        return combine_states(states)

    def upstream(
        self, task: TaskNode, names: Iterable[str], stream: Mapping[str, Any], map_index: int
    ) -> dict[str, str]:
        """Return the state of each named sibling (process or sub-task of ``task``) for one stream of it.

        :param task: the task whose processes / sub-tasks the names are.
        :param names: the names.
        :param stream: the stream (of ``task``).
        :param map_index: that stream's map index in ``task``'s mapped tasks (-1 at the top level).
        """
        children = {child.name: child for child in task.children}
        states: dict[str, str] = {}
        for name in dict.fromkeys(names):
            if name in children:
                child = children[name]
                feeder = task.process(child.streams_from) if child.streams_from else None
                fed = self.task_state(task_id_for(feeder.path), map_index) if feeder else "success"
                states[name] = self.subtask(child, stream) if fed == "success" else "skipped"
            else:
                states[name] = self.task_state(task_id_for(task.process(name).path), map_index)
        return states


def _skip_class(reason: str) -> str:
    """Return the history's reason class of a skip, from its message (see ``ProcessNode.skip_reason``)."""
    return "upstream-failed" if reason.startswith("upstream") else "skip-condition"


def _upstream_names(process: ProcessNode) -> list[str]:
    names = [*process.depends_on, *process.after]
    if process.skip_if is not None:
        names += [n for n in process.skip_if.names if n not in names]
    return names


def _skip_reason(
    runs: RunStates,
    task: TaskNode,
    process: ProcessNode,
    stream: Mapping[str, Any],
    map_index: int,
    variables: Mapping[str, Scalar],
) -> str | None:
    siblings = {p.name for p in task.processes} | {c.name for c in task.children}
    names = [n for n in _upstream_names(process) if n in siblings]
    states = runs.upstream(task, names, stream, map_index) if names else {}
    return process.skip_reason(states, stream, variables)


# --- scripts --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def import_callable(target: str) -> Callable[..., Any]:
    """Import ``module.path:function``.

    :raises WorkflowSpecError: if the module or the function cannot be found.
    """
    module_name, _, attr = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise WorkflowSpecError(f"cannot import the script callable {target!r}: {exc}") from None
    if not callable(value):
        raise WorkflowSpecError(f"the script callable {target!r} is not callable")
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ScriptOutcome:
    """One run of a script process: its state, the streams it made, and when.

    :param state: ``success``, ``failed`` or ``skipped``.
    :param feeds: the stream values it made, by sub-task.
    :param message: why it failed or was skipped.
    :param start: ISO start time.
    :param end: ISO end time.
    :param elapsed_s: seconds.
    """

    state: str
    feeds: Mapping[str, list[Scalar]] = field(default_factory=dict)
    message: str | None = None
    start: str | None = None
    end: str | None = None
    elapsed_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {**dataclasses.asdict(self), "feeds": {k: list(v) for k, v in self.feeds.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScriptOutcome:
        """Rebuild from :meth:`to_json` output."""
        return cls(
            **{k: data[k] for k in ("state", "feeds", "message", "start", "end", "elapsed_s") if k in data}
        )


def script_kwargs(
    workflow: LoadedWorkflow, process: ProcessNode, stream: Mapping[str, Any], variables: Mapping[str, Scalar]
) -> dict[str, Any]:
    """Return the arguments of one call of a script: its kwargs (+ ``expected_streams``)."""
    kwargs = process.render_kwargs(stream, variables)
    function = import_callable(process.callable or "")
    if "expected_streams" in inspect.signature(function).parameters:
        kwargs["expected_streams"] = {
            name: workflow.expected_streams(name, variables) for name in process.feeds
        }
    return kwargs


def script_feeds(process: ProcessNode, result: Any) -> dict[str, list[Scalar]]:
    """Return the streams a script's return value makes, by sub-task.

    :raises WorkflowSpecError: for a value that is not a list of stream values (or, for a script
        that feeds several sub-tasks, a mapping of each of them to such a list).
    """
    if not process.feeds:
        return {}
    if isinstance(result, Mapping):
        missing = [name for name in process.feeds if name not in result]
        if missing:
            raise WorkflowSpecError(
                f"{process.path}: {process.callable} returned no streams for {', '.join(missing)}; "
                "return a mapping of each sub-task it feeds to a list of stream values"
            )
        lists = {name: result[name] for name in process.feeds}
    elif len(process.feeds) == 1 and isinstance(result, list | tuple):
        lists = {process.feeds[0]: result}
    else:
        raise WorkflowSpecError(
            f"{process.path}: {process.callable} returned {type(result).__name__}; a script that makes the "
            f"streams of {', '.join(process.feeds)} returns a list of stream values"
            + (" (a mapping by sub-task, as it feeds several)" if len(process.feeds) > 1 else "")
        )
    feeds: dict[str, list[Scalar]] = {}
    for name, values in lists.items():
        if not isinstance(values, list | tuple) or not all(
            isinstance(v, str | int | float | bool) for v in values
        ):
            raise WorkflowSpecError(
                f"{process.path}: the streams of {name} must be a list of text or numbers, got {values!r}"
            )
        feeds[name] = list(values)
    return feeds


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def call_script(
    workflow: LoadedWorkflow, process: ProcessNode, stream: Mapping[str, Any], variables: Mapping[str, Scalar]
) -> tuple[ScriptOutcome, Any]:
    """Run one script process instance on this worker; never raises for the script's own errors.

    :return: the outcome (``failed`` with the exception's last line when it raised), and the
        return value (``None`` when it failed).
    """
    start, clock = _now(), time.monotonic()
    try:
        kwargs = script_kwargs(workflow, process, stream, variables)
        result = import_callable(process.callable or "")(**kwargs)
        feeds = script_feeds(process, result)
    except Exception as exc:  # the script's failure is a process outcome, recorded, not a crash
        log.exception("script %s failed for stream %r", process.path, stream_path(stream))
        text = str(exc).strip().splitlines()
        message = f"{type(exc).__name__}: {text[-1] if text else ''}"
        outcome = ScriptOutcome("failed", message=message, start=start, end=_now(), elapsed_s=_since(clock))
        return outcome, None
    return ScriptOutcome("success", feeds, start=start, end=_now(), elapsed_s=_since(clock)), result


def _since(clock: float) -> float:
    return round(time.monotonic() - clock, 3)


# --- history ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantRecorder:
    """A recorder that stamps records with the workflow variant and version before passing them on.

    Records made inside a running task of a year-by-year DAG also get the run's survey year
    (``extra["survey_year"]``: the history's ``runs.survey_year``), from its data interval.

    :param variant: the workflow variant.
    :param workflow_version: the top-level workflow's version (kept in ``extra``).
    :param inner: where records go; default :func:`~airflow_desc.history.default_recorder` (read
        when recording, so that the environment of the running task decides).
    """

    variant: str = ""
    workflow_version: str = ""
    inner: Recorder | None = None

    def record(self, records: Sequence[ProcessRecord]) -> None:
        """Stamp and pass on ``records``."""
        year = _running_survey_year()
        stamp: dict[str, Any] = {"workflow_version": self.workflow_version}
        if year is not None:
            stamp["survey_year"] = year
        stamped = [
            dataclasses.replace(r, variant=r.variant or self.variant, extra={**r.extra, **stamp})
            for r in records
        ]
        (self.inner or default_recorder()).record(stamped)


def _running_survey_year() -> int | None:
    from airflow.sdk import get_current_context

    try:
        context = get_current_context()
    except RuntimeError:  # not inside a running task
        return None
    return run_survey_year(context)


# --- operators --------------------------------------------------------------------------------------------


class WorkflowBatchOperator(SlurmOperator):
    """A batch process of a workflow spec: one SLURM job per stream (a ``SlurmOperator``).

    Before submitting, it decides whether its stream runs (``depends_on`` and ``skip_if`` against
    its own stream's upstream instances) and records a Skipped instance if not. The command is
    the spec's, rendered with the run's variables and the stream's values; it runs in the
    cluster's ``work_dir``. After SLURM says COMPLETED, the spec's output checks run on the
    cluster; one failing makes the instance Failed (``output-check``).

    :param workflow_key: the loaded workflow (:func:`workflow_for`).
    :param variant: the variant.
    :param process_path: the process's path in the graph.
    :param stream: the stream's values (mapped tasks get one per map index).
    :param top_version: the top-level workflow's version: with its name and the variant, the
        history's workflow (``workflow_version`` is the version of the process's own task).
    """

    # Commands come from the spec with {{ name }} placeholders that are not Jinja.
    template_fields: Sequence[str] = ()
    ui_color = "#c7e9f1"

    def __init__(
        self,
        *,
        workflow_key: str,
        variant: str | None,
        process_path: str,
        stream: Mapping[str, Any] | None = None,
        workflow_version: str = "",
        top_version: str = "",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("command", "")
        recorder = VariantRecorder(variant=variant or "", workflow_version=top_version or workflow_version)
        kwargs.setdefault("recorder", recorder)
        values = dict(stream or {})
        super().__init__(stream=stream_path(values), workflow_version=workflow_version, **kwargs)
        self.workflow_key = workflow_key
        self.variant = variant
        self.process_path = process_path
        self.stream_values = values

    def execute(self, context: Context) -> Any:
        """Skip (recorded) or submit this stream's job; see the class docstring."""
        workflow = workflow_for(self.workflow_key)
        graph = workflow.graph(self.variant)
        process = workflow.process(self.variant, self.process_path)
        task = workflow.task(self.variant, self.process_path.rpartition("/")[0])
        variables = workflow.run_variables(self.variant, context)
        context["desc_stream"] = self.stream or process.name  # type: ignore[typeddict-unknown-key]
        self.workflow_version = process.task_version
        map_index = _map_index(context)
        reason = _skip_reason(
            RunStates(context, graph), task, process, self.stream_values, map_index, variables
        )
        if reason is not None:
            self._record_skip(context, graph, process, reason)
            raise AirflowSkipException(reason)
        self.command = process.render_command(self.stream_values, variables)
        profile = self._profile()
        self.setup_lines = (*self.setup_lines, *workdir_lines(profile.work_dir))
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the job ended (see :class:`SlurmOperator`), keeping the stream as map index."""
        context["desc_stream"] = self.stream or self.process_path.rpartition("/")[2]  # type: ignore[typeddict-unknown-key]
        return super().execute_complete(context, event)

    def _record_skip(self, context: Context, graph: WorkflowGraph, process: ProcessNode, reason: str) -> None:
        ti: Any = context["ti"]
        now = datetime.now(timezone.utc)
        record = ProcessRecord(
            workflow=graph.name,
            process=process.name,
            task=process.task,
            version=process.task_version,
            state="skipped",
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=_map_index(context),
            try_number=int(ti.try_number or 1),
            stream=self.stream,
            process_type="batch",
            cluster=self._profile().name,
            reason=_skip_class(reason),
            message=reason,
            start_time=now,
            end_time=now,
        )
        (self.recorder or default_recorder()).record([record])

    def _finish(
        self,
        context: Context,
        hook: SlurmHook,
        profile: ClusterProfile,
        accounting: JobAccounting,
        *,
        adopted: bool = False,
    ) -> dict[str, Any]:
        summary = super()._finish(context, hook, profile, accounting, adopted=adopted)
        workflow = workflow_for(self.workflow_key)
        process = workflow.process(self.variant, self.process_path)
        if not process.checks:
            return summary
        from airflow_desc.operators.bundle import CheckRequest, run_output_checks

        variables = workflow.run_variables(self.variant, context)
        values = {**variables, **self.stream_values}
        requests = [
            CheckRequest(
                "0", check.kind, check.target(values), check.min_count, check.failure_message(values)
            )
            for check in process.checks
        ]
        failures = run_output_checks(hook, profile.work_dir, requests, log_path=summary.get("log_path"))
        failed = failures.get("0")
        if not failed:
            return summary
        state = self._state(context)
        ti: Any = context["ti"]
        job_try = (
            int(state.get("try_number") or ti.try_number)
            if state.get("job_id") == accounting.job_id
            else ti.try_number
        )
        diagnosis = Diagnosis(ReasonClass.OUTPUT_CHECK, failed)
        self._record(
            context, profile, accounting, diagnosis, summary.get("log_path"), int(job_try), adopted=adopted
        )
        summary.update(state="failed", reason=str(ReasonClass.OUTPUT_CHECK.value), message=failed)
        ti.xcom_push(key="slurm_summary", value=summary)
        raise SlurmJobFailed(
            failed,
            job_id=accounting.job_id,
            state=accounting.state.raw,
            exit_code=accounting.exit_code,
            reason=ReasonClass.OUTPUT_CHECK.value,
        )


def workdir_lines(work_dir: str) -> tuple[str, ...]:
    """Job-script lines that make the cluster's ``work_dir`` the current directory.

    Spec paths (``dc1/imsim-dithered/repo``) are relative to it, so every process of a workflow
    on a cluster sees the same files.
    """
    from airflow_desc.slurm._shell import quote_path

    quoted = quote_path(work_dir if work_dir.startswith(("/", "~")) else f"~/{work_dir}")
    return (f"mkdir -p -- {quoted} && cd -- {quoted}",)


def _map_index(context: Context) -> int:
    value = getattr(context["ti"], "map_index", -1)
    return -1 if value is None else int(value)


class WorkflowScriptOperator(PythonOperator):
    """A script process of a workflow spec at a level that is not bundled: its callable, on the worker.

    Called with the spec's kwargs (variables and stream values filled in, ``expected_streams``
    added if the function takes it). A script that makes streams returns
    ``{"stream": ..., "map_index": ..., "feeds": {sub-task: [values]}}`` for the sub-tasks' ``streams``
    tasks. Skipped like a batch process; marked with ``mark_script_process`` (per stream) so that
    the plugin's listener records each outcome.

    :param workflow_key: the loaded workflow.
    :param variant: the variant.
    :param process_path: the process's path.
    :param stream: the stream's values.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#fff2cc"

    def __init__(
        self,
        *,
        workflow_key: str,
        variant: str | None,
        process_path: str,
        stream: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("python_callable", _unset_callable)
        super().__init__(**kwargs)
        self.workflow_key = workflow_key
        self.variant = variant
        self.process_path = process_path
        self.stream_values = dict(stream or {})

    def execute(self, context: Context) -> Any:
        """Skip or call the script; return what its dependents read."""
        workflow = workflow_for(self.workflow_key)
        graph = workflow.graph(self.variant)
        process = workflow.process(self.variant, self.process_path)
        task = workflow.task(self.variant, self.process_path.rpartition("/")[0])
        path = stream_path(self.stream_values)
        context["desc_stream"] = path or process.name  # type: ignore[typeddict-unknown-key]
        # Per stream: the listener reads this when the instance ends.
        setattr(
            self,
            _DESC_PROCESS_ATTR,
            DescProcess(
                process=process.name,
                workflow=graph.name,
                task=process.task,
                version=process.task_version,
                stream=path,
                variant=self.variant or "",
                workflow_version=graph.version,
            ),
        )
        variables = workflow.run_variables(self.variant, context)
        map_index = _map_index(context)
        reason = _skip_reason(
            RunStates(context, graph), task, process, self.stream_values, map_index, variables
        )
        if reason is not None:
            note_skip(self, _skip_class(reason), reason)
            raise AirflowSkipException(reason)
        kwargs = script_kwargs(workflow, process, self.stream_values, variables)
        self.log.info("calling %s(%s)", process.callable, ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
        result = import_callable(process.callable or "")(**kwargs)
        if process.feeds:
            feeds = script_feeds(process, result)
            self.log.info("streams made: %s", ", ".join(f"{k}: {len(v)}" for k, v in feeds.items()))
            return {"stream": self.stream_values, "map_index": map_index, "feeds": feeds}
        return _jsonable(result)


def _unset_callable(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("WorkflowScriptOperator calls its spec's callable itself")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


class WorkflowStreamsOperator(BaseOperator):
    """The streams of a sub-task in one DAG run, made from what its feeding script returned.

    Each stream is its parent's stream values plus its own (``{"filter": "r", "patch": "1,2"}``).
    A parent stream whose feeding script did not succeed, or for which something the sub-task
    ``depends_on`` did not succeed, makes none. For a bundled sub-task, returns the bundles (lists
    of streams) that its bundle task maps over.

    :param workflow_key: the loaded workflow.
    :param variant: the variant.
    :param task_path: the sub-task's path.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8e8e8"

    def __init__(self, *, workflow_key: str, variant: str | None, task_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow_key = workflow_key
        self.variant = variant
        self.task_path = task_path

    def execute(self, context: Context) -> Any:
        """Collect the streams (or bundles) of this run."""
        workflow = workflow_for(self.workflow_key)
        graph = workflow.graph(self.variant)
        task = workflow.task(self.variant, self.task_path)
        parent = workflow.task(self.variant, task.parent_path or "")
        feeder = parent.process(task.streams_from or "")
        runs = RunStates(context, graph)
        outputs = context["ti"].xcom_pull(task_ids=[task_id_for(feeder.path)]) or []
        streams: list[dict[str, Any]] = []
        for output in outputs:
            if not isinstance(output, Mapping) or "feeds" not in output:
                continue
            parent_stream = dict(output.get("stream") or {})
            index = int(output.get("map_index", -1))
            if task.depends_on:
                states = runs.upstream(parent, task.depends_on, parent_stream, index)
                blocked = {name: s for name, s in states.items() if s != "success"}
                if blocked:
                    self.log.info(
                        "no streams for %s: %s", stream_path(parent_stream) or "the run",
                        ", ".join(f"{n} {s}" for n, s in blocked.items()),
                    )  # fmt: skip
                    continue
            for value in (output.get("feeds") or {}).get(task.name, []):
                stream = dict(parent_stream)
                if task.stream_var:
                    stream[task.stream_var] = value
                streams.append(stream)
        self.log.info("%s: %d streams", task.path, len(streams))
        if task.bundling.state == "bundle":
            bundles = task.split_streams(streams)
            self.log.info("%d bundles of up to %s streams", len(bundles), task.bundling.bundle_size)
            return bundles
        return streams


# --- building DAGs ------------------------------------------------------------------------------------


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
    :return: DAGs by DAG id.
    :raises WorkflowSpecError: for a bad spec or overlay, or a process named ``streams`` /
        ``bundle`` in a sub-task.
    """
    if isinstance(spec, WorkflowSpec):
        profiles = clusters if clusters is not None else _configured_clusters()
        workflow = LoadedWorkflow(
            key=f"{spec.source}#{spec.name}", spec=spec, options=options or RenderOptions(), clusters=profiles
        )
        _REGISTRY[workflow.key] = workflow
    else:
        workflow = load_workflow(spec, clusters=clusters, options=options)
    dags: dict[str, DAG] = {}
    for variant in workflow.variants:
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
    for path in paths:
        dags.update(render_dags(here / path, clusters=clusters))
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
        timetable = _timetable_for(self.workflow.spec.variables_for(self.variant, dict(options.variables)))
        if timetable is not None:
            dag_kwargs.update(schedule=timetable, start_date=timetable.survey_start, catchup=True)
        else:
            dag_kwargs.update(schedule=None)
        dag = DAG(
            dag_id=self.workflow.dag_id(self.variant),
            description=(graph.description or graph.name)[:200],
            tags=tags,
            params={name: _param(value) for name, value in defaults.items()},
            default_args={"retry_delay": timedelta(seconds=options.retry_delay_s)},
            doc_md=self._doc(),
            max_active_runs=16,
            **dag_kwargs,
        )
        with dag:
            self._contents(graph.root, None)
        return dag

    def _doc(self) -> str:
        graph = self.graph
        table = estimate_task_instances(graph).format()
        return (
            f"**{graph.name}** version {graph.version}"
            + (f", variant `{graph.variant}`" if graph.variant else "")
            + f" — {graph.description}\n\nSpec: `{graph.source}`. Conf overrides variables, e.g. "
            '`{"scale": 0.001}`.\n\n```\n' + table + "\n```\n"
        )

    def _common(self) -> dict[str, Any]:
        return {"workflow_key": self.key, "variant": self.variant}

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
        from airflow_desc.operators.bundle import SlurmBundleOperator

        batch = [p for t in task.iter_tasks() for p in t.processes if p.resources is not None]
        cluster = batch[0].resources.cluster if batch and batch[0].resources else None
        retries = max((p.retries for p in batch), default=0)
        bundle = SlurmBundleOperator.partial(
            task_id=BUNDLE_TASK,
            bundle_task=task.path,
            cluster=cluster,
            launcher=self.workflow.options.launcher,
            retries=retries,
            workflow=self.graph.name,
            workflow_task=task.name,
            workflow_version=self.graph.version,
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
                    workflow_version=self.graph.version,
                )  # fmt: skip
            mapped = WorkflowScriptOperator.partial(map_index_template=_STREAM_LABEL, **common)
            return mapped.expand(stream=streams.output)
        res = process.resources or ResolvedResources()
        batch: dict[str, Any] = {
            **common,
            "cluster": res.cluster,
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
            "process": process.name,
        }
        if streams is None:
            return WorkflowBatchOperator(**batch)
        return WorkflowBatchOperator.partial(map_index_template=_STREAM_LABEL, **batch).expand(
            stream=streams.output
        )


def _airflow_node(node: Any) -> Any:
    """Return a task, or a sub-task's group (``{"group": ..., "streams": ...}``)."""
    return node["group"] if isinstance(node, dict) else node


def _param(value: Scalar) -> Param:
    kind = "boolean" if isinstance(value, bool) else "integer" if isinstance(value, int) else (
        "number" if isinstance(value, float) else "string"
    )  # fmt: skip
    if kind == "integer":
        return Param(value, type=["integer", "number"])
    return Param(value, type=kind)


def _check_names(graph: WorkflowGraph) -> None:
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


def hostname() -> str:
    """Return this worker's host name (where scripts run)."""
    return socket.gethostname()
