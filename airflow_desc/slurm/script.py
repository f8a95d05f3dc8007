"""Render a SLURM batch script from a :class:`JobSpec`.

The ``#SBATCH`` lines are read by sbatch itself, not by a shell
(https://slurm.schedmd.com/sbatch.html): it splits them at whitespace, groups
quoted text, treats a backslash as an escape and an unquoted ``#`` as the start of a
comment, and expands no variables. So a value with a space is written in double
quotes, and a value containing a quote, backslash, ``#``, ``$``, backtick or line
break is refused with an error naming the field. Everything after the ``#SBATCH``
block is bash, where every value we insert is ``shlex``-quoted; only the payload
command goes in verbatim, since it is the user's program.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, get_args

from airflow_desc.slurm.quoting import check_text, quote_path
from airflow_desc.slurm.timing import container_usage_lines, timing_end_lines, timing_start_lines
from airflow_desc.slurm.units import format_walltime

__all__ = [
    "CONTAINER_MARKER",
    "USAGE_FILE_VAR",
    "ContainerRuntime",
    "ContainerSpec",
    "JobSpec",
    "check_extra_sbatch",
    "container_command",
    "container_supervisor",
    "measured_payload",
    "render_job_script",
]

#: Container runtimes a job can run its payload in: ``podman`` is plain podman (the local site, a
#: workstation), ``podman-hpc`` NERSC's wrapper of it.
ContainerRuntime = Literal["none", "shifter", "podman-hpc", "podman", "apptainer"]
_RUNTIMES: tuple[str, ...] = get_args(ContainerRuntime)

#: Prefix of the lines the script prints around the payload, so log tails can find them.
LOG_PREFIX = "airflow-desc:"
#: Printed before a payload that runs in a container, followed by the image: a log tail names it
#: (:func:`~airflow_desc.slurm.diagnose` does when the image is missing). The pilot prints it too.
CONTAINER_MARKER = "runs in container image"

#: The variable naming the file a podman container writes what its payload used into (see
#: :func:`container_command`); the job script and the pilot set it, each to a file of its own.
USAGE_FILE_VAR = "DESC_USAGE_FILE"
# Signals that stop a podman container (container_supervisor): scancel's, a time limit's, the pilot's.
_STOPPING_SIGNALS = ("TERM", "INT", "HUP")
#: Seconds a stopped podman container's payload gets between TERM and KILL: within SLURM's KillWait
#: (default 30 s, 5 s on the local site), counting podman's own start-up.
CONTAINER_STOP_S = 2
#: The ``$0`` of the shell that runs a podman container (:func:`container_supervisor`): ``ps`` shows it.
CONTAINER_SUPERVISOR_NAME = "airflow-desc-container"
# Signals the container's shell passes on to its payload: as the container's PID 1 it would ignore them.
_FORWARDED_SIGNALS = ("TERM", "INT", "HUP", "USR1", "USR2")
# The container's memory cgroup's peak: cgroup v1 (podman mounts the container's own cgroup there), v2.
_MEMORY_PEAK_FILES = ("/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak")
# Where its OOM kills are counted ("oom_kill N" lines): cgroup v1, v2.
_OOM_KILL_FILES = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")

_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OPTION_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_ARRAY_RE = re.compile(r"^[0-9][0-9,:%-]*$")
_SIGNAL_RE = re.compile(r"^(?P<where>[RB]{1,2}:)?(?P<sig>(?:SIG)?[A-Z0-9]+)(?:@\d+)?$")
_NODE_RE = re.compile(r"^[A-Za-z0-9_.\-\[\],]+$")
# Characters sbatch's #SBATCH tokenizer gives a meaning, or that a user would expect to be expanded.
_SBATCH_SPECIAL = {
    '"': "starts a quoted string",
    "'": "starts a quoted string",
    "\\": "is an escape character",
    "#": "starts a comment",
    "$": "is not expanded by sbatch (use the literal value)",
    "`": "is not expanded by sbatch (use the literal value)",
}
# Options that JobSpec fields own, or that make no sense in a script.
_OWNED_OPTIONS = {
    "job-name": "job_name",
    "partition": "partition",
    "qos": "qos",
    "account": "account",
    "constraint": "constraint",
    "time": "time_limit_s",
    "nodes": "nodes",
    "ntasks": "ntasks",
    "cpus-per-task": "cpus_per_task",
    "mem": "mem_mb",
    "mem-per-cpu": "mem_per_cpu_mb",
    "output": "output",
    "error": "error",
    "array": "array",
    "signal": "signal",
    "exclusive": "exclusive",
    "exclude": "exclude",
    "requeue": "requeue",
    "no-requeue": "requeue",
    "acctg-freq": "acctg_freq",
    "image": "container",
}
_REFUSED_OPTIONS = {
    "wrap": "the script is the job; --wrap would replace it",
    "wait": "--wait makes sbatch block until the job ends",
    "parsable": "the submit command already passes --parsable",
}


def _sbatch_value(what: str, value: str) -> str:
    """Check a value for an ``#SBATCH`` line and quote it if it has spaces."""
    check_text(what, value)
    if not value:
        raise ValueError(f"{what} is empty; leave it unset instead")
    for char, why in _SBATCH_SPECIAL.items():
        if char in value:
            raise ValueError(
                f"{what}={value!r} cannot go on an #SBATCH line: {char!r} {why}; choose a value without it"
            )
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what}={value!r} contains a control character")
    if " " in value:
        return f'"{value}"'
    return value


