"""Queries on the history store, as pandas DataFrames (SQLAlchemy Core, the same SQL on both databases).

* :func:`process_instances`: attempts, one row per attempt, with every :class:`ProcessRecord` field;
* :func:`status_counts`: the DC1 status table: the latest attempt of each process instance counted
  by task, version, process, type and state, plus the number of attempts;
* :func:`process_usage`: what the per-process figures plot (elapsed, CPU, memory, requests).

Each takes what to read as one :class:`~airflow_desc.history.filters.HistoryFilter` (``None``:
the whole history). Time windows (``since`` / ``until``) select attempts by when they began: start
time, else submit time, else end time; ``since`` is inclusive, ``until`` exclusive. Unknown
workflow, variant, run, process or state names raise :class:`ValueError` listing the names the
history holds; a filter field a query cannot apply raises :class:`TypeError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from airflow_desc.history import schema
from airflow_desc.history.filters import INSTANCE_FIELDS, HistoryFilter
from airflow_desc.history.records import INSTANCE_KEY, PROCESS_STATES, ProcessRecord
from airflow_desc.history.schema import HistoryDateTime, runs, streams, workflows

if TYPE_CHECKING:
    import pandas as pd

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
    "status_counts",
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
#: The columns of :func:`status_counts`.
STATUS_COLUMNS = ("task", "version", "process", "process_type", "state", "count", "attempts")
#: The columns of :func:`latest_attempts`.
LATEST_COLUMNS = (
    *INSTANCE_KEY,
    "try_number",
    "state",
    "task",
    "version",
    "process_type",
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
_LIST_AT_MOST = 30
# Nullable integer and float fields of ProcessRecord: Int64 keeps None as <NA> instead of a float NaN.
_INT_FIELDS = (
    *("map_index", "try_number", "resubmit", "exit_code", "signal", "max_rss_bytes", "req_cpus"),
    "req_mem_bytes",
)
_FLOAT_FIELDS = ("elapsed_s", "total_cpu_s", "req_walltime_s")

pi = schema.process_instances
# One process instance: its attempts differ only in (try_number, resubmit) (stream_ref implies run_ref).
_INSTANCE = (pi.c.run_ref, pi.c.stream_ref, pi.c.task_id, pi.c.map_index, pi.c.process)


def _began() -> sa.ColumnElement[Any]:
    return sa.func.coalesce(pi.c.start_time, pi.c.submit_time, pi.c.end_time)


def _time_column(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[Any]:
    """On SQLite, the stored ISO text: pandas parses a column of it ~10x faster than rows one by one."""
    return sa.type_coerce(column, sa.String) if dialect == "sqlite" else column


def _to_datetime(values: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.to_datetime(values, format="ISO8601") if values.dtype == object else pd.to_datetime(values)


def _tuples(result: sa.CursorResult[Any]) -> list[tuple[Any, ...]]:
    # Plain tuples: pandas probes each row's attributes, which costs a Row an exception each time.
    return [tuple(row) for row in result]


def _time_window(
    column: sa.ColumnElement[Any], since: datetime | None, until: datetime | None
) -> list[sa.ColumnElement[bool]]:
    out: list[sa.ColumnElement[bool]] = []
    if since is not None:
        out.append(column >= sa.literal(since, type_=HistoryDateTime()))
    if until is not None:
        out.append(column < sa.literal(until, type_=HistoryDateTime()))
    return out


def _unknown(kind: str, value: str, valid: Sequence[str]) -> ValueError:
    names = [n or "''" for n in sorted(valid)]
    shown = ", ".join(names[:_LIST_AT_MOST]) + (
        f", ... ({len(names)} in all)" if len(names) > _LIST_AT_MOST else ""
    )
    return ValueError(f"unknown {kind} {value!r}; the history holds: {shown or '(none)'}")


def _distinct(conn: Connection, column: sa.ColumnElement[Any]) -> list[str]:
    return [v for (v,) in conn.execute(sa.select(column).distinct()) if v is not None]


def _check_state(state: str | None) -> None:
    if state is not None and state not in PROCESS_STATES:
        raise ValueError(f"unknown state {state!r}; the states are: {', '.join(PROCESS_STATES)}")


# The filter's fields that select ``workflows`` rows, in the order an unknown one is named.
_WORKFLOW_FIELDS = (("workflow", workflows.c.name), ("variant", workflows.c.variant),
                    ("version", workflows.c.version))  # fmt: skip


def _workflow_conditions(selection: HistoryFilter) -> list[sa.ColumnElement[bool]]:
    """Return the conditions on ``workflows`` of a filter's workflow, variant and version."""
    wanted = ((column, getattr(selection, field)) for field, column in _WORKFLOW_FIELDS)
    return [column == value for column, value in wanted if value is not None]


