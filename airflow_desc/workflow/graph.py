"""The graph of one DAG of a workflow: tasks, processes, bundling (no DAG code here).

:func:`build_graph` turns a :class:`~airflow_desc.workflow.spec.WorkflowSpec` and one of its
variants into a :class:`WorkflowGraph`: a tree of :class:`TaskNode` (Pipeline II tasks:
``DC1-DM12`` > ``level1`` > ``level1ProcessFilter`` ...) holding :class:`ProcessNode` (each
with its resources resolved from ``defaults``, its command rendered with the variant's
variables, its checks and skip condition). The render step turns the tree into task groups
that read like the Pipeline II status table; this module only decides.

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
- A bundle size not given in the spec is computed, one size for all such sub-tasks, so that
  a busy DAG run stays within ``bundling.max_task_instances`` (and no mapped task exceeds
  Airflow's ``max_map_length`` of :data:`MAX_MAP_LENGTH`).

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
from typing import Any, Literal, TypeVar

from airflow_desc.emulate import payload_command
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.slurm.units import walltime_seconds
from airflow_desc.workflow.outcomes import Skip
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
from airflow_desc.workflow.spec_templates import Scalar, Template, TemplateError, format_value

__all__ = [
    "MAX_MAP_LENGTH",
    "Bundling",
    "CheckNode",
    "ProcessNode",
    "ResolvedResources",
    "TaskEstimate",
    "TaskInstanceEstimate",
    "TaskNode",
    "WorkflowGraph",
    "build_graph",
    "dag_id_for",
    "estimate_task_instances",
]

#: Airflow's default ``[core] max_map_length``: the most instances one mapped task may have.
MAX_MAP_LENGTH = 1024

T = TypeVar("T")
BundleState = Literal["none", "bundle", "in-bundle"]
#: How a process becomes Airflow work: its own task, a mapped task (one instance per stream),
#: or part of a bundle task.
RunsAs = Literal["task", "mapped", "in-bundle"]


def dag_id_for(spec: WorkflowSpec, variant: str | None = None) -> str:
    """Return the DAG id of a variant of a workflow: ``DC1-DM12_imsim-dithered``.

    :param spec: the workflow.
    :param variant: one of ``spec.variant_names``; ``None``: the defaults, the only DAG of a
        spec without variants (id ``DC1-DM12``).
    :raises WorkflowSpecError: for an unknown variant.
    """
    if variant is None:
        return spec.name
    spec.variables_for(variant)  # an unknown variant raises here, with a suggestion
    return f"{spec.name}_{variant}"


# --- nodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedResources:
    """A batch process's resources after ``defaults`` (``None``: the cluster's own default).

    :param cpus: CPUs.
    :param memory_mb: memory in MB.
    :param walltime: as written in the spec.
    :param walltime_s: the same in seconds.
    :param cluster: the cluster profile name; ``None``: the default cluster.
    :param partition: the partition, overriding the cluster profile's.
    :param container: the image, if any.
    """

    cpus: int = 1
    memory_mb: int | None = None
    walltime: str | None = None
    walltime_s: int | None = None
    cluster: str | None = None
    partition: str | None = None
    container: str | None = None


_DEFAULT_MESSAGES = {
    "exists": "output {target} does not exist",
    "non_empty": "output {target} is missing or empty",
    "glob": "fewer than {min_count} files match {target}",
    "command": "validation command failed: {target}",
    "log_lacks": "the log matches {target!r}",
}


@dataclass(frozen=True)
class CheckNode:
    """An output check of a batch process; its text is rendered per stream.

    :param kind: one of ``exists``, ``non_empty``, ``glob``, ``command``, ``log_lacks``.
    :param template: the path, pattern or command (templated; a ``log_lacks`` regex is not).
    :param min_count: for ``glob``: the fewest matching files.
    :param message: the failure message given in the spec, if any.
    """

    kind: str
    template: str
    min_count: int = 1
    message: str | None = None

    def target(self, values: Mapping[str, Any]) -> str:
        """Return the path, pattern or command for one stream.

        :param values: variables and stream values.
        """
        if self.kind == "log_lacks":
            return self.template
        return Template.parse(self.template).render(values)

    def failure_message(self, values: Mapping[str, Any]) -> str:
        """Return what an instance failing this check says (its reason is ``output-check``).

        :param values: variables and stream values.
        """
        if self.message is not None:
            return Template.parse(self.message).render(values)
        return _DEFAULT_MESSAGES[self.kind].format(target=self.target(values), min_count=self.min_count)


@dataclass(frozen=True)
class ProcessNode:
    """A process of one DAG: what runs, where, after what, and when it is skipped.

    :param name: the process name (the Airflow task id inside its task group).
    :param type: ``batch`` or ``script``.
    :param task: the name of its Pipeline II task.
    :param task_version: that task's version.
    :param path: ``<task path>/<name>``.
    :param description: one line.
    :param depends_on: sibling processes / sub-tasks that must succeed first.
    :param after: siblings waited for whatever their end state.
    :param skip_if: the skip condition, if any.
    :param retries: retries after the first try.
    :param escalation: how retries raise memory / walltime (batch).
    :param resources: resolved resources (batch; ``None`` for a script).
    :param command: batch: the shell text with the variant's variables filled in; stream
        variables (known at run time) stay ``{{ name }}``: see :meth:`render_command`.
    :param dm_command: batch: the real DM command line, rendered the same way.
    :param emulated: whether ``command`` runs the DM-like payload.
    :param callable: script: ``module.path:function``.
    :param kwargs: script: keyword arguments, variables filled in.
    :param checks: output checks.
    :param feeds: the sub-tasks whose streams this script makes.
    :param stream_vars: the stream variables in scope, outermost first.
    :param runs_as: ``task``, ``mapped`` (one instance per stream) or ``in-bundle``.
    :param variables: the variant's variable values.
    """

    name: str
    type: str
    task: str
    task_version: str
    path: str
    description: str = ""
    depends_on: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    skip_if: Expression | None = None
    retries: int = 0
    escalation: Escalation = field(default_factory=Escalation)
    resources: ResolvedResources | None = None
    command: str | None = None
    dm_command: str | None = None
    emulated: bool = False
    callable: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    checks: tuple[CheckNode, ...] = ()
    feeds: tuple[str, ...] = ()
    stream_vars: tuple[str, ...] = ()
    runs_as: RunsAs = "task"
    variables: Mapping[str, Scalar] = field(default_factory=dict, repr=False)
    command_parts: tuple[str, ...] = field(default=(), repr=False)
    dm_command_template: str | None = field(default=None, repr=False)
    kwargs_template: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def type_label(self) -> str:
        """``Batch`` or ``Script``, as the DC1 status table writes it."""
        return self.type.capitalize()

    def _values(
        self, stream: Mapping[str, Any] | None, variables: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        return {**(self.variables if variables is None else variables), **(stream or {})}

    def render_command(
        self,
        stream: Mapping[str, Any] | None = None,
        variables: Mapping[str, Any] | None = None,
        *,
        dm: bool = False,
    ) -> str:
        """Return the shell text of one stream of this batch process.

        :param stream: the stream values, e.g. ``{"visit": 2201, "raft": "R22"}``.
        :param variables: the run's variables (``spec.variables_for(variant, run_conf)``);
            default: the variant's.
        :param dm: the real DM command line instead of ``command``.
        :raises WorkflowSpecError: for a script process, a missing ``dm_command``, or a
            placeholder with no value.
        """
        values = self._values(stream, variables)
        try:
            if dm:
                if self.dm_command_template is None:
                    raise WorkflowSpecError(f"{self.path}: has no dm_command; add one to the spec")
                return Template.parse(self.dm_command_template).render(values)
            if not self.command_parts:
                raise WorkflowSpecError(f"{self.path}: a script process has no command; call {self.callable}")
            parts = [Template.parse(part).render(values) for part in self.command_parts]
        except TemplateError as exc:
            raise WorkflowSpecError(f"{self.path}: {exc}") from None
        return payload_command(*parts) if self.emulated else parts[0]

    def render_kwargs(
        self, stream: Mapping[str, Any] | None = None, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Return the keyword arguments of one run of this script (a lone placeholder keeps its type).

        :param stream: the stream values.
        :param variables: the run's variables; default: the variant's.
        """
        values = self._values(stream, variables)
        try:
            rendered = _render_tree(self.kwargs_template, values, keep_missing=False)
        except TemplateError as exc:
            raise WorkflowSpecError(f"{self.path}: kwargs: {exc}") from None
        assert isinstance(rendered, dict)
        return rendered

    def skip_reason(
        self,
        states: Mapping[str, str],
        stream: Mapping[str, Any] | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> Skip | None:
        """Why this process instance is Skipped, or ``None`` if it runs.

        Skipped when something it ``depends_on`` did not succeed, or when ``skip_if`` holds.

        :param states: the end state of each upstream process / sub-task (``success``,
            ``failed``, ``terminated``, ``skipped``, ``cancelled``).
        :param stream: the stream values.
        :param variables: the run's variables; default: the variant's.
        :raises WorkflowSpecError: if an upstream state is missing or the condition cannot be
            evaluated.
        """
        for name in self.depends_on:
            state = states.get(name)
            if state is None:
                raise WorkflowSpecError(f"{self.path}: no state given for upstream {name!r}")
            if state != "success":
                return Skip("upstream-failed", f"upstream {name} {state}")
        if self.skip_if is None:
            return None
        values = {**self._values(stream, variables), **states}
        try:
            holds = self.skip_if.evaluate(values)
        except ExpressionError as exc:
            raise WorkflowSpecError(f"{self.path}: skip_if: {exc}") from None
        return Skip("skip-condition", f"skip_if holds: {self.skip_if.text}") if holds else None


@dataclass(frozen=True)
class Bundling:
    """Whether a task runs in bundles.

    :param state: ``none`` (its processes are tasks), ``bundle`` (its streams run in bundles),
        or ``in-bundle`` (it runs inside the bundles of a task above).
    :param bundle_size: streams per bundle, for ``bundle``.
    :param reason: why, in words.
    """

    state: BundleState = "none"
    bundle_size: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class TaskNode:
    """A Pipeline II task of one DAG: a task group, run once per stream of its sub-task.

    :param name: the task name (the task group id).
    :param version: its version.
    :param path: e.g. ``DC1-DM12/level1/level1ProcessFilter``.
    :param description: one line.
    :param processes: its processes, in spec order.
    :param children: its sub-tasks, in spec order.
    :param depends_on: siblings that must succeed first (sub-tasks only).
    :param after: siblings waited for whatever their state.
    :param streams_from: the parent's script process that makes its streams.
    :param stream_var: the template name of each stream's value.
    :param stream_vars: stream variables in scope, outermost first (its own last).
    :param expected_streams: streams per parent stream (1 for the top-level task).
    :param streams_per_run: streams in an average DAG run.
    :param streams_in_busy_run: streams in a busy DAG run (fan-outs below 1 counted as 1).
    :param bundling: the bundling decision.
    """

    name: str
    version: str
    path: str
    description: str = ""
    processes: tuple[ProcessNode, ...] = ()
    children: tuple[TaskNode, ...] = ()
    depends_on: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    streams_from: str | None = None
    stream_var: str | None = None
    stream_vars: tuple[str, ...] = ()
    expected_streams: float = 1.0
    streams_per_run: float = 1.0
    streams_in_busy_run: float = 1.0
    bundling: Bundling = field(default_factory=Bundling)

    @property
    def parent_path(self) -> str | None:
        """The path of the parent task; ``None`` for the top-level task."""
        return self.path.rpartition("/")[0] or None

    @property
    def depth(self) -> int:
        """0 for the top-level task, 1 for its sub-tasks..."""
        return self.path.count("/")

    def iter_tasks(self) -> Iterator[TaskNode]:
        """Yield this task and every task below it, depth first, in spec order."""
        yield self
        for child in self.children:
            yield from child.iter_tasks()

    def process(self, name: str) -> ProcessNode:
        """Return a process of this task by name.

        :raises KeyError: if there is none.
        """
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"{self.path} has no process {name!r}")

    def split_streams(self, streams: Sequence[T]) -> list[list[T]]:
        """Split the streams of a bundled sub-task into bundles.

        The size is :attr:`Bundling.bundle_size`, raised if needed so that there are at most
        :data:`MAX_MAP_LENGTH` bundles (the run made more streams than expected).

        :param streams: the streams made at run time.
        :raises ValueError: if this task does not run in bundles.
        """
        if self.bundling.state != "bundle" or self.bundling.bundle_size is None:
            raise ValueError(f"{self.path} does not run in bundles ({self.bundling.reason})")
        size = max(self.bundling.bundle_size, math.ceil(len(streams) / MAX_MAP_LENGTH))
        return [list(streams[i : i + size]) for i in range(0, len(streams), size)]


