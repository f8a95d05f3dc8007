"""Render overlays: how a spec is rendered for a site (no Airflow).

A render overlay is a small YAML file beside a spec, e.g. ``dags/workflows/dc1-local.yaml`` for
the two small clusters of the local test site::

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
    resources:                   # per process (its name, or task/name): what its batch jobs ask for
      processEimage: {memory_mb: 2300, walltime: "0:04:00"}

``extends`` names the spec, or another overlay: the options of the overlay it extends apply
first, this file's replace those it sets (``resources`` and ``variables`` are merged, by process
and by name). ``airflow-desc advice --write`` writes such an overlay, with each process's
suggested memory and walltime and, under ``evidence``, what they were learnt from (instances,
out-of-memory and time-limit kills, the quantiles used): informational, never rendered.
``resources`` applies before the caps (``resources_cap``), so a suggestion never exceeds the site.

:func:`load_overlay` reads one into :class:`RenderOptions`; :func:`adjust_graph` applies the
options' per-process resources, retry and resource caps to a workflow graph;
:func:`check_resources_apply` refuses per-process resources for a process the spec does not have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_desc._yaml_lines import LocatedYaml, YamlLoadError
from airflow_desc.cluster_schema import parse_walltime
from airflow_desc.clusters import ClusterProfiles
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow.graph import ProcessNode, ResolvedResources, TaskNode, WorkflowGraph
from airflow_desc.workflow.spec_templates import Scalar

__all__ = [
    "LAUNCHERS",
    "ProcessResources",
    "RenderOptions",
    "ResourceCap",
    "adjust_graph",
    "check_resources_apply",
    "is_overlay",
    "load_overlay",
]

#: The pilot launchers a bundle may use.
LAUNCHERS = ("srun", "direct")
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
    "resources",
)
_RESOURCE_KEYS = ("memory_mb", "walltime", "evidence")


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
class ProcessResources:
    """What one process's batch jobs ask for in a rendering (``None``: the spec's).

    :param memory_mb: memory in MB.
    :param walltime_s: walltime in seconds.
    :param where: ``file:line`` of the entry, for errors.
    """

    memory_mb: int | None = None
    walltime_s: int | None = None
    where: str = ""


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
    :param digest: the overlay file's SHA-256 (hex, its ``sha256sum``); "" when not read from a file.
    :param resources: per-process requests, by process name or ``task/name``.
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
    digest: str = ""
    resources: Mapping[str, ProcessResources] = field(default_factory=dict)


def load_overlay(path: str | os.PathLike[str]) -> tuple[Path, RenderOptions]:
    """Read a render overlay: the spec it extends (through other overlays) and the options it sets.

    :param path: the overlay file (see the module docstring).
    :return: the absolute path of the spec, and the options.
    :raises WorkflowSpecError: listing every problem as ``file:line: key: what; what to do``.
    """
    return _load_overlay(Path(path), ())


def _load_overlay(path: Path, seen: tuple[Path, ...]) -> tuple[Path, RenderOptions]:
    source = os.fspath(path)
    try:
        located = LocatedYaml.load_file(path)
    except YamlLoadError as exc:
        raise WorkflowSpecError("\n".join(p.format(source) for p in exc.problems)) from None
    except OSError as exc:
        raise WorkflowSpecError(f"{source}: cannot read the render overlay: {exc}") from None
    data = located.data
    problems: list[str] = []

    def bad(key: str, message: str, *where: str | int) -> None:
        problems.append(located.problem((key, *where), message).format(source))

    if not isinstance(data, dict) or "extends" not in data:
        raise WorkflowSpecError(f"{source}: a render overlay is a mapping with 'extends: <spec file>'")
    for key in data:
        if key not in _OVERLAY_KEYS:
            bad(str(key), f"unknown key; use one of {', '.join(_OVERLAY_KEYS)}")
    base = path.resolve().parent / str(data["extends"])
    if not base.is_file():
        bad("extends", f"{base} does not exist; name the spec file, relative to this overlay")
    elif base in (*seen, path.resolve()):
        bad("extends", f"{base} extends this overlay again: an overlay chain must end at a spec")
    values = _overlay_options(data, bad)
    values.update(_resources(data.get("resources"), located, source, bad))
    if problems:
        raise WorkflowSpecError("\n".join(problems))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not is_overlay(base):
        return base, RenderOptions(**values, digest=digest)
    spec, inherited = _load_overlay(base, (*seen, path.resolve()))
    # The chain's digests, outermost last: `<spec>+<parent overlay>+<this overlay>` on the run.
    return spec, dataclasses.replace(_over(inherited, values), digest=f"{inherited.digest}+{digest}")


def _over(inherited: RenderOptions, values: dict[str, Any]) -> RenderOptions:
    """Return the options an overlay extends with its own set over them (mappings merged by key)."""
    for merged in ("variables", "resources"):
        if merged in values:
            values[merged] = {**getattr(inherited, merged), **values[merged]}
    return dataclasses.replace(inherited, **values)


def _overlay_options(data: Mapping[str, Any], bad: Callable[[str, str], None]) -> dict[str, Any]:
    """Return the :class:`RenderOptions` fields the overlay sets (but ``resources``)."""
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
    return values


def _resources(
    section: Any, located: LocatedYaml, source: str, bad: Callable[..., None]
) -> dict[str, dict[str, ProcessResources]]:
    """Read ``resources:``: ``{process: {memory_mb, walltime, evidence}}``."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        bad("resources", "expected a mapping of process names to {memory_mb, walltime}")
        return {}
    out: dict[str, ProcessResources] = {}
    for name, entry in section.items():
        if not isinstance(entry, dict):
            bad("resources", "expected a mapping {memory_mb: MB, walltime: H:MM:SS}", name)
            continue
        for key in entry:
            if key not in _RESOURCE_KEYS:
                bad("resources", f"unknown key; use {', '.join(_RESOURCE_KEYS)}", name, key)
        memory = entry.get("memory_mb")
        if memory is not None and (not isinstance(memory, int) or isinstance(memory, bool) or memory < 1):
            bad("resources", "expected a positive whole number of MB", name, "memory_mb")
            memory = None
        walltime_s = None
        if entry.get("walltime") is not None:
            try:
                walltime_s = parse_walltime(entry["walltime"])
            except ValueError as exc:
                bad("resources", f"{exc}; write H:MM:SS", name, "walltime")
        if entry.get("evidence") is not None and not isinstance(entry["evidence"], dict):
            bad("resources", "expected a mapping (what the advice was learnt from)", name, "evidence")
        where = f"{source}:{located.line_of(('resources', name))}"
        out[str(name)] = ProcessResources(memory_mb=memory, walltime_s=walltime_s, where=where)
    return {"resources": out}


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


