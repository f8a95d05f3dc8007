"""Say why a finished job ended, in one line, from its accounting and its log tail.

The checks run in this order, first match wins:

1. COMPLETED: success.
2. The state of the job or of any step: OUT_OF_MEMORY (its MaxRSS may be tiny, the
   sampler misses the peak, so the state wins), TIMEOUT, NODE_FAIL, BOOT_FAIL,
   PREEMPTED, DEADLINE, REVOKED, UNKNOWN.
3. Out of memory without the state: a log line from the kernel or slurmstepd
   (``oom-kill``, ``Exceeded job memory limit``), a Python ``MemoryError``, or a kill
   by signal 9 with MaxRSS at >= 95% of the memory limit. The last is how a job ends
   under ``proctrack/linuxproc`` + ``JobAcctGatherParams=OverMemoryKill``: ``FAILED 0:9``,
   batch step ``CANCELLED by 0``, never OUT_OF_MEMORY. Or a podman container's own count of OOM
   kills in the script's timing line (:mod:`airflow_desc.slurm.timing`): the job's limit reaches
   the container's memory cgroup, but SLURM sees neither the kill nor the memory (the job ends
   ``FAILED`` with exit code 137).
4. slurmstepd's ``*** JOB 123 ... CANCELLED AT ... DUE TO TIME LIMIT / PREEMPTION /
   NODE FAILURE ***`` line.
5. CANCELLED: by whom.
6. Log patterns: a missing container image (named from the script's ``runs in container image``
   line or the runtime's error), disk full, other container runtime errors, segfault (signal 11,
   exit 139).
7. A Python traceback: its last line; ``FileNotFoundError`` is a missing input.
8. Any other non-zero exit, with the last log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from airflow_desc.slurm.accounting import JobAccounting
from airflow_desc.slurm.script import CONTAINER_MARKER, LOG_PREFIX
from airflow_desc.slurm.states import SlurmState, StateClass, TextEnum
from airflow_desc.slurm.timing import parse_payload_timing
from airflow_desc.slurm.units import format_memory_mb

__all__ = ["OOM_RSS_FRACTION", "Diagnosis", "Escalation", "ReasonClass", "diagnose"]

#: MaxRSS at or above this fraction of the memory limit, with a kill by signal 9, is out of memory.
OOM_RSS_FRACTION = 0.95

#: What to raise before a rerun: the time limit or the memory request.
Escalation = Literal["walltime", "memory"]


class ReasonClass(TextEnum):
    """Why a job ended, as stored in the history and shown in reports."""

    OUT_OF_MEMORY = "out-of-memory"
    TIME_LIMIT = "time-limit"
    NODE_FAILURE = "node-failure"
    CANCELLED_BY_USER = "cancelled-by-user"
    PREEMPTED = "preempted"
    CONTAINER_ERROR = "container-error"
    MISSING_INPUT = "missing-input"
    DISK_FULL = "disk-full"
    PYTHON_EXCEPTION = "python-exception"
    SEGFAULT = "segfault"
    NON_ZERO_EXIT = "non-zero-exit"
    BOOT_FAILURE = "boot-failure"
    DEADLINE = "deadline"
    UNKNOWN_STATE = "unknown-state"
    #: Reserved for output checks run after a job succeeded; :func:`diagnose` never returns it.
    OUTPUT_CHECK = "output-check"
    SUCCESS = "success"


@dataclass(frozen=True)
class Diagnosis:
    """The verdict on one finished job.

    :param reason: the class of the reason.
    :param message: one line: what happened to which job, and what to do.
    :param retryable: whether a rerun with the same resources should succeed (the
        payload was not at fault: node failure, preemption, boot failure).
    :param escalate: which resource to raise before a rerun, if any.
    """

    reason: ReasonClass
    message: str
    retryable: bool = False
    escalate: Escalation | None = None


# slurmstepd: "Detected 1 oom-kill event(s) ... killed by the cgroup out-of-memory handler" (cgroup),
# "Exceeded job memory limit", "Step 12.0 exceeded memory limit (424460 > 102400), being killed" (linuxproc).
_OOM_LOG_RE = re.compile(
    r"oom-kill|oom_kill|out-of-memory handler|exceeded (?:job |step )?memory limit", re.IGNORECASE
)
_DUE_TO_RE = re.compile(
    r"\*\*\*.*CANCELLED AT \S+ DUE TO (TIME LIMIT|PREEMPTION|NODE FAILURE)", re.IGNORECASE
)
_DISK_RE = re.compile(r"No space left on device|Disk quota exceeded|\[Errno (?:28|122)\]", re.IGNORECASE)
_CONTAINER_RES = (
    # shifter (NERSC)
    re.compile(r"^shifter(?:img)?:.*\b(?:error|fail(?:ed|ure)?)\b", re.IGNORECASE),
    re.compile(r"failed to (?:lookup|look up|pull) image|Image request failed", re.IGNORECASE),
    # apptainer / singularity pad their level names: "FATAL:   could not open image ..."
    re.compile(r"^FATAL:\s{2,}\S"),
    re.compile(r"^(?:apptainer|singularity):?\s.*\b(?:error|fatal)\b", re.IGNORECASE),
    # podman / podman-hpc
    # podman writes "Error: " so; a payload's "ERROR: could not open image x.fits" is its own.
    re.compile(r"^Error: (?i:.*(?:image|manifest|OCI runtime|crun|runc|short-name|container|podman))"),
    re.compile(r"^podman(?:-hpc)?:.*\berror\b", re.IGNORECASE),
)
# srun's own report of a step's end, written after (or, its I/O forwarded apart, among) the task's
# output: "srun: error: pm-n1: task 0: Exited with exit code 2", "srun: Job step aborted: ...".
_SRUN_STATUS_RE = re.compile(r"^srun: (?:error: \S+: tasks? [\d,\-]+: |Job step aborted|launch/)")
# A runtime's words for an image that is not there, on one of its own lines (_CONTAINER_RES):
# podman's "Error: <image>: image not known" (--pull=never) or a registry's "manifest unknown" /
# "access ... denied", shifter's "Failed to lookup Image" / "Image request failed", apptainer's
# "could not open image <path>".
_MISSING_IMAGE_RE = re.compile(
    r"image not known|manifest unknown|requested access to the resource is denied|"
    r"did not resolve to an alias|could not open image|failed to (?:lookup|look up|pull) image|"
    r"image request failed",
    re.IGNORECASE,
)
# Where a log names the image: our own line before the payload first, then the runtimes' errors.
_IMAGE_NAMED_RES = (
    re.compile(rf"\b{CONTAINER_MARKER} (?P<image>\S+)\s*$"),
    re.compile(r"^Error: (?P<image>\S+): image not known"),
    re.compile(r"initializing source (?:docker://)?(?P<image>\S+?):\s"),
    re.compile(r"(?:could not open image|failed to lookup image) (?P<image>\S+?):?(?=\s|$)", re.IGNORECASE),
)
_SEGFAULT_RE = re.compile(r"Segmentation fault|SIGSEGV|signal 11\b", re.IGNORECASE)
_TRACEBACK = "Traceback (most recent call last)"
_EXCEPTION_RE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")
_MISSING_FILE_RE = re.compile(r"No such file or directory|\[Errno 2\]")
_MAX_LINE = 240


def _one_line(text: str, limit: int = _MAX_LINE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lines(log_tail: str) -> list[str]:
    return [line.rstrip() for line in log_tail.splitlines() if line.strip()]


def _last_match(lines: list[str], pattern: re.Pattern[str]) -> str | None:
    return next((line for line in reversed(lines) if pattern.search(line.strip())), None)


def _python_exception(lines: list[str]) -> str | None:
    """Return the final ``Type: message`` line of the last traceback in the log, if any."""
    starts = [i for i, line in enumerate(lines) if _TRACEBACK in line]
    if not starts:
        return None
    for line in lines[starts[-1] + 1 :]:
        if line[:1].isspace() or line.lstrip().startswith(("^", "~")):
            continue  # a frame, its source line, or a 3.11 caret line
        if _EXCEPTION_RE.match(line.strip()):
            return line.strip()
    return None


def _signals(accounting: JobAccounting) -> set[int]:
    """Return the signals that ended the job or a step, counting 128+N exit codes as signal N."""
    found = {row.signal for row in accounting.rows if row.signal}
    found |= {row.exit_code - 128 for row in accounting.rows if row.exit_code and 128 < row.exit_code < 160}
    return found


def _memory_text(accounting: JobAccounting) -> str:
    peak, limit = accounting.max_rss_bytes, accounting.mem_limit_per_node_bytes
    if limit is None:
        return "memory request unknown" if peak is None else f"peak {format_memory_mb(peak)}"
    if peak is not None and peak >= OOM_RSS_FRACTION * limit:
        return f"peak {format_memory_mb(peak)} of {format_memory_mb(limit)} requested"
    # MaxRSS is sampled: a process killed between two samples leaves a peak far below the limit.
    recorded = (
        f" (recorded peak {format_memory_mb(peak)}, sampled before the kill)" if peak is not None else ""
    )
    return f"{format_memory_mb(limit)} requested{recorded}"


def _oom(name: str, accounting: JobAccounting, how: str) -> Diagnosis:
    return Diagnosis(
        ReasonClass.OUT_OF_MEMORY,
        f"{name} ran out of memory ({how}): {_memory_text(accounting)}; rerun with more memory "
        "(memory escalation raises the request) or with more cores on nodes with fixed memory per core",
        escalate="memory",
    )


def _time_limit(name: str, accounting: JobAccounting) -> Diagnosis:
    limit = accounting.job.time_limit_s if accounting.job is not None else None
    used = accounting.elapsed_s
    detail = ""
    if limit is not None:
        detail = f" of {_hms(limit)}" + (f" after {_hms(used)}" if used is not None else "")
    return Diagnosis(
        ReasonClass.TIME_LIMIT,
        f"{name} reached its time limit{detail}; rerun with a longer --time (walltime escalation) "
        "or make the payload checkpoint and resume",
        escalate="walltime",
    )


def _hms(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _node_failure(name: str, accounting: JobAccounting) -> Diagnosis:
    return Diagnosis(
        ReasonClass.NODE_FAILURE,
        f"{name} lost a node ({accounting.node_list or 'unknown nodes'}) to a node failure; "
        "rerun it as is, excluding that node",
        retryable=True,
    )


def _preempted(name: str) -> Diagnosis:
    return Diagnosis(
        ReasonClass.PREEMPTED,
        f"{name} was preempted by a higher-priority job; rerun it as is (or use a non-preemptible QOS)",
        retryable=True,
    )


def _by_state(name: str, accounting: JobAccounting, states: set[SlurmState]) -> Diagnosis | None:
    if SlurmState.OUT_OF_MEMORY in states:
        return _oom(name, accounting, "state OUT_OF_MEMORY")
    if SlurmState.TIMEOUT in states:
        return _time_limit(name, accounting)
    if SlurmState.NODE_FAIL in states:
        return _node_failure(name, accounting)
    if SlurmState.BOOT_FAIL in states:
        return Diagnosis(
            ReasonClass.BOOT_FAILURE,
            f"{name} could not start: its node ({accounting.node_list or 'unknown'}) failed to boot; "
            "rerun it as is",
            retryable=True,
        )
    if SlurmState.PREEMPTED in states:
        return _preempted(name)
    if SlurmState.DEADLINE in states:
        return Diagnosis(
            ReasonClass.DEADLINE,
            f"{name} could not finish before its --deadline; rerun it with a later deadline or none",
        )
    if accounting.state.state is SlurmState.REVOKED:
        return Diagnosis(
            ReasonClass.UNKNOWN_STATE,
            f"{name} was revoked here because another cluster of the federation started it; "
            "follow it on that cluster",
        )
    if accounting.state.state is SlurmState.UNKNOWN:
        return Diagnosis(
            ReasonClass.UNKNOWN_STATE,
            f"{name} ended in a state airflow-desc does not know ({accounting.state.raw!r}); "
            "check it with sacct and treat it as failed",
        )
    return None


#: Log lines that say why a payload failed, checked in this order: what to look for, and what to say.
_LOG_RULES = (
    (
        (_DISK_RE,),
        ReasonClass.DISK_FULL,
        "{name} failed writing to a full disk or exhausted quota ({line}); free space or raise the quota, "
        "then rerun",
    ),
    (
        _CONTAINER_RES,
        ReasonClass.CONTAINER_ERROR,
        "{name} failed in its container runtime ({line}); check the image name, that it is pulled on this "
        "cluster, and the runtime options",
    ),
)


def _missing_image(name: str, lines: list[str]) -> Diagnosis | None:
    line = next(
        (
            ln
            for ln in reversed(lines)
            if _MISSING_IMAGE_RE.search(ln) and any(p.search(ln.strip()) for p in _CONTAINER_RES)
        ),
        None,
    )
    if line is None:
        return None
    named = (m.group("image") for p in _IMAGE_NAMED_RES for ln in reversed(lines) if (m := p.search(ln)))
    image = next(named, None)
    which = f"image {_one_line(image, 100)}" if image else "its image"
    return Diagnosis(
        ReasonClass.CONTAINER_ERROR,
        f"{name} could not start its container: {which} is not on this cluster ({_one_line(line, 120)}); "
        "pull or build it there (podman[-hpc] pull, shifterimg pull, apptainer pull) or fix the name "
        "(the spec's resources.container, the profile's container_image)",
    )


def _from_log(name: str, accounting: JobAccounting, lines: list[str], exit_text: str) -> Diagnosis | None:
    missing = _missing_image(name, lines)
    if missing is not None:
        return missing
    for patterns, reason, what in _LOG_RULES:
        for pattern in patterns:
            line = _last_match(lines, pattern)
            if line is not None:
                return Diagnosis(reason, what.format(name=name, line=_one_line(line)))
    if 11 in _signals(accounting) or _last_match(lines, _SEGFAULT_RE) is not None:
        return Diagnosis(
            ReasonClass.SEGFAULT,
            f"{name} crashed with a segmentation fault ({exit_text}); check the software build "
            "and its inputs, and look for a core file",
        )
    exception = _python_exception(lines)
    if exception is not None:
        exc_type = exception.split(":", 1)[0].rsplit(".", 1)[-1]
        if exc_type == "FileNotFoundError" or _MISSING_FILE_RE.search(exception):
            return Diagnosis(
                ReasonClass.MISSING_INPUT,
                f"{name} could not find a file: {_one_line(exception)}; check that the upstream step "
                "produced it and the path is right, then rerun",
            )
        return Diagnosis(
            ReasonClass.PYTHON_EXCEPTION,
            f"{name} raised {_one_line(exception)}; fix the cause in the payload or its inputs, then rerun",
        )
    return None


def _memory_evidence(name: str, accounting: JobAccounting, lines: list[str]) -> Diagnosis | None:
    oom_line = _last_match(lines, _OOM_LOG_RE)
    if oom_line is not None:
        return _oom(name, accounting, f"log: {_one_line(oom_line, 120)}")
    exception = _python_exception(lines)
    # MemoryError, or a subclass such as numpy's _ArrayMemoryError.
    if exception is not None and exception.split(":", 1)[0].endswith("MemoryError"):
        return _oom(name, accounting, "Python MemoryError")
    peak, limit = accounting.max_rss_bytes, accounting.mem_limit_per_node_bytes
    if 9 in _signals(accounting) and peak is not None and limit and peak >= OOM_RSS_FRACTION * limit:
        return _oom(name, accounting, "killed by signal 9 at its memory limit")
    # A podman container's memory cgroup sits below the job's: the job's limit reaches it, but SLURM
    # sees neither its memory nor the kill; the container counted it (the script's timing line).
    timing = parse_payload_timing("\n".join(lines))
    if timing is not None and timing.container_oom_kills:
        box = timing.container_max_rss_bytes
        at = f", its container at {format_memory_mb(box)}" if box is not None else ""
        return _oom(name, accounting, f"the kernel's OOM killer killed its container's payload{at}")
    return None


def _slurmstepd_cause(name: str, accounting: JobAccounting, lines: list[str]) -> Diagnosis | None:
    line = _last_match(lines, _DUE_TO_RE)
    match = _DUE_TO_RE.search(line) if line is not None else None
    if match is None:
        return None
    cause = match.group(1).upper()
    if cause == "TIME LIMIT":
        return _time_limit(name, accounting)
    if cause == "PREEMPTION":
        return _preempted(name)
    return _node_failure(name, accounting)


def _cancelled(name: str, accounting: JobAccounting) -> Diagnosis:
    uid = accounting.cancelled_by_uid
    who = "an unknown user" if uid is None else "root or SLURM (uid 0)" if uid == 0 else f"uid {uid}"
    return Diagnosis(
        ReasonClass.CANCELLED_BY_USER, f"{name} was cancelled by {who}; rerun it if that was not intended"
    )


def _non_zero_exit(name: str, accounting: JobAccounting, lines: list[str], exit_text: str) -> Diagnosis:
    signals = _signals(accounting)
    if accounting.exit_code == 127:
        advice = "a command was not found: check the command, the setup lines and the container image"
    elif signals:
        advice = f"it was killed by signal {min(signals)}: look at the log for who sent it"
    else:
        advice = "look at the log and fix the payload or its inputs, then rerun"
    own = [line for line in lines if not line.startswith(LOG_PREFIX) and not _SRUN_STATUS_RE.match(line)]
    last = f"; last log line: {_one_line(own[-1])}" if own else ""
    return Diagnosis(ReasonClass.NON_ZERO_EXIT, f"{name} failed with {exit_text}{last}; {advice}")


def diagnose(accounting: JobAccounting, log_tail: str = "") -> Diagnosis:
    """Classify why a finished job ended.

    :param accounting: the job from :func:`~airflow_desc.slurm.accounting.group_accounting`.
    :param log_tail: the last lines of the job's output file(s), if available.
    :return: the diagnosis; ``reason`` is :attr:`ReasonClass.SUCCESS` for a job that
        COMPLETED.
    :raises ValueError: if the job has not finished yet.
    """
    state = accounting.state
    name = f"job {accounting.job_id}"
    if not state.is_terminal:
        raise ValueError(f"{name} has not finished (state {state.raw or state.state}); nothing to diagnose")
    if state.state_class is StateClass.SUCCEEDED:
        return Diagnosis(ReasonClass.SUCCESS, f"{name} completed with exit code 0")
    lines = _lines(log_tail)
    exit_text = f"exit code {accounting.exit_code}" + (
        f", signal {accounting.signal}" if accounting.signal else ""
    )
    return (
        _by_state(name, accounting, {row.state.state for row in accounting.rows})
        or _memory_evidence(name, accounting, lines)
        or _slurmstepd_cause(name, accounting, lines)
        or (_cancelled(name, accounting) if state.state is SlurmState.CANCELLED else None)
        or _from_log(name, accounting, lines, exit_text)
        or _non_zero_exit(name, accounting, lines, exit_text)
    )