def _workflow_refs(conn: Connection, selection: HistoryFilter) -> list[int] | None:
    """Return the workflows rows matching the filter (None: no filter); unknown names raise.

    The message names the first field that matches nothing among what the fields before it hold:
    the workflow, then its variants, then the versions of those.
    """
    where = _workflow_conditions(selection)
    if not where:
        return None
    refs = [int(i) for (i,) in conn.execute(sa.select(workflows.c.id).where(*where))]
    if refs:
        return refs
    narrowed: list[sa.ColumnElement[bool]] = []
    for kind, column in _WORKFLOW_FIELDS:
        value = getattr(selection, kind)
        if value is None:
            continue
        names = [v for (v,) in conn.execute(sa.select(column).distinct().where(*narrowed))]
        if value not in names:
            of = f" of {selection.workflow}" if selection.workflow is not None and kind != "workflow" else ""
            raise _unknown(kind + of, value, names)
        narrowed.append(column == value)
    raise AssertionError("a selection matched each field alone but not all of them")


def _run_refs(
    conn: Connection, run_id: str | None, dag_ids: Collection[str] | None = None
) -> list[int] | None:
    """Return the runs rows matching the filters (None: no filter); an unknown run id raises.

    ``dag_ids`` limits the runs to those DAGs (e.g. the ones a UI user may read): none of them
    gives an empty list, not an error.
    """
    if run_id is None and dag_ids is None:
        return None
    if run_id is not None:
        found = [int(i) for (i,) in conn.execute(sa.select(runs.c.id).where(runs.c.run_id == run_id))]
        if not found:
            raise _unknown("run_id", run_id, _distinct(conn, runs.c.run_id))
    query = sa.select(runs.c.id)
    if run_id is not None:
        query = query.where(runs.c.run_id == run_id)
    if dag_ids is not None:
        query = query.where(runs.c.dag_id.in_(sorted(set(dag_ids))))
    return [int(i) for (i,) in conn.execute(query)]


def _check_process(conn: Connection, process: str | None) -> None:
    if process is None:
        return
    found = conn.execute(sa.select(pi.c.id).where(pi.c.process == process).limit(1)).first()
    if found is None:
        raise _unknown("process", process, _distinct(conn, pi.c.process))


def _glob(column: sa.ColumnElement[str], pattern: str, dialect: str) -> sa.ColumnElement[bool]:
    """Match ``*`` (any text, ``/`` included) and ``?`` (one character), case-sensitively."""
    if dialect == "sqlite":
        # GLOB is SQLite's case-sensitive LIKE; "[" opens a class there, so quote it.
        return column.op("GLOB")(pattern.replace("[", "[[]"))
    like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(like.replace("*", "%").replace("?", "_"), escape="\\")


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
    _check_state(selection.state)
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
        columns[name] = _time_column(pi.c[name], engine.dialect.name)
    selected = [
        (columns[name] if name in columns else pi.c[name]).label(name) for name in PROCESS_INSTANCE_COLUMNS
    ]
    query = sa.select(*selected).select_from(
        pi.join(w, pi.c.workflow_ref == w.c.id)
        .join(r, pi.c.run_ref == r.c.id)
        .join(s, pi.c.stream_ref == s.c.id)
    )
    with engine.connect() as conn:
        query = query.where(*_attempt_filters(conn, selection, engine.dialect.name))
        if latest_only:
            query = query.where(pi.c.latest)
        query = query.order_by(pi.c.id)
        if limit is not None:
            query = query.limit(limit)
        rows = _tuples(conn.execute(query))
    frame = pd.DataFrame.from_records(rows, columns=list(PROCESS_INSTANCE_COLUMNS))
    for name in ("submit_time", "start_time", "end_time"):
        frame[name] = _to_datetime(frame[name])
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
    _check_state(selection.state)
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
        query = query.where(*_attempt_filters(conn, selection, engine.dialect.name))
        if attempt_id is not None:
            query = query.where(pi.c.id == attempt_id)
        elif try_number is not None:
            query = query.where(pi.c.try_number == try_number)
        else:
            query = query.where(pi.c.latest)
        query = query.order_by(r.c.dag_id, r.c.run_id, s.c.path, pi.c.process, pi.c.try_number, pi.c.resubmit)
        if limit is not None:
            query = query.limit(limit)
        rows = _tuples(conn.execute(query))
    frame = pd.DataFrame.from_records(rows, columns=columns)
    numbers = {c: "Int64" for c in ("map_index", "try_number", "resubmit", "max_rss_bytes")}
    numbers |= {"elapsed_s": "float64", "total_cpu_s": "float64", "has_tail": "bool"}
    text = [c for c in columns if c not in numbers and c != "attempt_id"]
    frame[text] = frame[text].astype(object).where(frame[text].notna(), None)  # None, never NaN
    return frame.astype(numbers)


