"""Named cluster profiles: where and how airflow-desc submits SLURM jobs.

One YAML file describes every cluster a deployment uses. Workflows and operators
name a cluster (``cluster: s3df``) and get its :class:`ClusterProfile`::

    default: perlmutter            # optional; else the only cluster
    clusters:
      perlmutter:
        ssh_conn_id: perlmutter_ssh    # required: Airflow connection of the login node
        jump_conn_id: null             # a bastion to go through (S3DF: s3dflogin)
        slurm_cluster: perlmutter      # SLURM ClusterName; default: the profile name
        partition: regular
        qos: null
        account: desc
        constraint: null               # e.g. "cpu" at NERSC
        cores_per_node: 2              # required
        memory_per_node_mb: 4096       # required
        max_walltime: "00:30:00"       # required: D-HH:MM:SS, HH:MM:SS, MM:SS or minutes
        max_queued_jobs: 100           # size of the Airflow pool that bounds submissions
        pool: null                     # Airflow pool name; default "slurm_<name>"
        work_dir: airflow-desc         # job scripts and logs; relative to $HOME or absolute
        container_runtime: none        # none | shifter | podman-hpc | apptainer
        container_image: null
        setup_lines: []                # shell lines at the top of every job script
        poll_interval: 30              # seconds between batched sacct polls
        vanish_grace: 300              # seconds a job may be missing from sacct and squeue
        high_memory_partition: null    # where an out-of-memory job may be sent
        env: {}                        # environment variables of every job

The file is found by :func:`load_cluster_profiles`: an explicit path, else the
``DESC_CLUSTERS_FILE`` environment variable, else ``[desc] clusters_file`` in the
Airflow configuration. Every problem of a file is reported at once, one per line, as
``<file>:<line>: clusters.<name>.<field>: <what is wrong>; <what to do>``.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from airflow_desc._yaml_lines import (
    KeyPath,
    LocatedYaml,
    YamlLoadError,
    YamlProblem,
    describe_value,
    did_you_mean,
    format_path,
)
from airflow_desc.exceptions import ClusterProfileError, ResourceLimitError
from airflow_desc.slurm.units import WALLTIME_FORMS, walltime_seconds

__all__ = [
    "CLUSTERS_FILE_ENV",
    "CONTAINER_RUNTIMES",
    "ClusterProfile",
    "ClusterProfiles",
    "ContainerRuntime",
    "load_cluster_profiles",
    "parse_cluster_profiles",
    "parse_walltime",
]

#: How a job runs its payload: directly, or in a container through one of these.
ContainerRuntime = Literal["none", "shifter", "podman-hpc", "apptainer"]
CONTAINER_RUNTIMES: tuple[str, ...] = get_args(ContainerRuntime)

#: The environment variable naming the cluster profile file.
CLUSTERS_FILE_ENV = "DESC_CLUSTERS_FILE"

# Names end up in Airflow pool names, job names and file names.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_walltime(value: str | int) -> int:
    """Read a walltime as SLURM's ``--time`` does, into whole seconds.

    :func:`airflow_desc.slurm.units.walltime_seconds`, with YAML's words for a value that is
    not text or whole minutes.

    :param value: ``"D-HH:MM:SS"``, ``"D-HH"``, ``"HH:MM:SS"``, ``"MM:SS"``, or minutes
        (an int, or a string of digits).
    :return: seconds, always positive.
    :raises ValueError: for anything else, ``UNLIMITED``, fractions of a second and zero.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a walltime, got {describe_value(value)}")
    return walltime_seconds(value)


