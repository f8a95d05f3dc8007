"""The pilot: run a bundle's process instances packed onto the cores of one SLURM allocation.

Standard library only, Python 3.8+: the bundle's job script carries this file as text and runs it
with the cluster's ``python3``; nothing is installed on the cluster. Usage::

    python3 launcher.py --manifest M.json --records R.jsonl [--launcher srun|direct]
                        [--logs-dir DIR] [--cores N] [--memory-mb M] [--skip-done R_prev.jsonl]
                        [--bundle-dir DIR [--take-over --cluster NAME --time-limit S]]

The manifest lists the process instances (``id``, ``stream``, ``process``, ``command``, ``cpus``,
``memory_mb``, optional ``walltime_s``, ``estimate_s``, ``depends_on``, ``after``, ``skip_when``,
``container`` and ``container_runtime``). An instance runs ``bash -c <command>`` with the variables of
:data:`INSTANCE_ENV` set; one with a ``container`` (its image) has a command that runs its payload in
it (:func:`airflow_desc.slurm.script.container_command`, which passes those variables in), and its
log says so (``<id> runs in container image <image>``) before the runtime's own lines. A podman
container's processes are not the launcher's children: the container writes its payload's CPU and
its memory cgroup's peak into a file beside the log (``$DESC_USAGE_FILE``), which the record adds to
the podman client's (:func:`read_container_usage`, :func:`add_container_usage`). Nor does killing
the client stop them: the command's shell stops and removes its container on TERM
(``airflow_desc.slurm.script.container_supervisor``), named by the pilot (``$DESC_CONTAINER_NAME``:
job id, pilot pid, instance index) when the entry's ``container_runtime`` is podman or podman-hpc;
after an instance that ended by a signal or that it killed, the pilot removes that container
itself (``<runtime> rm -f``), in case a SIGKILL came first.

Two kinds of upstream, as in the workflow spec:

``depends_on``
    must succeed: an instance one of whose ``depends_on`` upstreams did not succeed (failed,
    terminated, skipped) is recorded ``skipped`` (``upstream-failed``) and never runs.
``after``
    waited for whatever its end state: once it has ended (or been skipped), the instance may run.

An id in both lists counts as ``depends_on``. An instance starts when every upstream of either kind
has ended (and those it depends on succeeded) and its cpus and memory are free.

``skip_when`` (optional; absent: no condition) is a spec ``skip_if`` on upstream states that only
the allocation decides, evaluated by the planner for every combination of those states::

    {"upstream": [{"ids": ["v=1:makeTempExp"], "known": []}, ...],
     "states": [["failed"], ["terminated"], ["skipped"]], "message": "skip_if holds: ..."}

Each ``upstream`` entry is one process or sub-task named by the condition: its state is
:func:`combine_states` of its instances' end states (``ids``, all upstream of this instance)
and of ``known``, the states of its members decided before the allocation. Once they have
ended, an instance whose upstream states are one of ``states`` is recorded ``skipped``
(``skip-condition``, ``message``) and never runs; its dependents are treated as after any skip.

Scheduling: greedy list scheduling (:func:`ready_key`). Among the ready instances the one heading
the longest chain of dependents goes first (a visit before its sensors' siblings, so the ready
pool never runs dry), then the biggest (first-fit decreasing packs cores best), then the longest
by ``estimate_s`` (what earlier runs took: longest-first leaves no long instance for the end,
when one core would run it while the others idle), then manifest order; smaller instances
backfill cores the first in line cannot use, until it has waited ``--reserve-after`` s. A core
that frees is given its next instance before the ended one is recorded (the record's ``fsync``
is not spent with the core idle).

Launchers:

``srun``
    each instance is a job step, ``srun --exact --ntasks=1 --cpus-per-task=C --mem=M
    --job-name=<instance id>``, so SLURM confines it and ``sacct`` accounts for it per step. The
    step runs this file again as ``--run-one``, which runs ``bash -c <command>`` and measures it
    with ``wait4`` as the direct launcher does (srun's own rusage says nothing about the step),
    so both launchers record the same fields from the same source, plus the step id.
``direct``
    each instance is a child process of the pilot (NERSC asks users not to launch thousands of
    sruns, and a step launch idles a core for ~0.2 s). CPU and peak RSS come from ``wait4``'s
    rusage; the pilot samples each instance's RSS (all processes of its session) from ``/proc``
    every ``--poll-interval`` s and kills it when it exceeds ``memory_mb``; the children are
    pinned to their own CPUs when the pool maps onto the CPUs the pilot may use.

A podman container's own CPU and peak memory (which its record's ``total_cpu_s`` and ``max_rss_bytes``
include) are also kept apart, as ``container_usage`` (``{cpu_s, max_rss_bytes, oom_kills}``, ``None``
without); an OOM kill in the container's memory cgroup is an ``out-of-memory`` as one in the step's.

Taking over (``--bundle-dir``, ``--take-over``): the bundles of one mapped task are sized from their
processes' walltime requests, which are often many times what they take, so a pilot may run out of
work with hours of its allocation left while its siblings wait in the queue, for the same node.
With ``--bundle-dir`` the pilot first claims its bundle (creates ``claim-<job id>`` there, exclusively)
and runs nothing when the file names another job: a pilot that took the bundle over while this job
was pending. With ``--take-over``, a pilot whose cores idle with nothing ready looks at its siblings'
directories (``<task>.<n>`` beside its own) for the ``offer.json`` their operators wrote once their
jobs were submitted (:func:`read_offer`), and takes over one that is on its ``--cluster``, still
pending (``squeue``), fits a node, and whose expected run time, twice, fits the ``--time-limit``
left (:meth:`Pilot._expected_s`: what this pilot measured of each process, else its ``estimate_s``,
else its walltime): it claims that bundle (``claim-<its job id>``), cancels its pending job, and runs
its instances with its own, each recorded in that bundle's records file and logged in its logs
directory, with this job's id. The sibling's operator finds the claim and collects them. Whichever
pilot creates a claim first runs the bundle; the other runs none of it.

Every instance ends as one JSON line in the records file (written with one ``write`` and
``fsync``-ed, so the operator can read partial progress if the allocation dies):
``state`` is ``success``, ``failed``, ``terminated`` or ``skipped`` and ``reason`` one of
:data:`REASONS`. A SIGTERM (SLURM's time limit, or ``--signal=B:TERM@60``), SIGINT or SIGUSR1 stops
launching, records every instance not yet started as ``skipped`` / ``allocation-ended``, sends
SIGTERM to the running ones (SIGKILL after ``--kill-grace`` s) and records them ``terminated`` /
``time-limit``. ``memory_mb`` and ``walltime_s`` are the limits it ran under (the bundle operator
raises them for the next try after ``out-of-memory`` / ``time-limit``). ``--skip-done`` reruns only
what did not succeed in an earlier records file.

Exit status: 0 when every instance of its own bundle succeeded (or was already done, or the bundle
was taken over), 1 when some did not (the records say which), 2 for a bad manifest or command
line, 3 when the records or logs cannot be written, 128+N when stopped by signal N.
The last lines on stdout are ``airflow-desc-pilot: utilisation ...`` and
``airflow-desc-pilot: summary {json}``.

This file stays one standard-library module because the job script carries it as one text
(:func:`airflow_desc.pilot.launcher_source`). Its sections, in order (``# --- N.`` comments)::

    constants        record fields, states, reasons, exit statuses (the contract with the operator)
    1. manifest      Instance, load_manifest: checks, the dependency graph, heights; --skip-done
    2. allocation    Node, allocation_cores / _memory_mb / _nodes: what there is to schedule on
    3. processes     exit status, signals, process-group RSS, OOM kills, CPU binding, Waker
    4. records       reading and appending records files, log tails
    5. pilot         Running, Options, Pilot, whose methods go: setup; scheduling (the loop,
                     the ready queue, the dependency graph); launching (srun steps or direct
                     children, reaping); limits and signals; records and summary
    6. --run-one     one instance inside an srun step, measured as the direct launcher does
    7. main          the command line
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import heapq
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

PREFIX = "airflow-desc-pilot:"
LAUNCHERS = ("srun", "direct")
STATES = ("success", "failed", "terminated", "skipped")
#: Why an instance did not succeed (``None`` when it did).
REASONS = (
    None,
    "non-zero-exit",
    "time-limit",
    "out-of-memory",
    "upstream-failed",
    "skip-condition",
    "launch-error",
    "allocation-ended",
)
#: The keys of every record, in the order they are written.
RECORD_FIELDS = (
    "bundle",
    "id",
    "stream",
    "process",
    "state",
    "reason",
    "message",
    "exit_code",
    "signal",
    "start",
    "end",
    "elapsed_s",
    "total_cpu_s",
    "max_rss_bytes",
    "container_usage",
    "node",
    "cpus",
    "memory_mb",
    "walltime_s",
    "launcher",
    "job_id",
    "step_name",
    "step_id",
    "log_path",
    "log_tail",
)
#: The variables every instance is given (a container's command passes them into it).
INSTANCE_ENV = (
    "DESC_PILOT_BUNDLE",
    "DESC_PILOT_INSTANCE",
    "DESC_PILOT_STREAM",
    "DESC_PILOT_PROCESS",
    "DESC_PILOT_CPUS",
    "DESC_PILOT_MEMORY_MB",
    "OMP_NUM_THREADS",
)
EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_PILOT_FAILED = 3
LOG_TAIL_LINES = 20
MIB = 1024 * 1024
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# What slurmstepd / the kernel print when a step is killed for memory (cgroup or OverMemoryKill).
_OOM_TEXT = re.compile(r"oom[-_ ]kill|out of memory|exceeded (job |step )?memory limit", re.IGNORECASE)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._=+-]+")
#: The variable naming the file a podman container writes its payload's usage into
#: (:data:`airflow_desc.slurm.script.USAGE_FILE_VAR`).
USAGE_FILE_VAR = "DESC_USAGE_FILE"
#: The variable naming an instance's podman container (``airflow_desc.slurm.script.container_supervisor``).
CONTAINER_NAME_VAR = "DESC_CONTAINER_NAME"
#: Runtimes whose containers outlive a killed client (conmon holds them): the pilot names and removes them.
PODMAN_RUNTIMES = ("podman", "podman-hpc")
_TIMES_RE = re.compile(r"^(\d+)m(\d+(?:[.,]\d+)?)s (\d+)m(\d+(?:[.,]\d+)?)s$")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: A bundle's offer to be taken over, in its directory (:func:`read_offer`), and its claim files.
OFFER_FILE = "offer.json"
CLAIM_PREFIX = "claim-"
#: How often a pilot with idle cores looks for a sibling bundle to take over, while others run.
OFFER_LOOK_EVERY_S = 5.0


# --- 1. the manifest model: instances, their checks, the dependency graph -------------------------
class ManifestError(ValueError):
    """The manifest cannot be run: the message names the instance and the field."""


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


@dataclass(frozen=True)
class SkipWhen:
    """An instance's ``skip_when``: the upstream groups, the state combinations that skip it, why."""

    upstream: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (ids, known states) per group
    states: frozenset[tuple[str, ...]]
    message: str


