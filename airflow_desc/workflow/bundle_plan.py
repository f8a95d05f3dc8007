"""The bundle planner: what one bundle allocation runs (no Airflow).

Starting from a bundle's streams (``visit=2201``...), :func:`plan_bundle` walks the bundled
sub-task and every sub-task below it. Script processes whose results the allocation needs
(``setupEimageRafts``, ``setupEimageSensors``: they make the streams below; or anything a batch
process depends on) run now, on the worker (:func:`~airflow_desc.workflow.scripts.call_script`),
or their outcome from an earlier try is reused. Every batch process instance becomes a manifest
entry ``visit=2201/raft=R22/sensor=S11:processEimage`` (:class:`PlannedInstance`) with its
command (:func:`bundle_command`), cpus, memory, walltime and dependencies: ``depends_on`` (the
pilot runs it only if its upstream succeeded) and ``after`` (the pilot waits for the upstream
whatever its end state). Through a setup script the kinds compose: an instance waits for what
the script waited for, as ``depends_on`` only if both links are. An instance that cannot run
(its setup script failed, or ``skip_if`` holds on variables, stream values and states decided
before the allocation) is listed as skipped with its :class:`~airflow_desc.workflow.graph.Skip`.
A ``skip_if`` on the states of siblings that run in the allocation is evaluated for every
combination of their end states; those that skip go into the instance's manifest entry
(``skip_when``) for the pilot to apply once they have ended. Scripts that run after the
allocation (wrapups) are listed in order. :func:`allocation_time_limit_s` sizes the allocation.
"""

from __future__ import annotations

import itertools
import math
import shlex
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.pilot.launcher import INSTANCE_ENV, STATES
from airflow_desc.slurm.script import ContainerSpec, container_command
from airflow_desc.workflow.graph import ProcessNode, TaskNode
from airflow_desc.workflow.naming import instance_id, stream_path
from airflow_desc.workflow.outcomes import Skip, combine_states
from airflow_desc.workflow.scripts import ScriptOutcome, call_script
from airflow_desc.workflow.spec_templates import Scalar, Template, TemplateError

if TYPE_CHECKING:
    from airflow_desc.workflow.registry import LoadedWorkflow

__all__ = [
    "CONTAINER_ENV",
    "BundlePlan",
    "PlannedInstance",
    "PlannedProcess",
    "PlannedScript",
    "RaisedRequest",
    "allocation_time_limit_s",
    "bundle_command",
    "plan_bundle",
    "raised_requests",
]


#: The variables a bundled instance's container is given: the pilot's, and the emulated payload's program.
CONTAINER_ENV = (*INSTANCE_ENV, "DESC_PAYLOAD")


@dataclass(frozen=True)
class RaisedRequest:
    """An instance's memory and walltime as earlier tries raised them; kept in the bundle's saved state.

    :param memory_mb: the memory of its next try, if raised.
    :param walltime_s: the walltime of its next try, if raised.
    """

    memory_mb: int | None = None
    walltime_s: int | None = None

    def to_json(self) -> dict[str, int]:
        """Return the saved form."""
        return {k: v for k, v in (("memory_mb", self.memory_mb), ("walltime_s", self.walltime_s)) if v}

    @classmethod
    def from_json(cls, value: Any) -> RaisedRequest | None:
        """Read the saved form; ``None`` for anything else (a state saved by an older version)."""
        if not isinstance(value, Mapping):
            return None
        memory, walltime = value.get("memory_mb"), value.get("walltime_s")
        raised = cls(
            memory_mb=int(memory) if isinstance(memory, (int, float)) and memory > 0 else None,
            walltime_s=int(walltime) if isinstance(walltime, (int, float)) and walltime > 0 else None,
        )
        return raised if raised.to_json() else None


