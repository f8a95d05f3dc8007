"""The writer's COPY path writes, on a real PostgreSQL, exactly what its multi-row upsert writes.

The same random mixed history (``write_mixed_history``: retries, resubmissions, rewrites of a key,
late earlier attempts, replayed batches, a spool flushed after an outage) and batches of hostile
values (tabs, newlines, backslashes, quotes, NULs, COPY's own markers in every text, stream path,
JSON document and log tail; aware timestamps; infinite floats) go through both paths, each into
its own schema: ``copy_threshold=None`` (the upsert) and ``copy_threshold=1`` (every batch through
COPY, in parts of 7 rows so that a batch takes several). Every table, by natural keys, is the
same row for row, and the kept counts equal a full recount, also after four concurrent COPY writers.

A PostgreSQL cluster of this module's own (:class:`PrivatePostgres`, the site's binaries): the
site's history cluster is left alone.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_desc.history import HistoryStore, ProcessRecord, copy_rows
from tests.integration.private_postgres import PrivatePostgres
from tests.integration.site import Site
from tests.integration.test_history_counts import write_concurrently
from tests.unit.history.test_copy_rows import hostile_text
from tests.unit.history.test_instance_counts import assert_counts_are_a_recount, write_mixed_history
from tests.unit.history.test_queries import rec

pytestmark = pytest.mark.integration

NUL = "\x00"


@pytest.fixture(scope="module")
def postgres(site: Site) -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres.create(os.environ["DESC_SITE_PG_BIN"])
    yield cluster
    cluster.destroy()


@pytest.fixture
def stores(postgres: PrivatePostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, HistoryStore]]:
    """A store per path, each in a fresh schema: ``upsert`` and ``copy``."""
    monkeypatch.setattr(copy_rows, "COPY_CHUNK", 7)
    made = {}
    for path, threshold in (("upsert", None), ("copy", 1)):
        schema = f"copy_{path}_{uuid.uuid4().hex[:8]}"
        with sa.create_engine(postgres.url()).begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        options = {"connect_args": {"options": f"-csearch_path={schema}"}}
        made[path] = HistoryStore(postgres.url(), engine_options=options, copy_threshold=threshold)
    yield made
    for store in made.values():
        store.dispose()


def hostile_batches(seed: int) -> list[list[ProcessRecord]]:
    """Batches of records whose every text may hold what COPY's text format escapes, and NULs."""
    rng = random.Random(seed)

    def text() -> str:  # the writer drops NULs from an attempt's values, not from its identity's
        return hostile_text(rng) + (NUL if rng.random() < 0.2 else "")

    def record(stream: str, try_number: int, **kw: Any) -> ProcessRecord:
        version = hostile_text(rng)[:3]  # of the workflow: an identity, kept as it is
        aware = datetime(2018, 1, 8, 10, 0, tzinfo=timezone(timedelta(hours=rng.choice([-7, 0, 2]))))
        return rec(
            stream, rng.choice(["success", "failed", "terminated"]), try_number,
            message=text(), reason=text(), node=text() or None, log_path=text(), job_id=text(), step=text(),
            cluster=rng.choice([None, "perlmutter", text()]), slurm_state=text(), triggered_by=text(),
            rerun_reason=rng.choice([None, text()]), log_tail=rng.choice([None, "", text() * 40]),
            start_time=aware, end_time=aware + timedelta(seconds=rng.randint(0, 10**6), microseconds=7),
            elapsed_s=rng.choice([None, 0.1, 1e300, float("inf"), -0.0]), total_cpu_s=rng.random(),
            max_rss_bytes=rng.choice([None, 2**62]), exit_code=rng.choice([None, -1, 255]),
            extra={text(): [text(), rng.random(), None, {"k": text()}], "workflow_version": version},
            **{"task_id": f"t{hostile_text(rng)}", "run_id": rng.choice(["run1", "run\t2"]),
               "process": rng.choice(["p", "p\\q\n"]), **kw},
        )  # fmt: skip

    records = [
        record(f"a{hostile_text(rng)}/b=\\{i % 5}/c\n{i}", try_number, resubmit=resubmit)
        for i in range(60)
        for try_number in range(1, rng.randint(1, 3) + 1)
        for resubmit in range(rng.randint(1, 2))
    ]
    rng.shuffle(records)
    batches = []
    while records:
        size = rng.randint(1, 50)
        batches.append(records[:size])
        records = records[size:]
        if rng.random() < 0.2:  # an attempt written again, changed
            again = batches[-1][: rng.randint(1, 5)]
            batches.append([record(r.stream, r.try_number, resubmit=r.resubmit, task_id=r.task_id,
                                   process=r.process, run_id=r.run_id) for r in again])  # fmt: skip
    return batches


