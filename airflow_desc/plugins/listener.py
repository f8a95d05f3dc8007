"""Record DESC *script* processes that run as Airflow tasks (setup / wrapup / stream creation).

SLURM jobs are recorded by their operators; Python callables that run on the worker as tasks of
their own are recorded here, by an Airflow listener the plugin registers. A task is a DESC
process when it carries a ``desc_process`` attribute (see
:func:`~airflow_desc.operators.identity.mark_script_process`).

Airflow calls listeners only for running / success / failed / skipped (a task that skipped
itself): waiting, ready and queued counts are read live from task-instance states instead.

A skip's reason: Airflow 3.3 hands ``on_task_instance_skipped`` no exception (the task runner
only logs the ``AirflowSkipException`` message, and keeps it neither on the task instance nor in
its context). A task that knows why it skips says so with
:func:`~airflow_desc.operators.identity.note_skip` before raising (the
workflow renderer's script operator does); any other skip is recorded with reason ``skipped``
and no message.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timezone
from typing import Any

from airflow.listeners import hookimpl

from airflow_desc.history import default_recorder
from airflow_desc.history.records import InstanceIdentity
from airflow_desc.operators.identity import ATTR, SKIP_ATTR, DescProcess
from airflow_desc.timetables import run_survey_year
from airflow_desc.workflow.outcomes import Skip

__all__ = ["on_task_instance_failed", "on_task_instance_skipped", "on_task_instance_success"]

log = logging.getLogger(__name__)


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
            reason, message = (note.kind, note.message) if isinstance(note, Skip) else ("skipped", None)
        extra: dict[str, Any] = {}
        if meta.workflow_version:
            extra["workflow_version"] = meta.workflow_version
        year = _survey_year(task_instance)
        if year is not None:
            extra["survey_year"] = year
        map_index = getattr(task_instance, "map_index", -1)
        identity = InstanceIdentity(
            workflow=meta.workflow or task_instance.dag_id,
            task=meta.task or "",
            version=meta.version,
            process=meta.process or task_instance.task_id.rsplit(".", 1)[-1],
            dag_id=task_instance.dag_id,
            run_id=task_instance.run_id,
            task_id=task_instance.task_id,
            map_index=-1 if map_index is None else int(map_index),
            try_number=int(getattr(task_instance, "try_number", 1) or 1),
            variant=meta.variant,
            stream=meta.stream,
            process_type="script",
        )
        record = identity.attempt(
            state,
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
    """Record a script process that skipped itself, with the reason it noted (``note_skip``)."""
    _record(task_instance, "skipped")
