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
        max_queued_per_task: null      # allocations of one generated task queued at once (all runs)
        pool: null                     # Airflow pool name; default "slurm_<name>"
        work_dir: airflow-desc         # job scripts and logs; relative to $HOME or absolute
        container_runtime: none        # none | shifter | podman-hpc | podman | apptainer
        container_image: null          # the default image; a process's resources.container wins
        container_options: []          # runtime options before the image, e.g. [--pull=never]
        container_binds: []            # bind mounts, "/src:/dst" or "/src:/dst:ro"
        setup_lines: []                # shell lines at the top of every job script
        poll_interval: 30              # seconds between batched sacct polls
        pilot_binding: cores           # direct launcher: pin instances to CPUs (none: do not)
        vanish_grace: 300              # seconds a job may be missing from sacct and squeue
        high_memory_partition: null    # where an out-of-memory job may be sent
        mem_per_cpu_mb: null           # memory comes only with cores (e.g. 2000 on 2 GB/core nodes):
                                       # jobs ask --mem-per-cpu, more memory = more cores
        maintenance: []                # windows by hand: [{start: 2026-12-10T07:00:00-08:00, end: ...}]
        key_expires: null              # when the login's key expires, if no certificate says
                                       # (e.g. "2026-12-07T14:00:00Z"); see airflow_desc.ssh_keys
        env: {}                        # environment variables of every job
        sbatch_options: {}             # further sbatch options of every job, e.g. licenses: sps

The file is found by :func:`load_cluster_profiles`: an explicit path, else the
``DESC_CLUSTERS_FILE`` environment variable; :func:`airflow_desc.config.configured_cluster_profiles`
also looks in ``[desc] clusters_file`` of the Airflow configuration (this module imports no
Airflow). The settings are checked by a pydantic model, and every problem of a file is
reported at once, one per line, as
``<file>:<line>: clusters.<name>.<field>: <what is wrong>; <what to do>``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from airflow_desc._validation import problems_of
from airflow_desc._yaml_lines import (
    KeyPath,
    LocatedYaml,
    YamlLoadError,
    YamlProblem,
    describe_value,
    did_you_mean,
    format_path,
)
from airflow_desc.cluster_schema import (
    CONTAINER_RUNTIMES,
    NAME_PROBLEM,
    NAME_RE,
    PROFILE_WORDS,
    ContainerRuntime,
    MaintenanceSettings,
    PilotBinding,
    ProfileFile,
    ProfileSettings,
    clock,
    container_rules,
    file_rules,
    parse_walltime,
)
from airflow_desc.exceptions import ClusterProfileError, ResourceLimitError
from airflow_desc.slurm.maintenance import MaintenanceWindow

__all__ = [
    "CLUSTERS_FILE_ENV",
    "CONTAINER_RUNTIMES",
    "ClusterProfile",
    "ClusterProfiles",
    "ContainerRuntime",
    "clusters_file_from_env",
    "load_cluster_profiles",
    "parse_cluster_profiles",
]