@dataclass
class PlannedProcess:
    """A process instance of the bundle.

    :param id: ``<stream path>:<process>``.
    :param task: its task.
    :param process: its process.
    :param stream: its stream's values.
    """

    id: str
    task: TaskNode
    process: ProcessNode
    stream: dict[str, Any]


@dataclass
class PlannedInstance(PlannedProcess):
    """A batch process instance of the bundle: one manifest entry (and a :class:`PlannedProcess`).

    :param command: the shell text.
    :param depends_on: ids that must succeed first.
    :param after: ids it waits for whatever their end state.
    :param raised: its request as earlier tries raised it (see ``escalate_request``), if they did.
    :param estimate_s: how long it is expected to run (its process's recent runs), if known: the
        pilot starts the longest first.
    :param skip_when: its ``skip_if`` on siblings decided in the allocation, as the pilot applies it
        (the manifest's ``skip_when``), if any.
    """

    command: str
    depends_on: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    raised: RaisedRequest | None = None
    estimate_s: float | None = None
    skip_when: dict[str, Any] | None = None

    @property
    def cpus(self) -> int:
        """The cpus it asks for."""
        res = self.process.resources
        return res.cpus if res else 1

    @property
    def memory_mb(self) -> int | None:
        """The memory it asks for: the spec's, or what earlier tries raised it to."""
        if self.raised is not None and self.raised.memory_mb:
            return self.raised.memory_mb
        res = self.process.resources
        return res.memory_mb if res is not None and res.memory_mb else None

    @property
    def container(self) -> str | None:
        """The image its process asks to run in, if any (the cluster may have a default)."""
        res = self.process.resources
        return res.container if res is not None else None

    @property
    def walltime_s(self) -> int | None:
        """The walltime it asks for: the spec's, or what earlier tries raised it to."""
        if self.raised is not None and self.raised.walltime_s:
            return self.raised.walltime_s
        res = self.process.resources
        return res.walltime_s if res is not None and res.walltime_s else None

    def manifest_entry(self) -> dict[str, Any]:
        """Return the pilot's manifest entry."""
        entry: dict[str, Any] = {
            "id": self.id,
            "stream": stream_path(self.stream),
            "process": self.process.name,
            "command": self.command,
            "cpus": self.cpus,
            "depends_on": sorted(set(self.depends_on)),
            "after": sorted(set(self.after) - set(self.depends_on)),
        }
        if self.memory_mb:
            entry["memory_mb"] = self.memory_mb
        if self.walltime_s:
            entry["walltime_s"] = self.walltime_s
        if self.estimate_s is not None:
            entry["estimate_s"] = round(self.estimate_s, 3)
        if self.skip_when is not None:
            entry["skip_when"] = self.skip_when
        return entry


@dataclass
class PlannedScript(PlannedProcess):
    """A script process instance of the bundle, run before (``before``) or after the allocation.

    :param phase: ``before`` or ``after``.
    :param outcome: how it ended (``None`` for an ``after`` script not run yet).
    :param ran_now: whether this try ran it (else it is an earlier try's outcome).
    :param reason: the kind of skip (``upstream-failed`` / ``skip-condition``), if skipped.
    """

    phase: str
    outcome: ScriptOutcome | None = None
    ran_now: bool = False
    reason: str | None = None


