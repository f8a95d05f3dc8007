"""A guard in the scheduler against Airflow's resume-after-defer race: a deferred task failed for nothing.

When a deferrable task defers (every generated batch and bundle task does, to wait for its SLURM
job), its worker process exits cleanly and the executor reports **success** for that try. When the
job is short, the trigger fires at once and the task instance goes back to ``scheduled``, then
``queued``, then ``running``, with the same try number, its ``next_method`` set. If the scheduler
reads the executor's success from the deferral exit only then (a loaded scheduler reads it seconds
later), Airflow takes the task for killed outside Airflow ("finished with state success, but the
task instance's state attribute is queued") and fails it, although its job ran and its resumed
try is about to record it. Airflow 3.3.2 recognises the stale event only while the task instance
is ``scheduled`` (apache/airflow#66431); ``queued`` is fixed on Airflow's main branch
(apache/airflow#68741, not released in 3.3.2) and ``running`` is open (apache/airflow#72716).
benchmarks/dc1_scale.py met it in 6 of 15 runs' first task (15 DC1 runs triggered at once, under
LocalExecutor): those runs failed at once, and the history had no record of why.

:func:`install` wraps ``SchedulerJobRunner.process_executor_events``: before Airflow reads the
executor's events, a **success** of a task instance whose same try is ``scheduled``, ``queued`` or
``running`` with ``next_method`` set is dropped (:func:`stale_defer_exits`): it can only be the
deferral exit's (the resumed try reports its own end through the Execution API; a task killed
outside Airflow reports failed, not success). Everything else goes to Airflow unchanged. The
plugin's listener :func:`on_starting` installs it in every Airflow job process (scheduler,
triggerer, dag-processor); only the scheduler calls the wrapped method.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.listeners import hookimpl

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from sqlalchemy.orm import Session

__all__ = ["CurrentTry", "install", "on_starting", "stale_defer_exits"]

log = logging.getLogger(__name__)

#: Marks the wrapped method, so that installing twice wraps once.
_GUARDED = "_airflow_desc_stale_defer_guard"
#: Task instance states in which a deferred task instance is being resumed.
_RESUMING = ("scheduled", "queued", "running")


class CurrentTry(NamedTuple):
    """What the metadata DB says of a task instance now.

    :param try_number: its try number.
    :param state: its state.
    :param next_method: set while a deferred try is being resumed.
    """

    try_number: int
    state: str | None
    next_method: str | None


def stale_defer_exits(
    events: Mapping[Any, tuple[Any, Any]], current: Mapping[tuple[str, str, str, int], CurrentTry]
) -> list[TaskInstanceKey]:
    """Return the keys of ``events`` that are a deferral exit's success seen after the task resumed.

    :param events: the executor's event buffer: key -> (state, info).
    :param current: the task instances of those keys, by primary key (dag, task, run, map index).
    """
    stale = []
    for key, (state, _) in events.items():
        primary = getattr(key, "primary", None)
        if primary is None or str(state) != "success" or primary not in current:
            continue
        now = current[primary]
        if now.try_number == key.try_number and now.state in _RESUMING and now.next_method is not None:
            stale.append(key)
    return stale


def _current_tries(
    keys: Iterable[TaskInstanceKey], session: Session
) -> dict[tuple[str, str, str, int], CurrentTry]:
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import select

    wanted = list(keys)
    where = TI.filter_for_tis(wanted)
    if where is None:
        return {}
    rows = session.execute(
        select(TI.dag_id, TI.task_id, TI.run_id, TI.map_index, TI.try_number, TI.state, TI.next_method).where(
            where
        )
    )
    return {
        (dag_id, task_id, run_id, map_index): CurrentTry(
            int(try_number), None if state is None else str(state), next_method
        )
        for dag_id, task_id, run_id, map_index, try_number, state, next_method in rows
    }


def drop_stale_defer_exits(executor: Any, session: Session) -> list[TaskInstanceKey]:
    """Drop the stale deferral-exit successes from ``executor``'s event buffer; return their keys."""
    from airflow.models.taskinstancekey import TaskInstanceKey

    buffer = executor.event_buffer
    successes = {
        key: value
        for key, value in buffer.items()
        if isinstance(key, TaskInstanceKey) and str(value[0]) == "success"
    }
    if not successes:
        return []
    stale = stale_defer_exits(successes, _current_tries(successes, session))
    for key in stale:
        buffer.pop(key, None)
        log.info(
            "airflow-desc: ignored the executor's success of %s: it is the deferral exit's, read after the "
            "trigger resumed the task instance (apache/airflow#68741, #72716)",
            key,
        )
    return stale


def install() -> bool:
    """Wrap ``SchedulerJobRunner.process_executor_events`` with the guard; False if it already is."""
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    method = SchedulerJobRunner.__dict__["process_executor_events"]
    original = method.__func__
    if getattr(original, _GUARDED, False):
        return False

    @functools.wraps(original)
    def guarded(cls: type, *args: Any, **kwargs: Any) -> int:
        executor = kwargs["executor"] if "executor" in kwargs else args[0]
        session = kwargs["session"] if "session" in kwargs else args[3]
        try:
            drop_stale_defer_exits(executor, session)
        except Exception:  # the guard must never stop the scheduler: Airflow reads the events as it would
            log.exception("airflow-desc: the stale deferral-exit guard failed; events passed on unchanged")
        return int(original(cls, *args, **kwargs))

    setattr(guarded, _GUARDED, True)
    SchedulerJobRunner.process_executor_events = classmethod(guarded)  # type: ignore[method-assign,assignment]
    return True


@hookimpl
def on_starting(component: Any) -> None:
    """Install the guard when an Airflow job (the scheduler's among them) starts."""
    from airflow.jobs.job import Job

    if isinstance(component, Job) and install():
        log.info("airflow-desc: guard against stale deferral-exit successes installed")
