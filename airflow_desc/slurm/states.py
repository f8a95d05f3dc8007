"""SLURM job states and what each one means to a workflow engine.

Every state is taken from the JOB STATE CODES section of the SLURM docs
(https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES and
https://slurm.schedmd.com/sacct.html#SECTION_JOB-STATE-CODES, checked against the
man pages of slurm 22.05.8). ``squeue`` prints both the short code and the long
name; ``sacct`` prints the long name, followed by ``by <uid>`` for a cancelled job
(``CANCELLED by 1000``) and by ``+`` when a fixed-width column truncated it.

=====  ===============  =========  =====================================================
code   state            class      why
=====  ===============  =========  =====================================================
PD     PENDING          PENDING    awaiting resource allocation
CF     CONFIGURING      PENDING    allocated, nodes still booting: the payload has not
                                   started
RQ     REQUEUED         PENDING    SLURM itself requeues the *same job id*; resubmitting
                                   would run the work twice
RF     REQUEUE_FED      PENDING    same, requeued by a federation
RH     REQUEUE_HOLD     PENDING    requeued and held; it runs again once released
SE     SPECIAL_EXIT     PENDING    requeued in a special held state by site policy
                                   (EpilogSlurmctld); it runs again once released
RD     RESV_DEL_HOLD    PENDING    held because its reservation was deleted
R      RUNNING          RUNNING    has an allocation
CG     COMPLETING       RUNNING    finishing; processes may still be active
S      SUSPENDED        RUNNING    alive, CPUs released for other jobs
ST     STOPPED          RUNNING    alive, stopped with SIGSTOP, CPUs kept
RS     RESIZING         RUNNING    about to change size
SI     SIGNALING        RUNNING    being signaled
SO     STAGE_OUT        RUNNING    staging out files; not finished yet
CD     COMPLETED        SUCCEEDED  all processes ended with exit code zero
F      FAILED           FAILED     non-zero exit code or other failure
CA     CANCELLED        FAILED     cancelled by a user or an administrator
TO     TIMEOUT          FAILED     reached its time limit (escalatable: more walltime)
OOM    OUT_OF_MEMORY    FAILED     ran out of memory (escalatable: more memory)
DL     DEADLINE         FAILED     terminated on its ``--deadline``
RV     REVOKED          FAILED     federation sibling removed because another cluster
                                   started the job
NF     NODE_FAIL        RETRYABLE  one of its nodes failed: not the payload's fault
BF     BOOT_FAIL        RETRYABLE  launch failure, usually hardware
PR     PREEMPTED        RETRYABLE  preempted by a higher-priority job
(none) UNKNOWN          FAILED     any text not listed above, never a success
=====  ===============  =========  =====================================================

RETRYABLE states ended the job for a reason outside the payload, so retrying with
the same resources is free. A site may requeue a NODE_FAIL or PREEMPTED job by
itself (``JobRequeue``, ``PreemptMode=REQUEUE``): its id then goes back to PENDING,
so submit with ``--no-requeue`` (:attr:`~airflow_desc.slurm.script.JobSpec.requeue`)
when the workflow does its own retries. Unknown states are FAILED and terminal: a
job whose state cannot be read must never be counted as done.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

__all__ = [
    "ESCALATABLE_STATES",
    "SHORT_CODES",
    "STATE_CLASSES",
    "TERMINAL_STATES",
    "ParsedState",
    "SlurmState",
    "StateClass",
    "TextEnum",
    "parse_state",
]


class TextEnum(str, Enum):
    """An enum whose members read as their text: ``str(SlurmState.TIMEOUT) == "TIMEOUT"``."""

    def __str__(self) -> str:
        return str(self.value)


class SlurmState(TextEnum):
    """A SLURM job state, by its long name as ``sacct`` and ``squeue -o %T`` print it."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    PREEMPTED = "PREEMPTED"
    REQUEUED = "REQUEUED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    REQUEUE_FED = "REQUEUE_FED"
    RESIZING = "RESIZING"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    REVOKED = "REVOKED"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    #: Not a SLURM state: whatever text :func:`parse_state` could not recognise.
    UNKNOWN = "UNKNOWN"