@dataclass(frozen=True)
class WorkflowGraph:
    """One DAG of a workflow: its id, tags, variables and task tree.

    :param name: the workflow (top-level task) name.
    :param version: its version.
    :param variant: the variant, or ``None``.
    :param dag_id: see :func:`dag_id_for`.
    :param tags: DAG tags, the version and variant among them.
    :param description: one line.
    :param variables: the variant's variable values.
    :param root: the top-level task.
    :param settings: the bundling settings.
    :param source: the spec file.
    """

    name: str
    version: str
    variant: str | None
    dag_id: str
    tags: tuple[str, ...]
    description: str
    variables: Mapping[str, Scalar]
    root: TaskNode
    settings: BundlingSettings
    source: str = "<memory>"

    def iter_tasks(self) -> Iterator[TaskNode]:
        """Every task, depth first, in spec order (the order of the DC1 status table)."""
        return self.root.iter_tasks()

    def iter_processes(self) -> Iterator[ProcessNode]:
        """Every process, task by task."""
        for task in self.iter_tasks():
            yield from task.processes

    def task(self, name: str) -> TaskNode:
        """Return a task by name (names are unique in a workflow) or by path.

        :raises KeyError: if there is none.
        """
        for task in self.iter_tasks():
            if name in (task.name, task.path):
                return task
        raise KeyError(f"{self.dag_id} has no task {name!r}")

    def status_rows(self) -> list[tuple[str, str, str, str]]:
        """``(task, version, process, Batch|Script)`` per process: the rows of the status table."""
        return [(p.task, p.task_version, p.name, p.type_label) for p in self.iter_processes()]