def _positive_int(what: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ContainerSpec:
    """The container a payload runs in.

    :param runtime: ``"none"``, ``"shifter"`` (NERSC), ``"podman-hpc"`` (NERSC), ``"podman"`` or
        ``"apptainer"``.
    :param image: the image: ``docker:repo/name:tag`` for shifter (``docker:`` is added
        when no source prefix is given), ``repo/name:tag`` for podman-hpc and podman, a ``.sif``
        path or ``docker://...`` URI for apptainer.
    :param options: extra options given to the runtime before the image, one word each.
    :param binds: bind mounts, ``"/src:/dst"`` or ``"/src:/dst:ro"``.
    """

    runtime: ContainerRuntime = "none"
    image: str | None = None
    options: tuple[str, ...] = ()
    binds: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.runtime not in _RUNTIMES:
            raise ValueError(
                f"ContainerSpec.runtime must be one of {', '.join(_RUNTIMES)}, got {self.runtime!r}"
            )
        object.__setattr__(self, "options", tuple(self.options))
        object.__setattr__(self, "binds", tuple(self.binds))
        if self.runtime == "none":
            if self.image or self.options or self.binds:
                raise ValueError("ContainerSpec with runtime 'none' takes no image, options or binds")
            return
        if not self.image:
            raise ValueError(f"ContainerSpec.image is required for runtime {self.runtime!r}")
        check_text("ContainerSpec.image", self.image)
        if any(c.isspace() for c in self.image):
            raise ValueError(f"ContainerSpec.image contains whitespace: {self.image!r}")
        if self.image.startswith("-"):
            # The runtime would read it as one of its own options.
            raise ValueError(f"ContainerSpec.image starts with '-': {self.image!r}; name an image")
        if self.runtime == "shifter":
            _sbatch_value("ContainerSpec.image", self.shifter_image)  # it goes on an #SBATCH --image line
        for option in self.options:
            check_text("ContainerSpec.options", option)
        for bind in self.binds:
            check_text("ContainerSpec.binds", bind)
            if not bind:
                raise ValueError("ContainerSpec.binds contains an empty entry")

    @property
    def shifter_image(self) -> str:
        """The image as shifter wants it, with a source prefix (``docker:`` by default)."""
        image = self.image or ""
        if re.match(r"^(docker|id|custom|local):", image):
            return image
        return f"docker:{image}"


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to write one SLURM batch script.

    Only the options that are set produce ``#SBATCH`` lines.

    :param job_name: ``--job-name``; no ``|`` (it would break ``sacct -P`` output) and no
        ``,`` (``sacct --name`` takes a comma-separated list).
    :param command: the payload: shell text written by the user, put in the script verbatim.
    :param partition: ``--partition``.
    :param qos: ``--qos``.
    :param account: ``--account``.
    :param constraint: ``--constraint``, e.g. ``"cpu"`` at NERSC.
    :param time_limit_s: ``--time``, in seconds (SLURM rounds it up to whole minutes).
    :param nodes: ``--nodes``.
    :param ntasks: ``--ntasks``.
    :param cpus_per_task: ``--cpus-per-task``.
    :param mem_mb: ``--mem`` in MB, per node; exclusive with ``mem_per_cpu_mb``.
    :param mem_per_cpu_mb: ``--mem-per-cpu`` in MB.
    :param output: ``--output`` path; SLURM's ``%j``-style patterns are allowed.
    :param error: ``--error`` path; unset means stderr goes to the output file.
    :param array: ``--array``, e.g. ``"0-9%2"``.
    :param signal: ``--signal``, e.g. ``"B:USR1@60"``. With ``B:`` the signal reaches only
        the batch shell, so the script forwards it to the payload.
    :param exclusive: ``--exclusive``.
    :param exclude: ``--exclude`` node names.
    :param requeue: ``--requeue`` if true, ``--no-requeue`` if false, nothing if unset.
    :param workdir: directory the payload runs in (``cd``); ``~/`` means the home directory.
    :param env: variables exported before the setup lines; keys must be shell identifiers.
    :param setup_lines: shell lines run before the payload (``module load ...``); the job
        stops if one fails.
    :param container: the container to run the payload in.
    :param acctg_freq: ``--acctg-freq``; the default ``task=1`` samples memory every second
        so that MaxRSS of short jobs is not empty.
    :param extra_sbatch: further options, long name (with or without ``--``) to value, or to
        ``None`` for a flag. Options that have their own field are refused.
    """

    job_name: str
    command: str
    partition: str | None = None
    qos: str | None = None
    account: str | None = None
    constraint: str | None = None
    time_limit_s: float | None = None
    nodes: int | None = None
    ntasks: int | None = None
    cpus_per_task: int | None = None
    mem_mb: int | None = None
    mem_per_cpu_mb: int | None = None
    output: str | None = None
    error: str | None = None
    array: str | None = None
    signal: str | None = None
    exclusive: bool = False
    exclude: tuple[str, ...] = ()
    requeue: bool | None = None
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    setup_lines: tuple[str, ...] = ()
    container: ContainerSpec = field(default_factory=ContainerSpec)
    acctg_freq: str | None = "task=1"
    extra_sbatch: Mapping[str, str | None] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Copy the mappings so that a frozen spec cannot change behind our back.
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "extra_sbatch", MappingProxyType(dict(self.extra_sbatch)))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "setup_lines", tuple(self.setup_lines))
        self._validate()

    def _validate(self) -> None:
        _sbatch_value("JobSpec.job_name", self.job_name)
        for char in "|,":
            if char in self.job_name:
                raise ValueError(
                    f"JobSpec.job_name={self.job_name!r} contains {char!r}, "
                    "which breaks sacct queries by name"
                )
        check_text("JobSpec.command", self.command, allow_newline=True)
        if not self.command.strip():
            raise ValueError("JobSpec.command is empty")
        self._validate_resources()
        self._validate_shell()
        check_extra_sbatch(self.extra_sbatch)

    def _validate_resources(self) -> None:
        for name in ("partition", "qos", "account", "constraint", "output", "error", "acctg_freq"):
            value = getattr(self, name)
            if value is not None:
                _sbatch_value(f"JobSpec.{name}", value)
        for name in ("output", "error"):
            value = getattr(self, name)
            if value is not None and value.startswith("~"):
                raise ValueError(
                    f"JobSpec.{name}={value!r}: SLURM does not expand '~' in #SBATCH lines; give the path "
                    "relative to the home directory (where sbatch runs) or absolute"
                )
        if self.time_limit_s is not None:
            format_walltime(self.time_limit_s)
        for name in ("nodes", "ntasks", "cpus_per_task", "mem_mb", "mem_per_cpu_mb"):
            _positive_int(f"JobSpec.{name}", getattr(self, name))
        if self.mem_mb is not None and self.mem_per_cpu_mb is not None:
            raise ValueError("JobSpec.mem_mb and JobSpec.mem_per_cpu_mb are mutually exclusive; set one")
        if self.array is not None and not _ARRAY_RE.match(self.array):
            raise ValueError(f"JobSpec.array={self.array!r} is not an sbatch --array range such as '0-9%2'")
        if self.signal is not None and not _SIGNAL_RE.match(self.signal):
            raise ValueError(f"JobSpec.signal={self.signal!r} is not an sbatch --signal such as 'B:USR1@60'")
        for node in self.exclude:
            if not isinstance(node, str) or not _NODE_RE.match(node):
                raise ValueError(f"JobSpec.exclude has an invalid node name: {node!r}")

    def _validate_shell(self) -> None:
        if self.workdir is not None:
            check_text("JobSpec.workdir", self.workdir)
            if not self.workdir:
                raise ValueError("JobSpec.workdir is empty; leave it unset instead")
        for key, value in self.env.items():
            if not isinstance(key, str) or not _IDENTIFIER_RE.match(key):
                raise ValueError(f"JobSpec.env key {key!r} is not a shell variable name")
            check_text(f"JobSpec.env[{key!r}]", value)
        for line in self.setup_lines:
            check_text("JobSpec.setup_lines", line)


def check_extra_sbatch(
    options: Mapping[str, str | None], what: str = "JobSpec.extra_sbatch", owned_advice: str | None = None
) -> None:
    """Check further sbatch options: long names no :class:`JobSpec` field owns, values an #SBATCH line takes.

    :param options: option name (with or without ``--``) to value, or to ``None`` for a flag.
    :param what: how messages name them (a cluster profile's ``sbatch_options``).
    :param owned_advice: what to do about an option a field owns; default: use that field.
    :raises ValueError: naming the option and what to do.
    """
    for option, value in options.items():
        name = _extra_option_name(option, what)
        if name in _OWNED_OPTIONS:
            advice = owned_advice or f"use JobSpec.{_OWNED_OPTIONS[name]} instead"
            raise ValueError(f"{what} sets --{name}, which airflow-desc sets itself; {advice}")
        if name in _REFUSED_OPTIONS:
            raise ValueError(f"{what} cannot set --{name}: {_REFUSED_OPTIONS[name]}")
        if value is not None:
            _sbatch_value(f"{what}[{option!r}]", value)


def _extra_option_name(option: str, what: str = "JobSpec.extra_sbatch") -> str:
    name = option[2:] if option.startswith("--") else option
    if not _OPTION_RE.match(name):
        raise ValueError(f"{what} key {option!r} is not a long sbatch option such as 'gpus'")
    return name


def _sbatch_options(spec: JobSpec) -> list[tuple[str, str | None]]:
    """List the ``#SBATCH`` options of a job as ``(name, value)``, ``None`` for a flag."""
    numbers = {
        "nodes": spec.nodes,
        "ntasks": spec.ntasks,
        "cpus-per-task": spec.cpus_per_task,
        "mem": None if spec.mem_mb is None else f"{spec.mem_mb}M",
        "mem-per-cpu": None if spec.mem_per_cpu_mb is None else f"{spec.mem_per_cpu_mb}M",
    }
    values: dict[str, str | int | None] = {
        "job-name": spec.job_name,
        "partition": spec.partition,
        "qos": spec.qos,
        "account": spec.account,
        "constraint": spec.constraint,
        "time": None if spec.time_limit_s is None else format_walltime(spec.time_limit_s),
        **numbers,
        "output": spec.output,
        "error": spec.error,
        "array": spec.array,
        "signal": spec.signal,
        "exclude": ",".join(spec.exclude) or None,
    }
    options: list[tuple[str, str | None]] = [
        (name, str(value)) for name, value in values.items() if value is not None
    ]
    if spec.exclusive:
        options.append(("exclusive", None))
    if spec.requeue is not None:
        options.append(("requeue" if spec.requeue else "no-requeue", None))
    if spec.acctg_freq is not None:
        options.append(("acctg-freq", spec.acctg_freq))
    if spec.container.runtime == "shifter":
        options.append(("image", spec.container.shifter_image))
    options += [(_extra_option_name(option), value) for option, value in spec.extra_sbatch.items()]
    return options


def _sbatch_lines(spec: JobSpec) -> list[str]:
    return [
        f"#SBATCH --{name}" if value is None else f"#SBATCH --{name}={_sbatch_value(f'--{name}', value)}"
        for name, value in _sbatch_options(spec)
    ]


def container_command(container: ContainerSpec, command: str, env: Iterable[str] = ()) -> str:
    """Write one shell line that runs ``command`` with ``bash -c`` in a container.

    Every value is one quoted shell word; the command goes in as one quoted argument, so the
    container's bash, not the job's, reads it. podman (and podman-hpc) neither pass the host's
    environment nor its working directory: the variables named in ``env`` are passed by name, and
    the current directory is mounted at the same path and made the working directory (apptainer and
    shifter do both themselves).

    A podman container's processes are the children of podman's monitor (conmon), not of the job,
    and runc gives them a cgroup of their own that SLURM does not sample: so the container measures
    its payload itself (:func:`measured_payload`). When ``$DESC_USAGE_FILE`` (:data:`USAGE_FILE_VAR`)
    names a file, it is mounted at its own path and passed in, and the container writes into it
    bash's ``times`` after the payload (its CPU) and its memory cgroup's peak
    (:func:`~airflow_desc.slurm.timing.parse_container_usage` reads it).

    :param container: the container; its runtime must not be ``"none"``.
    :param command: the payload's shell text.
    :param env: names of the variables the payload needs from the job's environment.
    :raises ValueError: for the runtime ``"none"`` or a name that is not a shell variable.
    """
    runtime = container.runtime
    if runtime == "none":
        raise ValueError("container_command needs a container runtime, got 'none'")
    quoted = shlex.quote(command.rstrip("\n"))
    if runtime == "shifter":
        words = [f"--image={container.shifter_image}"]
        words += [f"--volume={bind}" for bind in container.binds]
        words += list(container.options)
        return f"shifter {_words(words)} bash -c {quoted}"
    if runtime == "apptainer":
        words = ["exec", *container.options]
        for bind in container.binds:
            words += ["--bind", bind]
        return f"apptainer {_words([*words, container.image or ''])} bash -c {quoted}"
    words = ["run", "--rm", *container.options]
    for bind in container.binds:
        words += ["--volume", bind]
    for key in dict.fromkeys(env):
        if not _IDENTIFIER_RE.match(key):
            raise ValueError(f"container_command: {key!r} is not a shell variable name")
        words += ["--env", key]
    words += ["--env", USAGE_FILE_VAR]
    usage = f'${{{USAGE_FILE_VAR}:+--volume "${USAGE_FILE_VAR}:${USAGE_FILE_VAR}"}}'
    # After the script's `cd`, $PWD is the absolute working directory (also for a "~/" workdir).
    workdir = '--volume "$PWD:$PWD" --workdir "$PWD"'
    image = shlex.quote(container.image or "")
    measured = shlex.quote(measured_payload(command))
    supervisor = shlex.quote(container_supervisor())
    # "run" is the supervisor's to write, with the container's name after it.
    return (
        f"bash -c {supervisor} {CONTAINER_SUPERVISOR_NAME} {runtime} {_words(words[1:])} {usage} {workdir} "
        f"{image} bash -c {measured}"
    )


def container_supervisor() -> str:
    """Return the shell text that runs a podman container so that stopping it leaves nothing running.

    Its arguments are the runtime (``podman``, ``podman-hpc``) and what follows its ``run``. It
    names the container (``$DESC_CONTAINER_NAME``, which the pilot sets per instance, or
    ``airflow-desc-<job id>-<pid>-<random>``), starts the client in the background and waits for it.
    The container's processes are not its children (podman's monitor, conmon, holds them, in runc's
    cgroups, which SLURM does not signal): so on TERM, INT or HUP (``scancel``, a time limit, the
    pilot stopping an instance) it stops the container itself, ``stop -t``
    :data:`CONTAINER_STOP_S` (the payload gets TERM, KILL after that), then ``rm -f``, well within
    SLURM's usual ``KillWait`` and the pilot's kill grace; USR1 and USR2 it passes on to the
    container (``--signal=B:USR1@60``). When the client died of a signal (or was killed) it removes
    the container too. It exits with the client's status.
    """
    stop = CONTAINER_STOP_S
    traps = [f"trap 'desc_stop' {sig}" for sig in _STOPPING_SIGNALS]
    traps += [f'trap \'"$desc_r" kill -s {sig} "$desc_n" >/dev/null 2>&1\' {sig}' for sig in ("USR1", "USR2")]
    return "\n".join(
        [
            "desc_r=$1; shift 1",
            "desc_n=${DESC_CONTAINER_NAME:-airflow-desc-${SLURM_JOB_ID:-0}-$$-$RANDOM}",
            "desc_s=",
            "desc_stop() {",
            '  [ -z "$desc_s" ] || return 0; desc_s=1',
            f'  "$desc_r" stop -i -t {stop} "$desc_n" >/dev/null 2>&1',
            '  "$desc_r" rm -f -i -t 0 "$desc_n" >/dev/null 2>&1',
            "}",
            *traps,
            '"$desc_r" run --name "$desc_n" "$@" 0<&0 &',
            "desc_c=$!",
            'while :; do wait "$desc_c"; desc_rc=$?; kill -0 "$desc_c" 2>/dev/null || break; done',
            # A client killed (by the job's memory limit, say) leaves its container: remove it.
            '[ "$desc_rc" -gt 128 ] && desc_stop',
            'exit "$desc_rc"',
        ]
    )


def measured_payload(command: str) -> str:
    """Return the shell text a podman container runs: the payload, then what it used, into the usage file.

    The payload runs in a subshell in the background (its stdin kept, in a process group of its
    own), so that the container's shell, its PID 1, can pass the signals of
    :data:`_FORWARDED_SIGNALS` on to all its processes; the shell waits
    for it, and then, if ``$DESC_USAGE_FILE`` is set, writes ``times`` (its own line, then its
    children's: the payload's user and system CPU, every process it waited for), the memory
    cgroup's peak in bytes and how many processes the kernel's OOM killer killed in it (each an
    empty line when it has none, or when the container has no memory cgroup of its own) there, and
    exits with the payload's status.
    """
    var = f'"${USAGE_FILE_VAR}"'
    peak = " || ".join(f"cat {path} 2>/dev/null" for path in _MEMORY_PEAK_FILES)
    kill_files = " ".join(_OOM_KILL_FILES)
    traps = [f"trap 'kill -s {sig} -- -\"$desc_p\" 2>/dev/null' {sig}" for sig in _FORWARDED_SIGNALS]
    return "\n".join(
        [
            # Job control only to start it: the payload gets a process group of its own (signals
            # reach all its processes), and no "Done" notices are printed.
            "set -m",
            "(",
            command.rstrip("\n"),
            ") 0<&0 &",
            "desc_p=$!",
            "set +m",
            *traps,
            'while :; do wait "$desc_p"; desc_rc=$?; kill -0 "$desc_p" 2>/dev/null || break; done',
            f"if [ -n {var} ]; then",
            f"  times >{var} 2>/dev/null",
            # The memory cgroup must be the container's own (runc names it after the container's
            # 64-hex id; cgroup v2 only: "/" in a cgroup namespace): where runc could not make one,
            # the files would be those of whatever holds the container (the job, the node).
            "  desc_own=; desc_v1=; desc_u=",
            "  while IFS=: read -r _ c p; do case ,$c, in",
            "    *,memory,*) desc_v1=1; [[ ${p##*/} =~ [0-9a-f]{64} ]] && desc_own=1 ;;",
            "    ,,) desc_u=$p ;;",
            "  esac; done </proc/self/cgroup",
            '  if [ -z "$desc_v1" ]; then case "$desc_u" in',
            "    /) desc_own=1 ;;",
            "    *) [[ ${desc_u##*/} =~ [0-9a-f]{64} ]] && desc_own=1 ;;",
            "  esac; fi",
            f'  {{ {{ [ -n "$desc_own" ] && {{ {peak}; }}; }} || echo; }} >>{var} 2>/dev/null',
            # bash's own read: the image may lack sed and awk.
            f'  desc_k=; [ -n "$desc_own" ] && for f in {kill_files}; do [ -r "$f" ] || continue',
            '    while read -r k v; do [ "$k" = oom_kill ] && desc_k=$v; done <"$f"; break; done',
            f'  echo "$desc_k" >>{var} 2>/dev/null',
            "fi",
            'exit "$desc_rc"',
        ]
    )


def _words(words: Iterable[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _payload_lines(spec: JobSpec) -> list[str]:
    """Write the payload as shell lines: verbatim in a subshell, or quoted for a container runtime."""
    container = spec.container
    if container.runtime == "none":
        return ["(", spec.command.rstrip("\n"), ")"]
    return [container_command(container, spec.command, spec.env)]


def _container_marker_lines(container: ContainerSpec, job: str) -> list[str]:
    if container.runtime == "none":
        return []
    return [f'echo "{LOG_PREFIX} job {job} payload {CONTAINER_MARKER}" {shlex.quote(container.image or "")}']


def _forwarded_signal(spec: JobSpec) -> str | None:
    """Return the signal to forward to the payload: only ``B:`` signals stop at the batch shell."""
    if spec.signal is None:
        return None
    match = _SIGNAL_RE.match(spec.signal)
    if match is None or "B" not in (match.group("where") or ""):
        return None
    sig = match.group("sig")
    return sig[3:] if sig.startswith("SIG") else sig


def render_job_script(spec: JobSpec) -> str:
    """Write the batch script for a job.

    The script has the ``#SBATCH`` lines, then a prologue that stops on the first failing
    setup line, then the payload, run so that its exit code is always printed as
    ``airflow-desc: job <id> payload exit code <rc>`` (on stdout, and on stderr too when
    ``error`` is a separate file) before the script exits with it, followed by the payload's own
    wall-clock and CPU time (:mod:`airflow_desc.slurm.timing`).

    :param spec: the job.
    :return: the script text, ending with a newline.
    """
    now = "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    job = "${SLURM_JOB_ID:-unknown}"
    lines = ["#!/bin/bash", *_sbatch_lines(spec)]
    lines += [
        "# Written by airflow_desc.slurm.render_job_script.",
        "# No 'set -u': site setup scripts (module, conda, EUPS) read unset variables.",
        "set -eo pipefail",
        f"trap 'echo \"{LOG_PREFIX} job {job} setup failed with exit code $? at line $LINENO\"' ERR",
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in spec.env.items()]
    lines += list(spec.setup_lines)
    if spec.workdir is not None:
        lines.append(f"cd -- {quote_path(spec.workdir)}")
    lines += [
        "trap - ERR",
        f'echo "{LOG_PREFIX} job {job} payload starting on $(hostname) at {now}"',
        *_container_marker_lines(spec.container, job),
        "# The payload runs with bash's default options, as it would on its own.",
        "set +e +o pipefail",
    ]
    # podman's containers are the children of its monitor (conmon), not of this shell: they measure
    # their payload themselves, into this file.
    usage = "desc_usage" if spec.container.runtime in ("podman-hpc", "podman") else None
    if usage is not None:
        lines += container_usage_lines(usage)
    lines += timing_start_lines()
    payload = _payload_lines(spec)
    sig = _forwarded_signal(spec)
    # A podman container's supervisor must outlive scancel's / the time limit's TERM to stop its
    # container: this shell waits for it (slurmstepd SIGKILLs what is left once the script ends).
    signals = list(_STOPPING_SIGNALS) if usage is not None else []
    if sig is not None and sig not in signals:
        signals.append(sig)
    if not signals:
        lines += payload
        lines.append("rc=$?")
    else:
        payload[-1] += " &"
        lines += payload
        lines.append("payload_pid=$!")
        lines += [f"trap 'interrupted=1; kill -s {s} \"$payload_pid\" 2>/dev/null' {s}" for s in signals]
        lines += [
            "# wait returns early when a trapped signal arrives: wait again until the payload ends.",
            "interrupted=1",
            'while [ "$interrupted" = 1 ]; do interrupted=0; wait "$payload_pid"; rc=$?; done',
        ]
    timing = timing_end_lines(f"{LOG_PREFIX} job {job}", container_usage=usage)
    status_line = f'echo "{LOG_PREFIX} job {job} payload exit code $rc at {now}"'
    lines += [*timing[:-1], status_line]
    if spec.error is not None and spec.error != spec.output:
        lines.append(status_line + " >&2")
    lines.append(timing[-1])
    lines.append('exit "$rc"')
    return "\n".join(lines) + "\n"
