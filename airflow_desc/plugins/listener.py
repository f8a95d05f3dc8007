"""Record DESC *script* processes that run as Airflow tasks (setup / wrapup / stream creation).

SLURM jobs are recorded by their operators; Python callables that run on the worker as tasks of
their own are recorded here, by an Airflow listener the plugin registers. A task is a DESC
process when it carries a ``desc_process`` attribute (see :func:`mark_script_process`).

Airflow calls listeners only for running / success / failed / skipped (a task that skipped
itself): waiting, ready and queued counts are read live from task-instance states instead.

A skip's reason: Airflow 3.3 hands ``on_task_instance_skipped`` no exception (the task runner
only logs the ``AirflowSkipException`` message, and keeps it neither on the task instance nor in
its context). A task that knows why it skips says so with :func:`note_skip` before raising (the
workflow renderer's script operator does); any other skip is recorded with reason ``skipped``
and no message.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from airflow.listeners import hookimpl

from airflow_desc.history import ProcessRecord, default_recorder
from airflow_desc.timetables import run_survey_year

__all__ = ["DescProcess", "SkipNote", "mark_script_process", "note_skip"]

log = logging.getLogger(__name__)
ATTR = "desc_process"
SKIP_ATTR = "desc_skip"
_T = TypeVar("_T")


@dataclass(frozen=True)
class DescProcess:
    """What the history calls a task: its workflow, Pipeline II task, process and stream.

    :param process: the process name, e.g. ``setupEimageVisits`` (default: the task id).
    :param workflow: the top-level workflow (default: the DAG id).
    :param task: the Pipeline II task, e.g. ``DC1-DM12`` (default: the workflow).
    :param version: that task's version.
    :param stream: the stream path ("" at the top level).
    :param variant: the workflow variant (``imsim-dithered`` ...).
    :param workflow_version: the top-level workflow's version; with ``workflow`` and ``variant``
        it names the history's workflow, as the batch processes' records do.
    """

    process: str | None = None
    workflow: str | None = None
    task: str | None = None
    version: str = ""
    stream: str = ""
    variant: str = ""
    workflow_version: str = ""


@dataclass(frozen=True)
class SkipNote:
    """Why a task skipped itself, for its record.

    :param reason: the reason class, e.g. ``upstream-failed`` or ``skip-condition``.
    :param message: the skip's message.
    """

    reason: str
    message: str | None = None


def mark_script_process(operator: _T, **fields: Any) -> _T:
    """Mark an Airflow task as a DESC script process so that its outcomes are recorded.

    :param operator: the task (any operator; usually a ``PythonOperator`` or ``@task``).
    :param fields: :class:`DescProcess` fields.
    :return: the same operator, for chaining.
    """
    setattr(operator, ATTR, DescProcess(**fields))
    return operator


def note_skip(operator: Any, reason: str, message: str | None = None) -> None:
    """Say why ``operator``'s running instance is about to skip itself; call it before raising.

    The listener cannot see the ``AirflowSkipException`` (see the module docstring).

    :param operator: the running task.
    :param reason: the reason class, e.g. ``upstream-failed``.
    :param message: the skip's message (what the exception says).
    """
    setattr(operator, SKIP_ATTR, SkipNote(reason, message))


def _survey_year(task_instance: Any) -> int | None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    # Only the task runner's instance has its context at hand; the API server's is not ours to load.
    if not isinstance(task_instance, RuntimeTaskInstance):
        return None
    try:
        return run_survey_year(task_instance.get_template_context())
    except Exception:
        log.debug("airflow-desc: no survey year for %s", task_instance.task_id, exc_info=True)
        return None


def _record(task_instance: Any, state: str, error: object = None) -> None:
    try:
        task = getattr(task_instance, "task", None)
        meta = getattr(task, ATTR, None)
        if not isinstance(meta, DescProcess):
            return
        end = datetime.now(timezone.utc)
        start = getattr(task_instance, "start_date", None)
        message = None
        if error is not None:
            text = str(error).strip().splitlines()
            message = (
                f"{type(error).__name__}: {text[-1] if text else ''}"
                if isinstance(error, BaseException)
                else text[-1]
                if text
                else None
            )
        reason = "python-exception" if state == "failed" else None
        if state == "skipped":
            note = getattr(task, SKIP_ATTR, None)
            reason, message = (note.reason, note.message) if isinstance(note, SkipNote) else ("skipped", None)
        extra: dict[str, Any] = {}
        if meta.workflow_version:
            extra["workflow_version"] = meta.workflow_version
        year = _survey_year(task_instance)
        if year is not None:
            extra["survey_year"] = year
        map_index = getattr(task_instance, "map_index", -1)
        record = ProcessRecord(
            workflow=meta.workflow or task_instance.dag_id,
            task=meta.task or "",
            version=meta.version,
            process=meta.process or task_instance.task_id.rsplit(".", 1)[-1],
            state=state,
            dag_id=task_instance.dag_id,
            run_id=task_instance.run_id,
            task_id=task_instance.task_id,
            map_index=-1 if map_index is None else int(map_index),
            try_number=int(getattr(task_instance, "try_number", 1) or 1),
            variant=meta.variant,
            stream=meta.stream,
            process_type="script",
            reason=reason,
            message=message,
            start_time=start,
            end_time=end,
            elapsed_s=(end - start).total_seconds() if start else None,
            node=socket.gethostname(),
            extra=extra,
        )
        default_recorder().record([record])
    except Exception:  # a listener must never break the task it observes
        log.exception(
            "airflow-desc: could not record the script process %s", getattr(task_instance, "task_id", "?")
        )


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """Record a script process that succeeded."""
    _record(task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: object = None) -> None:
    """Record a script process that failed, with its error's last line."""
    _record(task_instance, "failed", error)


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    """Record a script process that skipped itself, with the reason it noted (:func:`note_skip`)."""
    _record(task_instance, "skipped")