# --- building ------------------------------------------------------------------------------------


def _render_tree(value: Any, values: Mapping[str, Any], *, keep_missing: bool) -> Any:
    if isinstance(value, str):
        return Template.parse(value).render_native(values, keep_missing=keep_missing)
    if isinstance(value, Mapping):
        return {k: _render_tree(v, values, keep_missing=keep_missing) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_render_tree(v, values, keep_missing=keep_missing) for v in value]
    return value


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
        after=process.after,
        skip_if=Expression.parse(process.skip_if, "condition") if process.skip_if else None,
        retries=_first(process.retries, *(d.retries for d in reversed(defaults))) or 0,
        escalation=_first(process.escalation, *(d.escalation for d in reversed(defaults))) or Escalation(),
        resources=_resources(process, defaults) if batch else None,
        command=command,
        dm_command=dm_command,
        emulated=process.emulate is not None,
        callable=process.callable,
        kwargs=_render_tree(process.kwargs, values, keep_missing=True),
        checks=checks,
        feeds=feeds,
        stream_vars=ctx.stream_vars,
        runs_as=runs_as,
        variables=values,
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


def _in_busy_run(expected: float) -> float:
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
    busy = _in_busy_run(expected) * (parent.busy if parent else 1.0)
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


def _size_bundles(root: _Plan, settings: BundlingSettings) -> None:
    """Give one computed size to every bundled task whose spec sets none."""
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
    for plan in auto:
        reason = f"{plan.bundling.reason}; size for <= {settings.max_task_instances} task instances per run"
        plan.bundling = Bundling("bundle", size, reason)


