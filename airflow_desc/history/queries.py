"""Queries on the history store, as pandas DataFrames (SQLAlchemy Core, the same SQL on both databases).

* :func:`process_instances`: attempts, one row per attempt, with every :class:`ProcessRecord` field;
* :func:`status_counts`: the DC1 status table: the latest attempt of each process instance counted
  by task, version, process, type and state, plus the number of attempts;
* :func:`process_usage`: what the per-process figures plot (elapsed, CPU, memory, requests).

They live by concern in :mod:`~airflow_desc.history.count_queries` (the status table),
:mod:`~airflow_desc.history.attempt_queries` (attempts, logs, usage) and
:mod:`~airflow_desc.history.query_filters` (the conditions of a filter); this module gathers them.
Each takes what to read as one :class:`~airflow_desc.history.filters.HistoryFilter` (``None``:
the whole history). Time windows (``since`` / ``until``) select attempts by when they began: start
time, else submit time, else end time; ``since`` is inclusive, ``until`` exclusive. Unknown
workflow, variant, run, process or state names raise :class:`ValueError` listing the names the
history holds; a filter field a query cannot apply raises :class:`TypeError`.
"""

from __future__ import annotations

from airflow_desc.history.attempt_queries import (
    ATTEMPT_LOG_COLUMNS,
    PROCESS_INSTANCE_COLUMNS,
    USAGE_COLUMNS,
    attempt_logs,
    process_instances,
    process_names,
    process_usage,
    rerun_selection,
    typical_elapsed,
)
from airflow_desc.history.count_queries import (
    LATEST_COLUMNS,
    STATUS_COLUMNS,
    dag_ids_of,
    known_workflows,
    latest_attempts,
    recorded_instances,
    status_counts,
)

__all__ = [
    "ATTEMPT_LOG_COLUMNS",
    "LATEST_COLUMNS",
    "PROCESS_INSTANCE_COLUMNS",
    "STATUS_COLUMNS",
    "USAGE_COLUMNS",
    "attempt_logs",
    "dag_ids_of",
    "known_workflows",
    "latest_attempts",
    "process_instances",
    "process_names",
    "process_usage",
    "recorded_instances",
    "rerun_selection",
    "status_counts",
    "typical_elapsed",
]