def _attempt_filters(
    conn: Connection, selection: HistoryFilter, dialect: str
) -> list[sa.ColumnElement[bool]]:
    """Return the conditions on attempts (``process_instances`` joined to ``streams``) of a filter.

    Unknown names raise: workflow (and variant), run, then process; the caller checks the state
    first, before connecting.
    """
    where: list[sa.ColumnElement[bool]] = []
    workflow_refs = _workflow_refs(conn, selection)
    run_refs = _run_refs(conn, selection.run_id, selection.dag_ids)
    _check_process(conn, selection.process)
    if workflow_refs is not None:
        where.append(pi.c.workflow_ref.in_(workflow_refs))
    if run_refs is not None:
        where.append(pi.c.run_ref.in_(run_refs))
    for column, value in (
        (pi.c.process, selection.process),
        (pi.c.state, selection.state),
        (pi.c.reason, selection.reason),
        (pi.c.cluster, selection.cluster),
        (pi.c.node, selection.node),
    ):
        if value is not None:
            where.append(column == value)
    if selection.stream_glob is not None:
        where.append(_glob(streams.c.path, selection.stream_glob, dialect))
    return where + _time_window(_began(), selection.since, selection.until)


def status_counts(engine: Engine, selection: HistoryFilter | None = None) -> pd.DataFrame:
    """Return the status table: the latest attempt of each process instance, counted.

    One row per (task, version, process, process_type, state) holding at least one instance;
    ``count`` is the number of instances whose latest attempt is in that state, ``attempts`` the
    number of attempts of those instances (all tries). Summed from ``instance_counts``, which the
    writer keeps per run in the transaction of each attempt (a few thousand rows, whatever the
    number of attempts); with a time window (``since`` / ``until``), counted from the attempts
    themselves: the grouped partial index of latest attempts, plus the superseded attempts joined
    to their instance's latest one.

    :param engine: the history store's engine.
    :param selection: which instances, by :data:`~airflow_desc.history.filters.INSTANCE_FIELDS`
        only (``since`` / ``until``: when an instance's latest attempt began); ``None``: all.
    :return: a DataFrame with columns :data:`STATUS_COLUMNS`, sorted by task, version, process, state.
    :raises TypeError: when the filter narrows by another field (process, state ...).
    """
    selection = selection or HistoryFilter()
    selection.require_only(INSTANCE_FIELDS, "status_counts")
    with engine.connect() as conn:
        if selection.since is None and selection.until is None:
            query = _summed_counts(_status_filters(conn, selection, schema.instance_counts))
        else:
            query = _counted_attempts(_status_filters(conn, selection))
        rows = _tuples(conn.execute(query))
    return _status_frame(rows)


