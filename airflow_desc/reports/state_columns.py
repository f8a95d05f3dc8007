"""Which status-table column counts an Airflow task-instance state, or a SLURM job state, without pandas.

The tables :mod:`airflow_desc.reports.status` documents (its module docstring says why each state
goes where) and re-exports; here so that the live merge of ``airflow-desc status``
(:mod:`airflow_desc.status.merge_rows`) maps states without importing pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from airflow_desc.slurm.states import SlurmState, parse_state

__all__ = ["AIRFLOW_STATE_COLUMN", "SLURM_STATE_COLUMN", "airflow_state_column", "slurm_state_column"]

#: The Airflow task-instance state (``None`` for none) of a process that is an Airflow task, to the
#: column that counts it; ``None``: not counted. See the module docstring for why.
AIRFLOW_STATE_COLUMN: Mapping[str | None, str | None] = MappingProxyType(
    {
        None: "Waiting",
        "scheduled": "Ready",
        "queued": "Queued",
        "running": "Running",
        "deferred": "Submitted",
        "up_for_reschedule": "Submitted",
        "up_for_retry": "Waiting",
        "restarting": "Cancelling",
        "awaiting_input": "Waiting",
        "success": "Success",
        "failed": "Failed",
        "upstream_failed": "Skipped",
        "skipped": "Skipped",
        "removed": None,
    }
)

_S = SlurmState
#: Each SLURM job state (long name) to the column that counts it; ``CANCELLED`` is the workflow
#: user's own cancel (:func:`slurm_state_column` tells an admin's apart).
SLURM_STATE_COLUMN: Mapping[str, str] = MappingProxyType(
    {
        **{
            s.value: "Submitted"
            for s in (
                _S.PENDING,
                _S.CONFIGURING,
                _S.REQUEUED,
                _S.REQUEUE_FED,
                _S.REQUEUE_HOLD,
                _S.SPECIAL_EXIT,
                _S.RESV_DEL_HOLD,
            )
        },
        **{
            s.value: "Running"
            for s in (
                _S.RUNNING,
                _S.COMPLETING,
                _S.SUSPENDED,
                _S.STOPPED,
                _S.RESIZING,
                _S.SIGNALING,
                _S.STAGE_OUT,
            )
        },
        _S.COMPLETED.value: "Success",
        _S.FAILED.value: "Failed",
        **{
            s.value: "Terminated"
            for s in (
                _S.TIMEOUT,
                _S.OUT_OF_MEMORY,
                _S.NODE_FAIL,
                _S.BOOT_FAIL,
                _S.PREEMPTED,
                _S.DEADLINE,
                _S.REVOKED,
            )
        },
        _S.CANCELLED.value: "Cancelled",
        _S.UNKNOWN.value: "Failed",
    }
)


def airflow_state_column(state: str | None) -> str | None:
    """Return the column that counts a process in this Airflow task-instance state.

    :param state: the task-instance state (a ``TaskInstanceState`` or its value), ``None`` for none.
    :return: one of :data:`STATE_COLUMNS`, or ``None`` for a removed task (not counted).
    :raises ValueError: for a state this table does not know (a newer Airflow): add it to
        :data:`AIRFLOW_STATE_COLUMN`.
    """
    key = None if state is None else str(getattr(state, "value", state)).lower()
    if key not in AIRFLOW_STATE_COLUMN:
        raise ValueError(f"unknown Airflow task-instance state {state!r}: add it to AIRFLOW_STATE_COLUMN")
    return AIRFLOW_STATE_COLUMN[key]


def slurm_state_column(text: str, *, job_uid: int | None = None) -> str:
    """Return the column that counts a SLURM job in this state, as ``sacct`` or ``squeue`` prints it.

    :param text: the State field: ``RUNNING``, ``R``, ``CANCELLED by 1000``, ``TIMEOUT+`` ...
    :param job_uid: the uid the job ran as. ``CANCELLED by <uid>`` is Cancelled when that uid is
        ``job_uid`` and Terminated otherwise (an admin, root, SLURM); without ``job_uid``, or when
        SLURM does not say who, it is Cancelled.
    :return: one of :data:`STATE_COLUMNS`; unreadable text is Failed.
    """
    parsed = parse_state(text)
    if (
        parsed.state is SlurmState.CANCELLED
        and job_uid is not None
        and parsed.cancelled_by_uid is not None
        and parsed.cancelled_by_uid != job_uid
    ):
        return "Terminated"
    return SLURM_STATE_COLUMN[parsed.state.value]