class StateClass(TextEnum):
    """What a state means to the workflow: wait, succeed, fail, or retry for free."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYABLE = "retryable"


_S = SlurmState
_C = StateClass

#: The one table of the module docstring: each state to its class.
STATE_CLASSES: Mapping[SlurmState, StateClass] = MappingProxyType(
    {
        _S.PENDING: _C.PENDING,
        _S.CONFIGURING: _C.PENDING,
        _S.REQUEUED: _C.PENDING,
        _S.REQUEUE_FED: _C.PENDING,
        _S.REQUEUE_HOLD: _C.PENDING,
        _S.SPECIAL_EXIT: _C.PENDING,
        _S.RESV_DEL_HOLD: _C.PENDING,
        _S.RUNNING: _C.RUNNING,
        _S.COMPLETING: _C.RUNNING,
        _S.SUSPENDED: _C.RUNNING,
        _S.STOPPED: _C.RUNNING,
        _S.RESIZING: _C.RUNNING,
        _S.SIGNALING: _C.RUNNING,
        _S.STAGE_OUT: _C.RUNNING,
        _S.COMPLETED: _C.SUCCEEDED,
        _S.FAILED: _C.FAILED,
        _S.CANCELLED: _C.FAILED,
        _S.TIMEOUT: _C.FAILED,
        _S.OUT_OF_MEMORY: _C.FAILED,
        _S.DEADLINE: _C.FAILED,
        _S.REVOKED: _C.FAILED,
        _S.NODE_FAIL: _C.RETRYABLE,
        _S.BOOT_FAIL: _C.RETRYABLE,
        _S.PREEMPTED: _C.RETRYABLE,
        _S.UNKNOWN: _C.FAILED,
    }
)

#: squeue's short codes (``%t``), from the same section of the docs.
SHORT_CODES: Mapping[str, SlurmState] = MappingProxyType(
    {
        "PD": _S.PENDING,
        "CF": _S.CONFIGURING,
        "R": _S.RUNNING,
        "CG": _S.COMPLETING,
        "S": _S.SUSPENDED,
        "ST": _S.STOPPED,
        "PR": _S.PREEMPTED,
        "RQ": _S.REQUEUED,
        "RH": _S.REQUEUE_HOLD,
        "RF": _S.REQUEUE_FED,
        "RS": _S.RESIZING,
        "SI": _S.SIGNALING,
        "SO": _S.STAGE_OUT,
        "SE": _S.SPECIAL_EXIT,
        "RV": _S.REVOKED,
        "RD": _S.RESV_DEL_HOLD,
        "CD": _S.COMPLETED,
        "F": _S.FAILED,
        "CA": _S.CANCELLED,
        "TO": _S.TIMEOUT,
        "OOM": _S.OUT_OF_MEMORY,
        "NF": _S.NODE_FAIL,
        "BF": _S.BOOT_FAIL,
        "DL": _S.DEADLINE,
    }
)

#: States after which SLURM will not run this job id again by itself.
TERMINAL_STATES: frozenset[SlurmState] = frozenset(
    state
    for state, cls in STATE_CLASSES.items()
    if cls in (StateClass.SUCCEEDED, StateClass.FAILED, StateClass.RETRYABLE)
)

#: FAILED-class states that a rerun with more of one resource can fix:
#: TIMEOUT wants more walltime, OUT_OF_MEMORY more memory.
ESCALATABLE_STATES: frozenset[SlurmState] = frozenset({SlurmState.TIMEOUT, SlurmState.OUT_OF_MEMORY})

_LONG_NAMES: Mapping[str, SlurmState] = MappingProxyType(
    {state.value: state for state in SlurmState if state is not SlurmState.UNKNOWN}
)
# "CANCELLED by 1000", "CANCELLED+", "COMPLETED+": a name, then an optional uid, then an optional "+".
_STATE_RE = re.compile(r"^(?P<name>[A-Za-z_]+)(?:\s+by\s+(?P<uid>\d+))?\s*\+?$")


@dataclass(frozen=True)
class ParsedState:
    """A job state read from ``sacct`` or ``squeue`` output.

    :param state: the state; :attr:`SlurmState.UNKNOWN` when the text was not recognised.
    :param raw: the text as SLURM printed it (stripped).
    :param cancelled_by_uid: for ``CANCELLED by <uid>``, the uid that cancelled the job.
    """

    state: SlurmState
    raw: str
    cancelled_by_uid: int | None = None

    @property
    def state_class(self) -> StateClass:
        """The :class:`StateClass` of :attr:`state`."""
        return STATE_CLASSES[self.state]

    @property
    def is_terminal(self) -> bool:
        """Whether SLURM is done with this job id (see :data:`TERMINAL_STATES`)."""
        return self.state in TERMINAL_STATES


def parse_state(text: str) -> ParsedState:
    """Read a job state as ``sacct`` or ``squeue`` prints it.

    Accepts long names (``RUNNING``), squeue short codes (``R``), ``CANCELLED by 1000``
    and a trailing ``+``, in any case. Empty or unrecognised text gives
    :attr:`SlurmState.UNKNOWN`, whose class is FAILED: an unreadable state is never a
    success.

    :param text: the State field.
    :return: the parsed state, keeping the raw text.
    """
    raw = text.strip()
    match = _STATE_RE.match(raw)
    if match is None:
        return ParsedState(SlurmState.UNKNOWN, raw)
    name = match.group("name").upper()
    uid_text = match.group("uid")
    state = _LONG_NAMES.get(name) or SHORT_CODES.get(name) or SlurmState.UNKNOWN
    if uid_text is not None and state is not SlurmState.CANCELLED:
        # Only CANCELLED carries "by <uid>"; anything else is text we do not understand.
        return ParsedState(SlurmState.UNKNOWN, raw)
    return ParsedState(state, raw, int(uid_text) if uid_text is not None else None)