@dataclass
class BundlePlan:
    """What one bundle runs: batch instances, scripts, and which instances each stream holds.

    :param instances: batch instances for the allocation, in manifest order.
    :param skipped: batch instances not run: id -> (instance, reason kind, message).
    :param scripts: script instances in run order.
    :param members: every instance id in the subtree of ``(task path, stream path)``.
    :param top: the bundle's own streams.
    """

    instances: list[PlannedInstance] = field(default_factory=list)
    skipped: dict[str, tuple[PlannedInstance, str, str]] = field(default_factory=dict)
    scripts: list[PlannedScript] = field(default_factory=list)
    members: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)

    def manifest(
        self,
        bundle: str,
        containers: Callable[[str | None], ContainerSpec] | None = None,
        env: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Return the pilot's manifest.

        :param bundle: the bundle's id.
        :param containers: the container of an instance from its process's image (``None``: none
            asked for), as its cluster runs it (``airflow_desc.operators.job_script.container_for``);
            ``None``: no instance runs in a container.
        :param env: further variables of the job that a container is given (the profile's and the
            operator's ``env``), beside :data:`CONTAINER_ENV`.
        """
        entries = []
        for inst in self.instances:
            entry = inst.manifest_entry()
            container = containers(inst.container) if containers is not None else ContainerSpec()
            if container.runtime != "none":
                entry["command"] = container_command(container, inst.command, (*CONTAINER_ENV, *env))
                entry["container"] = container.image
                entry["container_runtime"] = container.runtime
            entries.append(entry)
        return {"bundle": bundle, "instances": entries}

    def set_estimates(self, by_process: Mapping[str, float]) -> int:
        """Give each batch instance its process's expected run time (s); return how many got one.

        :param by_process: seconds by process name (e.g. the median of its recent successful runs);
            a process not in it, or with a negative or non-finite value, keeps no estimate.
        """
        count = 0
        for inst in self.instances:
            value = by_process.get(inst.process.name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            estimate = float(value) if number else math.nan  # type: ignore[arg-type]
            inst.estimate_s = estimate if math.isfinite(estimate) and estimate >= 0 else None
            count += inst.estimate_s is not None
        return count

    def script(self, instance_id: str) -> PlannedScript | None:
        """Return the script instance of an id, if any."""
        return next((s for s in self.scripts if s.id == instance_id), None)

    def stream_states(self, task: TaskNode, states: Mapping[str, str]) -> dict[str, str]:
        """Return the state of each of the bundle's own streams, from its instances' states."""
        return {
            stream_path(s): combine_states(
                states.get(m, "skipped") for m in self.members.get((task.path, stream_path(s)), [])
            )
            for s in self.top
        }

    def upstream_states(self, script: PlannedScript, states: Mapping[str, str]) -> dict[str, str]:
        """Return the state of each upstream of an after-script, for its ``depends_on`` / ``skip_if``."""
        return {
            name: "skipped" if members is None else combine_states(states.get(m, "skipped") for m in members)
            for name, members in self._upstream_members(script).items()
        }

    def _upstream_members(self, script: PlannedScript) -> dict[str, list[str] | None]:
        """Return the instance ids behind each upstream of an after-script (``None``: streams never made)."""
        task, process, stream = script.task, script.process, script.stream
        children = {c.name for c in task.children}
        names = [*process.depends_on, *process.after]
        if process.skip_if is not None:
            names += [
                n for n in process.skip_if.names if n in children or any(p.name == n for p in task.processes)
            ]
        return {
            name: self.members.get((task.path, stream_path(stream), name))
            if name in children
            else [instance_id(stream, name)]
            for name in dict.fromkeys(names)
        }

    def rerun_closure(self, selected: Collection[str]) -> set[str]:
        """Return what a rerun of ``selected`` runs again here: those and what depends on them.

        A selected batch instance reruns with every batch instance that waits for it (``depends_on``
        or ``after``, transitively); a selected setup script with the batch instances of its stream
        and below (it makes or prepares them: plan the bundle with its earlier outcome left out, so
        that it runs again); a wrapup script when it or one of its upstreams reruns.

        :param selected: instance ids (``<stream path>:<process>``); ids not in this bundle are ignored.
        """
        wanted = set(selected)
        closure = {i.id for i in self.instances if i.id in wanted}
        for script in self.scripts:
            if script.phase == "before" and script.id in wanted:
                closure.add(script.id)
                closure.update(self.members.get((script.task.path, stream_path(script.stream)), []))
        waiting: dict[str, list[str]] = {}
        for inst in self.instances:
            for upstream in {*inst.depends_on, *inst.after}:
                waiting.setdefault(upstream, []).append(inst.id)
        frontier = list(closure)
        while frontier:
            for below in waiting.get(frontier.pop(), []):
                if below not in closure:
                    closure.add(below)
                    frontier.append(below)
        after = [s for s in self.scripts if s.phase == "after"]
        changed = True
        while changed:  # a wrapup may follow another (a raft's after its sensors')
            changed = False
            for script in after:
                if script.id in closure:
                    continue
                members = self._upstream_members(script).values()
                if script.id in wanted or any(m in closure for ids in members for m in ids or ()):
                    closure.add(script.id)
                    changed = True
        # A setup script below a selected one keeps its outcome: it ran before the plan was made.
        rerunnable = (
            {i.id for i in self.instances} | {s.id for s in after} | (wanted & {s.id for s in self.scripts})
        )
        return closure & rerunnable


@dataclass
class _Upstream:
    """Batch instances to wait for: those that must succeed, and those waited for whatever their end."""

    required: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)

    def add(self, other: _Upstream, kind: str) -> None:
        """Wait for ``other`` through an edge of ``kind``: only a ``depends_on`` edge keeps it required."""
        if kind == "depends_on":
            self.required += other.required
            self.after += other.after
        else:
            self.after += other.required + other.after

    def copy(self) -> _Upstream:
        return _Upstream(list(self.required), list(self.after))


@dataclass
class _Node:
    """A process or sub-task of one stream, as the planner sees it."""

    state: str  # success (will run / ran), failed, skipped, pending (an after-script)
    upstream: _Upstream = field(default_factory=_Upstream)  # what a dependent of it waits for
    # When the allocation decides its state: the batch instances that do, and the states of its
    # other members (decided before the allocation).
    inside: tuple[list[str], list[str]] | None = None

    @property
    def ids(self) -> list[str]:
        return self.upstream.required + self.upstream.after


def _before_scripts(task: TaskNode) -> set[str]:
    """Return the scripts of a task that must run before the allocation.

    Those that feed sub-tasks, and those that something running in the allocation (a batch
    process, a sub-task, another such script) depends on.
    """
    scripts = {p.name for p in task.processes if p.type == "script"}
    needed = {p.name for p in task.processes if p.type == "script" and p.feeds}
    upstream_of: dict[str, set[str]] = {p.name: set(p.depends_on) | set(p.after) for p in task.processes}
    for child in task.children:
        upstream_of[child.name] = set(child.depends_on) | set(child.after)
    runs_inside = {p.name for p in task.processes if p.type == "batch"} | {c.name for c in task.children}
    frontier = runs_inside | needed
    while frontier:
        name = frontier.pop()
        for up in upstream_of.get(name, set()):
            if up in scripts and up not in needed:
                needed.add(up)
                frontier.add(up)
    return needed


def _order(task: TaskNode) -> list[str]:
    """Return the processes and sub-tasks of a task, upstream first (spec order otherwise)."""
    names = [p.name for p in task.processes] + [c.name for c in task.children]
    upstream: dict[str, set[str]] = {p.name: set(p.depends_on) | set(p.after) for p in task.processes}
    for child in task.children:
        upstream[child.name] = set(child.depends_on) | set(child.after)
        if child.streams_from:
            upstream[child.name].add(child.streams_from)
    done: list[str] = []
    placed: set[str] = set()
    while len(done) < len(names):
        ready = [n for n in names if n not in placed and upstream.get(n, set()) <= placed]
        if not ready:  # the spec loader refuses cycles; keep going rather than loop forever
            ready = [n for n in names if n not in placed][:1]
        done.append(ready[0])
        placed.add(ready[0])
    return done


def bundle_command(
    process: ProcessNode, stream: Mapping[str, Any], variables: Mapping[str, Scalar], *, dm: bool = False
) -> str:
    """Return the shell text of one batch instance in a bundle.

    An emulated payload runs as ``python3 "$DESC_PAYLOAD" <args>``: the job script writes the
    payload program once (a copy per instance would make the script too big for sbatch). With
    ``dm``, the process's ``dm_command`` runs instead.
    """
    if dm or not process.emulated:
        return process.render_command(stream, variables, dm=dm)
    values = {**variables, **stream}
    try:
        args = [Template.parse(part).render(values) for part in process.command_parts]
    except TemplateError as exc:
        raise WorkflowSpecError(f"{process.path}: {exc}") from None
    return 'python3 "$DESC_PAYLOAD" ' + " ".join(shlex.quote(a) for a in args)


@dataclass
class _Here:
    """One stream of one task as the planner walks it: what it planned there so far, what it inherits."""

    task: TaskNode
    stream: dict[str, Any]
    inherited: _Upstream
    nodes: dict[str, _Node] = field(default_factory=dict)

    def deps(self, depends_on: Sequence[str], after: Sequence[str]) -> _Upstream:
        """Return what an instance here waits for: the inherited upstream, and its own (by edge kind)."""
        deps = self.inherited.copy()
        for kind, names in (("depends_on", depends_on), ("after", after)):
            for name in names:
                if name in self.nodes:
                    deps.add(self.nodes[name].upstream, kind)
        return deps


class _Planner:
    def __init__(
        self,
        workflow: LoadedWorkflow,
        variables: Mapping[str, Scalar],
        known: Mapping[str, ScriptOutcome],
        run_scripts: bool,
        raised: Mapping[str, RaisedRequest],
        dm: bool,
    ) -> None:
        self.workflow = workflow
        self.variables = variables
        self.dm = dm
        self.known = known
        self.run_scripts = run_scripts
        self.raised = raised
        self.plan = BundlePlan()

    def stream(self, task: TaskNode, stream: dict[str, Any], inherited: _Upstream) -> tuple[list[str], bool]:
        """Plan one stream of a task; return the batch ids in its subtree and whether a script failed."""
        before = _before_scripts(task)
        here = _Here(task, stream, inherited)
        nodes = here.nodes
        members: list[str] = []
        batch_ids: list[str] = []
        failed = False
        for name in _order(task):
            child = next((c for c in task.children if c.name == name), None)
            if child is not None:
                ids, child_failed, child_members = self.child(here, child)
                nodes[name] = _Node("failed" if child_failed else "success", _Upstream(ids))
                if ids and not child_failed:
                    nodes[name].inside = (ids, self._known_states(set(child_members) - set(ids)))
                batch_ids += ids
                members += child_members
                failed = failed or child_failed
                continue
            process = task.process(name)
            iid = instance_id(stream, name)
            members.append(iid)
            if process.type == "batch":
                nodes[name] = self.batch(here, process)
                batch_ids += nodes[name].ids
            elif name in before:
                nodes[name] = self.before_script(here, process)
                failed = failed or nodes[name].state == "failed"
            else:
                self.plan.scripts.append(PlannedScript(iid, task, process, dict(stream), "after"))
                nodes[name] = _Node("pending")
        self.plan.members[(task.path, stream_path(stream))] = members
        return batch_ids, failed

    def _states(self, process: ProcessNode, task: TaskNode, nodes: Mapping[str, _Node]) -> dict[str, str]:
        siblings = {p.name for p in task.processes} | {c.name for c in task.children}
        names = [*process.depends_on, *process.after]
        if process.skip_if is not None:
            names += [n for n in process.skip_if.names if n in siblings]
        # A planned (or pending) sibling counts as success: inside the allocation the pilot's
        # dependencies decide, and its skip_when (see _skip).
        return {
            n: ("success" if nodes[n].state == "pending" else nodes[n].state) for n in names if n in nodes
        }

    def _known_states(self, ids: Collection[str]) -> list[str]:
        """Return the states, decided before the allocation, of members of a sub-task not in it."""
        states: set[str] = set()
        for iid in ids:
            script = self.plan.script(iid)
            if iid in self.plan.skipped:
                states.add("skipped")
            else:  # a script: its outcome; a wrapup not run yet counts as success, as in _states
                states.add(script.outcome.state if script is not None and script.outcome else "success")
        return sorted(states)

    def _skip(self, process: ProcessNode, here: _Here) -> tuple[Skip | None, dict[str, Any] | None]:
        """Return why a batch instance is skipped now, or else its ``skip_when`` for the pilot.

        A ``skip_if`` naming siblings that the allocation decides is evaluated for every combination
        of their end states: if all of them skip, the instance is skipped now; if some do, those go to
        the pilot; if none do, it runs.
        """
        states = self._states(process, here.task, here.nodes)
        reason = process.skip_reason(states, here.stream, self.variables)
        names = sorted(process.skip_if.names) if process.skip_if is not None else []
        inside: dict[str, tuple[list[str], list[str]]] = {}
        for name in names:
            node = here.nodes.get(name)
            if node is not None and node.inside is not None:
                inside[name] = node.inside
        if not inside or (reason is not None and reason.kind == "upstream-failed"):
            return reason, None
        holds: list[tuple[tuple[str, ...], Skip]] = []
        combos = list(itertools.product(STATES, repeat=len(inside)))
        for combo in combos:
            skip = process.skip_reason(
                {**states, **dict(zip(inside, combo, strict=True))}, here.stream, self.variables
            )
            if skip is not None and skip.kind == "skip-condition":
                holds.append((combo, skip))
        if not holds or len(holds) == len(combos):
            return (holds[0][1] if holds else None), None
        upstream = [{"ids": ids, "known": known} for ids, known in inside.values()]
        return None, {
            "upstream": upstream,
            "states": [list(c) for c, _ in holds],
            "message": holds[0][1].message,
        }

    def batch(self, here: _Here, process: ProcessNode) -> _Node:
        stream = here.stream
        iid = instance_id(stream, process.name)
        instance = PlannedInstance(iid, here.task, process, dict(stream), "", raised=self.raised.get(iid))
        reason, instance.skip_when = self._skip(process, here)
        if reason is not None:
            self.plan.skipped[iid] = (instance, reason.kind, reason.message)
            return _Node("skipped")
        instance.command = bundle_command(process, stream, self.variables, dm=self.dm)
        deps = here.deps(process.depends_on, process.after)
        instance.depends_on, instance.after = deps.required, deps.after
        self.plan.instances.append(instance)
        return _Node("success", _Upstream([iid]), inside=([iid], []))

    def before_script(self, here: _Here, process: ProcessNode) -> _Node:
        task, stream, nodes = here.task, here.stream, here.nodes
        iid = instance_id(stream, process.name)
        deps = here.deps(process.depends_on, process.after)
        planned = PlannedScript(iid, task, process, dict(stream), "before")
        self.plan.scripts.append(planned)
        reason = process.skip_reason(self._states(process, task, nodes), stream, self.variables)
        earlier = self.known.get(iid)
        if reason is not None:
            planned.outcome = ScriptOutcome(
                "skipped", message=reason.message, start=_now(), end=_now(), elapsed_s=0.0
            )
            planned.reason = reason.kind
            planned.ran_now = self.run_scripts
            return _Node("skipped")
        if earlier is not None and (earlier.state == "success" or not self.run_scripts):
            planned.outcome = earlier
        elif self.run_scripts:
            planned.outcome, _ = call_script(self.workflow, process, stream, self.variables)
            planned.ran_now = True
        else:
            planned.outcome = ScriptOutcome("failed", message="the script's outcome was lost; clear the task")
        return _Node(planned.outcome.state, deps)

    def child(self, here: _Here, child: TaskNode) -> tuple[list[str], bool, list[str]]:
        task, stream, nodes = here.task, here.stream, here.nodes
        feeder_id = instance_id(stream, child.streams_from or "")
        feeder = self.plan.script(feeder_id)
        if feeder is None or feeder.outcome is None or feeder.outcome.state != "success":
            return [], False, []
        if any(nodes[n].state not in ("success", "pending") for n in child.depends_on if n in nodes):
            return [], False, []
        # Its streams exist only if the script that made them succeeded: as if they depended on it.
        deps = here.deps([child.streams_from or "", *child.depends_on], child.after)
        ids: list[str] = []
        failed = False
        members: list[str] = []
        for value in feeder.outcome.feeds.get(child.name, []):
            below = dict(stream)
            if child.stream_var:
                below[child.stream_var] = value
            child_ids, child_failed = self.stream(child, below, deps)
            ids += child_ids
            failed = failed or child_failed
            members += self.plan.members[(child.path, stream_path(below))]
        self.plan.members[(task.path, stream_path(stream), child.name)] = members
        return ids, failed, members


def plan_bundle(
    workflow: LoadedWorkflow,
    task: TaskNode,
    streams: Sequence[Mapping[str, Any]],
    variables: Mapping[str, Scalar],
    *,
    known: Mapping[str, ScriptOutcome] | None = None,
    run_scripts: bool = True,
    raised: Mapping[str, RaisedRequest] | None = None,
    dm: bool = False,
) -> BundlePlan:
    """Plan a bundle: run (or reuse) its setup scripts and list its batch instances.

    :param workflow: the loaded workflow.
    :param task: the bundled sub-task.
    :param streams: the bundle's streams of it.
    :param variables: the run's variables.
    :param known: outcomes of scripts from earlier tries, by instance id (a success is reused).
    :param run_scripts: run the scripts that need running; ``False`` rebuilds a plan from
        ``known`` only (after the allocation).
    :param raised: requests that earlier tries raised, by instance id (see ``escalate_request``).
    :param dm: the instances run their processes' ``dm_command`` (the run's payload is ``dm``).
    :raises WorkflowSpecError: if two instances get the same id, or (``dm``) a process has no
        ``dm_command``.
    """
    planner = _Planner(workflow, variables, known or {}, run_scripts, raised or {}, dm)
    for stream in streams:
        planner.plan.top.append(dict(stream))
        planner.stream(task, dict(stream), _Upstream())
    ids = (
        [i.id for i in planner.plan.instances]
        + list(planner.plan.skipped)
        + [s.id for s in planner.plan.scripts]
    )
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise WorkflowSpecError(f"{task.path}: process instances share an id in one bundle: {', '.join(dup)}")
    return planner.plan


def allocation_time_limit_s(instances: Sequence[PlannedInstance], cores: int, max_walltime_s: int) -> int:
    """Return the walltime to ask for a bundle: its work spread on the node's cores, within limits.

    At least the longest instance's walltime (and 5 minutes); the sum of cpus x walltime over the
    cores (the work if perfectly packed) otherwise, plus 10 %; never above ``max_walltime_s``.
    Walltimes are those the instances ask for now: raised by earlier tries (``escalate_request``).
    """
    longest = 0
    total = 0.0
    for inst in instances:
        walltime = inst.walltime_s or 3600
        longest = max(longest, walltime)
        total += inst.cpus * walltime
    packed = math.ceil(1.1 * total / max(cores, 1))
    return int(min(max_walltime_s, max(300, longest, packed)))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def raised_requests(saved: Mapping[str, Any]) -> dict[str, RaisedRequest]:
    """Return the requests earlier tries raised, from the bundle's saved state."""
    found: dict[str, RaisedRequest] = {}
    for iid, value in (saved.get("escalation") or {}).items():
        request = RaisedRequest.from_json(value)
        if request is not None:
            found[str(iid)] = request
    return found
