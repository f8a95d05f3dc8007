"""Until when each cluster login's SSH key logs in, as the last check found: the ``ssh_key_checks`` table.

Written where the keys are (the triggers' pollers, ``airflow-desc clusters check``, tasks waiting for
a renewed key) and read by the status page, whose api-server has no keys and opens no SSH. One row
per login (SSH connection and bastion, ``""`` for none), replaced by each check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from airflow_desc.history.schema import ssh_key_checks
from airflow_desc.history.writer import HistoryStore

__all__ = ["KeyCheck", "key_checks", "write_key_check"]


@dataclass(frozen=True)
class KeyCheck:
    """One login's key, as a check found it.

    :param ssh_conn_id: the cluster's SSH connection.
    :param jump_conn_id: its bastion's (``""``: none).
    :param cluster: the cluster profile's name (``""``: not known).
    :param source: what says when the key expires (a certificate file, a profile's ``key_expires``).
    :param cert_path: the certificate file, when a certificate says so.
    :param expires_at: when the key stops logging in (naive UTC; ``None``: never).
    :param checked_at: when the check was (naive UTC).
    :param checked_by: who checked (``poll``, ``clusters check``, ``task``).
    """

    ssh_conn_id: str
    jump_conn_id: str
    cluster: str
    source: str
    cert_path: str | None
    expires_at: datetime | None
    checked_at: datetime
    checked_by: str


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def write_key_check(store: HistoryStore, check: KeyCheck) -> None:
    """Store ``check`` as its login's latest, replacing the one before."""
    row = asdict(check)
    row.update(expires_at=_naive_utc(check.expires_at), checked_at=_naive_utc(check.checked_at))
    store.ping()  # the migrations first
    stmt: Any
    if store.dialect == "postgresql":
        stmt = postgresql.insert(ssh_key_checks)
    elif store.dialect == "sqlite":
        stmt = sqlite.insert(ssh_key_checks)
    else:
        raise NotImplementedError(f"the history store runs on PostgreSQL or SQLite, not {store.dialect}")
    stmt = stmt.on_conflict_do_update(
        index_elements=["ssh_conn_id", "jump_conn_id"],
        set_={c: stmt.excluded[c] for c in row if c not in ("ssh_conn_id", "jump_conn_id")},
    )
    with store.engine.begin() as conn:
        conn.execute(stmt, row)


def key_checks(engine: Engine) -> list[KeyCheck]:
    """Return every login's latest check (none from a database whose schema predates the table)."""
    if not sa.inspect(engine).has_table("ssh_key_checks"):
        return []
    t = ssh_key_checks
    columns = [t.c[name] for name in KeyCheck.__dataclass_fields__]
    with engine.connect() as conn:
        return [KeyCheck(*row) for row in conn.execute(sa.select(*columns))]