def _build(plan: _Plan, parent: _Context, variables: Mapping[str, Scalar]) -> TaskNode:
    spec = plan.spec
    name = plan.path.rpartition("/")[2]
    sub = spec if isinstance(spec, SubTaskSpec) else None
    version = (getattr(spec, "version", None) or parent.version) if sub else parent.version
    stream_vars = parent.stream_vars
    if sub is not None and sub.stream_var:
        stream_vars = (*stream_vars, sub.stream_var)
    defaults = (*parent.defaults, spec.defaults) if spec.defaults else parent.defaults
    ctx = _Context(plan.path, version, defaults, stream_vars, variables)
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
        after=sub.after if sub else (),
        streams_from=sub.streams_from if sub else None,
        stream_var=sub.stream_var if sub else None,
        stream_vars=stream_vars,
        expected_streams=plan.expected,
        streams_per_run=plan.average,
        streams_in_busy_run=plan.busy,
        bundling=plan.bundling,
    )


def _check_bundle_clusters(root: TaskNode, source: str) -> None:
    """One bundle is one SLURM allocation: all its batch processes must use one cluster."""
    for task in root.iter_tasks():
        if task.bundling.state != "bundle":
            continue
        clusters: dict[str, list[str]] = {}
        for below in task.iter_tasks():
            for process in below.processes:
                if process.resources is not None:
                    clusters.setdefault(process.resources.cluster or "the default cluster", []).append(
                        process.name
                    )
        if len(clusters) > 1:
            listed = "; ".join(f"{c}: {', '.join(names)}" for c, names in clusters.items())
            raise WorkflowSpecError(
                f"{source}: {task.path}: runs in bundles ({task.bundling.reason}), but its batch processes "
                f"use several clusters ({listed}); a bundle is one SLURM allocation on one cluster: "
                "give them the same cluster, or set bundle: never"
            )


