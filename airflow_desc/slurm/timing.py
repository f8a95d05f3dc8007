"""A single job's own timing of its payload: the job script's lines that measure it, and their reader.

sacct's ``Elapsed`` is whole seconds (rounded down), while ``TotalCPU`` has milliseconds: a
single-core job of 2.7 s shows 2.6 s of CPU in 2 s of wall clock. The pilot times each bundled
instance itself (``time.monotonic`` and ``wait4``); a single job's script does the same for its
payload (:func:`render_job_script <airflow_desc.slurm.script.render_job_script>` adds
:func:`timing_start_lines` before the payload and :func:`timing_end_lines` after it), and prints::

    airflow-desc: job 123 payload timing: wall 400.1 402.8 cpu 0m0.004s 0m0.001s -> 0m2.690s 0m0.012s

- wall: ``date +%s.%N`` before and after the payload (GNU date: nanoseconds);
- cpu: bash's ``times`` (user and system time of the shell's waited-for children, milliseconds)
  before and after the payload, so that setup lines (``module load`` ...) are not counted. Work the
  batch shell does not wait for is not in it: :func:`precise_usage` adds the CPU of the job's
  other steps (``srun`` inside the script) from sacct.
- container, maxrss: for a payload run by ``podman-hpc`` or ``podman``, whose processes are the
  children of podman's monitor (conmon), not of the shell, and sit in a cgroup runc makes below the
  step's, which SLURM does not sample (sacct sees only the podman client's CPU and memory), the
  container measures its payload itself
  (:func:`~airflow_desc.slurm.script.measured_payload`) into a file the script gives it: its
  ``times`` after the payload and its memory cgroup's peak, which the line carries::

    ... cpu 0m0.004s 0m0.001s -> 0m0.090s 0m0.046s container 0m0.893s 0m3.168s maxrss 109895680
    oomkill 0

  The payload's CPU is then the podman client's (the shell's children) plus the container's; its
  peak memory, :func:`precise_max_rss`, sacct's MaxRSS (the client) plus the container's peak.
  ``oomkill``: how many of its processes the kernel's OOM killer killed in the container's memory
  cgroup (below the job's, so SLURM's memory limit reaches it, but SLURM does not see the kill:
  :func:`~airflow_desc.slurm.diagnose.diagnose` reads it from this line).
  ``container unmeasured`` (the container never ran, or could not write the file) leaves sacct's
  TotalCPU; ``maxrss unmeasured`` sacct's MaxRSS.

:func:`parse_payload_timing` reads that line from the log's tail; a job that printed none (killed
by SLURM, an old script, a ``date`` without ``%N``) keeps sacct's values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_desc.slurm.accounting import JobAccounting

__all__ = [
    "TIMING_MARK",
    "PayloadTiming",
    "container_usage_lines",
    "parse_payload_timing",
    "parse_times_children",
    "precise_max_rss",
    "precise_usage",
    "timing_end_lines",
    "timing_start_lines",
]

#: What the timing line says after ``airflow-desc: job <id>``.
TIMING_MARK = "payload timing:"
# Steps whose CPU the batch shell's `times` already holds (batch) or that run no payload (extern).
_SHELL_STEPS = frozenset({"batch", "extern"})
_CLOCK = r"(\d+)m(\d+(?:[.,]\d+)?)s"
_TIMING_RE = re.compile(
    re.escape(TIMING_MARK)
    + r" wall (?P<start>\d+(?:\.\d+)?) (?P<end>\d+(?:\.\d+)?)"
    + rf"(?: cpu {_CLOCK} {_CLOCK} -> {_CLOCK} {_CLOCK}"
    + rf"(?P<box> container (?:(?P<container>{_CLOCK} {_CLOCK})|unmeasured)"
    + r" maxrss (?:(?P<maxrss>\d+)|unmeasured)"
    + r"(?: oomkill (?:(?P<oomkill>\d+)|unmeasured))?)?)?"
)
_TIMES_CHILDREN_RE = re.compile(rf"^{_CLOCK} {_CLOCK}$")


@dataclass(frozen=True)
class PayloadTiming:
    """The payload's wall clock and CPU time, as its job script measured them.

    :param wall_s: wall-clock seconds from the payload's start to its end.
    :param cpu_s: user + system CPU seconds of the payload's processes; ``None``: not measured.
    :param container_max_rss_bytes: the peak memory of the payload's container (its memory cgroup's),
        ``None``: no container, or not measured.
    :param container_oom_kills: how many of the container's processes the kernel's OOM killer
        killed (its memory cgroup's count), ``None``: no container, or not measured.
    """

    wall_s: float
    cpu_s: float | None
    container_max_rss_bytes: int | None = None
    container_oom_kills: int | None = None


def timing_start_lines() -> list[str]:
    """Return the bash lines that note the time and the children's CPU just before the payload.

    The CPU snapshot goes through a file: a ``$(times)`` would run in a forked shell, whose
    children's times start at zero. The clock is read first, so that ``date``'s own CPU is not
    counted as the payload's.
    """
    return [
        "desc_t0=$(date +%s.%N)",
        'desc_times="${TMPDIR:-/tmp}/airflow-desc-times.$$"',
        'times 2>/dev/null >"$desc_times" && { read -r desc_x; read -r desc_c0; } <"$desc_times"',
    ]


def timing_end_lines(said_by: str, *, container_usage: str | None = None) -> list[str]:
    """Return the bash lines that note the children's CPU and the time after the payload, and print them.

    :param said_by: what the printed line starts with, e.g. ``airflow-desc: job ${SLURM_JOB_ID}``
        (inside double quotes: no double quote in it).
    :param container_usage: for a payload in a podman container, the shell variable naming the file
        it wrote what it used into (:func:`~airflow_desc.slurm.script.measured_payload`): the line
        then carries it, and the file is removed.
    """
    cpu = "cpu $desc_c0 -> $desc_c1"
    lines = [
        'times 2>/dev/null >"$desc_times" && { read -r desc_x; read -r desc_c1; } <"$desc_times"',
        'rm -f -- "$desc_times"',
        "desc_t1=$(date +%s.%N)",
    ]
    if container_usage is not None:
        usage = f'"${container_usage}"'
        lines += [
            "desc_kc=; desc_km=; desc_ko=",
            f"if [ -s {usage} ]; then",
            f"  {{ read -r desc_x; read -r desc_kc; read -r desc_km; read -r desc_ko; }} <{usage}",
            "fi",
            f"if [ -n {usage} ]; then rm -f -- {usage}; fi",
        ]
        cpu += " container ${desc_kc:-unmeasured} maxrss ${desc_km:-unmeasured}"
        cpu += " oomkill ${desc_ko:-unmeasured}"
    return [*lines, f'echo "{said_by} {TIMING_MARK} wall $desc_t0 $desc_t1 {cpu}"']


def container_usage_lines(variable: str) -> list[str]:
    """Return the bash lines that make the file a podman container writes what its payload used into.

    The file (``mktemp``, in ``$TMPDIR`` or ``/tmp``) is named by ``variable`` and exported as
    :data:`~airflow_desc.slurm.script.USAGE_FILE_VAR`; podman mounts it at its own path, which a
    ``:`` or ``,`` would break: then there is none, and the line says ``container unmeasured``.

    :param variable: the shell variable to keep its path in.
    """
    return [
        f'{variable}=$(mktemp "${{TMPDIR:-/tmp}}/airflow-desc-usage.XXXXXX" 2>/dev/null)',
        f'case "${variable}" in *[:,]*) rm -f -- "${variable}"; {variable}= ;; esac',
        f'export DESC_USAGE_FILE="${variable}"',
    ]


def _clock(minutes: str, seconds: str) -> float:
    return int(minutes) * 60 + float(seconds.replace(",", "."))


def parse_payload_timing(log_tail: str) -> PayloadTiming | None:
    """Read the job script's timing line from the end of its log.

    :param log_tail: the last lines of the job's log.
    :return: the last timing line's values, or ``None`` when there is none (or it is garbled).
    """
    found = None
    for line in log_tail.splitlines():
        match = _TIMING_RE.search(line)
        if match is not None:
            found = match
    if found is None:
        return None
    wall = float(found["end"]) - float(found["start"])
    if wall < 0:
        return None
    numbers = found.groups()[2:10]
    cpu = None
    if numbers[0] is not None:
        before = _clock(numbers[0], numbers[1]) + _clock(numbers[2], numbers[3])
        after = _clock(numbers[4], numbers[5]) + _clock(numbers[6], numbers[7])
        cpu = round(max(0.0, after - before), 3)
    peak = kills = None
    if found["box"] is not None:
        container = parse_times_children(found["container"] or "")
        cpu = None if container is None or cpu is None else round(cpu + container, 3)
        peak = None if found["maxrss"] is None else int(found["maxrss"])
        kills = None if found["oomkill"] is None else int(found["oomkill"])
    return PayloadTiming(
        wall_s=round(wall, 3), cpu_s=cpu, container_max_rss_bytes=peak, container_oom_kills=kills
    )


def parse_times_children(line: str) -> float | None:
    """Read one line of bash's ``times`` (``0m2.690s 0m0.012s``): user + system seconds, or ``None``."""
    match = _TIMES_CHILDREN_RE.match(line.strip())
    if match is None:
        return None
    return round(_clock(match[1], match[2]) + _clock(match[3], match[4]), 3)


def precise_usage(
    accounting: JobAccounting, timing: PayloadTiming | None
) -> tuple[float | None, float | None]:
    """Return a single job's ``(wall-clock seconds, CPU seconds)``: the script's own where it has them.

    :param accounting: the job's sacct accounting (the fallback, and the CPU of its ``srun`` steps).
    :param timing: what the job script measured, if anything.
    """
    if timing is None:
        return accounting.elapsed_s, accounting.total_cpu_s
    if timing.cpu_s is None:
        return timing.wall_s, accounting.total_cpu_s
    steps = sum(
        row.total_cpu_s or 0.0
        for row in accounting.steps
        if row.step is not None and row.step not in _SHELL_STEPS
    )
    return timing.wall_s, round(timing.cpu_s + steps, 3)


def precise_max_rss(accounting: JobAccounting, timing: PayloadTiming | None) -> int | None:
    """Return a single job's peak memory in bytes: sacct's MaxRSS, plus its container's peak if any.

    sacct samples the job step's own processes (the podman client, for a payload in a podman
    container); the container's processes sit in a cgroup of their own, whose peak the container
    measured (:mod:`airflow_desc.slurm.timing`): the sum bounds what the job held at its peak.

    :param accounting: the job's sacct accounting.
    :param timing: what the job script measured, if anything.
    """
    peak = None if timing is None else timing.container_max_rss_bytes
    if peak is None:
        return accounting.max_rss_bytes
    return peak + (accounting.max_rss_bytes or 0)