def is_overlay(path: Path) -> bool:
    """Whether the YAML file at ``path`` is a render overlay (it has ``extends:``), not a spec."""
    try:
        with open(path, encoding="utf-8") as f:
            return any(line.startswith("extends:") for line in f)
    except OSError:
        return False


def adjust_graph(
    graph: WorkflowGraph, options: RenderOptions, clusters: ClusterProfiles | None
) -> WorkflowGraph:
    """Apply the options' per-process resources, retry and resource caps to every process of a graph."""
    if (
        options.max_retries is None
        and not options.fit_resources
        and options.resources_cap is None
        and not options.resources
    ):
        return graph
    if options.fit_resources and clusters is None:
        raise WorkflowSpecError(
            f"{graph.source}: resources_cap: fit needs the cluster profiles; set DESC_CLUSTERS_FILE"
        )

    def process(node: ProcessNode) -> ProcessNode:
        retries = node.retries if options.max_retries is None else min(node.retries, options.max_retries)
        resources = node.resources
        if resources is not None:
            asked = options.resources.get(f"{node.task}/{node.name}") or options.resources.get(node.name)
            resources = _capped(_requested(resources, asked), options, clusters)
        return dataclasses.replace(node, retries=retries, resources=resources)

    def task(node: TaskNode) -> TaskNode:
        return dataclasses.replace(
            node,
            processes=tuple(process(p) for p in node.processes),
            children=tuple(task(c) for c in node.children),
        )

    return dataclasses.replace(graph, root=task(graph.root))


def _requested(res: ResolvedResources, asked: ProcessResources | None) -> ResolvedResources:
    """Return the resources with an overlay's per-process memory and walltime in place of the spec's."""
    if asked is None:
        return res
    res = dataclasses.replace(res, memory_mb=asked.memory_mb or res.memory_mb)
    if asked.walltime_s:
        res = dataclasses.replace(res, walltime_s=asked.walltime_s, walltime=_clock(asked.walltime_s))
    return res


def check_resources_apply(options: RenderOptions, processes: Mapping[str, str]) -> None:
    """Refuse per-process resources that name no batch process of the spec.

    :param options: the render options.
    :param processes: each process of the spec, as ``task/name``, with its type (``batch``, ``script``).
    :raises WorkflowSpecError: naming the overlay's line and the processes it may name.
    """
    names = {path.rpartition("/")[2] for path in processes}
    problems = []
    for name, asked in options.resources.items():
        kind = processes.get(name) or next(
            (t for p, t in processes.items() if p.rpartition("/")[2] == name), None
        )
        if kind is None:
            known = ", ".join(sorted(names)[:20]) + (" ..." if len(names) > 20 else "")
            problems.append(
                f"{asked.where}: resources: {name}: the spec has no such process; name one of {known}"
            )
        elif kind != "batch":
            problems.append(
                f"{asked.where}: resources: {name}: a {kind} process runs on the Airflow worker, not as a "
                "SLURM job: it has no memory or walltime to set; remove it"
            )
    if problems:
        raise WorkflowSpecError("\n".join(problems))


def _capped(
    res: ResolvedResources, options: RenderOptions, clusters: ClusterProfiles | None
) -> ResolvedResources:
    cpus, memory, walltime = res.cpus, res.memory_mb, res.walltime_s
    if options.fit_resources and clusters is not None:
        profile = clusters.get(res.cluster)
        cpus, memory, walltime = profile.fit(cpus=cpus, mem_mb=memory, time_limit_s=walltime)
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
