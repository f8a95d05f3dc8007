"""The SQL conditions of a :class:`~airflow_desc.history.filters.HistoryFilter`, shared by the queries.

Unknown workflow, variant, version, run, process or state names raise :class:`ValueError` listing
the names the history holds. Time windows select attempts by when they began: start time, else
submit time, else end time; ``since`` is inclusive, ``until`` exclusive.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from airflow_desc.history import schema
from airflow_desc.history.filters import HistoryFilter
from airflow_desc.history.records import PROCESS_STATES
from airflow_desc.history.schema import HistoryDateTime, runs, streams, workflows

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "INSTANCE",
    "attempt_filters",
    "began",
    "check_process",
    "check_state",
    "distinct_values",
    "pi",
    "plain_tuples",
    "status_filters",
    "time_column",
    "time_window",
    "to_datetime",
    "workflow_conditions",
]

_LIST_AT_MOST = 30
pi = schema.process_instances
# One process instance: its attempts differ only in (try_number, resubmit) (stream_ref implies run_ref).
INSTANCE = (pi.c.run_ref, pi.c.stream_ref, pi.c.task_id, pi.c.map_index, pi.c.process)


def began() -> sa.ColumnElement[Any]:
    """Return when an attempt began: its start time, else its submit time, else its end time."""
    return sa.func.coalesce(pi.c.start_time, pi.c.submit_time, pi.c.end_time)


def time_column(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[Any]:
    """On SQLite, the stored ISO text: pandas parses a column of it ~10x faster than rows one by one."""
    return sa.type_coerce(column, sa.String) if dialect == "sqlite" else column


def to_datetime(values: pd.Series) -> pd.Series:
    """Return a column of times (ISO text on SQLite) as pandas datetimes."""
    import pandas as pd

    return pd.to_datetime(values, format="ISO8601") if values.dtype == object else pd.to_datetime(values)


def plain_tuples(result: sa.CursorResult[Any]) -> list[tuple[Any, ...]]:
    """Return a result's rows as plain tuples."""
    # Plain tuples: pandas probes each row's attributes, which costs a Row an exception each time.
    return [tuple(row) for row in result]


def time_window(
    column: sa.ColumnElement[Any], since: datetime | None, until: datetime | None
) -> list[sa.ColumnElement[bool]]:
    """Return the conditions of ``since`` (inclusive) and ``until`` (exclusive) on ``column``."""
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


def distinct_values(conn: Connection, column: sa.ColumnElement[Any]) -> list[str]:
    """Return the distinct values of ``column`` but NULL."""
    return [v for (v,) in conn.execute(sa.select(column).distinct()) if v is not None]


def check_state(state: str | None) -> None:
    """Raise :class:`ValueError` for a state that is not one of ``PROCESS_STATES``."""
    if state is not None and state not in PROCESS_STATES:
        raise ValueError(f"unknown state {state!r}; the states are: {', '.join(PROCESS_STATES)}")


# The filter's fields that select ``workflows`` rows, in the order an unknown one is named.
_WORKFLOW_FIELDS = (("workflow", workflows.c.name), ("variant", workflows.c.variant),
                    ("version", workflows.c.version))  # fmt: skip


def workflow_conditions(selection: HistoryFilter) -> list[sa.ColumnElement[bool]]:
    """Return the conditions on ``workflows`` of a filter's workflow, variant and version."""
    wanted = ((column, getattr(selection, field)) for field, column in _WORKFLOW_FIELDS)
    return [column == value for column, value in wanted if value is not None]


def _workflow_refs(conn: Connection, selection: HistoryFilter) -> list[int] | None:
    """Return the workflows rows matching the filter (None: no filter); unknown names raise.

    The message names the first field that matches nothing among what the fields before it hold:
    the workflow, then its variants, then the versions of those.
    """
    where = workflow_conditions(selection)
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
            raise _unknown("run_id", run_id, distinct_values(conn, runs.c.run_id))
    query = sa.select(runs.c.id)
    if run_id is not None:
        query = query.where(runs.c.run_id == run_id)
    if dag_ids is not None:
        query = query.where(runs.c.dag_id.in_(sorted(set(dag_ids))))
    return [int(i) for (i,) in conn.execute(query)]


def check_process(conn: Connection, process: str | None) -> None:
    """Raise :class:`ValueError`, listing the processes, for a process the history does not hold."""
    if process is None:
        return
    found = conn.execute(sa.select(pi.c.id).where(pi.c.process == process).limit(1)).first()
    if found is None:
        raise _unknown("process", process, distinct_values(conn, pi.c.process))


def _glob(column: sa.ColumnElement[str], pattern: str, dialect: str) -> sa.ColumnElement[bool]:
    """Match ``*`` (any text, ``/`` included) and ``?`` (one character), case-sensitively."""
    if dialect == "sqlite":
        # GLOB is SQLite's case-sensitive LIKE; "[" opens a class there, so quote it.
        return column.op("GLOB")(pattern.replace("[", "[[]"))
    like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(like.replace("*", "%").replace("?", "_"), escape="\\")


def attempt_filters(conn: Connection, selection: HistoryFilter, dialect: str) -> list[sa.ColumnElement[bool]]:
    """Return the conditions on attempts (``process_instances`` joined to ``streams``) of a filter.

    Unknown names raise: workflow (and variant), run, then process; the caller checks the state
    first, before connecting.
    """
    where: list[sa.ColumnElement[bool]] = []
    workflow_refs = _workflow_refs(conn, selection)
    run_refs = _run_refs(conn, selection.run_id, selection.dag_ids)
    check_process(conn, selection.process)
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
    return where + time_window(began(), selection.since, selection.until)


def status_filters(
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
    return where + time_window(began(), selection.since, selection.until)