def _skip_when(raw: Any, where: str) -> SkipWhen | None:
    if raw is None:
        return None
    where = f"{where}: skip_when"
    if not isinstance(raw, dict) or not isinstance(raw.get("upstream"), list) or not raw["upstream"]:
        raise ManifestError(f'{where} must be an object with a non-empty "upstream" list')
    groups = []
    for i, group in enumerate(raw["upstream"]):
        ids = group.get("ids") if isinstance(group, dict) else None
        known = group.get("known", []) if isinstance(group, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(x, str) and x for x in ids):
            raise ManifestError(f"{where}: upstream[{i}] must have a non-empty ids list of instance ids")
        if not isinstance(known, list) or not all(k in STATES for k in known):
            raise ManifestError(f"{where}: upstream[{i}]: known must be a list of states in {STATES}")
        groups.append((tuple(ids), tuple(known)))
    combos = raw.get("states")
    if not isinstance(combos, list) or not all(
        isinstance(c, list) and len(c) == len(groups) and all(s in STATES for s in c) for c in combos
    ):
        raise ManifestError(
            f"{where}: states must be a list of lists of {len(groups)} states each (one per upstream), "
            f"each in {STATES}"
        )
    message = raw.get("message")
    if not isinstance(message, str) or not message:
        raise ManifestError(f"{where}: message must be a non-empty string")
    return SkipWhen(tuple(groups), frozenset(tuple(c) for c in combos), message)


@dataclass
class Instance:
    """One process instance of the manifest, and where the pilot is with it."""

    index: int
    id: str
    stream: str
    process: str
    command: str
    cpus: int
    memory_mb: int | None
    walltime_s: float | None
    depends_on: tuple[str, ...]  # must succeed
    after: tuple[str, ...] = ()  # waited for whatever their end state
    estimate_s: float | None = None  # how long it is expected to run (from earlier runs), for ordering
    skip_when: SkipWhen | None = None  # a skip_if on upstream states decided in the allocation
    container: str | None = None  # the image its command runs the payload in (for its log)
    container_runtime: str | None = None  # podman / podman-hpc: the pilot names and removes its container
    children: list[int] = field(default_factory=list)
    height: int = 0  # longest chain of dependents below it: the critical path it starts
    waiting_on: int = 0  # dependencies not finished yet
    upstream_failed: str | None = None
    state: str | None = None  # final state once recorded (or "done" from --skip-done)
    queued: bool = False
    started: bool = False
    blocked_since: float | None = None
    log_name: str = ""
    owner: int = 0  # whose bundle: Pilot.owners[owner] (0: the pilot's own; else one it took over)


