"""Build the graph of one DAG of a workflow from its spec: resources resolved, bundling decided.

Bundling (how a DAG run of a big campaign stays small enough for Airflow):

- A sub-task runs **in bundles** when its spec says ``bundle: always``, or ``bundle: auto``
  (the default) and a busy DAG run may make more of its streams than
  ``bundling.threshold``. Its streams are split into bundles of ``bundle_size``; each
  bundle is one mapped task instance, one SLURM allocation, running the streams of the
  sub-task and of every sub-task below it. Script processes inside run in the bundle task on
  the worker (setup scripts before the allocation, wrapup scripts after): they are not task
  instances.
- Otherwise each process of the sub-task is one mapped task, one instance per stream; the
  processes of the top-level task are one task each.
- A bundle size not given in the spec is computed. With ``bundling.target_instances``, each
  such sub-task gets its own: the streams whose expected batch instances make about that many
  (a whole-node allocation), lowered so that their expected work, packed on one node of the
  cluster, fits ``bundling.max_walltime`` and the cluster's walltime (:func:`bundle_size_for`).
  A size the walltime lowered is fitted again at run time: the streams task packs up to the
  target when the history's median run times of the stream's processes, twice over, fit the
  walltime (:class:`~airflow_desc.workflow.graph.BundleFit`; ``bundling.run_times_from``: this
  workflow's records, or ``any`` workflow's of a process of the same name).
  Either way sizes are at least those that keep a busy DAG run within
  ``bundling.max_task_instances`` (one size for all, the only rule without a target), and no
  mapped task exceeds Airflow's ``max_map_length`` of :data:`MAX_MAP_LENGTH`.

Stream counts come from each sub-task's ``expected_streams`` (streams per parent stream,
evaluated with the variant's variables, e.g. ``5114.5 * scale``). An *average* run has the
product of them along the path; a *busy* run counts a fan-out below 1 (a sub-task that only
some runs launch, like DC1's level1 in 6 of 15 runs) as 1. :func:`estimate_task_instances`
counts the task instances of a campaign from the same numbers, or from other fan-outs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from airflow_desc.clusters import ClusterProfiles
from airflow_desc.emulate import payload_command
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.slurm.units import walltime_seconds
from airflow_desc.workflow.graph import (
    MAX_MAP_LENGTH,
    BundleFit,
    Bundling,
    CheckNode,
    ProcessNode,
    ResolvedResources,
    RunsAs,
    TaskNode,
    WorkflowGraph,
    dag_id_for,
    render_tree,
    streams_that_fit,
)
from airflow_desc.workflow.spec_expressions import Expression, ExpressionError
from airflow_desc.workflow.spec_models import (
    BundlingSettings,
    Defaults,
    Emulate,
    Escalation,
    ProcessSpec,
    Resources,
    SubTaskSpec,
    TaskSpec,
    WorkflowSpec,
)
from airflow_desc.workflow.spec_templates import Scalar, Template, format_value
from airflow_desc.workflow.thresholds import MinSuccess

T = TypeVar("T")

__all__ = ["StreamWork", "build_graph", "bundle_size_for", "in_busy_run"]


def _first(*values: T | None) -> T | None:
    return next((v for v in values if v is not None), None)


@dataclass(frozen=True)
class _Context:
    """What a task inherits from the tasks above it."""

    path: str
    version: str
    defaults: tuple[Defaults, ...]
    stream_vars: tuple[str, ...]
    variables: Mapping[str, Scalar]
    patterns: Mapping[str, str] = field(default_factory=dict)


def _resources(process: ProcessSpec, defaults: Sequence[Defaults]) -> ResolvedResources:
    layers = [process.resources, *(d.resources for d in reversed(defaults))]
    chosen = {
        name: _first(*(getattr(layer, name) for layer in layers if layer is not None))
        for name in Resources.model_fields
    }
    walltime = chosen["walltime"]
    return ResolvedResources(
        cpus=chosen["cpus"] or 1,
        memory_mb=chosen["memory_mb"],
        walltime=walltime,
        walltime_s=walltime_seconds(walltime) if walltime else None,
        cluster=chosen["cluster"],
        partition=chosen["partition"],
        container=chosen["container"],
        fallback_clusters=chosen["fallback_clusters"] or (),
    )


def _emulate_args(name: str, emulate: Emulate, ctx: _Context) -> tuple[str, ...]:
    """Return the payload arguments, each a template (stream variables are filled in per stream)."""
    inherited = [d.emulate for d in reversed(ctx.defaults) if d.emulate is not None]
    seed = _first(emulate.seed, *(d.seed for d in inherited)) or "0"
    output_mb = _first(emulate.output_mb, *(d.output_mb for d in inherited))
    sleep = _first(emulate.sleep_seconds, *(d.sleep_seconds for d in inherited))
    label = emulate.name or "-".join([name, *(f"{{{{ {v} }}}}" for v in ctx.stream_vars)])
    args = ["--name", label, "--cpu-seconds", format_value(emulate.cpu_seconds)]
    args += ["--memory-mb", format_value(emulate.memory_mb)]
    if sleep:
        args += ["--sleep-seconds", format_value(sleep)]
    for output in emulate.outputs:
        args += ["--output", output]
    if output_mb is not None:
        args += ["--output-mb", format_value(output_mb)]
    for item in emulate.inputs:
        args += ["--input", item]
    if emulate.fail != "none":
        args += ["--fail", emulate.fail, "--fail-rate", format_value(emulate.fail_rate)]
    if emulate.exit_code is not None:
        args += ["--exit-code", str(emulate.exit_code)]
    return (*args, "--seed", seed)


def _process_node(
    name: str, process: ProcessSpec, ctx: _Context, feeds: tuple[str, ...], runs_as: RunsAs
) -> ProcessNode:
    defaults = ctx.defaults
    values = ctx.variables
    batch = process.type == "batch"
    command_parts: tuple[str, ...] = ()
    if batch and process.emulate is not None:
        command_parts = _emulate_args(name, process.emulate, ctx)
    elif batch and process.command is not None:
        command_parts = (process.command,)
    shown = [Template.parse(part).render(values, keep_missing=True) for part in command_parts]
    command = None
    if shown:
        command = payload_command(*shown) if process.emulate is not None else shown[0]
    dm_command = None
    if process.dm_command is not None:
        dm_command = Template.parse(process.dm_command).render(values, keep_missing=True)
    checks = tuple(
        CheckNode(
            kind=check.kind,
            template=check.target,
            min_count=check.min_count or 1,
            message=check.message,
            patterns=ctx.patterns,
        )
        for check in process.checks
    )
    return ProcessNode(
        name=name,
        type=process.type,
        task=ctx.path.rpartition("/")[2],
        task_version=ctx.version,
        path=f"{ctx.path}/{name}",
        description=process.description,
        depends_on=process.depends_on,
        min_success=_thresholds(process.min_success),
        after=process.after,
        skip_if=Expression.parse(process.skip_if, "condition") if process.skip_if else None,
        retries=_first(process.retries, *(d.retries for d in reversed(defaults))) or 0,
        escalation=_first(process.escalation, *(d.escalation for d in reversed(defaults))) or Escalation(),
        resources=_resources(process, defaults) if batch else None,
        command=command,
        dm_command=dm_command,
        emulated=process.emulate is not None,
        callable=process.callable,
        kwargs=render_tree(process.kwargs, values, keep_missing=True),
        checks=checks,
        deferrable=process.deferrable,
        feeds=feeds,
        stream_vars=ctx.stream_vars,
        runs_as=runs_as,
        variables=values,
        patterns=ctx.patterns,
        command_parts=command_parts,
        dm_command_template=process.dm_command,
        kwargs_template=process.kwargs,
    )


@dataclass
class _Plan:
    """Numbers and bundling of one task, before its node is built."""

    path: str
    spec: TaskSpec
    expected: float
    average: float
    busy: float
    children: list[_Plan]
    bundling: Bundling = field(default_factory=Bundling)

    @property
    def busy_streams(self) -> int:
        return math.ceil(self.busy - 1e-9)

    def walk(self) -> Iterator[_Plan]:
        yield self
        for child in self.children:
            yield from child.walk()


def in_busy_run(expected: float) -> float:
    """Return a fan-out in a busy run: one below 1 (a sub-task only some runs launch) counts as 1."""
    return expected if expected >= 1 or expected <= 0 else 1.0


def _expected(spec: SubTaskSpec, path: str, variables: Mapping[str, Scalar], source: str) -> float:
    try:
        value = Expression.parse(spec.expected_streams, "number").evaluate(variables)
    except ExpressionError as exc:
        raise WorkflowSpecError(f"{source}: {path}: expected_streams: {exc}") from None
    if not isinstance(value, int | float) or value < 0:
        raise WorkflowSpecError(
            f"{source}: {path}: expected_streams: {spec.expected_streams} gives {value}; "
            "it must be 0 or more: check the variables it uses"
        )
    return float(value)


def _measure(
    path: str,
    spec: TaskSpec,
    parent: _Plan | None,
    overrides: Mapping[str, float],
    variables: Mapping[str, Scalar],
    source: str,
) -> _Plan:
    name = path.rpartition("/")[2]
    if parent is None:
        expected = 1.0
    elif name in overrides:
        expected = float(overrides[name])
    else:
        assert isinstance(spec, SubTaskSpec)
        expected = _expected(spec, path, variables, source)
    average = expected * (parent.average if parent else 1.0)
    busy = in_busy_run(expected) * (parent.busy if parent else 1.0)
    plan = _Plan(path, spec, expected, average, busy, [])
    plan.children = [
        _measure(f"{path}/{child}", sub, plan, overrides, variables, source)
        for child, sub in spec.tasks.items()
    ]
    return plan


def _decide(plan: _Plan, threshold: int, inside: str | None = None) -> None:
    """Decide, top down, which tasks run in bundles."""
    spec = plan.spec
    if inside is not None:
        plan.bundling = Bundling("in-bundle", reason=f"runs inside the bundles of {inside}")
    elif isinstance(spec, SubTaskSpec):
        busy = plan.busy_streams
        if spec.bundle == "always":
            plan.bundling = Bundling("bundle", spec.bundle_size, "bundle: always")
        elif spec.bundle == "never":
            plan.bundling = Bundling("none", reason="bundle: never")
        elif busy > threshold:
            reason = f"{busy} streams in a busy run > threshold {threshold}"
            plan.bundling = Bundling("bundle", spec.bundle_size, reason)
        else:
            plan.bundling = Bundling("none", reason=f"{busy} streams in a busy run <= threshold {threshold}")
    if plan.bundling.state != "none" and inside is None:
        inside = plan.path.rpartition("/")[2]
    for child in plan.children:
        _decide(child, threshold, inside)


@dataclass(frozen=True)
class StreamWork:
    """What one stream of a bundled sub-task is expected to hold (its sub-tasks' fan-outs included).

    :param instances: batch process instances.
    :param core_s: their cpus x expected runtime, summed, in core-seconds. The expected runtime of
        an emulated payload is its ``cpu_seconds`` + ``sleep_seconds`` (what runs); of a real
        command, its walltime request (or an hour), the most it may take.
    :param cluster: the cluster of its batch processes (``None``: the default cluster).
    :param processes: its batch processes: name, instances per stream, cpus each (a name met in
        several sub-tasks counted once, with their instances added).
    """

    instances: float
    core_s: float
    cluster: str | None = None
    processes: tuple[tuple[str, float, int], ...] = ()


def bundle_size_for(
    work: StreamWork, target_instances: int, *, cores: int | None = None, walltime_s: int | None = None
) -> tuple[int, str]:
    """Return the streams per bundle that aim at ``target_instances`` batch instances, and why.

    ``target_instances`` over the instances of one stream, rounded down, at least 1. With a node
    (``cores`` and ``walltime_s``: the most one allocation may run), lowered so that the bundle's
    work, packed on the node's cores, fits the walltime; at least 1 stream all the same (one
    stream's work is what its bundle must run, whatever the size).

    :param work: one stream's expected work.
    :param target_instances: the batch instances a bundle aims at.
    :param cores: cores of one node of the bundle's cluster.
    :param walltime_s: the walltime a bundle may fill.
    """
    if work.instances > 0:
        size = max(1, math.floor(target_instances / work.instances + 1e-9))
        reason = f"{target_instances} instances per bundle at {work.instances:.3g} per stream"
    else:
        size, reason = target_instances, f"{target_instances} instances per bundle, none expected per stream"
    if cores and walltime_s and work.core_s > 0:
        fits = streams_that_fit(cores, walltime_s, work.core_s)
        if fits < size:
            size = fits
            reason += f"; lowered to fit {cores} cores x {walltime_s} s ({work.core_s:.3g} core-s a stream)"
    return size, reason


def _runtime_s(process: ProcessSpec, defaults: Sequence[Defaults]) -> float:
    """Return the expected runtime of a batch process: an emulated payload's, else its walltime request."""
    if process.emulate is not None:
        sleep = _first(
            process.emulate.sleep_seconds, *(d.emulate.sleep_seconds for d in reversed(defaults) if d.emulate)
        )
        return process.emulate.cpu_seconds + (sleep or 0.0)
    return float(_resources(process, defaults).walltime_s or 3600)


def _stream_work(plan: _Plan, defaults: Sequence[Defaults], cores: int | None = None) -> StreamWork:
    """Return the expected work of one stream of a (bundled) sub-task, from ``expected_streams``.

    :param plan: the sub-task.
    :param defaults: the defaults in force above it, outermost first.
    :param cores: a node's cores: a process asking for more is counted at this many.
    """
    instances = core_s = 0.0
    cluster: str | None = None
    by_name: dict[str, tuple[float, int]] = {}
    stack: list[tuple[_Plan, float, tuple[Defaults, ...]]] = [(plan, 1.0, tuple(defaults))]
    while stack:
        here, count, above = stack.pop()
        layers = (*above, here.spec.defaults) if here.spec.defaults else above
        for name, process in here.spec.processes.items():
            if process.type != "batch":
                continue
            res = _resources(process, layers)
            cluster = cluster or res.cluster
            cpus = min(res.cpus, cores) if cores else res.cpus
            instances += count
            core_s += count * cpus * _runtime_s(process, layers)
            known, widest = by_name.get(name, (0.0, 0))
            by_name[name] = (known + count, max(widest, cpus))
        stack.extend((child, count * child.expected, layers) for child in here.children)
    processes = tuple((name, count, cpus) for name, (count, cpus) in sorted(by_name.items()))
    return StreamWork(instances, core_s, cluster, processes)


def _defaults_above(root: _Plan) -> dict[str, tuple[Defaults, ...]]:
    """Return, per task path, the defaults of the tasks above it (outermost first)."""
    found: dict[str, tuple[Defaults, ...]] = {}
    stack: list[tuple[_Plan, tuple[Defaults, ...]]] = [(root, ())]
    while stack:
        plan, above = stack.pop()
        found[plan.path] = above
        here = (*above, plan.spec.defaults) if plan.spec.defaults else above
        stack.extend((child, here) for child in plan.children)
    return found


def _size_bundles(root: _Plan, settings: BundlingSettings, clusters: ClusterProfiles | None) -> None:
    """Size every bundled task whose spec sets no size.

    Without ``target_instances``: one size for all, the smallest that keeps a busy run within
    ``max_task_instances``. With it: each its own (:func:`bundle_size_for`, the walltime cap on a
    node of its cluster when the profiles are known), raised where needed to that same ceiling.
    """
    plans = list(root.walk())
    fixed = sum(len(p.spec.processes) * p.busy_streams for p in plans if p.bundling.state == "none")
    bundled = [p for p in plans if p.bundling.state == "bundle"]
    explicit = sum(
        math.ceil(p.busy_streams / p.bundling.bundle_size) for p in bundled if p.bundling.bundle_size
    )
    auto = [p for p in bundled if p.bundling.bundle_size is None]
    if not auto:
        return
    budget = max(settings.max_task_instances - fixed - explicit, len(auto))
    streams = [max(p.busy_streams, 1) for p in auto]
    size = max(1, math.ceil(sum(streams) / budget), *(math.ceil(s / MAX_MAP_LENGTH) for s in streams))
    while sum(math.ceil(s / size) for s in streams) > budget:
        size += 1
    ceiling = f"<= {settings.max_task_instances} task instances per run"
    above = _defaults_above(root)
    for plan in auto:
        if settings.target_instances is None:
            plan.bundling = Bundling("bundle", size, f"{plan.bundling.reason}; size for {ceiling}")
            continue
        cores = walltime_s = None
        if clusters is not None:
            profile = clusters.get(_stream_work(plan, above[plan.path]).cluster)
            cores = profile.cores_per_node
            walltime_s = profile.max_walltime_s
            if settings.max_walltime is not None:
                walltime_s = min(walltime_s, walltime_seconds(settings.max_walltime))
        work = _stream_work(plan, above[plan.path], cores)
        chosen, why = bundle_size_for(work, settings.target_instances, cores=cores, walltime_s=walltime_s)
        target, _ = bundle_size_for(work, settings.target_instances)
        fit = None
        if chosen < target and cores and walltime_s:  # the walltime requests lowered it
            fit = BundleFit(target, cores, walltime_s, work.processes)
        if chosen < size:
            chosen, why = size, f"{why}; raised to {size} for {ceiling}"
        plan.bundling = Bundling("bundle", chosen, f"{plan.bundling.reason}; {why}", fit)


def _build(plan: _Plan, parent: _Context, variables: Mapping[str, Scalar]) -> TaskNode:
    spec = plan.spec
    name = plan.path.rpartition("/")[2]
    sub = spec if isinstance(spec, SubTaskSpec) else None
    version = (getattr(spec, "version", None) or parent.version) if sub else parent.version
    stream_vars = parent.stream_vars
    if sub is not None and sub.stream_var:
        stream_vars = (*stream_vars, sub.stream_var)
    defaults = (*parent.defaults, spec.defaults) if spec.defaults else parent.defaults
    ctx = _Context(plan.path, version, defaults, stream_vars, variables, parent.patterns)
    feeds: dict[str, list[str]] = {}
    for child_name, child in spec.tasks.items():
        feeds.setdefault(child.streams_from, []).append(child_name)
    runs_as: RunsAs = "task" if sub is None else ("mapped" if plan.bundling.state == "none" else "in-bundle")
    processes = tuple(
        _process_node(p_name, process, ctx, tuple(feeds.get(p_name, ())), runs_as)
        for p_name, process in spec.processes.items()
    )
    children = tuple(_build(child, ctx, variables) for child in plan.children)
    return TaskNode(
        name=name,
        version=version,
        path=plan.path,
        description=spec.description,
        processes=processes,
        children=children,
        depends_on=sub.depends_on if sub else (),
        min_success=_thresholds(sub.min_success) if sub else {},
        after=sub.after if sub else (),
        streams_from=sub.streams_from if sub else None,
        stream_var=sub.stream_var if sub else None,
        stream_vars=stream_vars,
        expected_streams=plan.expected,
        streams_per_run=plan.average,
        streams_in_busy_run=plan.busy,
        bundling=plan.bundling,
    )


def _thresholds(given: Mapping[str, int | float]) -> dict[str, MinSuccess]:
    return {name: MinSuccess.parse(value) for name, value in given.items()}


def _check_thresholds(root: TaskNode, source: str) -> None:
    """Refuse a ``min_success`` inside a bundle: the pilot runs a dependent only when all of it succeeded."""
    for task in root.iter_tasks():
        inside: list[ProcessNode | TaskNode] = [
            p for p in task.processes if p.runs_as == "in-bundle" and p.min_success
        ]
        inside += [c for c in task.children if c.bundling.state == "in-bundle" and c.min_success]
        for node in inside:
            names = ", ".join(sorted(node.min_success))
            raise WorkflowSpecError(
                f"{source}: {node.path}: depends_on {names}: min_success is not supported inside a bundle "
                "(the pilot runs a dependent only when all of it succeeded); set bundle: never on the "
                "bundled sub-task above, or remove min_success"
            )


#: At most this many siblings run in the allocation may a ``skip_if`` inside a bundle name: the planner
#: evaluates it for each combination of their end states (4 ** 4 = 256), for the pilot.
MAX_SKIP_IF_STATES_IN_BUNDLE = 4


def _check_skip_if_in_bundles(root: TaskNode, source: str) -> None:
    """Refuse a ``skip_if`` inside a bundle on more siblings run in the allocation than the pilot takes."""
    for task in root.iter_tasks():
        inside = {p.name for p in task.processes if p.type == "batch"} | {c.name for c in task.children}
        for process in task.processes:
            if process.runs_as != "in-bundle" or process.type != "batch" or process.skip_if is None:
                continue
            names = sorted(process.skip_if.names & inside)
            if len(names) > MAX_SKIP_IF_STATES_IN_BUNDLE:
                raise WorkflowSpecError(
                    f"{source}: {process.path}: skip_if names the states of {len(names)} processes or "
                    f"sub-tasks that run in the same bundle ({', '.join(names)}); inside a bundle it may "
                    f"name at most {MAX_SKIP_IF_STATES_IN_BUNDLE}: split the condition over a process "
                    "in between, or set bundle: never on the bundled sub-task above"
                )


def _check_bundle_clusters(root: TaskNode, source: str) -> None:
    """One bundle is one SLURM allocation: all its batch processes must use one cluster (and fallbacks)."""
    for task in root.iter_tasks():
        if task.bundling.state != "bundle":
            continue
        clusters: dict[str, list[str]] = {}
        for below in task.iter_tasks():
            for process in below.processes:
                res = process.resources
                if res is not None:
                    where = res.cluster or "the default cluster"
                    if res.fallback_clusters:
                        where += f" (fallback {', '.join(res.fallback_clusters)})"
                    clusters.setdefault(where, []).append(process.name)
        if len(clusters) > 1:
            listed = "; ".join(f"{c}: {', '.join(names)}" for c, names in clusters.items())
            raise WorkflowSpecError(
                f"{source}: {task.path}: runs in bundles ({task.bundling.reason}), but its batch processes "
                f"use several clusters ({listed}); a bundle is one SLURM allocation on one cluster: "
                "give them the same cluster and fallback_clusters, or set bundle: never"
            )


def build_graph(
    spec: WorkflowSpec,
    variant: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    clusters: ClusterProfiles | None = None,
) -> WorkflowGraph:
    """Build the graph of one DAG: a variant of a workflow.

    :param spec: the workflow.
    :param variant: one of its variants; ``None`` for a spec without variants (or for the
        defaults).
    :param overrides: variable values that replace the variant's (e.g. ``{"scale": 0.001}``);
        they decide stream counts, hence bundling.
    :param clusters: the cluster profiles: with ``bundling.target_instances``, a computed bundle
        size is capped so that a bundle's work fits one node of its cluster (see
        :func:`bundle_size_for`); ``None``: no such cap.
    :raises WorkflowSpecError: for an unknown variant or variable, an ``expected_streams``
        that is negative, a bundled sub-task whose batch processes use several clusters, a
        ``min_success`` inside a bundle, or a ``skip_if`` inside a bundle on more than
        :data:`MAX_SKIP_IF_STATES_IN_BUNDLE` siblings run in the allocation.
    """
    variables = MappingProxyType(spec.variables_for(variant, overrides))
    dag_id = dag_id_for(spec, variant)
    plan = _measure(spec.name, spec, None, {}, variables, spec.source)
    _decide(plan, spec.bundling.threshold)
    _size_bundles(plan, spec.bundling, clusters)
    top = _Context(spec.name, spec.version, (), (), variables, dict(spec.patterns))
    root = _build(plan, top, variables)
    _check_bundle_clusters(root, spec.source)
    _check_thresholds(root, spec.source)
    _check_skip_if_in_bundles(root, spec.source)
    tags = ["desc", spec.name, f"version:{spec.version}"]
    if variant is not None:
        tags.append(f"variant:{variant}")
    return WorkflowGraph(
        name=spec.name,
        version=spec.version,
        variant=variant,
        dag_id=dag_id,
        tags=tuple(tags),
        description=spec.description,
        variables=variables,
        root=root,
        settings=spec.bundling,
        source=spec.source,
    )
