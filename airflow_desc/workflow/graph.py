"""The graph of one DAG of a workflow: tasks, processes, bundling (no DAG code here).

:func:`~airflow_desc.workflow.build.build_graph` turns a workflow spec and one of its
variants into a :class:`WorkflowGraph`: a tree of :class:`TaskNode` (Pipeline II tasks:
``DC1-DM12`` > ``level1`` > ``level1ProcessFilter`` ...) holding :class:`ProcessNode` (each
with its resources resolved from ``defaults``, its command rendered with the variant's
variables, its checks and skip condition). The render step turns the tree into task groups
that read like the Pipeline II status table; this module only decides.

How the graph is built (bundling decided, stream counts estimated) is :mod:`airflow_desc.workflow.build`;
campaign sizes are :mod:`airflow_desc.workflow.estimates`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from airflow_desc.emulate import payload_command
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow.outcomes import MinSuccess, Skip
from airflow_desc.workflow.spec_expressions import Expression, ExpressionError
from airflow_desc.workflow.spec_models import (
    BundlingSettings,
    Escalation,
    WorkflowSpec,
)
from airflow_desc.workflow.spec_templates import Scalar, Template, TemplateError

__all__ = [
    "MAX_MAP_LENGTH",
    "BundleFit",
    "BundleState",
    "Bundling",
    "CheckNode",
    "ProcessNode",
    "ResolvedResources",
    "RunsAs",
    "TaskNode",
    "WorkflowGraph",
    "dag_id_for",
    "render_tree",
    "streams_that_fit",
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

    With ``side_by_side: true`` it carries the version, ``DC1-DM12_v1.16_imsim-dithered``, so that
    two versions of a workflow are two DAGs.

    :param spec: the workflow.
    :param variant: one of ``spec.variant_names``; ``None``: the defaults, the only DAG of a
        spec without variants (id ``DC1-DM12``, or ``DC1-DM12_v1.16``).
    :raises WorkflowSpecError: for an unknown variant.
    """
    name = f"{spec.name}_v{spec.version}" if spec.side_by_side else spec.name
    if variant is None:
        return name
    spec.variables_for(variant)  # an unknown variant raises here, with a suggestion
    return f"{name}_{variant}"