def build_graph(
    spec: WorkflowSpec, variant: str | None = None, *, overrides: Mapping[str, Any] | None = None
) -> WorkflowGraph:
    """Build the graph of one DAG: a variant of a workflow.

    :param spec: the workflow.
    :param variant: one of its variants; ``None`` for a spec without variants (or for the
        defaults).
    :param overrides: variable values that replace the variant's (e.g. ``{"scale": 0.001}``);
        they decide stream counts, hence bundling.
    :raises WorkflowSpecError: for an unknown variant or variable, an ``expected_streams``
        that is negative, or a bundled sub-task whose batch processes use several clusters.
    """
    variables = MappingProxyType(spec.variables_for(variant, overrides))
    dag_id = dag_id_for(spec, variant)
    plan = _measure(spec.name, spec, None, {}, variables, spec.source)
    _decide(plan, spec.bundling.threshold)
    _size_bundles(plan, spec.bundling)
    top = _Context(spec.name, spec.version, (), (), variables)
    root = _build(plan, top, variables)
    _check_bundle_clusters(root, spec.source)
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


# --- estimates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskEstimate:
    """The task instances one task adds to a DAG run.

    :param path: the task path.
    :param state: its bundling state.
    :param processes: its processes.
    :param bundle_size: streams per bundle (bundled tasks).
    :param streams_per_run: its streams in an average run.
    :param streams_in_busy_run: its streams in a busy run.
    :param per_run: task instances in an average run.
    :param in_busy_run: task instances in a busy run.
    """

    path: str
    state: BundleState
    processes: int
    bundle_size: int | None
    streams_per_run: float
    streams_in_busy_run: int
    per_run: float
    in_busy_run: int


