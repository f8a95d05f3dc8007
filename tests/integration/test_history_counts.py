"""The counts the writer keeps equal a full recount on the site's PostgreSQL history, with concurrent writers.

Each test works in a fresh schema of ``desc_history`` (dropped afterwards); the cluster keeps
running (the tests that stop it are in ``test_history_store.py``).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_desc.history import HistoryStore
from tests.integration.site import Site
from tests.unit.history.test_instance_counts import assert_counts_are_a_recount, write_mixed_history

pytestmark = pytest.mark.integration


@pytest.fixture
def store(site: Site) -> Iterator[HistoryStore]:
    uri = os.environ["DESC_SITE_HISTORY_DB_URI"]
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    s = HistoryStore(uri, engine_options={"connect_args": {"options": f"-csearch_path={name}"}})
    yield s
    s.dispose()
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
    admin.dispose()


def test_counts_equal_a_recount_after_mixed_writes(store: HistoryStore, tmp_path: Path) -> None:
    write_mixed_history(store, tmp_path, seed=11)
    assert_counts_are_a_recount(store)


def test_counts_equal_a_recount_after_concurrent_mixed_writers(store: HistoryStore, tmp_path: Path) -> None:
    """Four writers at once, each its own mix over the same runs and instances, and its own spool."""
    store.upgrade()
    errors: list[BaseException] = []

    def write(k: int) -> None:
        writer = HistoryStore(store.url, engine_options=store._engine_options, auto_upgrade=False)
        try:
            (tmp_path / str(k)).mkdir()
            write_mixed_history(writer, tmp_path / str(k), seed=k)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            writer.dispose()

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    assert_counts_are_a_recount(store)
