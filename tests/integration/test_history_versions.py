"""Versions side by side in the history on the site's PostgreSQL: the checks of the SQLite unit tests.

Selecting by version and variant, each run's spec digest, and migration 0005_spec_digest down and up
again, in a fresh schema of ``desc_history`` (dropped afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from airflow_desc.history import HistoryStore
from tests.integration.site import Site
from tests.unit.history.test_versions import (
    SIDE_BY_SIDE,
    check_digest_migration,
    check_selection_by_version,
    check_spec_digests,
)


@pytest.fixture
def store(site: Site) -> Iterator[HistoryStore]:
    uri, schema = os.environ["DESC_SITE_HISTORY_DB_URI"], f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    s = HistoryStore(uri, engine_options={"connect_args": {"options": f"-csearch_path={schema}"}})
    s.record(SIDE_BY_SIDE)
    yield s
    s.dispose()
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.mark.parametrize("check", [check_selection_by_version, check_spec_digests, check_digest_migration])
def test_versions_on_postgresql(store: HistoryStore, check: Callable[[HistoryStore], None]) -> None:
    check(store)