def _clock(seconds: int) -> str:
    """``3:00:00``, ``0:30:00``, ``2-00:00:00``: a duration for messages."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}"


# --- checking one field --------------------------------------------------------------------------


class _Invalid(Exception):
    """One or more problems with one field: (path below the field, "<what>; <what to do>")."""

    def __init__(self, *problems: tuple[KeyPath, str]) -> None:
        super().__init__(problems)
        self.problems = problems


def _text(value: Any) -> str:
    if not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise _Invalid(((), f"expected text, got {describe_value(value)}; quote it: '{value}'"))
        raise _Invalid(((), f"expected text, got {describe_value(value)}; write a single value"))
    if not value.strip():
        raise _Invalid(((), "is empty; write a value or remove the key"))
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _whole(example: int, *, minimum: int = 1) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(
                ((), f"expected a whole number, got {describe_value(value)}; write e.g. {example}")
            )
        if value < minimum:
            raise _Invalid(((), f"must be at least {minimum}, got {value}; write e.g. {example}"))
        return value

    return check


def _seconds(example: int, *, allow_zero: bool) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _Invalid(
                ((), f"expected a number of seconds, got {describe_value(value)}; write e.g. {example}")
            )
        if value < 0 or (value == 0 and not allow_zero):
            bound = "0 or more" if allow_zero else "more than 0"
            raise _Invalid(((), f"must be {bound} seconds, got {value}; write e.g. {example}"))
        return float(value)

    return check


def _walltime_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Invalid(((), f"expected a walltime, got {describe_value(value)}; write {WALLTIME_FORMS}"))
    try:
        seconds = parse_walltime(value)
    except ValueError as exc:
        raise _Invalid(((), f"{exc}; write {WALLTIME_FORMS}")) from None
    # Minutes are written out so that the field always reads as a clock.
    return _clock(seconds) if isinstance(value, int) or value.strip().isdigit() else value.strip()


def _container_runtime(value: Any) -> str:
    if value is None:
        return "none"
    if not isinstance(value, str) or value not in CONTAINER_RUNTIMES:
        choices = ", ".join(CONTAINER_RUNTIMES)
        guess = did_you_mean(value, CONTAINER_RUNTIMES) if isinstance(value, str) else None
        hint = f"did you mean '{guess}'? (one of {choices})" if guess else f"use one of {choices}"
        raise _Invalid(((), f"unknown container runtime {describe_value(value)}; {hint}"))
    return value


def _setup_lines(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise _Invalid(
            (
                (),
                f"expected a list of shell lines, got {describe_value(value)}; "
                "write each line as a '- ' item",
            )
        )
    problems = [
        ((index,), f"expected text, got {describe_value(line)}; quote the shell line")
        for index, line in enumerate(value)
        if not isinstance(line, str)
    ]
    if problems:
        raise _Invalid(*problems)
    return tuple(value)


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Invalid(
            (
                (),
                f"expected a mapping of NAME: value, got {describe_value(value)}; "
                "write e.g. OMP_NUM_THREADS: 1",
            )
        )
    problems: list[tuple[KeyPath, str]] = []
    env: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
            problems.append(
                (
                    (name,),
                    "not an environment variable name; use letters, digits and '_', not a leading digit",
                )
            )
        elif isinstance(item, str):
            env[name] = item
        elif isinstance(item, int | float) and not isinstance(item, bool):
            env[name] = str(item)
        else:
            problems.append(((name,), f"expected text or a number, got {describe_value(item)}; quote it"))
    if problems:
        raise _Invalid(*problems)
    return env


# What to do when a required field is missing.
_REQUIRED = {
    "ssh_conn_id": "add the Airflow connection id of the cluster's login node",
    "cores_per_node": "add the number of cores of one compute node",
    "memory_per_node_mb": "add the memory of one compute node in MB (SLURM's RealMemory)",
    "max_walltime": "add the longest walltime the partition allows, e.g. '2-00:00:00'",
}

_CHECKS: dict[str, Callable[[Any], Any]] = {
    "ssh_conn_id": _text,
    "jump_conn_id": _optional_text,
    "slurm_cluster": lambda value: None if value in (None, "") else _text(value),
    "partition": _optional_text,
    "qos": _optional_text,
    "account": _optional_text,
    "constraint": _optional_text,
    "cores_per_node": _whole(128),
    "memory_per_node_mb": _whole(512000),
    "max_walltime": _walltime_text,
    "max_queued_jobs": _whole(100),
    "pool": _optional_text,
    "work_dir": _text,
    "container_runtime": _container_runtime,
    "container_image": _optional_text,
    "setup_lines": _setup_lines,
    "poll_interval": _seconds(30, allow_zero=False),
    "vanish_grace": _seconds(300, allow_zero=True),
    "high_memory_partition": _optional_text,
    "env": _env,
}


def _check_fields(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[KeyPath, str]]]:
    """Check and normalize a cluster's settings; problems carry paths that start at the field."""
    clean: dict[str, Any] = {}
    problems: list[tuple[KeyPath, str]] = []
    for key, value in values.items():
        try:
            clean[key] = _CHECKS[key](value)
        except _Invalid as exc:
            problems.extend(((key, *sub), message) for sub, message in exc.problems)
    if clean.get("container_image") is not None and clean.get("container_runtime", "none") == "none":
        problems.append(
            (
                ("container_image",),
                "an image is set but container_runtime is 'none'; "
                "set container_runtime (shifter, podman-hpc or apptainer) or remove container_image",
            )
        )
    return clean, problems