def _summed_counts(where: Sequence[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """Return the status table's query on ``instance_counts``."""
    ic = schema.instance_counts
    keys = [ic.c.task, ic.c.version, ic.c.process, ic.c.process_type, ic.c.state]
    query = sa.select(*keys, sa.func.sum(ic.c.instances), sa.func.sum(ic.c.attempts)).where(*where)
    return query.group_by(*keys).having(sa.func.sum(ic.c.instances) > 0).order_by(*keys)


def _counted_attempts(where: Sequence[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """Return the status table's query on the attempts: latest ones grouped, superseded ones joined."""
    old = pi.alias("superseded")
    same_instance = [getattr(old.c, c.name) == c for c in _INSTANCE]
    keys = [pi.c.task, pi.c.version, pi.c.process, pi.c.process_type, pi.c.state]
    latest = sa.select(*keys, sa.func.count().label("count"), sa.func.count().label("attempts"))
    earlier = sa.select(*keys, sa.literal(0).label("count"), sa.func.count().label("attempts"))
    earlier = earlier.select_from(old.join(pi, sa.and_(*same_instance)))
    both = sa.union_all(
        latest.where(pi.c.latest, *where).group_by(*keys),
        earlier.where(sa.not_(old.c.latest), pi.c.latest, *where).group_by(*keys),
    ).subquery("counted")
    out = [both.c[k.name] for k in keys]
    query = sa.select(*out, sa.func.sum(both.c["count"]), sa.func.sum(both.c.attempts))
    return query.group_by(*out).order_by(*out)


def known_workflows(engine: Engine, *, dag_ids: Collection[str] | None = None) -> pd.DataFrame:
    """Return the workflows the history holds (columns ``name, variant, version``), sorted.

    :param engine: the history store's engine.
    :param dag_ids: only workflows with runs of these DAGs.
    """
    import pandas as pd

    query = sa.select(workflows.c.name, workflows.c.variant, workflows.c.version).distinct()
    if dag_ids is not None:
        with_runs = sa.select(runs.c.workflow_ref).where(runs.c.dag_id.in_(sorted(set(dag_ids))))
        query = query.where(workflows.c.id.in_(with_runs))
    with engine.connect() as conn:
        rows = _tuples(
            conn.execute(query.order_by(workflows.c.name, workflows.c.variant, workflows.c.version))
        )
    return pd.DataFrame.from_records(rows, columns=["name", "variant", "version"])


def dag_ids_of(engine: Engine, selection: HistoryFilter | None = None) -> list[str]:
    """Return the DAG ids of the runs a selection covers (as :func:`status_counts` filters), sorted.

    Unknown names give no DAGs here (:func:`status_counts` is the one that says so). The time
    window is not applied: a DAG's runs are all of its runs.

    :param engine: the history store's engine.
    :param selection: as for :func:`status_counts`; ``None``: all.
    """
    selection = selection or HistoryFilter()
    selection.require_only(INSTANCE_FIELDS, "dag_ids_of")
    query = sa.select(runs.c.dag_id).distinct().join(workflows, workflows.c.id == runs.c.workflow_ref)
    query = query.where(*_workflow_conditions(selection))
    if selection.run_id is not None:
        query = query.where(runs.c.run_id == selection.run_id)
    if selection.dag_ids is not None:
        query = query.where(runs.c.dag_id.in_(sorted(selection.dag_ids)))
    with engine.connect() as conn:
        return sorted(str(d) for (d,) in conn.execute(query))


def process_names(engine: Engine) -> list[str]:
    """Return the names of the processes the history holds, sorted."""
    with engine.connect() as conn:
        return sorted(_distinct(conn, pi.c.process))


def latest_attempts(
    engine: Engine,
    dag_runs: Sequence[tuple[str, str]],
    *,
    task_ids: Sequence[str] | None = None,
    processes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Return the latest recorded attempt of each process instance of some DAG runs.

    What :func:`airflow_desc.status.merge.merge_live` needs to tell which live task instances
    already have a record, and of which try.

    :param engine: the history store's engine.
    :param dag_runs: ``(dag_id, run_id)`` pairs; runs the history does not hold are ignored.
    :param task_ids: only attempts of these Airflow tasks (the live ones).
    :param processes: only these processes (the live ones: a bundle's nested sub-tasks, most of
        a campaign's instances, are not).
    :return: a DataFrame with columns :data:`LATEST_COLUMNS`, one row per process instance.
    """
    import pandas as pd

    wanted = set(dag_runs)
    rows: list[tuple[Any, ...]] = []
    columns = [
        runs.c.dag_id, runs.c.run_id, pi.c.task_id, pi.c.map_index, streams.c.path, pi.c.process,
        pi.c.try_number, pi.c.state, pi.c.task, pi.c.version, pi.c.process_type,
    ]  # fmt: skip
    joined = pi.join(runs, runs.c.id == pi.c.run_ref).join(streams, streams.c.id == pi.c.stream_ref)
    with engine.connect() as conn:
        refs = [
            ref
            for ref, dag_id, run_id in conn.execute(sa.select(runs.c.id, runs.c.dag_id, runs.c.run_id))
            if (dag_id, run_id) in wanted
        ]
        for ref in refs:
            query = sa.select(*columns).select_from(joined).where(pi.c.latest, pi.c.run_ref == ref)
            if task_ids is not None:
                query = query.where(pi.c.task_id.in_(sorted(set(task_ids))))
            if processes is not None:
                query = query.where(pi.c.process.in_(sorted(set(processes))))
            rows.extend(_tuples(conn.execute(query)))
    return pd.DataFrame.from_records(rows, columns=list(LATEST_COLUMNS))


def _status_filters(
    conn: Connection, selection: HistoryFilter, table: sa.Table = pi
) -> list[sa.ColumnElement[bool]]:
    """Return the conditions of a status selection on ``table``'s ``workflow_ref`` and ``run_ref``.

    The time window applies to ``process_instances`` only (``instance_counts`` has no times).
    """
    where: list[sa.ColumnElement[bool]] = []
    workflow_refs = _workflow_refs(conn, selection)
    run_refs = _run_refs(conn, selection.run_id, selection.dag_ids)
    if workflow_refs is not None:
        where.append(table.c.workflow_ref.in_(workflow_refs))
    if run_refs is not None:
        where.append(table.c.run_ref.in_(run_refs))
    if table is not pi:
        return where
    return where + _time_window(_began(), selection.since, selection.until)


def _status_frame(rows: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=list(STATUS_COLUMNS))
    return frame.astype({"count": "int64", "attempts": "int64"})


def _status_counts_window(engine: Engine, selection: HistoryFilter | None = None) -> pd.DataFrame:
    """:func:`status_counts` from the attempts alone (a window over each instance), ignoring ``latest``.

    The reference the tests hold :func:`status_counts` to; ~10x slower at a million attempts.
    """
    instance = list(_INSTANCE)
    window: list[sa.ColumnElement[Any]] = [
        pi.c.task,
        pi.c.version,
        pi.c.process,
        pi.c.process_type,
        pi.c.state,
        _began().label("began"),
        sa.func.row_number()
        .over(partition_by=instance, order_by=(pi.c.try_number.desc(), pi.c.resubmit.desc()))
        .label("newest"),
        sa.func.count().over(partition_by=instance).label("tries"),
    ]
    selection = selection or HistoryFilter()
    selection.require_only(INSTANCE_FIELDS, "_status_counts_window")
    since, until = selection.since, selection.until
    with engine.connect() as conn:
        # The window applies to each instance's latest attempt, below, not to every attempt.
        where = _status_filters(conn, dataclasses.replace(selection, since=None, until=None))
        ranked = sa.select(*window).where(*where).subquery("ranked")
        keys = [ranked.c.task, ranked.c.version, ranked.c.process, ranked.c.process_type, ranked.c.state]
        query = (
            sa.select(*keys, sa.func.count(), sa.func.sum(ranked.c.tries))
            .where(ranked.c.newest == 1, *_time_window(ranked.c.began, since, until))
            .group_by(*keys)
            .order_by(*keys)
        )
        rows = _tuples(conn.execute(query))
    return _status_frame(rows)


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
    _check_state(selection.state)
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
        _time_column(pi.c.end_time, engine.dialect.name).label("end_time"),
    ).select_from(
        pi.join(w, pi.c.workflow_ref == w.c.id)
        .join(r, pi.c.run_ref == r.c.id)
        .join(s, pi.c.stream_ref == s.c.id)
    )
    with engine.connect() as conn:
        _check_process(conn, process)  # first: the process is what this query is about
        query = query.where(pi.c.process == process)
        others = dataclasses.replace(selection, process=None)
        query = query.where(*_attempt_filters(conn, others, engine.dialect.name))
        if latest_only:
            query = query.where(pi.c.latest)
        rows = _tuples(conn.execute(query.order_by(pi.c.end_time.asc().nulls_last(), pi.c.id)))
    frame = pd.DataFrame.from_records(rows, columns=list(USAGE_COLUMNS))
    frame["end_time"] = _to_datetime(frame["end_time"])
    for name in ("elapsed", "total_cpu", "req_walltime"):
        frame[name] = frame[name].astype("float64")
    for name in ("max_rss", "req_mem", "req_cpus"):
        frame[name] = frame[name].astype("Int64")
    return frame
