"""Alembic environment of the history store.

Run programmatically by :meth:`airflow_desc.history.HistoryStore.upgrade`, which passes an open
connection in ``config.attributes["connection"]``; there is no ``alembic.ini``. The version table is
``desc_history_alembic_version``, so that the history can share a database with Airflow's own
``alembic_version`` without either clobbering the other.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from airflow_desc.history.deadline import unbounded
from airflow_desc.history.engine import VERSION_TABLE
from airflow_desc.history.schema import metadata

# Any constant: concurrent upgrades on PostgreSQL (several workers starting at once) take turns.
_PG_LOCK_KEY = 0x64657363  # "desc"


def run_migrations_online() -> None:
    """Run the migrations on the connection the caller passed in."""
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "the history migrations run through HistoryStore.upgrade(), which passes a connection; "
            "run `python -m airflow_desc.history upgrade` instead of the alembic command"
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Waiting for another upgrade is bounded by the history's statement timeout; the
            # migration itself is not: building an index on a big table takes what it takes.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            connection.execute(text("SET LOCAL statement_timeout = 0"))
        with unbounded(connection.connection.dbapi_connection):  # nor the client's reply deadline
            context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("the history migrations run online only (HistoryStore.upgrade)")
run_migrations_online()