def snapshot(store: HistoryStore) -> dict[str, list[tuple[Any, ...]]]:
    """Every table, by natural keys instead of row ids, sorted (no ``recorded_at``: the clock's)."""
    skip = {"id", "workflow_ref", "run_ref", "stream_ref", "recorded_at"}
    columns = ", ".join(f"p.{c}" for c in copy_rows.ATTEMPT_COLUMNS if c not in skip)
    workflow, run = "w.name, w.variant, w.version", "r.dag_id, r.run_id"
    attempt = f"{run}, s.path, p.task_id, p.map_index, p.process, p.try_number, p.resubmit"
    of_attempt = "JOIN runs r ON r.id = p.run_ref JOIN streams s ON s.id = p.stream_ref"
    queries = {
        "attempts": f"SELECT {workflow}, {attempt}, {columns} FROM process_instances p {of_attempt} "
        "JOIN workflows w ON w.id = p.workflow_ref",
        "streams": f"SELECT {run}, s.path, parent.path FROM streams s JOIN runs r ON r.id = s.run_ref "
        "LEFT JOIN streams parent ON parent.id = s.parent_ref",
        "log_tails": f"SELECT {attempt}, t.tail FROM log_tails t JOIN process_instances p "
        f"ON p.id = t.attempt_ref {of_attempt}",
        "runs": f"SELECT {workflow}, {run}, r.conf::text, r.survey_year, r.spec_digest FROM runs r "
        "JOIN workflows w ON w.id = r.workflow_ref",
        "instance_counts": f"SELECT {workflow}, {run}, c.task, c.version, c.process, c.process_type, "
        "c.state, c.instances, c.attempts FROM instance_counts c JOIN runs r ON r.id = c.run_ref "
        "JOIN workflows w ON w.id = c.workflow_ref",
    }
    with store.engine.connect() as conn:
        return {
            name: sorted((tuple(row) for row in conn.exec_driver_sql(q)), key=repr)
            for name, q in queries.items()
        }


def test_copy_writes_what_the_upsert_writes(stores: dict[str, HistoryStore], tmp_path: Path) -> None:
    batches = hostile_batches(seed=7)
    for path, store in stores.items():
        (tmp_path / path).mkdir()
        write_mixed_history(store, tmp_path / path, seed=11)
        for batch in batches:
            store.record(batch)
    upserted, copied = (snapshot(store) for store in stores.values())
    assert len(copied["attempts"]) > 500 and len(copied["log_tails"]) > 50
    assert any("\t" in row[5] and "\\" in row[5] and "\n" in row[5] for row in copied["attempts"])  # paths
    for table, rows in upserted.items():
        assert copied[table] == rows, table
    assert_counts_are_a_recount(stores["copy"])


def test_concurrent_copy_writers_keep_the_counts_a_recount(
    stores: dict[str, HistoryStore], tmp_path: Path
) -> None:
    """Four writers at once over the same runs and instances, each its own session's COPY table."""

    def write(writer: HistoryStore, k: int) -> None:
        write_mixed_history(writer, tmp_path / str(k), seed=k)
        for batch in hostile_batches(seed=k):
            writer.record(batch)

    write_concurrently(stores["copy"], tmp_path, write, copy_threshold=1)
    assert_counts_are_a_recount(stores["copy"])


def test_rows_taken_for_new_that_are_there_are_upserted_instead(
    stores: dict[str, HistoryStore],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The COPY into the table meets a key it took for new (as if written meanwhile): undone, upserted."""
    from airflow_desc.history import writer

    write_attempts = writer.HistoryStore._write_attempts

    def blind(self: HistoryStore, conn: Any, rows: Any, held: Any) -> Any:
        return write_attempts(self, conn, rows, set())  # every key taken for new

    monkeypatch.setattr(writer.HistoryStore, "_write_attempts", blind)
    for path, store in stores.items():
        (tmp_path / path).mkdir()
        write_mixed_history(store, tmp_path / path, seed=5)
        for batch in hostile_batches(seed=5):
            store.record(batch)
    assert "a row thought new was there already" in caplog.text
    upserted, copied = (snapshot(store) for store in stores.values())
    assert copied == upserted
    assert_counts_are_a_recount(stores["copy"])
