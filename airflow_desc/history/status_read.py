"""The status table's counts through the DBAPI alone (sqlite3, psycopg2): a reader's start-up.

``airflow-desc status --no-live`` is a fraction of a second of work after half a second of
importing SQLAlchemy and pandas. :func:`summed_counts` runs the query of
:func:`~airflow_desc.history.queries.status_counts` on ``instance_counts`` with no SQLAlchemy (a
test holds the two equal on SQLite and PostgreSQL), connecting with the history's timeouts
(:func:`~airflow_desc.history.timeouts.connect_keywords`). It answers the usual question only: a
history named by a URL, a connection id whose URI is in ``AIRFLOW_CONN_<ID>``, or the embedded
SQLite, at the head revision, selected by workflow, variant, version, run and DAGs. Anything else
(a connection only Airflow resolves, a history not yet there or not upgraded, a name the history
does not hold, a time window) gives None, and the caller takes the SQLAlchemy path, which says
what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history import default_sqlite_url, history_conn_id
from airflow_desc.history.desc_config import connection_uri_from_environment
from airflow_desc.history.filters import INSTANCE_FIELDS, HistoryFilter
from airflow_desc.history.timeouts import connect_keywords

__all__ = ["COUNT_KEYS", "counts_of", "dbapi_connection", "open_dbapi", "summed_counts"]

#: The grouping columns of the counts, in the order of ``status_counts``' columns.
COUNT_KEYS = ("task", "version", "process", "process_type", "state")
# Alembic's version table of the history (engine.VERSION_TABLE, which imports SQLAlchemy).
_VERSION_TABLE = "desc_history_alembic_version"
_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg2")

CountRow = tuple[str, str, str, str, str, int, int]


def summed_counts(
    url_or_conn_id: str | None, selection: HistoryFilter | None = None
) -> list[CountRow] | None:
    """Return the rows of :func:`~airflow_desc.history.queries.status_counts`, or None to ask it instead.

    :param url_or_conn_id: as for :func:`~airflow_desc.history.open_history`.
    :param selection: which instances, by :data:`~airflow_desc.history.filters.INSTANCE_FIELDS`.
    :return: ``(task, version, process, process_type, state, count, attempts)`` tuples, sorted.
    :raises HistoryUnavailable: when a PostgreSQL history cannot be reached (down, refused login).
    """
    selection = selection or HistoryFilter()
    selection.require_only(INSTANCE_FIELDS, "summed_counts")
    if selection.since is not None or selection.until is not None:
        return None
    opened = open_dbapi(url_or_conn_id)
    if opened is None:
        return None
    conn, placeholder, errors = opened
    try:
        return counts_of(conn.cursor(), placeholder, selection)
    except errors:  # no version table, a table missing ...: SQLAlchemy's path says what
        return None
    finally:
        conn.close()


def counts_of(cursor: Any, p: str, selection: HistoryFilter) -> list[CountRow] | None:
    """Return :func:`summed_counts`' rows through an open DBAPI cursor (placeholder ``p``); None: ask it.

    The DBAPI's errors (no version table ...) are the caller's to catch.
    """

    def column(sql: str, *args: Any) -> list[Any]:
        cursor.execute(sql.replace("?", p), args)
        return [row[0] for row in cursor.fetchall()]

    from airflow_desc.history.migrations import HEAD_REVISION

    if column(f"SELECT version_num FROM {_VERSION_TABLE}") != [HEAD_REVISION]:
        return None
    where, args = [], []
    named = [(c, getattr(selection, f)) for c, f in (("name", "workflow"), ("variant", "variant"),
                                                     ("version", "version"))]  # fmt: skip
    named = [(c, v) for c, v in named if v is not None]
    if named:
        refs = column("SELECT id FROM workflows WHERE " + " AND ".join(f"{c} = ?" for c, _ in named),
                      *(v for _, v in named))  # fmt: skip
        if not refs:
            return None  # the SQLAlchemy path lists the names the history holds
        where.append(_in("workflow_ref", refs))
        args += refs
    if selection.run_id is not None or selection.dag_ids is not None:
        if selection.run_id is not None and not column(
            "SELECT id FROM runs WHERE run_id = ?", selection.run_id
        ):
            return None
        conditions = [("run_id = ?", [selection.run_id])] if selection.run_id is not None else []
        if selection.dag_ids is not None:
            dags = sorted(selection.dag_ids)
            conditions.append((_in("dag_id", dags), dags))
        if not all(values for _, values in conditions):
            return []  # none of the DAGs a user may read
        refs = column("SELECT id FROM runs WHERE " + " AND ".join(c for c, _ in conditions),
                      *(v for _, values in conditions for v in values))  # fmt: skip
        if not refs:
            return []
        where.append(_in("run_ref", refs))
        args += refs
    keys = ", ".join(COUNT_KEYS)
    cursor.execute(
        (
            f"SELECT {keys}, SUM(instances), SUM(attempts) FROM instance_counts"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" GROUP BY {keys} HAVING SUM(instances) > 0 ORDER BY {keys}"
        ).replace("?", p),
        args,
    )
    # SUM of a BIGINT is a NUMERIC on PostgreSQL: a Decimal.
    return [(row[0], row[1], row[2], row[3], row[4], int(row[5]), int(row[6])) for row in cursor.fetchall()]


def _in(column: str, values: Sequence[Any]) -> str:
    return f"{column} IN ({', '.join('?' for _ in values)})"


def open_dbapi(
    url_or_conn_id: str | None,
) -> tuple[Any, str, type[Exception] | tuple[type[Exception], ...]] | None:
    """Return a DBAPI connection to the history, its placeholder and its error class; None: SQLAlchemy's path.

    :param url_or_conn_id: as for :func:`~airflow_desc.history.open_history`.
    :raises HistoryUnavailable: when a PostgreSQL history cannot be reached.
    """
    target = url_or_conn_id or history_conn_id()
    if target is None:
        target = default_sqlite_url()
    elif "://" not in target:
        target = connection_uri_from_environment(target)  # else Airflow resolves it: not here
        if target is None:
            return None
    return dbapi_connection(target)


def dbapi_connection(url: str) -> tuple[Any, str, Any] | None:
    """Return a DBAPI connection to a database named by a SQLAlchemy URL, its placeholder and error class.

    With the history's timeouts. None for what only SQLAlchemy opens: another database than
    SQLite or PostgreSQL, a SQLite file not there (or in memory, or with options), a URL libpq
    would not read as SQLAlchemy does.

    :param url: e.g. ``sqlite:////path/history.db``, ``postgresql+psycopg2://user:pw@host/db``.
    :raises HistoryUnavailable: when a PostgreSQL database cannot be reached.
    """
    scheme = url.split("://", 1)[0]
    opener: Callable[[str], tuple[Any, str, Any] | None] | None = (
        _sqlite if scheme == "sqlite" else _postgres if scheme in _POSTGRES_SCHEMES else None
    )
    return None if opener is None else opener(url)


def _sqlite(url: str) -> tuple[Any, str, Any] | None:
    path = url[len("sqlite://") :]
    path = path[1:] if path.startswith("/") else path  # sqlite:///relative, sqlite:////absolute
    if not path or any(c in path for c in "?%") or path.startswith("file:") or not os.path.isfile(path):
        return None  # in memory, options, or not there: SQLAlchemy's path creates or reports it
    import sqlite3

    _query, args = connect_keywords("sqlite", {}, {})
    return sqlite3.connect(path, **args), "?", sqlite3.Error


def _postgres(url: str) -> tuple[Any, str, Any] | None:
    parts = urlsplit(url)
    query: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in query:
            return None  # a repeated key: SQLAlchemy's reading of it decides
        query[key] = value
    try:
        named = {"host": parts.hostname, "port": parts.port, "user": parts.username,
                 "password": parts.password, "dbname": parts.path.lstrip("/")}  # fmt: skip
    except ValueError:  # a port that is not a number, several hosts ...
        return None
    import psycopg2

    query, args = connect_keywords("postgresql", query, {})
    keywords = {
        k: unquote(str(v)) if k in ("user", "password", "dbname") else v for k, v in named.items() if v
    }
    try:
        conn = psycopg2.connect(**keywords, **query, **args)
    except psycopg2.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}/{keywords.get('dbname', '')}"
        raise HistoryUnavailable(
            f"the history at {where} cannot be reached: {first}; check that its PostgreSQL is up and the "
            "credentials of --db or of the history's connection"
        ) from exc
    except psycopg2.Error:  # e.g. an option libpq does not know: SQLAlchemy's path says what
        return None
    return conn, "%s", psycopg2.Error