@dataclass(frozen=True)
class TaskInstanceEstimate:
    """How many task instances a campaign of DAG runs makes.

    :param runs: the number of DAG runs (top-level streams).
    :param tasks: per task.
    """

    runs: int
    tasks: tuple[TaskEstimate, ...]

    @property
    def per_run(self) -> float:
        """Task instances of an average DAG run."""
        return sum(t.per_run for t in self.tasks)

    @property
    def busy_run(self) -> int:
        """Task instances of a busy DAG run (every optional sub-task launched)."""
        return sum(t.in_busy_run for t in self.tasks)

    @property
    def total(self) -> int:
        """Task instances of all the runs (average runs)."""
        return round(self.per_run * self.runs)

    def format(self) -> str:
        """Return a table for people: a line per task (indented as the hierarchy), then the totals."""
        head = f"{'task':<44} {'bundling':<9} {'size':>5} {'streams/run':>12} {'TIs/run':>9} {'TIs busy':>9}"
        lines = [head]
        for t in self.tasks:
            name = "  " * t.path.count("/") + t.path.rpartition("/")[2]
            size = str(t.bundle_size) if t.bundle_size else "-"
            lines.append(
                f"{name:<44} {t.state:<9} {size:>5} {t.streams_per_run:>12.1f} {t.per_run:>9.1f} "
                f"{t.in_busy_run:>9}"
            )
        lines.append(
            f"task instances per run: {self.per_run:.0f} (busy run: {self.busy_run}); "
            f"{self.runs} runs: {self.total}"
        )
        return "\n".join(lines)


def estimate_task_instances(
    graph: WorkflowGraph, fanout: Mapping[str, float] | None = None, *, runs: int = 1
) -> TaskInstanceEstimate:
    """Count the task instances of ``runs`` DAG runs, without running anything.

    Top-level processes: one instance each. Processes of a sub-task that is not bundled: one
    per stream. A bundled sub-task: one per bundle of its streams (at the graph's bundle
    size); the tasks below it and all script processes inside add none.

    :param graph: the DAG.
    :param fanout: streams per parent stream by sub-task name, replacing the graph's
        ``expected_streams`` (e.g. counts from a past campaign); bundling decisions and sizes
        stay the graph's.
    :param runs: DAG runs in the campaign.
    :raises ValueError: for a fan-out naming no sub-task.
    """
    overrides = dict(fanout or {})
    names = {t.name for t in graph.iter_tasks() if t.parent_path is not None}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"fanout names no sub-task of {graph.dag_id}: {', '.join(unknown)}")
    estimates: list[TaskEstimate] = []
    stack: list[tuple[TaskNode, float, float]] = [(graph.root, 1.0, 1.0)]
    while stack:
        task, parent_average, parent_busy = stack.pop()
        if task.parent_path is None:
            average = busy = 1.0
        else:
            expected = overrides.get(task.name, task.expected_streams)
            average, busy = parent_average * expected, parent_busy * _in_busy_run(expected)
        estimates.append(_estimate(task, average, busy))
        stack.extend((child, average, busy) for child in reversed(task.children))
    return TaskInstanceEstimate(runs, tuple(estimates))


def _estimate(task: TaskNode, average: float, busy: float) -> TaskEstimate:
    busy_streams = math.ceil(busy - 1e-9)
    state, size = task.bundling.state, task.bundling.bundle_size
    n = len(task.processes)
    if state == "none":
        per_run, in_busy = n * average, n * busy_streams
    elif state == "bundle" and size:
        in_busy = math.ceil(busy_streams / size)
        per_run = in_busy * average / busy if busy > 0 else 0.0
    else:
        per_run, in_busy = 0.0, 0
    return TaskEstimate(task.path, state, n, size, average, busy_streams, per_run, in_busy)
