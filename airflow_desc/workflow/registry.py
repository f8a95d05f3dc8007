"""The run-time registry of loaded workflows: what a running task looks its workflow up in.

Operators carry names, not objects: the key of the loaded workflow (its file, or an inline
spec's ``source#name``), the variant and the process / task path. The worker parses the DAG
file before it runs a task, which fills this registry; :func:`workflow_for` returns the entry
(loading a spec file itself when the DAG file was not parsed in this process).

**Variables of a run** are, in order: the spec's defaults, the variant's, a render overlay's,
then the run's conf (or the trigger form's params). They are read once per task instance
(:meth:`LoadedWorkflow.run_variables`). A spec whose variables include ``survey_start`` and
``survey_years`` (``twinkles.yaml``) is processed year by year: its ``year`` is the run's survey
year, from its data interval (a conf ``year`` that disagrees is an error).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_desc.clusters import ClusterProfiles
from airflow_desc.config import configured_cluster_profiles
from airflow_desc.exceptions import ClusterProfileError, WorkflowSpecError
from airflow_desc.workflow.build import build_graph
from airflow_desc.workflow.graph import ProcessNode, TaskNode, WorkflowGraph, dag_id_for
from airflow_desc.workflow.overlays import (
    RenderOptions,
    adjust_graph,
    check_resources_apply,
    is_overlay,
    load_overlay,
)
from airflow_desc.workflow.spec import load_spec
from airflow_desc.workflow.spec_expressions import Expression, ExpressionError
from airflow_desc.workflow.spec_models import PAYLOAD_CONF_KEY, PAYLOADS, Payload, WorkflowSpec
from airflow_desc.workflow.spec_templates import Scalar

__all__ = [
    "LoadedWorkflow",
    "load_workflow",
    "register",
    "run_payload_choice",
    "timetable_for",
    "workflow_for",
]

log = logging.getLogger(__name__)

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

    def __post_init__(self) -> None:
        if self.options.resources:  # an overlay's per-process requests must name batch processes
            check_resources_apply(
                self.options,
                {f"{names[-1]}/{name}": process.type
                 for names, task in self.spec.iter_tasks() for name, process in task.processes.items()},
            )  # fmt: skip

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
            graph = build_graph(
                self.spec, variant, overrides=dict(self.options.variables), clusters=self.clusters
            )
            self.graphs[variant] = adjust_graph(graph, self.options, self.clusters)
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

    @property
    def spec_digest(self) -> str:
        """What rendered these DAGs: the spec file's SHA-256, then ``+`` the render overlay's, if any.

        Kept on each run in the history (``runs.spec_digest``), so that a report names the spec.
        """
        return self.spec.digest + (f"+{self.options.digest}" if self.options.digest else "")

    def dag_id(self, variant: str | None) -> str:
        """Return the DAG id of a variant, with the options' suffix (without building its graph)."""
        return dag_id_for(self.spec, variant) + self.options.dag_id_suffix

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

    def run_variables(self, variant: str | None, context: Mapping[str, Any]) -> dict[str, Scalar]:
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

    def run_payload(self, variant: str | None, context: Mapping[str, Any]) -> Payload:
        """Return what the running DAG run's batch processes run: ``emulate`` or ``dm``.

        The run's conf ``desc_payload`` (or the DAG param of that name), else the spec's ``payload``.

        :raises WorkflowSpecError: for another value, or ``dm`` while a batch process of the variant
            has no ``dm_command`` (all of them named).
        """
        chosen = run_payload_choice(context)
        if chosen is None:
            return self.spec.payload
        if chosen not in PAYLOADS:
            raise WorkflowSpecError(
                f"{self.spec.source}: run conf: {PAYLOAD_CONF_KEY}={chosen!r} is not a payload; "
                f"give one of {', '.join(PAYLOADS)}, or leave it out for the spec's ({self.spec.payload})"
            )
        if chosen == "dm":
            lacking = [p.path for p in self.graph(variant).iter_processes() if p.type == "batch"
                       and p.dm_command_template is None]  # fmt: skip
            if lacking:
                raise WorkflowSpecError(
                    f"{self.spec.source}: run conf: {PAYLOAD_CONF_KEY}='dm' runs each batch process's "
                    f"dm_command, and these have none: {', '.join(lacking)}; add them to the spec, or run "
                    f"with {PAYLOAD_CONF_KEY}='emulate'"
                )
        return "dm" if chosen == "dm" else "emulate"

    def _survey_year(self, variant: str | None, context: Mapping[str, Any]) -> int | None:
        start = context.get("data_interval_start")
        if start is None:
            return None
        timetable = timetable_for(self.param_defaults(variant))
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


def run_payload_choice(context: Mapping[str, Any]) -> Any:
    """Return the payload a running DAG run asks for (its conf, else its params), unchecked, or ``None``."""
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    if PAYLOAD_CONF_KEY in conf:
        return conf[PAYLOAD_CONF_KEY]
    return (context.get("params") or {}).get(PAYLOAD_CONF_KEY)


def timetable_for(variables: Mapping[str, Any]) -> Any:
    """Return the survey-year timetable of a year-by-year workflow's variables, else ``None``."""
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
    :param clusters: cluster profiles; default: :func:`~airflow_desc.config.configured_cluster_profiles`
        when a clusters file is configured.
    :param options: render options; an overlay's replace them.
    """
    source = Path(path).resolve()
    spec_path, opts = source, options or RenderOptions()
    if is_overlay(source):
        spec_path, opts = load_overlay(source)
    profiles = clusters if clusters is not None else _configured_clusters()
    spec = load_spec(spec_path, clusters=profiles)
    loaded = LoadedWorkflow(key=str(source), spec=spec, options=opts, clusters=profiles)
    _REGISTRY[loaded.key] = loaded
    return loaded


def _configured_clusters() -> ClusterProfiles | None:
    try:
        return configured_cluster_profiles()
    except ClusterProfileError as exc:
        log.debug("no cluster profiles: %s", exc)
        return None


def register(
    spec: WorkflowSpec, options: RenderOptions | None, clusters: ClusterProfiles | None
) -> LoadedWorkflow:
    """Register an already loaded spec under its ``source#name`` (a DAG file may render several).

    A side-by-side spec's key carries its version too (``source#name@1.16``): one DAG file may
    render two versions of a workflow.
    """
    profiles = clusters if clusters is not None else _configured_clusters()
    key = f"{spec.source}#{spec.name}" + (f"@{spec.version}" if spec.side_by_side else "")
    loaded = LoadedWorkflow(key=key, spec=spec, options=options or RenderOptions(), clusters=profiles)
    _REGISTRY[loaded.key] = loaded
    return loaded


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