def _field(raw: dict[str, Any], name: str, where: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ManifestError(f"{where}: {name}={value!r} must be {' or '.join(k.__name__ for k in kinds)}")
    return value


def _instance(index: int, raw: Any) -> Instance:
    if not isinstance(raw, dict):
        raise ManifestError(f"instances[{index}] is {type(raw).__name__}, not an object")
    where = f"instances[{index}]"
    iid = _field(raw, "id", where, (str,), None)
    if not iid:
        raise ManifestError(f"{where} has no id")
    where = f"instances[{index}] ({iid})"
    command = _field(raw, "command", where, (str,), None)
    if not command or not command.strip():
        raise ManifestError(f"{where} has no command")
    stream_default, _, process_default = iid.rpartition(":") if ":" in iid else ("", "", iid)
    cpus = _field(raw, "cpus", where, (int,), 1)
    memory = _field(raw, "memory_mb", where, (int,), None)
    walltime = _field(raw, "walltime_s", where, (int, float), None)
    estimate = _field(raw, "estimate_s", where, (int, float), None)
    deps = _field(raw, "depends_on", where, (list,), [])
    after = _field(raw, "after", where, (list,), [])
    if cpus < 1:
        raise ManifestError(f"{where}: cpus={cpus} must be at least 1")
    if memory is not None and memory < 1:
        raise ManifestError(f"{where}: memory_mb={memory} must be at least 1 (srun --mem=0 means all of it)")
    if walltime is not None and walltime <= 0:
        raise ManifestError(f"{where}: walltime_s={walltime} must be positive")
    if estimate is not None and not estimate >= 0:
        raise ManifestError(f"{where}: estimate_s={estimate} must be 0 or more seconds (or left out)")
    for name, ids in (("depends_on", deps), ("after", after)):
        if not all(isinstance(d, str) and d for d in ids):
            raise ManifestError(f"{where}: {name} must be a list of instance ids")
    deps = list(dict.fromkeys(deps))
    return Instance(
        index=index,
        id=iid,
        stream=_field(raw, "stream", where, (str,), stream_default),
        process=_field(raw, "process", where, (str,), process_default),
        command=command,
        cpus=cpus,
        memory_mb=memory,
        walltime_s=None if walltime is None else float(walltime),
        depends_on=tuple(deps),
        after=tuple(a for a in dict.fromkeys(after) if a not in deps),  # depends_on is the stronger
        estimate_s=None if estimate is None else float(estimate),
        skip_when=_skip_when(raw.get("skip_when"), where),
        container=_field(raw, "container", where, (str,), None),
        container_runtime=_field(raw, "container_runtime", where, (str,), None),
    )


def load_manifest(data: Any, done: set[str] | None = None) -> tuple[str, list[Instance]]:
    """Check a manifest and link its instances into a dependency graph.

    :param data: the parsed manifest, ``{"bundle": ..., "instances": [...]}``.
    :param done: ids that already succeeded (``--skip-done``); a dependency on one of them is met
        even if the manifest no longer lists it.
    :return: the bundle id and the instances, each with its children, height and open dependencies.
    :raises ManifestError: for a missing field, a duplicate id, an unknown upstream (``depends_on``
        or ``after``) or a cycle.
    """
    done = done or set()
    if not isinstance(data, dict) or not isinstance(data.get("instances"), list):
        raise ManifestError('the manifest must be an object with an "instances" list')
    bundle = data.get("bundle", "")
    if not isinstance(bundle, str):
        raise ManifestError(f"bundle={bundle!r} must be a string")
    instances = [_instance(i, raw) for i, raw in enumerate(data["instances"])]
    by_id: dict[str, Instance] = {}
    for inst in instances:
        if inst.id in by_id:
            raise ManifestError(
                f"instance id {inst.id!r} appears twice (instances {by_id[inst.id].index} and {inst.index})"
            )
        by_id[inst.id] = inst
    for inst in instances:
        for kind, ids in (("depends_on", inst.depends_on), ("after", inst.after)):
            for dep in ids:
                parent = by_id.get(dep)
                if parent is None:
                    if dep in done:
                        continue
                    raise ManifestError(
                        f"instances[{inst.index}] ({inst.id}): {kind} names {dep!r}, which is not in the "
                        "manifest; list only ids of this bundle's instances"
                    )
                parent.children.append(inst.index)
                inst.waiting_on += 1
        for ids, _ in inst.skip_when.upstream if inst.skip_when else ():
            unknown = [i for i in ids if i not in inst.depends_on and i not in inst.after]
            if unknown:
                raise ManifestError(
                    f"instances[{inst.index}] ({inst.id}): skip_when names {unknown[0]!r}, which it does "
                    "not wait for; list it in depends_on or after"
                )
    _check_acyclic_and_rank(instances)
    _name_logs(instances)
    return bundle, instances


def _check_acyclic_and_rank(instances: list[Instance]) -> None:
    """Kahn's algorithm: refuse a cycle, then give each instance its height (critical path)."""
    open_deps = [inst.waiting_on for inst in instances]
    order = [inst.index for inst in instances if open_deps[inst.index] == 0]
    for index in order:  # grows while we walk it
        for child in instances[index].children:
            open_deps[child] -= 1
            if open_deps[child] == 0:
                order.append(child)
    if len(order) < len(instances):
        stuck = [inst.id for inst in instances if open_deps[inst.index] > 0][:5]
        raise ManifestError(f"the dependencies form a cycle through {', '.join(map(repr, stuck))}")
    for index in reversed(order):
        inst = instances[index]
        inst.height = 1 + max((instances[c].height for c in inst.children), default=0)


def _name_logs(instances: list[Instance]) -> None:
    """Give each instance a file name made from its id, unique within the bundle."""
    used: set[str] = set()
    for inst in instances:
        name = _UNSAFE_NAME.sub("_", inst.id).strip("._")[:150] or "instance"
        if name in used:
            name = f"{name}-{inst.index}"
        used.add(name)
        inst.log_name = name


def ready_key(inst: Instance) -> tuple[int, int, int, float, int]:
    """Return the key that orders ready instances: the smallest starts first.

    The longest chain of dependents, then the most cpus, then the most memory, then the longest
    ``estimate_s`` (unknown counts as 0), then the manifest order.
    """
    return (-inst.height, -inst.cpus, -(inst.memory_mb or 0), -(inst.estimate_s or 0.0), inst.index)


def step_name(instance_id: str) -> str:
    """Return the ``--job-name`` of an instance's step: its id, made safe for ``sacct -P`` output."""
    name = re.sub(r"[|,\s]", "_", instance_id)
    if len(name) <= 200:
        return name
    return name[:190] + "~" + hashlib.sha1(instance_id.encode("utf-8")).hexdigest()[:9]


def done_ids(path: str) -> set[str]:
    """Return the ids whose last record in an earlier records file is ``success``."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            records = parse_records(f.read())
    except FileNotFoundError:
        print(f"{PREFIX} --skip-done {path} does not exist: running everything", flush=True)
        return set()
    last = {rec.get("id"): rec.get("state") for rec in records}
    return {iid for iid, state in last.items() if isinstance(iid, str) and state == "success"}


def rerun_ids(data: Any) -> set[str]:
    """Return the manifest's ``rerun`` ids: instances to run again even if ``--skip-done`` says done.

    A rerun that selected instances that succeeded (their results were wrong) lists them; the
    operator adds what waits for them in the bundle.
    """
    ids = data.get("rerun") if isinstance(data, dict) else None
    if ids is None:
        return set()
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ManifestError('"rerun" must be a list of instance ids')
    return set(ids)


# --- 2. the allocation: nodes, cores and memory to schedule on ------------------------------------
@dataclass
class Node:
    """The cores and memory of one node of the allocation, and what is free of them."""

    name: str | None  # None: the node the pilot runs on, no --nodelist needed
    cores: int
    memory_mb: int
    free_cores: int = 0
    free_memory_mb: int = 0
    free_cpu_ids: list[int] | None = None  # set when direct-mode children are pinned to CPUs

    def __post_init__(self) -> None:
        self.free_cores = self.cores
        self.free_memory_mb = self.memory_mb

    def fits(self, cpus: int, memory_mb: int) -> bool:
        """Whether an instance of this size can start here now."""
        return self.free_cores >= cpus and self.free_memory_mb >= memory_mb


def _first_int(text: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def allocation_cores(env: dict[str, str]) -> int:
    """Return the CPUs of this node of the allocation, from SLURM's variables or this machine.

    ``SLURM_CPUS_ON_NODE``, else the first count of ``SLURM_JOB_CPUS_PER_NODE`` (``"128(x4)"``),
    else the CPUs this process may run on.
    """
    for name in ("SLURM_CPUS_ON_NODE", "SLURM_JOB_CPUS_PER_NODE"):
        value = _first_int(env.get(name))
        if value:
            return value
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def allocation_memory_mb(env: dict[str, str], cores: int) -> int:
    """Return the memory (MB) of this node of the allocation.

    ``SLURM_MEM_PER_NODE``, else ``SLURM_MEM_PER_CPU`` x cores, else this machine's memory.
    """
    per_node = _first_int(env.get("SLURM_MEM_PER_NODE"))
    if per_node:
        return per_node
    per_cpu = _first_int(env.get("SLURM_MEM_PER_CPU"))
    if per_cpu:
        return per_cpu * cores
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * _PAGE_SIZE // MIB)
    except (ValueError, OSError, AttributeError):
        return 1024 * cores


def allocation_nodes(env: dict[str, str], launcher: str) -> list[str | None]:
    """Return the node names steps may go to: several only for ``srun`` in a multi-node job."""
    count = _first_int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")) or 1
    if launcher != "srun" or count <= 1:
        if count > 1:
            print(
                f"{PREFIX} warning: {count} nodes allocated but the direct launcher only uses this one",
                flush=True,
            )
        return [None]
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", env.get("SLURM_JOB_NODELIST", "")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"{PREFIX} warning: cannot list the allocation's nodes ({exc}); using one", flush=True)
        return [None]
    return list(out) or [None]


# --- 3. processes: status, signals, memory (shared by the pilot and --run-one) --------------------
def now_iso() -> str:
    """Return the current UTC time as ISO 8601 with milliseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def node_name() -> str:
    """Return the SLURM node name (``SLURMD_NODENAME``), or the host name outside SLURM."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


def decode_status(status: int) -> tuple[int | None, int | None]:
    """Split a wait status into ``(exit_code, signal)``; one of them is ``None``."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def signal_name(number: int | None) -> str:
    """Return ``SIGKILL`` for 9, or the number as text when it has no name."""
    try:
        return signal.Signals(number or 0).name
    except ValueError:
        return f"signal {number}"


def group_rss(sessions: set[int]) -> dict[int, int]:
    """Sum the resident memory (bytes) of every process in each of ``sessions``, read from /proc.

    Each instance runs in a session of its own (``start_new_session``), so its session id is its
    leader's pid and every process it forks stays in it (unless it calls ``setsid`` itself).
    """
    totals = {sid: 0 for sid in sessions}
    if not sessions:
        return totals
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return totals
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # it ended meanwhile
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        try:
            sid, rss_pages = int(fields[3]), int(fields[21])
        except (IndexError, ValueError):
            continue
        if sid in totals:
            totals[sid] += rss_pages * _PAGE_SIZE
    return totals


def kill_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group, ignoring one that has already gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def memcg_oom_kills() -> int | None:
    """Return the kernel's OOM-kill count of this process's memory cgroup, or ``None`` if unknown.

    An instance killed by SIGKILL that nobody here sent was, if this count went up meanwhile, killed
    by the kernel because the allocation as a whole ran out of memory.
    """
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if "memory" in parts[1].split(","):
            candidates.append(f"/sys/fs/cgroup/memory{parts[2]}/memory.oom_control")
        elif parts[0] == "0" and parts[1] == "":
            candidates.append(f"/sys/fs/cgroup{parts[2]}/memory.events")
    for path in candidates:
        try:
            with open(path) as f:
                for row in f:
                    key, _, value = row.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def own_peak_rss() -> int:
    """Return this process's resident high-water mark (``VmHWM``) in bytes, 0 if /proc cannot tell.

    A child forked (or vforked) now starts with at most this as its own high-water mark.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def peak_rss(ru_maxrss_kb: int, spawn_rss: int, sampled: int) -> int | None:
    """Return an instance's peak RSS in bytes from ``wait4``'s ``ru_maxrss`` and the /proc samples.

    A forked child starts with its parent's resident size as its high-water mark, and Linux keeps
    that mark across ``exec``: so ``ru_maxrss`` is at least the launching Python's RSS. When it is
    not above that, it says nothing about the payload and the sampled peak (sum over the instance's
    processes, every ``--poll-interval``) is used instead; ``None`` if it ended before a sample.
    """
    rusage = ru_maxrss_kb * 1024
    if rusage > spawn_rss + 2 * MIB:
        return max(rusage, sampled)
    return sampled or None


def _oom_kill_happened(before: int | None, after: int | None) -> bool:
    return before is not None and after is not None and after > before


def _child_setup(cpu_ids: list[int]) -> Callable[[], None]:
    """Return what a direct child does before exec.

    It takes its own CPUs, and offers itself to the OOM killer before the pilot (raising one's own
    oom_score_adj needs no privilege).
    """

    def setup() -> None:
        if cpu_ids:
            try:
                os.sched_setaffinity(0, cpu_ids)
            except OSError:
                pass
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("500")
        except OSError:
            pass

    return setup


class Waker:
    """Sleep until a signal arrives (SIGCHLD means a child ended) or a timeout passes.

    The signal handlers only note what arrived; ``signal.set_wakeup_fd`` writes a byte to a pipe
    for each signal, so a signal that arrives between a check and the sleep still ends the sleep.
    """

    def __init__(self, on_signal: Callable[[int], None], signals: tuple[int, ...]) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._old: dict[int, Any] = {}
        for sig in (signal.SIGCHLD, *signals):
            handler = (lambda s, f: None) if sig == signal.SIGCHLD else (lambda s, f: on_signal(s))
            self._old[sig] = signal.signal(sig, handler)

    def wait(self, timeout: float) -> None:
        """Return after ``timeout`` seconds or as soon as a signal arrives."""
        select.select([self._r], [], [], max(0.0, timeout))
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Put the previous signal handlers back."""
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._r)
        os.close(self._w)


