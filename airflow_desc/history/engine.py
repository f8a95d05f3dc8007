"""Reaching the history database: its URL, its engine, and its schema migrations.

The history's database is its own, independent of Airflow's metadata DB: PostgreSQL through
psycopg2 in production, SQLite embedded. Its schema is brought up to date by Alembic
(``airflow_desc/history/migrations``), with a version table of its own (:data:`VERSION_TABLE`)
so that the database may also be Airflow's.

A history that does not answer must not hold up the task recording into it (the recorder spools
instead, :mod:`airflow_desc.history.spool`), so every engine has timeouts, in seconds, from the
Airflow configuration (or ``AIRFLOW__DESC__...``), read where the engine is made:

* ``[desc] history_connect_timeout`` (default :data:`DEFAULT_CONNECT_TIMEOUT_S`): PostgreSQL's
  ``connect_timeout``, covering the whole connection, login included;
* ``[desc] history_statement_timeout`` (default :data:`DEFAULT_STATEMENT_TIMEOUT_S`): PostgreSQL's
  ``statement_timeout`` for each statement (waiting for a lock included), and SQLite's ``timeout``
  (how long to wait for another writer's lock);
* ``[desc] history_reply_timeout`` (default :data:`DEFAULT_REPLY_TIMEOUT_S`, or the statement
  timeout plus a second when that is longer; 0: none): the client's own deadline on
  every answer of a PostgreSQL server (:mod:`airflow_desc.history.deadline`), for a server that
  accepted the connection and then stopped answering, which neither limit above covers. A call
  that gets no answer in time drops its connection and fails; with the pool's one reconnection
  (its ping failed), a write gives up after at most the reply plus the connect timeout.

The history connection's extra overrides them for PostgreSQL (Airflow passes it in the URL's
query): ``connect_timeout`` (libpq's, seconds) and ``statement_timeout`` (PostgreSQL's syntax:
milliseconds, or with a unit, ``"5s"``), e.g.
``AIRFLOW_CONN_DESC_HISTORY=postgresql://u:p@host/db?connect_timeout=5&statement_timeout=10s``;
so does a ``statement_timeout`` already in ``options``, and SQLite's own ``?timeout=``. For
PostgreSQL, 0 means no limit. Migrations run without the statement and reply timeouts (a new index
on a big table takes what it takes); waiting for another process's upgrade keeps them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history.desc_config import connection_uri_from_environment
from airflow_desc.history.file_lock import file_lock
from airflow_desc.history.timeouts import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_REPLY_TIMEOUT_S,
    DEFAULT_STATEMENT_TIMEOUT_S,
    connect_keywords,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_REPLY_TIMEOUT_S",
    "DEFAULT_STATEMENT_TIMEOUT_S",
    "VERSION_TABLE",
    "connect_arguments",
    "connection_url",
    "create_history_engine",
    "head_revision",
    "normalize_url",
    "schema_revision",
    "upgrade_schema",
]

log = logging.getLogger(__name__)

#: Alembic's version table for the history; Airflow's own is ``alembic_version``.
VERSION_TABLE = "desc_history_alembic_version"


def normalize_url(url: str | URL) -> URL:
    """Return a SQLAlchemy URL for ``url``, with ``postgres://`` and ``postgresql://`` through psycopg2.

    :param url: a SQLAlchemy URL, or the URI of an Airflow connection (``postgres://...``).
    """
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    for scheme in ("postgres://", "postgresql://"):
        if text.startswith(scheme):
            text = "postgresql+psycopg2://" + text[len(scheme) :]
    return make_url(text)


def connection_url(conn_id: str) -> URL:
    """Return the database URL of an Airflow connection.

    A URI in ``AIRFLOW_CONN_<ID>`` is read without Airflow
    (:func:`~airflow_desc.history.desc_config.connection_uri_from_environment`); otherwise Airflow
    is asked (``airflow.sdk.BaseHook``).

    :param conn_id: the Airflow connection id, e.g. ``desc_history``.
    :raises HistoryUnavailable: when Airflow cannot resolve it, saying how to define it.
    """
    uri = connection_uri_from_environment(conn_id)
    if uri is not None:
        return normalize_url(uri)
    try:
        from airflow.sdk import BaseHook

        uri = BaseHook.get_connection(conn_id).get_uri()
    except Exception as exc:  # AirflowNotFoundException, an unreachable secrets backend, ...
        raise HistoryUnavailable(
            f"cannot resolve the history connection {conn_id!r}: {exc}. "
            f"Define the Airflow connection {conn_id!r} (e.g. AIRFLOW_CONN_"
            f"{conn_id.upper()}=postgresql://user:password@host:5432/db)"
        ) from exc
    return normalize_url(uri)


def create_history_engine(url: URL, options: Mapping[str, Any]) -> Engine:
    """Return an engine on the history database, set up for its writers and readers.

    :param url: the database URL (:func:`normalize_url`).
    :param options: keyword arguments for :func:`sqlalchemy.create_engine`.
    """
    kwargs = dict(options)
    url, connect_args = connect_arguments(url, kwargs.pop("connect_args", {}))
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            with contextlib.suppress(OSError):  # an unwritable place fails at connect, as a DB error
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                if database and database != ":memory:":
                    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the UI) never block the writer
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)  # a connection that died with a server restart is replaced
    return sa.create_engine(url, connect_args=connect_args, **kwargs)


def connect_arguments(url: URL, connect_args: Mapping[str, Any]) -> tuple[URL, dict[str, Any]]:
    """Return ``url`` and the DBAPI's ``connect_args`` with the history's timeouts (see the module).

    :param url: the database URL; desc's ``statement_timeout`` is taken out of its query, since
        libpq does not know it.
    :param connect_args: the caller's ``connect_args`` (e.g. ``options`` with a ``search_path``).
    """
    query, args = connect_keywords(url.get_backend_name(), url.query, connect_args)
    return (url if query == dict(url.query) else url.set(query=query)), args


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic); a no-op when it is there already.

    :param engine: the history's engine.
    :param revision: the target revision.
    """
    from alembic import command

    config = _alembic_config()
    # Asked under the reply deadline: a process's first write must not hang on a frozen server.
    if revision == "head" and schema_revision(engine) == head_revision():
        return
    with _migration_lock(engine.url), engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)  # migrations/env.py lifts the deadlines for the DDL only


def head_revision() -> str:
    """Return the revision the migrations end at (what :func:`upgrade_schema` brings a schema to).

    The constant, not Alembic's scripts (a reader's start-up); a test checks the two agree.
    """
    from airflow_desc.history.migrations import HEAD_REVISION

    return HEAD_REVISION


def schema_revision(engine: Engine) -> str | None:
    """Return the schema's revision, or None for a database never upgraded.

    Read from :data:`VERSION_TABLE` as Alembic would, without importing Alembic (a reader's
    start-up).

    :param engine: the history's engine.
    """
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return None
        found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().first()
    return None if found is None else str(found)


@contextlib.contextmanager
def _migration_lock(url: URL) -> Iterator[None]:
    # PostgreSQL serialises concurrent upgrades with an advisory lock (migrations/env.py); SQLite
    # cannot (its DDL is not transactional under pysqlite), so a file lock beside the database does.
    database = url.database if url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    with contextlib.ExitStack() as stack:
        # Nowhere to put the lock: the database cannot be opened either; connecting will say so.
        with contextlib.suppress(OSError):
            stack.enter_context(file_lock(Path(database + ".migrate.lock")))
        yield


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("airflow_desc.history") / "migrations"))
    config.set_main_option("path_separator", "os")
    return config
