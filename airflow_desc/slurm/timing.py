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
  other steps (``srun`` inside the script) from sacct. For a payload run by ``podman-hpc`` or
  ``podman`` (its processes are the children of podman's monitor, not of the shell) the line says
  ``cpu unmeasured`` and sacct's TotalCPU stays (on the local site it misses the container's
  processes too: runc gives them a cgroup below the step's, which SLURM does not sample).

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
    "parse_payload_timing",
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
    + rf"(?: cpu {_CLOCK} {_CLOCK} -> {_CLOCK} {_CLOCK})?"
)


@dataclass(frozen=True)
class PayloadTiming:
    """The payload's wall clock and CPU time, as its job script measured them.

    :param wall_s: wall-clock seconds from the payload's start to its end.
    :param cpu_s: user + system CPU seconds of the payload's processes; ``None``: not measured.
    """

    wall_s: float
    cpu_s: float | None


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


def timing_end_lines(said_by: str, *, measure_cpu: bool = True) -> list[str]:
    """Return the bash lines that note the children's CPU and the time after the payload, and print them.

    :param said_by: what the printed line starts with, e.g. ``airflow-desc: job ${SLURM_JOB_ID}``
        (inside double quotes: no double quote in it).
    :param measure_cpu: ``False`` when the payload's processes are not the shell's children
        (podman-hpc): the line then says ``cpu unmeasured``.
    """
    prefix = f'echo "{said_by} {TIMING_MARK} wall $desc_t0 $desc_t1'
    cpu = ' cpu $desc_c0 -> $desc_c1"' if measure_cpu else ' cpu unmeasured"'
    return [
        'times 2>/dev/null >"$desc_times" && { read -r desc_x; read -r desc_c1; } <"$desc_times"',
        'rm -f -- "$desc_times"',
        "desc_t1=$(date +%s.%N)",
        prefix + cpu,
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
    numbers = found.groups()[2:]
    cpu = None
    if numbers[0] is not None:
        before = _clock(numbers[0], numbers[1]) + _clock(numbers[2], numbers[3])
        after = _clock(numbers[4], numbers[5]) + _clock(numbers[6], numbers[7])
        cpu = round(max(0.0, after - before), 3)
    return PayloadTiming(wall_s=round(wall, 3), cpu_s=cpu)


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
