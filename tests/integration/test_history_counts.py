"""The counts the writer keeps equal a full recount on the site's PostgreSQL history, with concurrent writers.

And the status table's live merge through the DBAPI equals the SQLAlchemy and pandas path on it.

Each test works in a fresh schema of ``desc_history`` (dropped afterwards); the cluster keeps
running (the tests that stop it are in ``test_history_store.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_desc.history import HistoryStore

# A fresh schema of the history database per test, as test_history_store.py makes it.
from tests.integration.test_history_store import cluster, schema, store  # noqa: F401
from tests.unit.history.test_instance_counts import assert_counts_are_a_recount, write_mixed_history
from tests.unit.status.test_current_rows import assert_same_table, write_random_history

pytestmark = pytest.mark.integration


def test_counts_equal_a_recount_after_mixed_writes(store: HistoryStore, tmp_path: Path) -> None:  # noqa: F811
    write_mixed_history(store, tmp_path, seed=11)
    assert_counts_are_a_recount(store)


def write_concurrently(
    target: HistoryStore, tmp_path: Path, write: Callable[[HistoryStore, int], None], **store_kwargs: Any
) -> None:
    """Run ``write(writer, k)`` for k in 0..3 at once, each writer a store of its own on ``target``'s DB."""
    target.upgrade()
    errors: list[BaseException] = []

    def one(k: int) -> None:
        writer = HistoryStore(
            target.url, engine_options=target._engine_options, auto_upgrade=False, **store_kwargs
        )
        try:
            (tmp_path / str(k)).mkdir()
            write(writer, k)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            writer.dispose()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert errors == []


def test_counts_equal_a_recount_after_concurrent_mixed_writers(
    store: HistoryStore,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Four writers at once, each its own mix over the same runs and instances, and its own spool."""
    write_concurrently(
        store, tmp_path, lambda writer, k: write_mixed_history(writer, tmp_path / str(k), seed=k)
    )
    assert_counts_are_a_recount(store)


@pytest.mark.parametrize("seed", range(2))
def test_the_live_merge_without_pandas_gives_the_same_table(store: HistoryStore, seed: int) -> None:  # noqa: F811
    """``status``'s live merge through psycopg2 and plain rows equals the pandas path's on PostgreSQL."""
    live = write_random_history(store, seed)
    conn = store.engine.raw_connection()  # psycopg2's, in the test's schema
    try:
        assert_same_table(store, conn, "%s", live)
    finally:
        conn.close()
