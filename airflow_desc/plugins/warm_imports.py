"""Imports airflow-desc once in each Airflow job process, so that the processes it forks inherit it.

Every task instance runs in a new task process that parses its DAG file first (twice for a
deferred task: at the start and when it resumes), and parsing a generated DAG file imports
airflow-desc's workflow, operators, hooks and history modules (~150-200 ms of CPU, without
counting the DAG itself: ``benchmarks/parse_cost.py``). Under LocalExecutor the task process is a
fork of a worker that the scheduler forked when it started, and the DAG processor forks a process
per file it parses; a fork inherits the modules of its parent, but what it imports itself is lost
when it exits. So the plugin's listener :func:`on_starting` imports :data:`WARM_MODULES` when an
Airflow job (scheduler, DAG processor, triggerer) starts, before the scheduler starts its
executor, and every fork gets them for free.

What it costs: the modules stay in the job's memory (shared with its forks, copy on write), and
a changed airflow-desc reaches the tasks when the job restarts (as Airflow's own code does). Task
processes themselves (``on_starting`` with a task runner), the api-server and Celery workers (not
Airflow jobs) import nothing here.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

from airflow.listeners import hookimpl

__all__ = ["WARM_MODULES", "on_starting", "warm"]

log = logging.getLogger(__name__)

#: What parsing a generated DAG file imports (the rest comes with them), and the script processes
#: of the specs in ``dags/workflows`` (a spec's own script modules are imported by its tasks).
WARM_MODULES = ("airflow_desc.workflow.render", "airflow_desc.emulate.scripts")


def warm(modules: tuple[str, ...] = WARM_MODULES) -> float:
    """Import ``modules``; return the seconds it took. A module that fails to import is logged, not raised."""
    start = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # a task process will meet the same error, and report it where it belongs
            log.exception("airflow-desc: could not import %s ahead of the task processes", name)
    return time.perf_counter() - start


@hookimpl
def on_starting(component: Any) -> None:
    """Import :data:`WARM_MODULES` when an Airflow job starts (not in a task process)."""
    from airflow.jobs.job import Job

    if isinstance(component, Job):
        took = warm()
        log.info("airflow-desc: imported %s for the job's forks in %.2f s", ", ".join(WARM_MODULES), took)