# --- 4. records and log files ---------------------------------------------------------------------
def parse_records(text: str) -> list[dict[str, Any]]:
    """Read a records file: one JSON object a line; a line cut short by a crash is left out."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue  # written when the allocation died: the instance counts as not done
        if isinstance(value, dict):
            records.append(value)
    return records


def read_tail(path: str, lines: int = LOG_TAIL_LINES, max_line: int = 500) -> str | None:
    """Return the last ``lines`` lines of a log (each cut to ``max_line`` characters), or ``None``."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace").splitlines()[-lines:]
    return "\n".join(line if len(line) <= max_line else line[:max_line] + "..." for line in text)


def _read_json(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_container_usage(path: str | None) -> dict[str, Any] | None:
    """Read what a podman container says its payload used: ``{cpu_s, max_rss_bytes, oom_kills}``.

    The container's shell writes bash's ``times`` (its own line, then its children's: the payload's
    user and system time), its memory cgroup's peak in bytes and its count of OOM kills
    (:func:`airflow_desc.slurm.script.measured_payload`) into the file :data:`USAGE_FILE_VAR` names.
    ``None`` when it wrote nothing (it never ran); a field it could not measure is ``None``.
    """
    if not path:
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f.read().splitlines()]
    except OSError:
        return None
    if len(lines) < 2:
        return None
    match = _TIMES_RE.match(lines[1])
    cpu = None
    if match is not None:
        cpu = round(sum(int(m) * 60 + float(sec.replace(",", ".")) for m, sec in _pairs(match.groups())), 3)
    peak, kills = (lines[i] if len(lines) > i else "" for i in (2, 3))
    return {
        "cpu_s": cpu,
        "max_rss_bytes": int(peak) if peak.isdigit() else None,
        "oom_kills": int(kills) if kills.isdigit() else None,
    }


def _pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def add_container_usage(values: dict[str, Any], usage: dict[str, Any] | None) -> None:
    """Add a container's own CPU and peak memory to an instance's measured ones (the podman client's).

    The client's processes are the launcher's children, the container's are not (they are the
    children of podman's monitor, in a cgroup of their own): its CPU is the sum; its peak memory
    the client's plus the container's, which bounds the instance's peak. The container's figures
    are also kept apart, as ``container_usage``.
    """
    if usage is None:
        return
    values["container_usage"] = usage
    if usage["cpu_s"] is not None:
        values["total_cpu_s"] = round((values.get("total_cpu_s") or 0.0) + usage["cpu_s"], 3)
    if usage["max_rss_bytes"] is not None:
        values["max_rss_bytes"] = usage["max_rss_bytes"] + (values.get("max_rss_bytes") or 0)


def claim_file(path: str, holder: str) -> str | None:
    """Create ``path`` exclusively with ``holder`` in it; return ``None``, or who holds it already.

    ``O_CREAT | O_EXCL`` is atomic on the shared file systems a bundle's directory lives on, so of
    two pilots claiming one bundle exactly one gets ``None``. The other gets the holder's words
    (``""`` if it has not written them yet).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read(100).strip()
        except OSError:
            return ""
    try:
        os.write(fd, f"{holder}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return None


def sibling_dirs(bundle_dir: str) -> list[str]:
    """Return the directories of the other bundles of the same mapped task: ``<task>.<n>`` beside ours."""
    parent, name = os.path.split(os.path.abspath(bundle_dir))
    stem, dot, index = name.rpartition(".")
    if not dot or not index.isdigit():
        return []
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    found = []
    for other in names:
        other_stem, _, other_index = other.rpartition(".")
        if other_stem == stem and other_index.isdigit() and other != name:
            found.append((int(other_index), os.path.join(parent, other)))
    return [path for _, path in sorted(found)]


def read_offer(path: str, cluster: str) -> dict[str, Any] | None:
    """Read a sibling bundle's ``offer.json``; ``None`` if absent, unreadable, or of another cluster.

    Written by the operator once the sibling's job was submitted::

        {"job_id": "1234", "cluster": "perlmutter", "manifest": {...}, "records": "~/.../records.jsonl",
         "logs_dir": "~/.../logs", "skip_done": "~/.../records.jsonl" or null}
    """
    data = _read_json(path)
    if data is None or data.get("cluster") != cluster:
        return None
    job_id = data.get("job_id")
    strings = all(isinstance(data.get(k), str) and data.get(k) for k in ("records", "logs_dir"))
    if not (
        isinstance(job_id, str) and job_id.isdigit() and strings and isinstance(data.get("manifest"), dict)
    ):
        return None
    if data.get("skip_done") is not None and not isinstance(data.get("skip_done"), str):
        return None
    return data


def job_pending(job_id: str) -> bool:
    """Whether SLURM still has ``job_id`` pending (``squeue``); ``False`` when it cannot tell."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-t", "PENDING", "-o", "%i"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and job_id in out.stdout.split()