# --- nodes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedResources:
    """A batch process's resources after ``defaults`` (``None``: the cluster's own default).

    :param cpus: CPUs.
    :param memory_mb: memory in MB.
    :param walltime: as written in the spec.
    :param walltime_s: the same in seconds.
    :param cluster: the cluster profile name; ``None``: the default cluster.
    :param fallback_clusters: the clusters to move to, in order (maintenance, retries spent).
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
    fallback_clusters: tuple[str, ...] = ()


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
    :param patterns: the spec's value patterns (a ``command``'s raw placeholders need them).
    """

    kind: str
    template: str
    min_count: int = 1
    message: str | None = None
    patterns: Mapping[str, str] = field(default_factory=dict, repr=False)

    def target(self, values: Mapping[str, Any]) -> str:
        """Return the path, pattern or command for one stream; a command's values are shell-quoted.

        :param values: variables and stream values.
        :raises WorkflowSpecError: for a placeholder with no value, or a value no shell can take.
        """
        if self.kind == "log_lacks":
            return self.template
        template = Template.parse(self.template)
        try:
            if self.kind == "command":
                return template.render_shell(values, self.patterns)
            return template.render(values)
        except TemplateError as exc:
            raise WorkflowSpecError(f"output check {self.kind}: {exc}") from None

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
    :param min_success: how much of a sub-task in ``depends_on`` must succeed, by name (the
        others: all of it).
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
    :param deferrable: batch: wait for its jobs in the triggerer (else in the worker slot).
    :param feeds: the sub-tasks whose streams this script makes.
    :param stream_vars: the stream variables in scope, outermost first.
    :param runs_as: ``task``, ``mapped`` (one instance per stream) or ``in-bundle``.
    :param variables: the variant's variable values.
    :param patterns: the spec's value patterns (raw placeholders in shell text need them).
    """

    name: str
    type: str
    task: str
    task_version: str
    path: str
    description: str = ""
    depends_on: tuple[str, ...] = ()
    min_success: Mapping[str, MinSuccess] = field(default_factory=dict)
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
    deferrable: bool = True
    feeds: tuple[str, ...] = ()
    stream_vars: tuple[str, ...] = ()
    runs_as: RunsAs = "task"
    variables: Mapping[str, Scalar] = field(default_factory=dict, repr=False)
    patterns: Mapping[str, str] = field(default_factory=dict, repr=False)
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
                return Template.parse(self.dm_command_template).render_shell(values, self.patterns)
            if not self.command_parts:
                raise WorkflowSpecError(f"{self.path}: a script process has no command; call {self.callable}")
            if not self.emulated:  # shell text: every value one quoted word
                return Template.parse(self.command_parts[0]).render_shell(values, self.patterns)
            # The payload's arguments: each quoted whole by payload_command.
            parts = [Template.parse(part).render(values) for part in self.command_parts]
        except TemplateError as exc:
            raise WorkflowSpecError(f"{self.path}: {exc}") from None
        return payload_command(*parts)

    def render_kwargs(
        self, stream: Mapping[str, Any] | None = None, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Return the keyword arguments of one run of this script (a lone placeholder keeps its type).

        :param stream: the stream values.
        :param variables: the run's variables; default: the variant's.
        """
        values = self._values(stream, variables)
        try:
            rendered = render_tree(self.kwargs_template, values, keep_missing=False)
        except TemplateError as exc:
            raise WorkflowSpecError(f"{self.path}: kwargs: {exc}") from None
        assert isinstance(rendered, dict)
        return rendered

    def skip_reason(
        self,
        states: Mapping[str, str],
        stream: Mapping[str, Any] | None = None,
        variables: Mapping[str, Any] | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> Skip | None:
        """Why this process instance is Skipped, or ``None`` if it runs.

        Skipped when something it ``depends_on`` did not succeed, or when ``skip_if`` holds.

        :param states: the end state of each upstream process / sub-task (``success``,
            ``failed``, ``terminated``, ``skipped``, ``cancelled``).
        :param stream: the stream values.
        :param variables: the run's variables; default: the variant's.
        :param notes: what to say of an upstream instead of its state (a sub-task below its
            ``min_success``: the threshold and the counts).
        :raises WorkflowSpecError: if an upstream state is missing or the condition cannot be
            evaluated.
        """
        for name in self.depends_on:
            state = states.get(name)
            if state is None:
                raise WorkflowSpecError(f"{self.path}: no state given for upstream {name!r}")
            if state != "success":
                return Skip("upstream-failed", f"upstream {name} {(notes or {}).get(name, state)}")
        if self.skip_if is None:
            return None
        values = {**self._values(stream, variables), **states}
        try:
            holds = self.skip_if.evaluate(values)
        except ExpressionError as exc:
            raise WorkflowSpecError(f"{self.path}: skip_if: {exc}") from None
        return Skip("skip-condition", f"skip_if holds: {self.skip_if.text}") if holds else None


def streams_that_fit(cores: int, walltime_s: float, core_s: float) -> int:
    """Return how many streams of ``core_s`` core-seconds each one allocation runs: at least 1.

    The node's ``cores`` busy for ``walltime_s``, over one stream's work; one stream's work is what
    its bundle must run, whatever the size.

    >>> streams_that_fit(2, 1800, 180.0), streams_that_fit(2, 60, 180.0)
    (20, 1)
    """
    return max(1, math.floor(cores * walltime_s / core_s + 1e-9))


@dataclass(frozen=True)
class BundleFit:
    """A bundle size the walltime lowered, kept so that measured run times can fit it again.

    ``bundling.target_instances`` asked for ``target_size`` streams per bundle; the walltime
    requests of their batch processes, packed on ``cores``, did not fit ``walltime_s``, so the
    build chose fewer (:func:`~airflow_desc.workflow.build.bundle_size_for`). A walltime
    request is the most a process may take; the history knows what it does take. With the
    median run time of every process of the stream (:meth:`fitted_size`), a streams task packs
    up to the target again, leaving twice the measured work's room in the walltime.

    :param target_size: streams per bundle the target asks for.
    :param cores: cores of one node of the bundle's cluster.
    :param walltime_s: the walltime a bundle may fill.
    :param work: one stream's batch processes: name, instances per stream, cpus each.
    """

    target_size: int
    cores: int
    walltime_s: int
    work: tuple[tuple[str, float, int], ...]

    #: Room left for run times above the median: the measured work, times this, must fit.
    MARGIN: ClassVar[float] = 2.0

    def fitted_size(self, lowered: int, run_times: Mapping[str, float]) -> tuple[int, str]:
        """Return the streams per bundle the measured ``run_times`` (s, by process) fit, and why.

        Between ``lowered`` (the walltime requests' size) and :attr:`target_size`; ``lowered``
        when a process of the stream has no run time.
        """
        missing = sorted({name for name, _, _ in self.work} - set(run_times))
        if missing:
            return lowered, f"no run time recorded for {', '.join(missing)}: the walltime requests' size"
        core_s = sum(count * cpus * run_times[name] for name, count, cpus in self.work) * self.MARGIN
        fits = streams_that_fit(self.cores, self.walltime_s, core_s) if core_s > 0 else self.target_size
        size = max(lowered, min(self.target_size, fits))
        times = ", ".join(f"{name} {run_times[name]:.3g} s" for name in sorted({n for n, _, _ in self.work}))
        return size, (
            f"median run times {times}: {self.MARGIN:g} x the measured work of {size} streams fits "
            f"{self.cores} cores x {self.walltime_s} s (walltime requests: {lowered})"
        )


@dataclass(frozen=True)
class Bundling:
    """Whether a task runs in bundles.

    :param state: ``none`` (its processes are tasks), ``bundle`` (its streams run in bundles),
        or ``in-bundle`` (it runs inside the bundles of a task above).
    :param bundle_size: streams per bundle, for ``bundle``.
    :param reason: why, in words.
    :param fit: for a size the walltime lowered, what measured run times may fit again.
    """

    state: BundleState = "none"
    bundle_size: int | None = None
    reason: str = ""
    fit: BundleFit | None = None


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
    :param min_success: how much of a sub-task in ``depends_on`` must succeed, by name.
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
    min_success: Mapping[str, MinSuccess] = field(default_factory=dict)
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

    def split_streams(self, streams: Sequence[T], size: int | None = None) -> list[list[T]]:
        """Split the streams of a bundled sub-task into bundles.

        As few bundles as :attr:`Bundling.bundle_size` allows (more if needed so that there are at
        most :data:`MAX_MAP_LENGTH`: the run made more streams than expected), the streams dealt
        out evenly, in order: 7 streams at size 3 make bundles of 3, 2 and 2, not a last bundle of
        one stream (a whole allocation for one stream's work).

        :param streams: the streams made at run time.
        :param size: streams per bundle instead of :attr:`Bundling.bundle_size` (run times
            measured since the build: :meth:`BundleFit.fitted_size`).
        :raises ValueError: if this task does not run in bundles.
        """
        if self.bundling.state != "bundle" or self.bundling.bundle_size is None:
            raise ValueError(f"{self.path} does not run in bundles ({self.bundling.reason})")
        size = max(size or self.bundling.bundle_size, math.ceil(len(streams) / MAX_MAP_LENGTH))
        count = math.ceil(len(streams) / size)
        base, extra = divmod(len(streams), count) if count else (0, 0)
        bundles: list[list[T]] = []
        start = 0
        for index in range(count):
            end = start + base + (1 if index < extra else 0)
            bundles.append(list(streams[start:end]))
            start = end
        return bundles


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


def render_tree(value: Any, values: Mapping[str, Any], *, keep_missing: bool) -> Any:
    """Render the templates in a nested value (a process's kwargs) with ``values``."""
    if isinstance(value, str):
        return Template.parse(value).render_native(values, keep_missing=keep_missing)
    if isinstance(value, Mapping):
        return {k: render_tree(v, values, keep_missing=keep_missing) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_tree(v, values, keep_missing=keep_missing) for v in value]
    return value
