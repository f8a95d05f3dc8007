"""Record DESC *script* processes that run as Airflow tasks (setup / wrapup / stream creation).

SLURM jobs are recorded by their operators; Python callables that run on the worker as tasks of
their own are recorded here, by an Airflow listener the plugin registers. A task is a DESC
process when it carries a ``desc_process`` attribute (see :func:`mark_script_process`).

Airflow calls listeners only for running / success / failed / skipped (a task that skipped
itself): waiting, ready and queued counts are read live from task-instance states instead.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from airflow.listeners import hookimpl

from airflow_desc.history import ProcessRecord, default_recorder

__all__ = ["DescProcess", "mark_script_process"]

log = logging.getLogger(__name__)
ATTR = "desc_process"
_T = TypeVar("_T")


@dataclass(frozen=True)
class DescProcess:
    """What the history calls a task: its workflow, Pipeline II task, process and stream.

    :param process: the process name, e.g. ``setupEimageVisits`` (default: the task id).
    :param workflow: the top-level workflow (default: the DAG id).
    :param task: the Pipeline II task, e.g. ``DC1-DM12`` (default: the workflow).
    :param version: that task's version.
    :param stream: the stream path ("" at the top level).
    """

    process: str | None = None
    workflow: str | None = None
    task: str | None = None
    version: str = ""
    stream: str = ""


def mark_script_process(operator: _T, **fields: Any) -> _T:
    """Mark an Airflow task as a DESC script process so that its outcomes are recorded.

    :param operator: the task (any operator; usually a ``PythonOperator`` or ``@task``).
    :param fields: :class:`DescProcess` fields.
    :return: the same operator, for chaining.
    """
    setattr(operator, ATTR, DescProcess(**fields))
    return operator


def _record(task_instance: Any, state: str, error: object = None) -> None:
    try:
        meta = getattr(getattr(task_instance, "task", None), ATTR, None)
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
            stream=meta.stream,
            process_type="script",
            reason="python-exception" if state == "failed" else None,
            message=message,
            start_time=start,
            end_time=end,
            elapsed_s=(end - start).total_seconds() if start else None,
            node=socket.gethostname(),
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
    """Record a script process that skipped itself."""
    _record(task_instance, "skipped")
