"""What one bundle allocation runs (no Airflow): a :class:`BundlePlan` and its process instances.

:func:`~airflow_desc.workflow.bundle_planner.plan_bundle` makes the plan. It lists the bundle's batch
process instances (:class:`PlannedInstance`: one manifest entry each,
``visit=2201/raft=R22/sensor=S11:processEimage``, with its command, cpus, memory, walltime,
dependencies and ``skip_when``), those skipped before the allocation, and its script instances
(:class:`PlannedScript`: setup scripts run before the allocation, wrapups after it, in order).
From the plan come the pilot's manifest (:meth:`BundlePlan.manifest`: each instance in its
process's container, if any), the states of the bundle's streams and of a wrapup's upstreams, and
what a rerun of some instances runs again (:meth:`BundlePlan.rerun_closure`).
:class:`RaisedRequest` is an instance's memory and walltime as earlier tries raised them
(:func:`raised_requests` reads them from the bundle's saved state); :func:`allocation_time_limit_s`
sizes the allocation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_desc.pilot.launcher import INSTANCE_ENV
from airflow_desc.slurm.script import ContainerSpec, container_command
from airflow_desc.workflow.graph import ProcessNode, TaskNode
from airflow_desc.workflow.naming import instance_id, stream_path
from airflow_desc.workflow.outcomes import combine_states
from airflow_desc.workflow.scripts import ScriptOutcome

__all__ = [
    "CONTAINER_ENV",
    "BundlePlan",
    "PlannedInstance",
    "PlannedProcess",
    "PlannedScript",
    "RaisedRequest",
    "allocation_time_limit_s",
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


def raised_requests(saved: Mapping[str, Any]) -> dict[str, RaisedRequest]:
    """Return the requests earlier tries raised, from the bundle's saved state."""
    found: dict[str, RaisedRequest] = {}
    for iid, value in (saved.get("escalation") or {}).items():
        request = RaisedRequest.from_json(value)
        if request is not None:
            found[str(iid)] = request
    return found