#: The environment variable naming the cluster profile file.
CLUSTERS_FILE_ENV = "DESC_CLUSTERS_FILE"

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
    :param max_queued_per_task: how many SLURM allocations of one task of a generated workflow DAG
        (a batch process's mapped instances, or a bundled sub-task's bundles) may be queued or
        running at once, across the DAG's runs (its ``max_active_tis_per_dag``); ``None``: only
        ``max_queued_jobs`` bounds them.
    :param pool: the Airflow pool name; default ``slurm_<name>``.
    :param work_dir: where job scripts and logs go; relative to the login's ``$HOME`` or absolute.
    :param container_runtime: ``none``, ``shifter``, ``podman-hpc``, ``podman`` or ``apptainer``: the
        engine that runs a payload with an image, and so its command line
        (:func:`~airflow_desc.slurm.script.container_command`).
    :param container_image: the default image, if any; a process's ``resources.container`` wins.
    :param container_options: the runtime's options before the image, one word each (e.g. podman's
        ``--pull=never``, ``--network=none``).
    :param container_binds: bind mounts of every container, ``"/src:/dst"`` or ``"/src:/dst:ro"``.
    :param setup_lines: shell lines run at the top of every job.
    :param poll_interval: seconds between batched ``sacct`` polls.
    :param pilot_binding: ``cores`` (default): a bundle's direct launcher pins each instance to
        CPUs of its own, as ``srun --exact`` confines a step (a payload sizing its threads by the
        CPUs it may use sees its share); ``none``: the kernel places them, for nodes whose CPUs
        are not the allocation's alone (the local site's two emulated nodes share one machine's,
        where two pilots pinning to the same CPUs left one idle while the other held two).
    :param vanish_grace: seconds a job may be absent from both ``sacct`` and ``squeue``
        before that is an error.
    :param high_memory_partition: where a job that needs more than a node's memory may go.
    :param mem_per_cpu_mb: the memory that comes with each core, for a cluster whose nodes give memory
        only with cores (a shared QOS of 2 GB per core): jobs ask ``--mem-per-cpu`` of it instead of
        ``--mem``, a job asking more memory gets the cores that carry it, and a job that ran out of
        memory asks for more cores on its next try. ``None``: jobs ask ``--mem``.
    :param maintenance: maintenance windows listed by hand (each ``start``, ``end``, with a time zone):
        no job is submitted whose walltime would run into one; SLURM's own reservations are read from
        the cluster (:mod:`airflow_desc.slurm.maintenance`).
    :param key_expires: when the SSH key of ``ssh_conn_id`` stops logging in (an aware time), for a key
        no certificate describes: a certificate (``<key_file>-cert.pub`` or the connection's
        ``cert_file`` extra) says it itself, and wins. Warned about from two hours before; once past,
        tasks wait deferred for a renewal.
    :param env: environment variables for every job.
    :param sbatch_options: further ``sbatch`` options of every job (long name to value, ``None``
        for a flag), e.g. CC-IN2P3's storage licences ``{"licenses": "sps"}``; an operator's
        ``sbatch_args`` win. Not the options a field sets (partition, qos, account, constraint,
        and what each job asks for).
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
    max_queued_per_task: int | None = None
    pool: str | None = None
    work_dir: str = "airflow-desc"
    container_runtime: ContainerRuntime = "none"
    container_image: str | None = None
    container_options: tuple[str, ...] = ()
    container_binds: tuple[str, ...] = ()
    setup_lines: tuple[str, ...] = ()
    poll_interval: float = 30.0
    pilot_binding: PilotBinding = "cores"
    vanish_grace: float = 300.0
    high_memory_partition: str | None = None
    mem_per_cpu_mb: int | None = None
    maintenance: tuple[MaintenanceSettings, ...] = ()
    key_expires: datetime | None = None
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    sbatch_options: Mapping[str, str | None] = field(default_factory=dict, hash=False)
    #: ``max_walltime`` in seconds.
    max_walltime_s: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        problems: list[tuple[KeyPath, str]] = []
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            problems.append(((), NAME_PROBLEM.format(value=describe_value(self.name))))
        values = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name in ProfileSettings.model_fields
        }
        settings: ProfileSettings | None = None
        try:
            settings = ProfileSettings.model_validate(values)
        except ValidationError as exc:
            problems += problems_of(exc, ProfileSettings, PROFILE_WORDS)
        problems += container_rules(values)
        if problems or settings is None:
            prefix = ("clusters", self.name)
            raise ClusterProfileError("\n".join(f"{format_path(prefix + p)}: {m}" for p, m in problems))
        for key, value in settings:
            object.__setattr__(self, key, value)
        if not self.slurm_cluster:
            object.__setattr__(self, "slurm_cluster", self.name)
        object.__setattr__(self, "max_walltime_s", parse_walltime(self.max_walltime))

    @property
    def memory_per_core_mb(self) -> float:
        """Memory of a node divided by its cores, in MB."""
        return self.memory_per_node_mb / self.cores_per_node

    @property
    def maintenance_windows(self) -> list[MaintenanceWindow]:
        """The profile's own maintenance windows, of every node of the cluster."""
        source = "the profile's maintenance window"
        return [MaintenanceWindow(w.start, w.end, source) for w in self.maintenance]

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

    def fit(
        self, *, cpus: int, mem_mb: int | None, time_limit_s: int | None
    ) -> tuple[int, int | None, int | None]:
        """Return a request capped to what this cluster has: a node's cores and memory, its longest walltime.

        What ``resources_cap: fit`` does to a spec's requests, and what a job moved to this cluster
        from another (a fallback) asks for here. ``None`` stays ``None`` (the cluster's default).
        """
        return (
            min(cpus, self.cores_per_node),
            min(mem_mb, self.memory_per_node_mb) if mem_mb else mem_mb,
            min(time_limit_s, self.max_walltime_s) if time_limit_s else time_limit_s,
        )

    def cpus_for_memory(self, mem_mb: int) -> int:
        """On a cluster with ``mem_per_cpu_mb``: the cores that carry ``mem_mb``, at most a node's.

        :raises ValueError: for a cluster without ``mem_per_cpu_mb``, or a non-positive amount.
        """
        if self.mem_per_cpu_mb is None or mem_mb <= 0:
            raise ValueError(f"cluster {self.name}: no mem_per_cpu_mb, or memory {mem_mb} MB is not positive")
        return min(self.cores_per_node, -(-mem_mb // self.mem_per_cpu_mb))

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
            asked, most = clock(time_limit_s), clock(self.max_walltime_s)
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
    data = located.data
    document: ProfileFile | None = None
    if data is None:
        what = "the file is empty; add a 'clusters:' mapping of named cluster profiles"
        problems.append(located.problem((), what))
    elif not isinstance(data, dict):
        what = (
            f"expected a mapping with 'clusters' and 'default', got {describe_value(data)}; see "
            "the example in the airflow_desc.clusters documentation"
        )
        problems.append(located.problem((), what))
    else:
        try:
            document = ProfileFile.model_validate(data)
        except ValidationError as exc:
            found = problems_of(exc, ProfileFile, PROFILE_WORDS)
            problems += [located.problem(*problem) for problem in found]
        problems += [located.problem(*problem) for problem in file_rules(data)]
    if problems or document is None:
        problems.sort(key=lambda p: p.line)
        raise ClusterProfileError("\n".join(p.format(source) for p in problems))
    profiles = [ClusterProfile(name=name, **dict(settings)) for name, settings in document.clusters.items()]
    return ClusterProfiles(profiles, default=document.default, source=source)


# --- finding the file ----------------------------------------------------------------------------

_cache: dict[str, tuple[tuple[int, int], ClusterProfiles]] = {}
_cache_lock = threading.Lock()


def clusters_file_from_env() -> str | None:
    """Return the cluster profile file that ``$DESC_CLUSTERS_FILE`` names, or ``None`` if it is unset."""
    return os.environ.get(CLUSTERS_FILE_ENV, "").strip() or None


def load_cluster_profiles(
    path: str | os.PathLike[str] | None = None, *, named_by: str = "the path given"
) -> ClusterProfiles:
    """Load the cluster profile file, re-reading it only when it changes.

    :param path: the YAML file (``~`` is expanded); ``None`` looks in ``$DESC_CLUSTERS_FILE``.
        For Airflow's ``[desc] clusters_file`` too, use
        :func:`airflow_desc.config.configured_cluster_profiles`.
    :param named_by: where ``path`` came from, for the message about a missing file.
    :return: the profiles (the same object while the file's mtime and size are unchanged).
    :raises ClusterProfileError: if no file is configured, it cannot be read, or it is invalid.
    """
    if path is None:
        path, named_by = clusters_file_from_env(), f"${CLUSTERS_FILE_ENV}"
        if path is None:
            raise ClusterProfileError(
                "no cluster profile file is configured; set the environment variable "
                f"{CLUSTERS_FILE_ENV} to the path of a YAML file of cluster profiles"
            )
    file = Path(os.path.expanduser(os.fspath(path)))
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise ClusterProfileError(
            f"{file}: no such cluster profile file (named by {named_by}); create it or name an existing file"
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
