"""Record DESC *script* processes that run as Airflow tasks, and store each DAG's process plan.

SLURM jobs are recorded by their operators; Python callables that run on the worker as tasks of
their own are recorded here, by an Airflow listener the plugin registers. A task is a DESC
process when it carries a ``desc_process`` attribute (see
:func:`~airflow_desc.operators.identity.mark_script_process`).

Airflow calls listeners only for running / success / failed / skipped (a task that skipped
itself): waiting, ready and queued counts are read live from task-instance states instead.

Process plans: when a task of an airflow-desc DAG starts (``on_task_instance_running``, in the
worker, where the DAG is loaded), the listener makes the DAG's process plan
(:func:`~airflow_desc.status.dag_plans.dag_processes`: which process instances each task instance
stands for, and the workflow's order) and stores it in the history
(:func:`~airflow_desc.history.live.write_process_plan`) when the stored digest differs: one small
SELECT per task start, a write when the DAG changed. That is what the status page reads instead
of the DAG file. A history that cannot be reached costs at most its timeouts and a warning: the
task runs on regardless.

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

__all__ = [
    "on_task_instance_failed",
    "on_task_instance_running",
    "on_task_instance_skipped",
    "on_task_instance_success",
]

log = logging.getLogger(__name__)

#: DAG id -> the digest of the plan this process stored or found stored (a worker running many
#: tasks of one DAG, as ``airflow dags test`` does, asks the history once).
_PLANS_STORED: dict[str, str] = {}


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
        if meta.spec_digest:
            extra["spec_digest"] = meta.spec_digest
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


def store_plan(dag: Any) -> str | None:
    """Store the process plan of ``dag`` in the history unless it is there already; return its digest.

    ``None`` for a DAG that is not airflow-desc's (no ``desc`` tag) or a plan not stored (logged).
    Never raises: a listener must not break the task it observes.
    """
    from airflow_desc.history import default_history_store
    from airflow_desc.history.live import plan_digest, process_plan_digest, write_process_plan
    from airflow_desc.status.dag_plans import dag_processes
    from airflow_desc.status.live import DESC_TAG

    dag_id = getattr(dag, "dag_id", "?")
    try:
        if DESC_TAG not in set(getattr(dag, "tags", None) or ()):
            return None
        plan = dag_processes(dag).to_json()
        digest = plan_digest(plan)
        if _PLANS_STORED.get(dag_id) == digest:
            return digest
        store = default_history_store()
        if process_plan_digest(store.engine, dag_id) != digest:
            write_process_plan(store, dag_id, plan)
        _PLANS_STORED[dag_id] = digest
        return digest
    except Exception as exc:  # noqa: BLE001 - the task runs on; its runs show as not live meanwhile
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.warning(
            "airflow-desc: the process plan of DAG %s is not stored in the history (%s); the status "
            "page cannot count its runs in progress until a task of it stores it",
            dag_id, first,
        )  # fmt: skip
        log.debug("airflow-desc: plan of %s not stored", dag_id, exc_info=True)
        return None


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    """Store the DAG's process plan in the history when it differs from the stored one."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    # Only the task runner has the DAG loaded; elsewhere there is nothing to make a plan of.
    if not isinstance(task_instance, RuntimeTaskInstance):
        return
    dag = getattr(getattr(task_instance, "task", None), "dag", None)
    if dag is not None:
        store_plan(dag)


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