def cancel_pending(job_id: str) -> None:
    """Cancel ``job_id`` if it is still pending; one that started meanwhile finds its bundle claimed."""
    try:
        subprocess.run(["scancel", "--state=PENDING", job_id], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(
            f"{PREFIX} could not cancel job {job_id} ({exc}): its pilot will find its bundle taken",
            flush=True,
        )


def _append(path: str, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        pass


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# --- 5. the pilot: scheduling, launching, limits and signals, records and summary -----------------
@dataclass
class Running:
    """An instance that has been started, until it is recorded."""

    inst: Instance
    proc: subprocess.Popen[bytes]
    node: Node
    memory_mb: int
    cpu_ids: list[int]
    start: str
    start_mono: float
    deadline: float | None
    log_path: str
    result_path: str | None = None
    usage_path: str | None = None  # where its container writes what its payload used
    container_name: str | None = None  # its podman container's (DESC_CONTAINER_NAME)
    killed_for: str | None = None  # time-limit | out-of-memory | allocation-ended
    kill_message: str | None = None
    kill_at: float | None = None  # when to escalate (see Pilot._escalate)
    kill_stage: int = 0
    peak_rss: int = 0
    spawn_rss: int = 0
    oom_kills_before: int | None = None
    end: str | None = None  # when it was reaped (set before it is recorded)
    end_mono: float | None = None


@dataclass
class Options:
    """The pilot's settings (see ``--help``)."""

    manifest: str
    records: str
    logs_dir: str
    launcher: str
    cores: int | None = None
    memory_mb: int | None = None
    skip_done: str | None = None
    kill_grace: float = 10.0
    poll_interval: float = 0.5
    reserve_after: float = 60.0
    bind: bool = True
    python: str = sys.executable or "python3"
    bundle_dir: str | None = None
    take_over: bool = False
    cluster: str = ""
    time_limit: float | None = None


@dataclass
class Owner:
    """A bundle whose instances the pilot runs and records: its own, or one it took over."""

    bundle: str
    records: str
    logs_dir: str
    fd: int = -1


class Pilot:
    """Run one bundle's instances inside the current allocation and record each of them."""

    # --- setup ------------------------------------------------------------------------------------
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.launcher = opts.launcher
        with open(opts.manifest, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except ValueError as exc:
                raise ManifestError(f"{opts.manifest} is not JSON: {exc}") from None
        done = done_ids(opts.skip_done) if opts.skip_done else set()
        self.done = done - rerun_ids(data)
        self.bundle, self.instances = load_manifest(data, self.done)
        self.by_id = {inst.id: inst for inst in self.instances}
        env = dict(os.environ)
        cores = opts.cores or allocation_cores(env)
        memory = opts.memory_mb or allocation_memory_mb(env, cores)
        self.nodes = [Node(name, cores, memory) for name in allocation_nodes(env, self.launcher)]
        if self.launcher == "direct" and opts.bind:
            self._plan_binding(self.nodes[0])
        self.job_id = env.get("SLURM_JOB_ID")
        self.local_node = node_name()
        self.ready: list[tuple[int, int, int, float, int]] = []  # heap of ready_key(instance)
        self.running: dict[int, Running] = {}  # by pid
        self.stop_signal: int | None = None
        self.stopping = False
        self.kill_now = False
        self.counts: dict[str, int] = {}
        self.core_seconds = 0.0
        self.cpu_seconds = 0.0
        self.next_memory_poll = 0.0
        self.owners = [Owner(self.bundle, opts.records, opts.logs_dir)]
        self.measured: dict[str, float] = {}  # the longest successful run of each process, s
        self.took_over: list[str] = []
        self.started_mono = time.monotonic()
        self.next_offer_look = 0.0
        self.offers: dict[str, tuple[int, dict[str, Any] | None]] = {}  # path: version, offer (None: never)

    @staticmethod
    def _plan_binding(node: Node) -> None:
        """Pin direct children to CPUs when the pool is exactly the CPUs we may use (as srun --exact)."""
        try:
            cpu_ids = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return
        if len(cpu_ids) == node.cores:
            node.free_cpu_ids = cpu_ids

    def _memory_of(self, inst: Instance, node: Node) -> int:
        if inst.memory_mb is not None:
            return inst.memory_mb
        return max(1, node.memory_mb // node.cores * inst.cpus)  # the cores' share of the node's memory

    # --- scheduling: the loop, the ready queue, the dependency graph ------------------------------
    def run(self) -> int:
        """Run every instance; return the exit status (see the module docstring)."""
        holder = self._claim_own() if self.opts.bundle_dir else None
        if holder is not None:
            print(
                f"{PREFIX} taken over by job {holder or '(unknown)'}: its allocation runs this bundle's "
                "instances and records them; nothing to run here",
                flush=True,
            )
            return EXIT_OK
        self._open_records(self.owners[0])
        started = time.monotonic()
        waker = Waker(self._on_signal, _STOP_SIGNALS)
        try:
            self._seed(self.instances, self.done)
            while True:
                self._reap()
                if self.stop_signal is not None and not self.stopping:
                    self._begin_stop()
                self._enforce_limits(time.monotonic())
                if not self.stopping:
                    self._launch()
                    if not self.ready and self._take_over():
                        self._launch()
                if not self.running and (self.stopping or not self.ready):
                    break
                waker.wait(self._timeout())
        finally:
            waker.close()
            self._record_leftovers()
            for owner in self.owners:
                if owner.fd >= 0:
                    os.close(owner.fd)
        self._summarise(time.monotonic() - started)
        if self.stop_signal is not None:
            return 128 + self.stop_signal
        # Its own bundle's: what it took over is that bundle's to judge (from its records).
        own = {i.state for i in self.instances if i.owner == 0 and i.state != "done"}
        return EXIT_OK if own <= {"success"} else EXIT_SOME_FAILED

    def _seed(self, instances: list[Instance], done: set[str]) -> None:
        """Mark what --skip-done says is done, refuse what can never fit, queue what is ready."""
        biggest = max(self.nodes, key=lambda n: (n.cores, n.memory_mb))
        if done:
            print(
                f"{PREFIX} {sum(i.id in done for i in instances)} instances already succeeded: not run again",
                flush=True,
            )
        for inst in instances:
            if inst.id in done:
                inst.state = "done"
                for child in inst.children:  # queued below once all their dependencies are met
                    self.instances[child].waiting_on -= 1
        for inst in instances:
            if inst.state is not None:
                continue
            memory = self._memory_of(inst, biggest)
            if not any(node.cores >= inst.cpus and node.memory_mb >= memory for node in self.nodes):
                self._record(
                    inst,
                    "failed",
                    "launch-error",
                    f"needs {inst.cpus} cpus and {memory} MB but a node of the allocation has "
                    f"{biggest.cores} cpus and {biggest.memory_mb} MB",
                )
            elif inst.waiting_on == 0 and inst.upstream_failed is None and not inst.queued:
                if self._skip_or_queue(inst):
                    self._release_dependents(inst)

    def _queue(self, inst: Instance) -> None:
        if not inst.queued:  # a skip recorded by _seed may have queued a later instance already
            inst.queued = True
            heapq.heappush(self.ready, ready_key(inst))

    def _skip_or_queue(self, inst: Instance) -> bool:
        """Queue an instance whose upstreams have all ended, or record it skipped if its ``skip_when`` holds.

        :return: whether it was skipped (the caller releases its dependents).
        """
        cond = inst.skip_when
        if cond is not None:
            states = tuple(
                combine_states([*(self._final_state(i) for i in ids), *known]) for ids, known in cond.upstream
            )
            if states in cond.states:
                self._write(inst, "skipped", "skip-condition", cond.message)
                return True
        self._queue(inst)
        return False

    def _final_state(self, iid: str) -> str:
        inst = self.by_id.get(iid)
        state = inst.state if inst is not None else "done"  # not in the manifest: done (--skip-done)
        return "success" if state == "done" else str(state)

    def _release_dependents(self, inst: Instance) -> None:
        finished = [inst]  # a worklist, not recursion: a skip can cascade down a long chain
        while finished:
            parent = finished.pop()
            ok = parent.state in ("success", "done")
            for child_index in parent.children:
                child = self.instances[child_index]
                child.waiting_on -= 1
                # An `after` upstream releases its dependent however it ended; `depends_on` must succeed.
                if not ok and child.upstream_failed is None and parent.id in child.depends_on:
                    child.upstream_failed = parent.id
                if child.waiting_on > 0 or child.state is not None or self.stopping:
                    continue
                if child.upstream_failed is not None:
                    why = f"not run: upstream {child.upstream_failed} did not succeed"
                    self._write(child, "skipped", "upstream-failed", why)
                    finished.append(child)
                elif self._skip_or_queue(child):
                    finished.append(child)

    def _launch(self) -> None:
        """Start ready instances while cores are free.

        Order: :func:`ready_key`: the longest chain of dependents first (a visit before its sensors'
        siblings, so the ready pool never runs dry), then the biggest (first-fit decreasing packs
        best), then the longest expected, then the manifest order. Smaller instances backfill the
        cores that the first instance in line cannot use yet, unless it has waited
        ``--reserve-after`` seconds: then the cores drain until it fits, so a big instance is never
        starved by a stream of small ones.
        """
        passed_over: list[tuple[int, int, int, float, int]] = []
        while self.ready and self.stop_signal is None and any(n.free_cores for n in self.nodes):
            key = heapq.heappop(self.ready)
            inst = self.instances[key[-1]]
            node = next((n for n in self.nodes if n.fits(inst.cpus, self._memory_of(inst, n))), None)
            if node is not None:
                inst.blocked_since = None
                self._start(inst, node)
            else:
                if not passed_over:  # the first in line that does not fit
                    now = time.monotonic()
                    inst.blocked_since = inst.blocked_since or now
                    if now - inst.blocked_since >= self.opts.reserve_after:
                        passed_over.append(key)
                        break
                passed_over.append(key)
        for key in passed_over:
            heapq.heappush(self.ready, key)

    def _timeout(self) -> float:
        now = time.monotonic()
        wake = now + 5.0
        for run in self.running.values():
            for moment in (run.deadline if run.killed_for is None else None, run.kill_at):
                if moment is not None:
                    wake = min(wake, moment)
        if self.launcher == "direct" and self.running:
            wake = min(wake, self.next_memory_poll)
        if self.ready:
            inst = self.instances[self.ready[0][-1]]
            reserve_at = None if inst.blocked_since is None else inst.blocked_since + self.opts.reserve_after
            if reserve_at is not None and reserve_at > now:  # once reserving, only an exit can help
                wake = min(wake, reserve_at)
        return wake - now

    # --- launching: srun steps or direct children, and reaping them -------------------------------
    def _env(
        self, inst: Instance, memory: int, usage_path: str | None = None, container_name: str | None = None
    ) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(USAGE_FILE_VAR, None)  # the job's own is not the instance's
        env.pop(CONTAINER_NAME_VAR, None)
        if usage_path is not None:
            env[USAGE_FILE_VAR] = usage_path
        if container_name is not None:
            env[CONTAINER_NAME_VAR] = container_name
        env.update(
            DESC_PILOT_BUNDLE=self.owners[inst.owner].bundle,
            DESC_PILOT_INSTANCE=inst.id,
            DESC_PILOT_STREAM=inst.stream,
            DESC_PILOT_PROCESS=inst.process,
            DESC_PILOT_CPUS=str(inst.cpus),
            DESC_PILOT_MEMORY_MB=str(memory),
        )
        env.setdefault("OMP_NUM_THREADS", str(inst.cpus))  # threaded code should use its cores only
        return env

    def _start(self, inst: Instance, node: Node) -> None:
        memory = self._memory_of(inst, node)
        inst.memory_mb = memory
        inst.started = True
        logs_dir = os.path.abspath(self.owners[inst.owner].logs_dir)
        log_path = os.path.join(logs_dir, inst.log_name + ".log")
        spawn_rss = own_peak_rss()
        cpu_ids: list[int] = []
        if node.free_cpu_ids is not None:
            cpu_ids, node.free_cpu_ids = node.free_cpu_ids[: inst.cpus], node.free_cpu_ids[inst.cpus :]
        start = now_iso()
        where = node.name or self.local_node
        result_path = None
        usage_path = self._usage_file(inst) if inst.container else None
        container_name = self._container_name(inst)
        try:
            with open(log_path, "ab") as log:
                log.write(
                    f"{PREFIX} {inst.id} starting at {start} on {where} ({self.launcher}, cpus={inst.cpus}, "
                    f"memory={memory} MB)\n".encode()
                )
                if inst.container:
                    log.write(f"{PREFIX} {inst.id} runs in container image {inst.container}\n".encode())
                log.flush()
                if self.launcher == "srun":
                    result_path = os.path.join(logs_dir, inst.log_name + ".result.json")
                    _remove(result_path)
                    argv = self._srun_argv(inst, node, memory, log_path, result_path)
                    proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self._env(inst, memory, usage_path, container_name),
                        start_new_session=True,
                    )
                else:
                    proc = subprocess.Popen(
                        ["bash", "-c", inst.command],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self._env(inst, memory, usage_path, container_name),
                        start_new_session=True,
                        preexec_fn=_child_setup(cpu_ids),
                    )
        except OSError as exc:
            if node.free_cpu_ids is not None:
                node.free_cpu_ids = sorted(node.free_cpu_ids + cpu_ids)
            self._record(
                inst,
                "failed",
                "launch-error",
                f"could not start: {exc}",
                start=start,
                node=where,
                log_path=log_path,
                log_tail=read_tail(log_path),
            )
            return
        node.free_cores -= inst.cpus
        node.free_memory_mb -= memory
        now = time.monotonic()
        deadline = None if inst.walltime_s is None else now + inst.walltime_s
        self.running[proc.pid] = Running(
            inst=inst,
            proc=proc,
            node=node,
            memory_mb=memory,
            cpu_ids=cpu_ids,
            start=start,
            start_mono=now,
            deadline=deadline,
            log_path=log_path,
            result_path=result_path,
            usage_path=usage_path,
            container_name=container_name,
            oom_kills_before=memcg_oom_kills(),
            spawn_rss=spawn_rss,
        )

    def _container_name(self, inst: Instance) -> str | None:
        """Name an instance's podman container, so that it can be removed when the instance is killed."""
        if inst.container_runtime not in PODMAN_RUNTIMES:
            return None
        job = _UNSAFE_NAME.sub("_", os.environ.get("SLURM_JOB_ID", "0"))
        return f"airflow-desc-{job}-{os.getpid()}-{inst.index}"

    def _remove_container(self, run: Running) -> None:
        """Remove a killed instance's podman container: a SIGKILLed client leaves it running.

        Its command's shell stops the container itself on TERM (``container_supervisor``); this is
        for SIGKILL (memory limit, escalation) and a shell killed before it could. With the srun
        launcher it runs on the pilot's node, which holds the container only when the storage is shared
        or the allocation has one node.
        """
        runtime, name = run.inst.container_runtime, run.container_name
        if runtime is None or name is None:
            return
        argv = [runtime, "rm", "-f", "-i", "-t", "0", name]
        try:
            with open(run.log_path, "ab") as log:
                done = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=60, check=False
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _append(run.log_path, f"{PREFIX} {run.inst.id} could not remove its container {name}: {exc}\n")
            return
        if done.returncode != 0:
            _append(run.log_path, f"{PREFIX} {run.inst.id} {' '.join(argv)} exited {done.returncode}\n")

    def _usage_file(self, inst: Instance) -> str | None:
        """Make the empty file an instance's container writes its usage into (podman mounts it).

        It sits beside the instance's log; podman's ``--volume`` would misread a ``:`` or ``,`` in
        its path, so then it is a temporary file instead (none: the record keeps the client's usage).
        """
        path = os.path.join(os.path.abspath(self.owners[inst.owner].logs_dir), inst.log_name + ".usage")
        try:
            if re.search(r"[:,]", path):
                fd, path = tempfile.mkstemp(prefix="airflow-desc-usage.", dir="/tmp")
                os.close(fd)
            else:
                with open(path, "w", encoding="utf-8"):
                    pass
        except OSError:
            return None
        return path

    def _srun_argv(
        self, inst: Instance, node: Node, memory: int, log_path: str, result_path: str
    ) -> list[str]:
        argv = [
            "srun",
            "--exact",
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={inst.cpus}",
            f"--mem={memory}M",
            f"--job-name={step_name(inst.id)}",
            f"--output={log_path.replace('%', '%%')}",
            "--open-mode=append",
        ]
        if node.name is not None:
            argv.append(f"--nodelist={node.name}")
        # The step measures itself: srun's own rusage is srun's, not the step's.
        argv += [
            self.opts.python,
            os.path.abspath(__file__),
            "--run-one",
            "--result",
            result_path,
            "--memory-mb",
            str(memory),
            "--kill-grace",
            str(self.opts.kill_grace),
            "--poll-interval",
            str(self.opts.poll_interval),
            "--",
            inst.command,
        ]
        return argv

    def _reap(self) -> None:
        """Collect every child that has ended, without blocking; start what fits, then record them.

        The freed cores get their next instances first: writing a record (an ``fsync``) and reading
        a step's result would otherwise be time the cores sit idle.
        """
        ended: list[tuple[Running, int, Any]] = []
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if info is None or not info.si_pid:
                break
            pid = info.si_pid
            run = self.running.get(pid)
            if run is not None and self.launcher == "direct":
                # Its leftovers would hold cores nobody accounts for: end them, as slurmstepd does a
                # step's. The unreaped leader keeps the group id from being reused meanwhile.
                kill_group(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            if run is None:
                continue
            del self.running[pid]
            self._free(run)
            ended.append((run, status, usage))
        if ended and not self.stopping:
            self._launch()
        for run, status, usage in ended:
            exit_code, sig = decode_status(status)
            run.proc.returncode = -sig if sig is not None else exit_code  # Popen must not wait for it again
            self._finish(run, exit_code, sig, usage)

    # --- limits and signals: walltime, memory, the allocation's end -------------------------------
    def _enforce_limits(self, now: float) -> None:
        """Walltime, memory (direct launcher) and the SIGTERM -> SIGKILL escalation."""
        if self.launcher == "direct" and self.running and now >= self.next_memory_poll:
            self.next_memory_poll = now + self.opts.poll_interval
            rss = group_rss(set(self.running))
            for pid, run in self.running.items():
                run.peak_rss = max(run.peak_rss, rss.get(pid, 0))
                if run.memory_mb and rss.get(pid, 0) > run.memory_mb * MIB and run.killed_for is None:
                    run.killed_for = "out-of-memory"
                    run.kill_message = (
                        f"used {rss[pid] / MIB:.0f} MiB, over its {run.memory_mb} MB: killed by the pilot"
                    )
                    kill_group(pid, signal.SIGKILL)
        for pid, run in self.running.items():
            if run.deadline is not None and now >= run.deadline and run.killed_for is None:
                self._terminate(run, "time-limit", now, f"ran past its walltime of {run.inst.walltime_s:g} s")
            if run.kill_at is not None and (now >= run.kill_at or self.kill_now):
                self._escalate(pid, run, now)

    # srun's reactions to signals (seen with slurm 22.05): SIGTERM makes it kill the step with
    # SIGKILL at once ("forcing job termination"); SIGUSR1 it forwards to the step's tasks.
    # So a step is stopped with SIGUSR1: its --run-one sends SIGTERM to the command, SIGKILL after
    # the grace, and still writes the accounting; SIGTERM to srun is only the next step up.
    def _terminate(self, run: Running, why: str, now: float, message: str) -> None:
        run.killed_for = why
        run.kill_message = message
        kill_group(run.proc.pid, signal.SIGUSR1 if self.launcher == "srun" else signal.SIGTERM)
        run.kill_stage = 1
        run.kill_at = now + self.opts.kill_grace + (5.0 if self.launcher == "srun" else 0.0)

    def _escalate(self, pid: int, run: Running, now: float) -> None:
        """Stop harder: direct -> SIGKILL; srun -> SIGTERM to srun, then SIGKILL to srun."""
        run.kill_stage += 1
        if self.launcher == "direct" or run.kill_stage > 2:
            if self.launcher == "srun":
                print(
                    f"{PREFIX} warning: srun of {run.inst.id} outlived SIGTERM; killed it, its step may "
                    "linger until the job ends",
                    flush=True,
                )
            kill_group(pid, signal.SIGKILL)
            run.kill_at = None
        else:
            kill_group(pid, signal.SIGTERM)  # srun SIGKILLs the step and waits KillWait for it
            run.kill_at = now + 15.0

    def _on_signal(self, signum: int) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        elif self.stopping:
            self.kill_now = True  # a second signal: do not wait for the grace period

    def _begin_stop(self) -> None:
        """Stop for the end of the allocation: record what never started, then stop what runs."""
        self.stopping = True
        name = signal_name(self.stop_signal)
        print(f"{PREFIX} {name}: stopping, {len(self.running)} instances running", flush=True)
        now = time.monotonic()
        for run in self.running.values():
            if run.killed_for is None:
                self._terminate(
                    run, "allocation-ended", now, f"the pilot got {name} (the allocation is ending)"
                )
        for inst in self.instances:
            if inst.state is None and not inst.started:
                self._record(inst, "skipped", "allocation-ended", f"not run: the pilot got {name} first")

    # --- taking over a sibling bundle still pending -----------------------------------------------
    def _claim_own(self) -> str | None:
        """Claim this allocation's bundle (``claim-<job id>`` in --bundle-dir); return who holds it instead.

        ``None``: this pilot runs it. Else the job id written in the claim by the pilot that took
        the bundle over while this job was pending (``""`` if unreadable).
        """
        mine = self.job_id or str(os.getpid())
        bundle_dir = os.path.expanduser(self.opts.bundle_dir or ".")
        holder = claim_file(os.path.join(bundle_dir, f"{CLAIM_PREFIX}{mine}"), mine)
        return None if holder in (None, mine) else holder

    def _take_over(self) -> bool:
        """With cores idle and nothing ready, take over a sibling bundle whose job is still pending.

        Siblings: the directories beside --bundle-dir named as it is but for the map index
        (``<task>.<n>``), each with the ``offer.json`` the operator wrote after submitting it
        (:func:`read_offer`). One is taken over when it is on this cluster, its job still pending,
        its instances fit a node here, and twice its expected run time fits what is left of this
        allocation (:meth:`_expected_s`). The claim file (``claim-<its job id>``, created
        exclusively) decides between this pilot, another one, and the sibling's own pilot should
        its job start meanwhile; the sibling's pending job is then cancelled, and its instances
        join this pilot's, each recorded in the sibling's records file (with this job's id) and
        logged in its logs directory, so that its operator collects them as if its job had run
        them.

        :return: whether a bundle was taken over.
        """
        if not self.opts.take_over or self.stop_signal is not None or self.opts.time_limit is None:
            return False
        now = time.monotonic()
        if self.running and now < self.next_offer_look:
            return False
        if not any(node.free_cores for node in self.nodes):
            return False
        self.next_offer_look = now + OFFER_LOOK_EVERY_S
        left = self.started_mono + self.opts.time_limit - (60.0 + self.opts.kill_grace) - now
        for directory in sibling_dirs(os.path.expanduser(self.opts.bundle_dir or ".")):
            path = os.path.join(directory, OFFER_FILE)
            try:
                version = os.stat(path).st_mtime_ns
            except OSError:
                continue
            seen = self.offers.get(path)
            # Read once per version: a long tail looks every few seconds, at every sibling.
            offer = (
                seen[1] if seen is not None and seen[0] == version else read_offer(path, self.opts.cluster)
            )
            verdict = self._take_offer(directory, offer, left) if offer is not None else "never"
            self.offers[path] = (version, None if verdict == "never" else offer)
            if verdict == "taken":
                return True
        return False

    def _take_offer(self, directory: str, offer: dict[str, Any], left: float) -> str:
        """Take a sibling's offer over if it may be: ``taken``, else ``later`` (may fit then), ``never``."""
        claim = os.path.join(directory, CLAIM_PREFIX + offer["job_id"])
        if os.path.exists(claim):
            return "never"  # its own pilot runs it, or another one took it over
        manifest = offer["manifest"]
        try:
            done = done_ids(os.path.expanduser(offer["skip_done"])) if offer["skip_done"] else set()
            done -= rerun_ids(manifest)
            bundle, instances = load_manifest(manifest, done)
        except (ManifestError, OSError) as exc:
            print(f"{PREFIX} not taking over {directory}: {exc}", flush=True)
            return "never"
        todo = [i for i in instances if i.id not in done]
        if not todo or any(i.id in self.by_id for i in instances):
            return "never"
        expected = self._expected_s(instances, done)
        if expected is None or 2 * expected > left:
            return "later"  # what this pilot measures next may make it fit
        if not job_pending(offer["job_id"]):
            return "never"  # it runs (or ended): a job never goes back to pending here
        me = self.job_id or str(os.getpid())
        if claim_file(claim, me) is not None:
            return "never"  # its own pilot, or another one, was first
        cancel_pending(offer["job_id"])
        owner = Owner(bundle, os.path.expanduser(offer["records"]), os.path.expanduser(offer["logs_dir"]))
        self._open_records(owner)
        self.owners.append(owner)
        offset = len(self.instances)
        for inst in instances:
            inst.index += offset
            inst.children = [c + offset for c in inst.children]
            inst.owner = len(self.owners) - 1
            self.by_id[inst.id] = inst
        self.instances.extend(instances)
        self.took_over.append(bundle)
        print(
            f"{PREFIX} took over bundle {bundle} (job {offer['job_id']}, pending): {len(todo)} instances, "
            f"expected {expected:.0f} s of the {left:.0f} s left",
            flush=True,
        )
        self._seed(instances, done)
        return "taken"

    def _expected_s(self, instances: list[Instance], done: set[str]) -> float | None:
        """How long a bundle's instances would take here: its work over the cores, or its longest chain.

        Each instance is expected to take what this pilot measured of its process (its longest
        successful run), else its ``estimate_s``, else its ``walltime_s``; ``None`` when one has
        none of them, or cannot fit any node here.
        """
        biggest = max(self.nodes, key=lambda n: (n.cores, n.memory_mb))
        cores = sum(node.cores for node in self.nodes)
        took: dict[int, float] = {}
        for inst in instances:
            if inst.id in done:
                took[inst.index] = 0.0
                continue
            if inst.cpus > biggest.cores or self._memory_of(inst, biggest) > biggest.memory_mb:
                return None
            value = self.measured.get(inst.process, inst.estimate_s or inst.walltime_s)
            if value is None:
                return None
            took[inst.index] = value
        work = sum(took[i.index] * i.cpus for i in instances) / cores
        chain: dict[int, float] = {}
        for inst in sorted(instances, key=lambda i: i.height):  # a child's height is below its parent's
            chain[inst.index] = took[inst.index] + max((chain[c] for c in inst.children), default=0.0)
        return max(work, max(chain.values(), default=0.0))

    # --- records and summary ----------------------------------------------------------------------
    @staticmethod
    def _open_records(owner: Owner) -> None:
        # The records and logs are the job owner's alone (0700 directories, a 0600 records file).
        for directory in (os.path.dirname(os.path.abspath(owner.records)), owner.logs_dir):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        owner.fd = os.open(owner.records, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(owner.fd).st_size
        if size:
            with open(owner.records, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a line cut short by a crash: never glue a record to it
                    os.write(owner.fd, b"\n")

    def _record(
        self, inst: Instance, state: str, reason: str | None, message: str | None, **values: Any
    ) -> None:
        """Write an instance's record, then skip or queue its dependents as it allows."""
        self._write(inst, state, reason, message, **values)
        self._release_dependents(inst)

    def _write(
        self, inst: Instance, state: str, reason: str | None, message: str | None, **values: Any
    ) -> None:
        inst.state = state
        rec: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
        owner = self.owners[inst.owner]
        rec.update(
            bundle=owner.bundle,
            id=inst.id,
            stream=inst.stream,
            process=inst.process,
            state=state,
            reason=reason,
            message=message,
            end=now_iso(),
            cpus=inst.cpus,
            memory_mb=inst.memory_mb,
            walltime_s=inst.walltime_s,
            launcher=self.launcher,
            job_id=self.job_id,
        )
        rec.update(values)
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        os.write(owner.fd, line.encode("utf-8"))  # O_APPEND: one write, one whole line
        os.fsync(owner.fd)
        self.counts[state] = self.counts.get(state, 0) + 1
        tail = f" ({reason}: {message})" if reason else ""
        print(f"{PREFIX} {state} {inst.id}{tail}", flush=True)

    @staticmethod
    def _free(run: Running) -> None:
        """Give an ended instance's cores and memory back, and note when it ended."""
        run.end_mono, run.end = time.monotonic(), now_iso()
        node = run.node
        node.free_cores += run.inst.cpus
        node.free_memory_mb += run.memory_mb
        if node.free_cpu_ids is not None:
            node.free_cpu_ids = sorted(node.free_cpu_ids + run.cpu_ids)

    def _finish(self, run: Running, exit_code: int | None, sig: int | None, usage: Any) -> None:
        inst = run.inst
        elapsed = (run.end_mono or time.monotonic()) - run.start_mono
        values: dict[str, Any] = {
            "start": run.start,
            "end": run.end or now_iso(),
            "elapsed_s": round(elapsed, 3),
            "node": run.node.name or self.local_node,
            "log_path": run.log_path,
        }
        if self.launcher == "direct":
            values["total_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
            values["max_rss_bytes"] = peak_rss(usage.ru_maxrss, run.spawn_rss, run.peak_rss)
            kernel_oom = _oom_kill_happened(run.oom_kills_before, memcg_oom_kills())
            measured = True
        else:
            # srun's own exit status and rusage are srun's; the step's come from its --run-one.
            values["step_name"] = step_name(inst.id)
            result = _read_json(run.result_path) or {}
            measured = bool(result)
            if measured:
                exit_code, sig = result.get("exit_code"), result.get("signal")
                for key in ("total_cpu_s", "max_rss_bytes", "node", "step_id"):
                    values[key] = result.get(key, values[key] if key in values else None)
                if result.get("killed_for") == "out-of-memory" and run.killed_for is None:
                    run.killed_for, run.kill_message = "out-of-memory", result.get("message")
                elif result.get("killed_for") == "signal" and run.killed_for is None:
                    # Not from the pilot: SLURM signalled the step (time limit, preemption, scancel).
                    run.killed_for = "allocation-ended"
                    run.kill_message = f"the step {result.get('message')} from SLURM"
            kernel_oom = bool(result.get("oom_kill_event"))
        if sig is not None or run.killed_for is not None:
            self._remove_container(run)
        if run.usage_path is not None:
            container = read_container_usage(run.usage_path)
            add_container_usage(values, container)
            # The kernel killed in the container's memory cgroup, which the pilot's count misses.
            kernel_oom = kernel_oom or bool(container and container["oom_kills"])
            _remove(run.usage_path)
        state, reason, message = self._outcome(run, exit_code, sig, kernel_oom, measured)
        if state == "success":  # what a bundle taken over is expected to take (_take_over)
            self.measured[inst.process] = max(self.measured.get(inst.process, 0.0), elapsed)
        self.core_seconds += inst.cpus * elapsed
        self.cpu_seconds += values.get("total_cpu_s") or 0.0
        why = f" ({reason}: {message})" if reason else ""
        _append(run.log_path, f"{PREFIX} {inst.id} {state}{why} at {now_iso()}\n")
        tail = read_tail(run.log_path) if state != "success" else None
        self._record(inst, state, reason, message, exit_code=exit_code, signal=sig, log_tail=tail, **values)

    def _outcome(
        self, run: Running, exit_code: int | None, sig: int | None, kernel_oom: bool, has_result: bool
    ) -> tuple[str, str | None, str | None]:
        """Decide state, reason and message from how the instance ended."""
        if run.killed_for in ("time-limit", "allocation-ended"):
            return "terminated", "time-limit", run.kill_message
        if run.killed_for == "out-of-memory":
            return "terminated", "out-of-memory", run.kill_message
        if exit_code == 0 and sig is None:
            return "success", None, None
        # bash reports a child killed by signal N as exit code 128 + N.
        died_of = sig if sig is not None else (exit_code - 128 if exit_code and exit_code > 128 else None)
        if self.stop_signal is not None and died_of in (signal.SIGTERM, signal.SIGKILL):
            # SLURM signals every process of the job at its end, not only the pilot.
            return "terminated", "time-limit", f"ended by {signal_name(died_of)} with the allocation"
        killed = died_of == signal.SIGKILL
        if (killed or not has_result) and (kernel_oom or _OOM_TEXT.search(read_tail(run.log_path) or "")):
            return "terminated", "out-of-memory", "killed by the kernel's OOM killer (memory cgroup limit)"
        if not has_result:
            return (
                "failed",
                "launch-error",
                f"srun exited {exit_code} before the step reported (see log_tail)",
            )
        if sig is not None:
            return "failed", "non-zero-exit", f"killed by {signal_name(sig)}"
        return "failed", "non-zero-exit", f"exited with code {exit_code}"

    def _record_leftovers(self) -> None:
        """Anything unrecorded here is a pilot bug or an exception: say so rather than lose it."""
        if self.owners[0].fd < 0:
            return
        for run in list(self.running.values()):
            kill_group(run.proc.pid, signal.SIGKILL)
        for inst in self.instances:
            if inst.state is None:
                state, reason = (
                    ("skipped", "allocation-ended") if self.stopping else ("failed", "launch-error")
                )
                try:
                    self._write(inst, state, reason, "the pilot itself failed before this instance finished")
                except OSError:
                    return  # the records file is what failed: the traceback says why

    def _summarise(self, wall: float) -> None:
        cores = sum(n.cores for n in self.nodes)
        allocated = cores * wall
        summary = {
            "bundle": self.bundle,
            "launcher": self.launcher,
            "job_id": self.job_id,
            "nodes": len(self.nodes),
            "cores": cores,
            "wall_s": round(wall, 3),
            "core_s_allocated": round(allocated, 3),
            "core_s_held": round(self.core_seconds, 3),
            "cpu_s": round(self.cpu_seconds, 3),
            "instances": len(self.instances),
            "already_done": sum(i.state == "done" for i in self.instances),
            "states": self.counts,
            "took_over": self.took_over,
            "stopped_by": signal_name(self.stop_signal) if self.stop_signal else None,
        }
        held = 100.0 * self.core_seconds / allocated if allocated else 0.0
        used = 100.0 * self.cpu_seconds / allocated if allocated else 0.0
        print(
            f"{PREFIX} utilisation {self.core_seconds:.1f} / {allocated:.1f} core-s held by instances "
            f"({held:.1f}%), {self.cpu_seconds:.1f} core-s of CPU used ({used:.1f}%) on {cores} cores "
            f"in {wall:.1f} s",
            flush=True,
        )
        print(f"{PREFIX} summary {json.dumps(summary, separators=(',', ':'))}", flush=True)


# --- 6. --run-one: one instance inside an srun step -----------------------------------------------
def run_one(argv: list[str]) -> int:
    """Run one command as ``bash -c`` in its own session, measure it, write the result, exit as it did.

    This is what an ``srun`` step of the pilot runs: on SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 it
    sends SIGTERM to the command's process group and SIGKILL ``--kill-grace`` s later; it kills the
    command when its RSS exceeds ``--memory-mb`` (where SLURM does not enforce memory); it writes
    ``{exit_code, signal, total_cpu_s, max_rss_bytes, node, step_id, ...}`` to ``--result``.
    """
    p = argparse.ArgumentParser(prog="launcher.py --run-one")
    p.add_argument("--result", required=True)
    p.add_argument("--memory-mb", type=int, default=0)
    p.add_argument("--kill-grace", type=float, default=10.0)
    p.add_argument("--poll-interval", type=float, default=0.5)
    p.add_argument("command")
    args = p.parse_args(argv)
    got: list[int] = []
    waker = Waker(got.append, (*_STOP_SIGNALS, signal.SIGUSR2))
    oom_before = memcg_oom_kills()
    start, start_mono, spawn_rss = now_iso(), time.monotonic(), own_peak_rss()
    proc = subprocess.Popen(["bash", "-c", args.command], start_new_session=True)
    pid, peak, kill_at = proc.pid, 0, None
    result: dict[str, Any] = {"killed_for": None, "message": None}
    try:
        while True:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None and info.si_pid:
                break
            peak = max(peak, group_rss({pid}).get(pid, 0))
            if args.memory_mb and peak > args.memory_mb * MIB and result["killed_for"] is None:
                result.update(
                    killed_for="out-of-memory",
                    message=f"used {peak / MIB:.0f} MiB, over its {args.memory_mb} MB: killed by the pilot",
                )
                kill_group(pid, signal.SIGKILL)
            if got and kill_at is None:
                result.update(
                    killed_for=result["killed_for"] or "signal", message=f"got {signal_name(got[0])}"
                )
                kill_group(pid, signal.SIGTERM)  # whatever srun forwarded, the command gets SIGTERM
                kill_at = time.monotonic() + args.kill_grace
            if kill_at is not None and time.monotonic() >= kill_at:
                kill_group(pid, signal.SIGKILL)
                kill_at = float("inf")
            waker.wait(args.poll_interval if kill_at is None else min(args.poll_interval, 0.2))
        kill_group(pid, signal.SIGKILL)  # leftovers of the command, as slurmstepd would
        _, status, usage = os.wait4(pid, 0)
    finally:
        waker.close()
    exit_code, sig = decode_status(status)
    proc.returncode = -sig if sig is not None else exit_code
    job, step = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
    result.update(
        exit_code=exit_code,
        signal=sig,
        total_cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        max_rss_bytes=peak_rss(usage.ru_maxrss, spawn_rss, peak),
        node=node_name(),
        step_id=f"{job}.{step}" if job and step else None,
        start=start,
        end=now_iso(),
        elapsed_s=round(time.monotonic() - start_mono, 3),
        oom_kill_event=_oom_kill_happened(oom_before, memcg_oom_kills()),
    )
    tmp = args.result + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, args.result)
    return 128 + sig if sig is not None else int(exit_code or 0)


# --- 7. command line and main ---------------------------------------------------------------------
def parse_args(argv: list[str]) -> Options:
    """Read the pilot's command line."""
    p = argparse.ArgumentParser(prog="launcher.py", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--manifest", required=True, help="the bundle's manifest (JSON)")
    p.add_argument("--records", required=True, help="where to append one JSON line per instance")
    p.add_argument("--logs-dir", help="per-instance logs (default: logs/ beside the records)")
    p.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        help="srun steps, or direct children (default: srun inside a SLURM job, else direct)",
    )
    p.add_argument("--cores", type=int, help="cores per node (default: from SLURM, else this machine)")
    p.add_argument(
        "--memory-mb", type=int, help="memory per node, MB (default: from SLURM, else this machine)"
    )
    p.add_argument("--skip-done", metavar="RECORDS", help="do not rerun instances that succeeded there")
    p.add_argument("--kill-grace", type=float, default=10.0, help="seconds from SIGTERM to SIGKILL")
    p.add_argument("--poll-interval", type=float, default=0.5, help="seconds between memory samples")
    p.add_argument(
        "--reserve-after",
        type=float,
        default=60.0,
        help="seconds the first instance in line may be passed over before cores drain for it",
    )
    p.add_argument("--no-bind", dest="bind", action="store_false", help="do not pin direct children to CPUs")
    p.add_argument("--python", default=sys.executable or "python3", help="python for --run-one in srun steps")
    p.add_argument(
        "--bundle-dir",
        help="the bundle's directory: the pilot claims the bundle there (claim-<job id>) before running it, "
        "and runs nothing when another pilot took it over",
    )
    p.add_argument(
        "--take-over",
        action="store_true",
        help="with cores idle and nothing ready, take over a sibling bundle (<task>.<n> beside --bundle-dir) "
        "whose job is still pending; needs --bundle-dir, --cluster and --time-limit",
    )
    p.add_argument("--cluster", default="", help="this cluster's name: only its siblings' offers are taken")
    p.add_argument("--time-limit", type=float, help="the allocation's time limit, s (for --take-over)")
    a = p.parse_args(argv)
    if a.take_over and not (a.bundle_dir and a.cluster and a.time_limit):
        p.error("--take-over needs --bundle-dir, --cluster and --time-limit")
    launcher = a.launcher or ("srun" if os.environ.get("SLURM_JOB_ID") else "direct")
    if launcher == "srun" and not os.environ.get("SLURM_JOB_ID"):
        p.error("--launcher srun needs to run inside a SLURM allocation (SLURM_JOB_ID is not set)")
    for name in ("cores", "memory_mb"):
        value = getattr(a, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    logs_dir = a.logs_dir or os.path.join(os.path.dirname(os.path.abspath(a.records)), "logs")
    return Options(
        manifest=a.manifest,
        records=a.records,
        logs_dir=logs_dir,
        launcher=launcher,
        cores=a.cores,
        memory_mb=a.memory_mb,
        skip_done=a.skip_done,
        kill_grace=a.kill_grace,
        poll_interval=a.poll_interval,
        reserve_after=a.reserve_after,
        bind=a.bind,
        python=a.python,
        bundle_dir=a.bundle_dir,
        take_over=a.take_over,
        cluster=a.cluster,
        time_limit=a.time_limit,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the pilot (or, with ``--run-one``, one instance inside an srun step)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--run-one"]:
        return run_one(argv[1:])
    opts = parse_args(argv)
    try:
        pilot = Pilot(opts)
    except (ManifestError, OSError) as exc:
        print(f"{PREFIX} error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    try:
        return pilot.run()
    except OSError as exc:  # the records or logs cannot be written: nothing can be recorded
        print(f"{PREFIX} error: {exc}", file=sys.stderr, flush=True)
        return EXIT_PILOT_FAILED


if __name__ == "__main__":
    sys.exit(main())
