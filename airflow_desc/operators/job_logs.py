"""Where a single job's log is, and the end of it: bounded, secrets redacted (no Airflow)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc.exceptions import ClusterError
from airflow_desc.slurm.log_tails import LOG_TAIL_LINES, redact_secrets, secret_sounding

if TYPE_CHECKING:
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.operators.job_checks import TaskLog

__all__ = ["guess_log_path", "job_log_path", "read_job_log_tail", "secret_values"]


def guess_log_path(job_id: str, state: Mapping[str, Any]) -> str | None:
    """Return the log of job ``job_id`` after the task's saved ``log_pattern`` (``.../t2-%j.out``)."""
    pattern = state.get("log_pattern")
    return pattern.replace("%j", job_id) if pattern else None


def job_log_path(job_id: str, state: Mapping[str, Any]) -> str | None:
    """Return the log of job ``job_id``: the saved one if it is the task's job, else a guess."""
    return state.get("log_path") if state.get("job_id") == job_id else guess_log_path(job_id, state)


def secret_values(env: Mapping[str, Any]) -> list[str]:
    """Return the values of the environment variables whose names sound secret (``DB_PASSWORD``)."""
    return [str(v) for k, v in env.items() if secret_sounding(k)]


def read_job_log_tail(
    hook: SlurmHook, log_path: str, *, lines: int, secrets: list[str], needed: bool, log: TaskLog
) -> str:
    """Return the end of the job's log (:data:`LOG_TAIL_LINES` lines at least, 64 KiB), secrets redacted.

    ``log_path`` is this task's own (checked when its state was read); ``secrets`` are redacted
    wherever they show. A log the diagnosis does not need (the job succeeded) is not worth failing
    the try for when it cannot be read: the task log and the history then go without it, and
    sacct's times are recorded.
    """
    try:
        tail = hook.read_tail(log_path, lines=max(LOG_TAIL_LINES, lines))
    except ClusterError as exc:
        if needed:
            raise
        log.warning("the end of %s was not read (%s); recording the job without it", log_path, exc)
        return ""
    return redact_secrets(tail, secrets)
