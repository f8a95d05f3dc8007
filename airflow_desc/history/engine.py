"""Reaching the history database: its URL, its engine, and its schema migrations.

The history's database is its own, independent of Airflow's metadata DB: PostgreSQL through
psycopg2 in production, SQLite embedded. Its schema is brought up to date by Alembic
(``airflow_desc/history/migrations``), with a version table of its own (:data:`VERSION_TABLE`)
so that the database may also be Airflow's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history.file_lock import file_lock

__all__ = [
    "VERSION_TABLE",
    "connection_url",
    "create_history_engine",
    "normalize_url",
    "schema_revision",
    "upgrade_schema",
]

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
    """Return the database URL of an Airflow connection, asking Airflow (``airflow.sdk.BaseHook``).

    :param conn_id: the Airflow connection id, e.g. ``desc_history``.
    :raises HistoryUnavailable: when Airflow cannot resolve it, saying how to define it.
    """
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
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            with contextlib.suppress(OSError):  # an unwritable place fails at connect, as a DB error
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", 30)  # wait for another writer's lock instead of failing
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
    if url.get_backend_name() == "postgresql":
        connect_args = dict(kwargs.pop("connect_args", {}))
        # An unreachable server fails the write (and spools it) instead of hanging the task.
        connect_args.setdefault("connect_timeout", 10)
        kwargs["connect_args"] = connect_args
    return sa.create_engine(url, **kwargs)


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (Alembic); a no-op when it is there already.

    :param engine: the history's engine.
    :param revision: the target revision.
    """
    from alembic import command

    config = _alembic_config()
    with _migration_lock(engine.url), engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def schema_revision(engine: Engine) -> str | None:
    """Return the schema's revision, or None for a database never upgraded.

    :param engine: the history's engine.
    """
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


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