# --- profiles ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterProfile:
    """One cluster: how to reach it, what to ask SLURM for, and its limits.

    Values are checked when the profile is made; a bad one raises
    :class:`~airflow_desc.exceptions.ClusterProfileError`.

    :param name: the profile name, as workflows refer to it.
    :param ssh_conn_id: Airflow connection of the cluster's login node.
    :param cores_per_node: cores of one compute node.
    :param memory_per_node_mb: memory of one compute node, in MB.
    :param max_walltime: the longest walltime allowed: ``D-HH:MM:SS``, ``HH:MM:SS``,
        ``MM:SS`` or minutes (minutes are rewritten as ``H:MM:SS``).
    :param jump_conn_id: Airflow connection of a bastion to go through, if any.
    :param slurm_cluster: SLURM's ClusterName (``sacct -M``); empty or ``None``: ``name``.
    :param partition: ``sbatch --partition``, if any.
    :param qos: ``sbatch --qos``, if any.
    :param account: ``sbatch --account``, if any.
    :param constraint: ``sbatch --constraint``, if any.
    :param max_queued_jobs: how many jobs may be queued or running at once (the pool size).
    :param pool: the Airflow pool name; default ``slurm_<name>``.
    :param work_dir: where job scripts and logs go; relative to the login's ``$HOME`` or absolute.
    :param container_runtime: ``none``, ``shifter``, ``podman-hpc`` or ``apptainer``.
    :param container_image: the default image, if any.
    :param setup_lines: shell lines run at the top of every job.
    :param poll_interval: seconds between batched ``sacct`` polls.
    :param vanish_grace: seconds a job may be absent from both ``sacct`` and ``squeue``
        before that is an error.
    :param high_memory_partition: where a job that needs more than a node's memory may go.
    :param env: environment variables for every job.
    """

    name: str
    ssh_conn_id: str
    cores_per_node: int
    memory_per_node_mb: int
    max_walltime: str
    jump_conn_id: str | None = None
    slurm_cluster: str = ""
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    constraint: str | None = None
    max_queued_jobs: int = 100
    pool: str | None = None
    work_dir: str = "airflow-desc"
    container_runtime: ContainerRuntime = "none"
    container_image: str | None = None
    setup_lines: tuple[str, ...] = ()
    poll_interval: float = 30.0
    vanish_grace: float = 300.0
    high_memory_partition: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: ``max_walltime`` in seconds.
    max_walltime_s: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        problems: list[tuple[KeyPath, str]] = []
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            problems.append(((), _NAME_PROBLEM.format(value=describe_value(self.name))))
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name in _CHECKS}
        clean, field_problems = _check_fields(values)
        problems.extend(field_problems)
        if problems:
            prefix = ("clusters", self.name)
            raise ClusterProfileError("\n".join(f"{format_path(prefix + p)}: {m}" for p, m in problems))
        if not clean["slurm_cluster"]:
            clean["slurm_cluster"] = self.name
        for key, value in clean.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "max_walltime_s", parse_walltime(self.max_walltime))

    @property
    def memory_per_core_mb(self) -> float:
        """Memory of a node divided by its cores, in MB."""
        return self.memory_per_node_mb / self.cores_per_node

    @property
    def pool_name(self) -> str:
        """The Airflow pool that bounds this cluster's submissions."""
        return self.pool or f"slurm_{self.name}"

    def cores_for_memory(self, mem_mb: int) -> int:
        """How many cores SLURM allocates to give a job ``mem_mb`` of memory.

        Memory comes with cores: on a node of 2 GB per core, 5000 MB takes 3 cores.

        :param mem_mb: memory per node, in MB; must be positive.
        :return: ``ceil(mem_mb / memory_per_core_mb)``.
        :raises ValueError: for a non-positive amount.
        """
        if mem_mb <= 0:
            raise ValueError(f"memory must be a positive number of MB, got {mem_mb}")
        # Integer arithmetic: memory_per_core_mb is not always a whole number.
        return -(-mem_mb * self.cores_per_node // self.memory_per_node_mb)

    def check_request(
        self, *, cpus: int, mem_mb: int | None, time_limit_s: int | None, nodes: int = 1
    ) -> None:
        """Refuse, before submission, a job that this cluster can never run.

        :param cpus: CPUs asked for on each node.
        :param mem_mb: memory asked for on each node, in MB; ``None``: the cluster's default.
        :param time_limit_s: the walltime, in seconds; ``None``: the partition's default.
        :param nodes: nodes asked for (no per-cluster node limit is known; must be positive).
        :raises ResourceLimitError: naming each limit exceeded, its value, and what to do.
        :raises ValueError: for a request of zero or fewer CPUs, MB, seconds or nodes.
        """
        for label, amount in (
            ("cpus", cpus),
            ("mem_mb", mem_mb),
            ("time_limit_s", time_limit_s),
            ("nodes", nodes),
        ):
            if amount is not None and amount < 1:
                raise ValueError(f"{label} must be positive, got {amount}")
        where = self._describe_where()
        problems: list[str] = []
        if cpus > self.cores_per_node:
            problems.append(
                f"{cpus} CPUs per node exceed the {self.cores_per_node} cores of a node of {where}: "
                "ask for fewer, spread the work over more nodes, or pick another cluster"
            )
        if mem_mb is not None and mem_mb > self.memory_per_node_mb:
            instead = (
                f"use the high-memory partition {self.high_memory_partition}"
                if self.high_memory_partition
                else "split the work"
            )
            problems.append(
                f"memory {mem_mb} MB per node exceeds the {self.memory_per_node_mb} MB of a node of {where}: "
                f"ask for less, {instead}, or pick another cluster"
            )
        if time_limit_s is not None and time_limit_s > self.max_walltime_s:
            asked, most = _clock(time_limit_s), _clock(self.max_walltime_s)
            problems.append(
                f"walltime {asked} exceeds the {most} maximum of {where}: "
                "ask for less, checkpoint, or pick another cluster"
            )
        if problems:
            raise ResourceLimitError("\n".join(problems))

    def _describe_where(self) -> str:
        details = [
            f"{label} {value}" for label, value in (("partition", self.partition), ("qos", self.qos)) if value
        ]
        return f"cluster {self.name} ({', '.join(details)})" if details else f"cluster {self.name}"


_NAME_PROBLEM = (
    "cluster name {value} is not allowed; "
    "use letters, digits, '_', '.' and '-', starting with a letter or digit"
)
_FIELD_NAMES = tuple(f.name for f in fields(ClusterProfile) if f.name in _CHECKS)


class ClusterProfiles:
    """The clusters of one profile file, by name.

    :param profiles: the profiles; names must be unique.
    :param default: the name :meth:`get` returns for ``None``; if not given and there
        is exactly one profile, that one.
    :param source: where the profiles came from, for messages.
    :raises ClusterProfileError: for a repeated name or a default that names no profile.
    """

    def __init__(
        self, profiles: Iterable[ClusterProfile], *, default: str | None = None, source: str = "<memory>"
    ) -> None:
        self.source = source
        self._profiles: dict[str, ClusterProfile] = {}
        for profile in profiles:
            if profile.name in self._profiles:
                raise ClusterProfileError(f"{source}: cluster {profile.name!r} is defined twice; keep one")
            self._profiles[profile.name] = profile
        if default is not None and default not in self._profiles:
            raise ClusterProfileError(f"{source}: default: {self._unknown(default)}")
        if default is None and len(self._profiles) == 1:
            default = next(iter(self._profiles))
        self._default = default

    @property
    def names(self) -> tuple[str, ...]:
        """The cluster names, in file order."""
        return tuple(self._profiles)

    @property
    def default_name(self) -> str | None:
        """The cluster used when none is named, if there is one."""
        return self._default

    def get(self, name: str | None = None) -> ClusterProfile:
        """Return the profile of a cluster.

        :param name: the cluster name; ``None`` for the default cluster.
        :raises ClusterProfileError: for an unknown name, or ``None`` without a default.
        """
        if name is None:
            if self._default is None:
                raise ClusterProfileError(
                    f"no cluster given and {self.source} sets no default; name one of "
                    f"{', '.join(self._profiles)} or add 'default: <name>' to {self.source}"
                )
            name = self._default
        try:
            return self._profiles[name]
        except KeyError:
            raise ClusterProfileError(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        guess = did_you_mean(name, self._profiles)
        hint = f"did you mean '{guess}'? " if guess else ""
        return (
            f"no cluster named {name!r} in {self.source}; {hint}known clusters: {', '.join(self._profiles)}"
        )

    def __iter__(self) -> Iterator[ClusterProfile]:
        return iter(self._profiles.values())

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, name: object) -> bool:
        return name in self._profiles

    def __repr__(self) -> str:
        return f"ClusterProfiles({list(self._profiles)!r}, default={self._default!r}, source={self.source!r})"


# --- reading the file ----------------------------------------------------------------------------


def parse_cluster_profiles(text: str, source: str = "<string>") -> ClusterProfiles:
    """Read cluster profiles from YAML text.

    :param text: the YAML text.
    :param source: the file name to show in messages.
    :return: the profiles.
    :raises ClusterProfileError: listing every problem, one per line, as
        ``<file>:<line>: clusters.<name>.<field>: <what is wrong>; <what to do>``.
    """
    try:
        located = LocatedYaml.load(text, source)
        problems: list[YamlProblem] = []
    except YamlLoadError as exc:
        if exc.partial is None:
            raise ClusterProfileError(str(exc)) from None
        # Repeated keys: still check the rest, so that one run shows every problem.
        located, problems = exc.partial, list(exc.problems)
    default, profiles = _read_document(located, problems)
    if problems:
        problems.sort(key=lambda p: p.line)
        raise ClusterProfileError("\n".join(p.format(source) for p in problems))
    return ClusterProfiles(profiles, default=default, source=source)


def _read_document(
    located: LocatedYaml, problems: list[YamlProblem]
) -> tuple[str | None, list[ClusterProfile]]:
    data = located.data
    if data is None:
        problems.append(
            located.problem((), "the file is empty; add a 'clusters:' mapping of named cluster profiles")
        )
        return None, []
    if not isinstance(data, dict):
        problems.append(
            located.problem(
                (),
                f"expected a mapping with 'clusters' and 'default', got {describe_value(data)}; see "
                "the example in the airflow_desc.clusters documentation",
            )
        )
        return None, []
    for key in data:
        if key not in ("clusters", "default"):
            problems.append(located.problem((key,), _unknown_key(key, ("clusters", "default"))))

    profiles: list[ClusterProfile] = []
    clusters = data.get("clusters")
    if "clusters" not in data:
        problems.append(
            located.problem(("clusters",), "missing; add a 'clusters:' mapping of named cluster profiles")
        )
    elif not isinstance(clusters, dict) or not clusters:
        what = "no clusters" if clusters is None or clusters == {} else describe_value(clusters)
        problems.append(
            located.problem(
                ("clusters",),
                f"expected a mapping of cluster names to profiles, got {what}; add at least one cluster",
            )
        )
    else:
        for name, settings in clusters.items():
            profile = _read_profile(located, name, settings, problems)
            if profile is not None:
                profiles.append(profile)

    default = data.get("default")
    if default is not None:
        if not isinstance(default, str):
            names = f"one of {', '.join(map(str, clusters))}" if isinstance(clusters, dict) else "a cluster"
            problems.append(
                located.problem(
                    ("default",), f"expected a cluster name, got {describe_value(default)}; name {names}"
                )
            )
            default = None
        elif isinstance(clusters, dict) and default not in clusters:
            guess = did_you_mean(default, [str(n) for n in clusters])
            hint = f"did you mean '{guess}'?" if guess else f"name one of {', '.join(map(str, clusters))}"
            problems.append(located.problem(("default",), f"no cluster named {default!r}; {hint}"))
    return default, profiles


def _read_profile(
    located: LocatedYaml, name: Hashable, settings: Any, problems: list[YamlProblem]
) -> ClusterProfile | None:
    here: KeyPath = ("clusters", name)
    before = len(problems)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        problems.append(located.problem(here, _NAME_PROBLEM.format(value=describe_value(name))))
    if not isinstance(settings, dict):
        problems.append(
            located.problem(
                here,
                f"expected a mapping of settings, got {describe_value(settings)}; "
                "add ssh_conn_id, cores_per_node, memory_per_node_mb and max_walltime",
            )
        )
        return None
    known = {key: value for key, value in settings.items() if key in _CHECKS}
    for key in settings:
        if key not in _CHECKS:
            problems.append(located.problem((*here, key), _unknown_key(key, _FIELD_NAMES)))
    for key, hint in _REQUIRED.items():
        if key not in settings:
            # A missing key has no line of its own: point at the cluster.
            problems.append(YamlProblem(located.line_of(here), (*here, key), f"missing; {hint}"))
    clean, field_problems = _check_fields(known)
    problems.extend(located.problem((*here, *path), message) for path, message in field_problems)
    if len(problems) > before or not isinstance(name, str):
        return None
    return ClusterProfile(name=name, **clean)


def _unknown_key(key: Hashable, valid: Iterable[str]) -> str:
    valid = list(valid)
    guess = did_you_mean(key, valid) if isinstance(key, str) else None
    if guess:
        return f"unknown key; did you mean '{guess}'?"
    return f"unknown key; use one of {', '.join(valid)}"


# --- finding the file ----------------------------------------------------------------------------

_cache: dict[str, tuple[tuple[int, int], ClusterProfiles]] = {}
_cache_lock = threading.Lock()


def _find_clusters_file(path: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """Return the profile file and where its name came from (for messages)."""
    if path is not None:
        return Path(os.path.expanduser(os.fspath(path))), "the path given"
    from_env = os.environ.get(CLUSTERS_FILE_ENV, "").strip()
    if from_env:
        return Path(os.path.expanduser(from_env)), f"${CLUSTERS_FILE_ENV}"
    try:
        from airflow.configuration import conf
    except ImportError:  # used without Airflow, e.g. by the CLI on a laptop
        from_conf = None
    else:
        from_conf = conf.get("desc", "clusters_file", fallback=None)
    if from_conf and from_conf.strip():
        origin = "[desc] clusters_file of the Airflow configuration"
        return Path(os.path.expanduser(from_conf.strip())), origin
    raise ClusterProfileError(
        "no cluster profile file is configured; set the environment variable "
        f"{CLUSTERS_FILE_ENV}, or clusters_file in the [desc] section of airflow.cfg "
        "(AIRFLOW__DESC__CLUSTERS_FILE), to the path of a YAML file of cluster profiles"
    )


def load_cluster_profiles(path: str | os.PathLike[str] | None = None) -> ClusterProfiles:
    """Load the cluster profile file, re-reading it only when it changes.

    :param path: the YAML file; ``None`` looks in ``$DESC_CLUSTERS_FILE``, then in
        ``[desc] clusters_file`` of the Airflow configuration.
    :return: the profiles (the same object while the file's mtime and size are unchanged).
    :raises ClusterProfileError: if no file is configured, it cannot be read, or it is invalid.
    """
    file, origin = _find_clusters_file(path)
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise ClusterProfileError(
            f"{file}: no such cluster profile file (named by {origin}); create it or name an existing file"
        ) from None
    except OSError as exc:
        raise ClusterProfileError(f"{file}: cannot read the cluster profile file: {exc.strerror}") from None
    key, stamp = str(file.absolute()), (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterProfileError(f"{file}: cannot read the cluster profile file: {exc}") from None
    profiles = parse_cluster_profiles(text, str(file))
    with _cache_lock:
        _cache[key] = (stamp, profiles)
    return profiles
