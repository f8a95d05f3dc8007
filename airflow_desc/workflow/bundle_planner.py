"""The bundle planner: walk a bundle's streams and make its :class:`~.bundle_plan.BundlePlan` (no Airflow).

Starting from a bundle's streams (``visit=2201``...), :func:`plan_bundle` walks the bundled
sub-task and every sub-task below it. Script processes whose results the allocation needs
(``setupEimageRafts``, ``setupEimageSensors``: they make the streams below; or anything a batch
process depends on) run now, on the worker (:func:`~airflow_desc.workflow.scripts.call_script`),
or their outcome from an earlier try is reused. Every batch process instance becomes a manifest
entry ``visit=2201/raft=R22/sensor=S11:processEimage``
(:class:`~airflow_desc.workflow.bundle_plan.PlannedInstance`) with its command
(:func:`bundle_command`), cpus, memory, walltime and dependencies: ``depends_on`` (the
pilot runs it only if its upstream succeeded) and ``after`` (the pilot waits for the upstream
whatever its end state). Through a setup script the kinds compose: an instance waits for what
the script waited for, as ``depends_on`` only if both links are. An instance that cannot run
(its setup script failed, or ``skip_if`` holds on variables, stream values and states decided
before the allocation) is listed as skipped with its :class:`~airflow_desc.workflow.graph.Skip`.
A ``skip_if`` on the states of siblings that run in the allocation is evaluated for every
combination of their end states; those that skip go into the instance's manifest entry
(``skip_when``) for the pilot to apply once they have ended. Scripts that run after the
allocation (wrapups) are listed in order.
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.pilot.launcher import STATES
from airflow_desc.workflow.bundle_plan import BundlePlan, PlannedInstance, PlannedScript, RaisedRequest
from airflow_desc.workflow.graph import ProcessNode, TaskNode
from airflow_desc.workflow.naming import instance_id, stream_path
from airflow_desc.workflow.outcomes import Skip
from airflow_desc.workflow.scripts import ScriptOutcome, call_script
from airflow_desc.workflow.spec_templates import Scalar, Template, TemplateError

if TYPE_CHECKING:
    from airflow_desc.workflow.registry import LoadedWorkflow

__all__ = ["bundle_command", "plan_bundle"]


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
            planned.outcome = ScriptOutcome.skipped(reason.message)
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
