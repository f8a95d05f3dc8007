"""Queries of attempts, one row each: their fields, their logs, their resource usage.

* :func:`process_instances`: attempts with every :class:`ProcessRecord` field;
* :func:`attempt_logs`: where each attempt's log is and whether the history keeps its tail;
* :func:`process_usage`: what the per-process figures plot (elapsed, CPU, memory, requests);
* :func:`typical_elapsed`, :func:`process_names`, :func:`rerun_selection`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_desc.history import schema
from airflow_desc.history.filters import HistoryFilter
from airflow_desc.history.query_filters import (
    attempt_filters,
    check_process,
    check_state,
    distinct_values,
    pi,
    plain_tuples,
    time_column,
    to_datetime,
)
from airflow_desc.history.records import ProcessRecord
from airflow_desc.history.schema import runs, streams, workflows

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ATTEMPT_LOG_COLUMNS",
    "PROCESS_INSTANCE_COLUMNS",
    "USAGE_COLUMNS",
    "attempt_logs",
    "process_instances",
    "process_names",
    "process_usage",
    "rerun_selection",
    "typical_elapsed",
]

#: The columns of :func:`process_instances`: the :class:`ProcessRecord` fields (but ``log_tail``:
#: :func:`attempt_logs` reads those), then ``run_conf``, the workflow's version (``version`` is the
#: process's task's) and the run's ``spec_digest``.
PROCESS_INSTANCE_COLUMNS = (
    *(f.name for f in dataclasses.fields(ProcessRecord) if f.name != "log_tail"),
    "run_conf",
    "workflow_version",
    "spec_digest",
)
#: The columns of :func:`attempt_logs` (``tail`` only when asked for).
ATTEMPT_LOG_COLUMNS = (
    *("attempt_id", "workflow", "dag_id", "run_id", "task_id", "map_index", "stream", "process"),
    *("try_number", "resubmit", "state", "reason", "message", "cluster", "job_id", "node"),
    *("elapsed_s", "total_cpu_s", "max_rss_bytes", "log_path", "has_tail"),
)
#: The columns of :func:`process_usage`.
USAGE_COLUMNS = (
    "workflow",
    "run_id",
    "stream",
    "try_number",
    "elapsed",
    "total_cpu",
    "max_rss",
    "req_cpus",
    "req_mem",
    "req_walltime",
    "state",
    "reason",
    "cluster",
    "node",
    "end_time",
)
# Nullable integer and float fields of ProcessRecord: Int64 keeps None as <NA> instead of a float NaN.
_INT_FIELDS = (
    *("map_index", "try_number", "resubmit", "exit_code", "signal", "max_rss_bytes", "req_cpus"),
    "req_mem_bytes",
)
_FLOAT_FIELDS = ("elapsed_s", "total_cpu_s", "req_walltime_s")


def process_instances(
    engine: Engine,
    selection: HistoryFilter | None = None,
    *,
    latest_only: bool = False,
    limit: int | None = None,
) -> pd.DataFrame:
    """Return the recorded attempts, one row per attempt, in the order they were first recorded.

    :param engine: the history store's engine (:attr:`HistoryStore.engine`).
    :param selection: which attempts (every field of :class:`HistoryFilter` applies); ``None``: all.
    :param latest_only: only the latest attempt of each process instance (selected before the
        filter: ``state="failed", latest_only=True`` is the instances whose last attempt failed).
    :param limit: at most this many rows.
    :return: a DataFrame with columns :data:`PROCESS_INSTANCE_COLUMNS` (times naive, ``extra`` and
        ``run_conf`` dicts or None).
    """
    import pandas as pd

    selection = selection or HistoryFilter()
    check_state(selection.state)
    w, r, s = workflows, runs, streams
    columns: dict[str, sa.ColumnElement[Any]] = {
        "workflow": w.c.name,
        "dag_id": r.c.dag_id,
        "run_id": r.c.run_id,
        "variant": w.c.variant,
        "stream": s.c.path,
        "run_conf": r.c.conf,
        "workflow_version": w.c.version,
        "spec_digest": r.c.spec_digest,
    }
    for name in ("submit_time", "start_time", "end_time"):
        columns[name] = time_column(pi.c[name], engine.dialect.name)
    selected = [
        (columns[name] if name in columns else pi.c[name]).label(name) for name in PROCESS_INSTANCE_COLUMNS
    ]
    query = sa.select(*selected).select_from(
        pi.join(w, pi.c.workflow_ref == w.c.id)
        .join(r, pi.c.run_ref == r.c.id)
        .join(s, pi.c.stream_ref == s.c.id)
    )
    with engine.connect() as conn:
        query = query.where(*attempt_filters(conn, selection, engine.dialect.name))
        if latest_only:
            query = query.where(pi.c.latest)
        query = query.order_by(pi.c.id)
        if limit is not None:
            query = query.limit(limit)
        rows = plain_tuples(conn.execute(query))
    frame = pd.DataFrame.from_records(rows, columns=list(PROCESS_INSTANCE_COLUMNS))
    for name in ("submit_time", "start_time", "end_time"):
        frame[name] = to_datetime(frame[name])
    dtypes = {name: "Int64" for name in _INT_FIELDS} | {name: "float64" for name in _FLOAT_FIELDS}
    frame = frame.astype(dtypes)
    frame["extra"] = frame["extra"].map(lambda v: {} if v is None else v)
    return frame


def attempt_logs(
    engine: Engine,
    selection: HistoryFilter | None = None,
    *,
    try_number: int | None = None,
    attempt_id: int | None = None,
    with_tails: bool = False,
    limit: int | None = None,
) -> pd.DataFrame:
    """Return attempts with where their log is and whether the history keeps its tail.

    What the status page's drill-down lists and ``airflow-desc logs`` prints: by default the latest
    attempt of each selected process instance, in stream order.

    :param engine: the history store's engine.
    :param selection: which attempts (every field of :class:`HistoryFilter` applies; ``state`` is
        the state of the attempt shown).
    :param try_number: the attempts of this Airflow try (each SLURM job of it) instead of the latest.
    :param attempt_id: only this attempt (its ``attempt_id``), whatever else it is.
    :param with_tails: add the column ``tail`` (the kept log tail, or None).
    :param limit: at most this many rows.
    :return: a DataFrame with columns :data:`ATTEMPT_LOG_COLUMNS` (and ``tail``).
    """
    import pandas as pd

    selection = selection or HistoryFilter()
    check_state(selection.state)
    w, r, s, lt = workflows, runs, streams, schema.log_tails
    named = {"attempt_id": pi.c.id, "workflow": w.c.name, "dag_id": r.c.dag_id, "run_id": r.c.run_id,
             "stream": s.c.path, "has_tail": lt.c.attempt_ref.is_not(None)}  # fmt: skip
    columns = [*ATTEMPT_LOG_COLUMNS, *(["tail"] if with_tails else [])]
    selected = [(named[c] if c in named else lt.c.tail if c == "tail" else pi.c[c]).label(c) for c in columns]
    query = sa.select(*selected).select_from(
        pi.join(w, pi.c.workflow_ref == w.c.id)
        .join(r, pi.c.run_ref == r.c.id)
        .join(s, pi.c.stream_ref == s.c.id)
        .outerjoin(lt, lt.c.attempt_ref == pi.c.id)
    )
    with engine.connect() as conn:
        query = query.where(*attempt_filters(conn, selection, engine.dialect.name))
        if attempt_id is not None:
            query = query.where(pi.c.id == attempt_id)
        elif try_number is not None:
            query = query.where(pi.c.try_number == try_number)
        else:
            query = query.where(pi.c.latest)
        query = query.order_by(r.c.dag_id, r.c.run_id, s.c.path, pi.c.process, pi.c.try_number, pi.c.resubmit)
        if limit is not None:
            query = query.limit(limit)
        rows = plain_tuples(conn.execute(query))
    frame = pd.DataFrame.from_records(rows, columns=columns)
    numbers = {c: "Int64" for c in ("map_index", "try_number", "resubmit", "max_rss_bytes")}
    numbers |= {"elapsed_s": "float64", "total_cpu_s": "float64", "has_tail": "bool"}
    text = [c for c in columns if c not in numbers and c != "attempt_id"]
    frame[text] = frame[text].astype(object).where(frame[text].notna(), None)  # None, never NaN
    return frame.astype(numbers)


def process_usage(
    engine: Engine,
    process: str,
    selection: HistoryFilter | None = None,
    *,
    latest_only: bool = False,
) -> pd.DataFrame:
    """Return the resource usage of every attempt of ``process``: what the per-process figures plot.

    :param engine: the history store's engine.
    :param process: the process, e.g. ``processEimage``.
    :param selection: which of its attempts (the filter's ``process``, if set, must be ``process``);
        ``None``: all.
    :param latest_only: only the latest attempt of each process instance.
    :return: a DataFrame with columns :data:`USAGE_COLUMNS`, by end time (unfinished last):
        ``elapsed`` and ``total_cpu`` in seconds, ``max_rss`` and ``req_mem`` in bytes,
        ``req_walltime`` in seconds.
    """
    import pandas as pd

    selection = selection or HistoryFilter()
    if selection.process not in (None, process):
        raise TypeError(f"process_usage of {process!r} with a filter on process {selection.process!r}")
    check_state(selection.state)
    w, r, s = workflows, runs, streams
    query = sa.select(
        w.c.name.label("workflow"),
        r.c.run_id,
        s.c.path.label("stream"),
        pi.c.try_number,
        pi.c.elapsed_s.label("elapsed"),
        pi.c.total_cpu_s.label("total_cpu"),
        pi.c.max_rss_bytes.label("max_rss"),
        pi.c.req_cpus,
        pi.c.req_mem_bytes.label("req_mem"),
        pi.c.req_walltime_s.label("req_walltime"),
        pi.c.state,
        pi.c.reason,
        pi.c.cluster,
        pi.c.node,
        time_column(pi.c.end_time, engine.dialect.name).label("end_time"),
    ).select_from(
        pi.join(w, pi.c.workflow_ref == w.c.id)
        .join(r, pi.c.run_ref == r.c.id)
        .join(s, pi.c.stream_ref == s.c.id)
    )
    with engine.connect() as conn:
        check_process(conn, process)  # first: the process is what this query is about
        query = query.where(pi.c.process == process)
        others = dataclasses.replace(selection, process=None)
        query = query.where(*attempt_filters(conn, others, engine.dialect.name))
        if latest_only:
            query = query.where(pi.c.latest)
        rows = plain_tuples(conn.execute(query.order_by(pi.c.end_time.asc().nulls_last(), pi.c.id)))
    frame = pd.DataFrame.from_records(rows, columns=list(USAGE_COLUMNS))
    frame["end_time"] = to_datetime(frame["end_time"])
    for name in ("elapsed", "total_cpu", "req_walltime"):
        frame[name] = frame[name].astype("float64")
    for name in ("max_rss", "req_mem", "req_cpus"):
        frame[name] = frame[name].astype("Int64")
    return frame


def process_names(engine: Engine) -> list[str]:
    """Return the names of the processes the history holds, sorted."""
    with engine.connect() as conn:
        return sorted(distinct_values(conn, pi.c.process))


def typical_elapsed(
    engine: Engine, processes: Collection[str], *, workflow: str | None = None, sample: int = 200
) -> dict[str, float]:
    """Return the median wall clock of each process's most recent successful attempts, in seconds.

    What a bundle's pilot orders by (``estimate_s``: longest first). One indexed query per process
    (``ix_process_instances_process``: the newest ``sample`` successes by end time).

    :param engine: the history store's engine.
    :param processes: the process names.
    :param workflow: only attempts of this workflow (top-level task name); ``None``: any.
    :param sample: how many of the newest successful attempts make the median.
    :return: seconds by process name; a process with no successful attempt is left out.
    """
    found: dict[str, float] = {}
    with engine.connect() as conn:
        for process in sorted(set(processes)):
            query = sa.select(pi.c.elapsed_s).where(
                pi.c.process == process, pi.c.state == "success", pi.c.elapsed_s.is_not(None)
            )
            if workflow is not None:
                query = query.where(
                    pi.c.workflow_ref.in_(sa.select(workflows.c.id).where(workflows.c.name == workflow))
                )
            rows = (
                conn.execute(query.order_by(pi.c.end_time.desc().nulls_last()).limit(sample)).scalars().all()
            )
            values = sorted(float(v) for v in rows)
            if values:
                middle = len(values) // 2
                found[process] = (
                    values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
                )
    return found


def rerun_selection(
    engine: Engine, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int
) -> frozenset[str]:
    """Return the process instances a rerun selected for this try of a task instance.

    The selections made when the task instance was at the try before (every rerun cleared since
    then adds its own); none: the try reruns what did not succeed.

    :return: instance ids (``<stream path>:<process>``); empty when nothing was selected.
    """
    sel = schema.rerun_selections
    query = sa.select(sel.c.instances).where(
        sel.c.dag_id == dag_id, sel.c.run_id == run_id, sel.c.task_id == task_id,
        sel.c.map_index == map_index, sel.c.after_try == try_number - 1,
    )  # fmt: skip
    with engine.connect() as conn:
        chosen = conn.execute(query).scalars().all()
    return frozenset(str(i) for ids in chosen if isinstance(ids, list) for i in ids)
