"""The history store on the site's real PostgreSQL history cluster (and the same checks on SQLite).

Each test runs the migrations in a fresh schema of ``desc_history`` (``search_path`` set per
connection), dropped afterwards, so tests never see each other's rows. One test stops the history
cluster while records are being written (the Airflow metadata cluster keeps running) and checks
that every record reaches the database exactly once after it is back; the cluster is restarted in
a ``finally``. All tests of this module share one xdist group so that none of them runs while the
cluster is down.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from airflow_desc.history import (
    HistoryFilter,
    HistoryStore,
    JsonLinesRecorder,
    ProcessRecord,
    SpoolingRecorder,
)
from airflow_desc.history.count_queries import _status_counts_window
from airflow_desc.history.engine import DEFAULT_STATEMENT_TIMEOUT_S, VERSION_TABLE
from airflow_desc.history.migrations import HEAD_REVISION
from airflow_desc.history.queries import process_instances, status_counts
from airflow_desc.history.schema import metadata
from airflow_desc.history.schema import process_instances as pi_table
from tests.integration.site import Site
from tests.unit.history.test_queries import HISTORY, T0, as_record, counts, rec
from tests.waiting import wait_for

# Two of these tests stop the history PostgreSQL cluster, which every other test's history is in:
# run them all alone (tests/run-suite; xdist groups do not hold with this pytest).
pytestmark = pytest.mark.exclusive


@dataclass(frozen=True)
class HistoryCluster:
    """The site's second PostgreSQL cluster, which holds only the history database."""

    uri: str
    pg_bin: str
    data: str
    port: int
    site_dir: str
    meta_uri: str

    @classmethod
    def from_env(cls) -> HistoryCluster:
        return cls(
            uri=os.environ["DESC_SITE_HISTORY_DB_URI"],
            pg_bin=os.environ["DESC_SITE_PG_BIN"],
            data=os.environ["DESC_SITE_PG_HISTORY_DATA"],
            port=int(os.environ["DESC_SITE_PG_HISTORY_PORT"]),
            site_dir=os.environ["DESC_SITE_DIR"],
            meta_uri=os.environ["DESC_SITE_AIRFLOW_DB_URI"],
        )

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["runuser", "-u", "postgres", "--", f"{self.pg_bin}/pg_ctl", "-D", self.data, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    def running(self) -> bool:
        return self.pg_ctl("status").returncode == 0

    def stop(self) -> None:
        proc = self.pg_ctl("-m", "fast", "-w", "stop")
        assert proc.returncode == 0, proc.stderr

    def start(self) -> None:
        """Start it as docker/site/up's start_pg does."""
        if self.running():
            return
        proc = self.pg_ctl(
            "-l", f"{self.site_dir}/log/pg-history.log", "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.site_dir}/run/pg-history -c listen_addresses=127.0.0.1",
            "start",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        wait_for(
            lambda: (
                subprocess.run(
                    [f"{self.pg_bin}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]
                ).returncode
            ),
            until=lambda returncode: returncode == 0,
            timeout=30,
            interval=0.2,
            what=f"the history cluster answers on port {self.port} after its start (pg_isready exit status)",
        )


@pytest.fixture(scope="module")
def cluster(site: Site) -> HistoryCluster:
    c = HistoryCluster.from_env()
    c.start()  # a previous run that died between stop and start left it down
    return c


@pytest.fixture
def schema(cluster: HistoryCluster) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(cluster.uri, poolclass=sa.pool.NullPool)  # survives the cluster's restarts
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    yield name
    cluster.start()
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
    admin.dispose()


def in_schema(schema: str) -> dict[str, Any]:
    return {"connect_args": {"options": f"-csearch_path={schema}"}}


@pytest.fixture
def store(cluster: HistoryCluster, schema: str) -> Iterator[HistoryStore]:
    s = HistoryStore(cluster.uri, engine_options=in_schema(schema))
    yield s
    s.dispose()


def row_count(store: HistoryStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(pi_table)).scalar_one())


# --- migrations, writer, queries ---------------------------------------------------------------------------


def test_migrations_on_postgresql(store: HistoryStore, schema: str) -> None:
    assert store.current_revision() is None
    store.upgrade()
    store.upgrade()
    assert store.current_revision() == HEAD_REVISION
    inspector = sa.inspect(store.engine)
    assert set(inspector.get_table_names(schema=schema)) == {
        "workflows", "runs", "streams", "process_instances", "rerun_requests", "rerun_selections",
        "process_plans", "slurm_job_states", "log_tails", "instance_counts", "ssh_key_checks", VERSION_TABLE,
    }  # fmt: skip
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        assert compare_metadata(context, metadata) == []
        where = conn.execute(
            sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s"), {"s": schema}
        ).all()
    defs = dict(where)
    assert defs["ix_process_instances_live"].endswith("WHERE latest")
    assert defs["ix_process_instances_superseded"].endswith("WHERE (NOT latest)")


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_upsert_and_queries(backend: str, store: HistoryStore, tmp_path: Path) -> None:
    if backend == "sqlite":
        store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    store.record(HISTORY[::-1])
    store.record(HISTORY)
    assert row_count(store) == len(HISTORY)
    frame = process_instances(store.engine)
    assert sorted((as_record(r) for _, r in frame.iterrows()), key=lambda r: r.key()) == sorted(
        HISTORY, key=lambda r: r.key()
    )
    table = status_counts(store.engine)
    assert counts(table) == {
        ("report", "success"): (1, 1), ("processEimage", "success"): (3, 4),  # processSensor (Twinkles: 1)
        ("setupEimageSensors", "success"): (1, 1), ("processEimage", "failed"): (1, 2),
        ("processEimage", "skipped"): (1, 1), ("processEimage", "terminated"): (1, 1),
    }  # fmt: skip
    assert table.equals(_status_counts_window(store.engine))
    assert counts(status_counts(store.engine, HistoryFilter(workflow="Twinkles"))) == {
        ("processEimage", "success"): (1, 1)
    }
    assert set(
        process_instances(store.engine, HistoryFilter(stream_glob="visit=1/*/sensor=S?"))["stream"]
    ) == {f"visit=1/raft=R22/sensor=S{i}" for i in range(4)}
    assert process_instances(store.engine, HistoryFilter(stream_glob="VISIT=*")).empty
    assert set(
        process_instances(store.engine, HistoryFilter(state="failed"), latest_only=True)["try_number"]
    ) == {2}
    with pytest.raises(ValueError, match="unknown workflow 'DC2'; the history holds: DC1-DM12, Twinkles"):
        status_counts(store.engine, HistoryFilter(workflow="DC2"))
    with pytest.raises(ValueError, match="unknown process 'nope'; the history holds: processEimage, report"):
        process_instances(store.engine, HistoryFilter(process="nope"))
    store.record([rec("x=a_b"), rec("x=aXb"), rec("x=a%b")])
    assert set(process_instances(store.engine, HistoryFilter(stream_glob="x=a_b"))["stream"]) == {"x=a_b"}
    assert set(process_instances(store.engine, HistoryFilter(stream_glob="x=a?b"))["stream"]) == {
        "x=a_b",
        "x=aXb",
        "x=a%b",
    }
    store.dispose()


def test_airflow_connection_id(cluster: HistoryCluster, schema: str) -> None:
    # AIRFLOW_CONN_DESC_HISTORY (env.sh) is postgres://...: Airflow's URI, turned into psycopg2's.
    store = HistoryStore.from_conn_id("desc_history", engine_options=in_schema(schema))
    assert store.url.drivername == "postgresql+psycopg2"
    store.record([rec("s=1")])
    assert row_count(store) == 1
    store.dispose()


def test_concurrent_writers_leave_one_latest_attempt_per_instance(store: HistoryStore, schema: str) -> None:
    store.upgrade()
    attempts = [rec(f"i={i}", try_number=t, state="failed" if t < 3 else "success") for i in range(40)
                for t in (1, 2, 3)]  # fmt: skip
    random.Random(3).shuffle(attempts)
    errors: list[BaseException] = []

    def write(part: list[ProcessRecord]) -> None:
        writer = HistoryStore(store.url, engine_options=in_schema(schema), auto_upgrade=False)
        try:
            for start in range(0, len(part), 3):
                writer.record(part[start : start + 3])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            writer.dispose()

    threads = [threading.Thread(target=write, args=(attempts[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    latest = process_instances(store.engine, latest_only=True)
    assert len(latest) == 40 and set(latest["try_number"]) == {3}
    assert counts(status_counts(store.engine)) == {("processEimage", "success"): (40, 120)}


# --- the history cluster goes down mid-run -----------------------------------------------------------------


def test_spool_and_flush_while_the_history_cluster_is_stopped(
    cluster: HistoryCluster, store: HistoryStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = SpoolingRecorder(store, tmp_path / "history-spool.jsonl")
    written: list[ProcessRecord] = []
    done = threading.Event()
    failures: list[BaseException] = []

    def operator_runs() -> None:
        """Jobs ending one after the other, each recording its attempt; 20 more once the cluster is back."""
        try:
            after = 0
            for i in range(5000):
                r = rec(f"visit={i // 10}/sensor={i % 10}", try_number=1 + i % 2, state="success")
                recorder.record([r])  # never raises: the job's work is done either way
                written.append(r)
                after += done.is_set()
                if after >= 20:
                    return
                time.sleep(0.02)
        except BaseException as exc:
            failures.append(exc)

    meta = sa.create_engine(cluster.meta_uri)
    caplog.set_level(logging.WARNING, logger="airflow_desc.history.spool")
    writer = threading.Thread(target=operator_runs)
    writer.start()
    try:
        # Bounded: a writer thread that died early would otherwise leave this wait hanging.
        wait_for(
            lambda: len(written),
            until=lambda n: n >= 20 or bool(failures),
            timeout=60,
            interval=0.05,
            what="the writer records 20 attempts",
        )
        assert failures == []
        cluster.stop()
        assert not cluster.running()
        with meta.connect() as conn:  # Airflow's metadata cluster keeps running
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
        wait_for(
            recorder.pending,
            until=lambda n: n >= 15,
            timeout=60,
            interval=0.05,
            what="15 attempts spooled while the cluster is down",
        )
        assert recorder.pending() >= 15
        # An explicit flush while the cluster is down fails and keeps the spool.
        pending = recorder.pending()
        with pytest.raises(sa.exc.OperationalError):
            recorder.flush()
        assert recorder.pending() >= pending
    finally:
        cluster.start()
        meta.dispose()
    done.set()
    writer.join(120)
    assert failures == []
    spooled_warnings = [r for r in caplog.records if "spooled" in r.getMessage()]
    assert spooled_warnings and str(recorder.spool_path) in spooled_warnings[0].getMessage()
    assert recorder.pending() == 0  # the first write after the restart flushed the spool
    report = recorder.flush()
    assert (report.flushed, report.rejected) == (0, 0)
    keys = {r.key() for r in written}
    assert len(keys) == len(written)
    assert row_count(store) == len(written)  # every record, exactly once
    frame = process_instances(store.engine)
    assert {as_record(r).key() for _, r in frame.iterrows()} == keys
    assert int(status_counts(store.engine)["count"].sum()) == len({k[:-1] for k in keys})


def test_flush_after_restart_writes_what_was_spooled(
    cluster: HistoryCluster, store: HistoryStore, tmp_path: Path
) -> None:
    recorder = SpoolingRecorder(store, tmp_path / "history-spool.jsonl")
    first = [rec(f"a={i}") for i in range(10)]
    recorder.record(first)
    try:
        cluster.stop()
        later = [rec(f"b={i}") for i in range(10)]
        recorder.record(later)
        recorder.record([rec("a=0", state="failed", exit_code=1, hours=5)])  # a changed record
        recorder.record(later[:3])  # the same records again
        assert recorder.pending() == 14
    finally:
        cluster.start()
    report = recorder.flush()
    assert (report.flushed, report.rejected) == (14, 0)
    assert row_count(store) == 20
    frame = process_instances(store.engine, HistoryFilter(stream_glob="a=0"))
    assert list(frame["state"]) == ["failed"]
    assert frame["start_time"].iloc[0].to_pydatetime() > T0


def test_rerun_requests_on_postgresql(store: HistoryStore) -> None:
    from tests.unit.history.test_store import test_a_rerun_request_names_who_and_why_on_the_attempts_after_it

    test_a_rerun_request_names_who_and_why_on_the_attempts_after_it(store)  # asserts the attempts
    with store.engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT requested_by, after_try FROM rerun_requests ORDER BY id")).all()
    assert [tuple(r) for r in kept] == [("alice", 1), ("bob", 1)]


def test_log_tails_on_postgresql(store: HistoryStore) -> None:
    from tests.unit.history import test_log_tails as on

    on.test_a_tail_is_kept_with_its_attempt_and_replaced_by_a_later_write_of_it(store)  # NUL too
    on.test_attempt_logs_lists_the_latest_attempts_or_one_try_with_their_tails(store)
    assert store.dialect == "postgresql"
    with store.engine.connect() as conn:  # the tails are rows of PostgreSQL's log_tails, each an attempt's
        orphans = conn.execute(
            sa.text(
                "SELECT count(*) FROM log_tails t LEFT JOIN process_instances p ON p.id = t.attempt_ref"
                " WHERE p.id IS NULL"
            )
        ).scalar_one()
        kept = conn.execute(sa.text("SELECT count(*) FROM log_tails")).scalar_one()
    assert kept > 0 and orphans == 0


# --- the spool's locks and the history's timeouts on PostgreSQL ---------------------------------------------


def _flush_at_once(url: str, schema: str, spool: str, go: Any, reports: Any) -> None:
    store = HistoryStore(url, engine_options=in_schema(schema), auto_upgrade=False)
    recorder = SpoolingRecorder(store, spool)
    go.wait(30)
    reports.put(recorder.flush().flushed)


def _record_at_once(url: str, schema: str, spool: str, go: Any, worker: int) -> None:
    store = HistoryStore(url, engine_options=in_schema(schema), auto_upgrade=False)
    recorder = SpoolingRecorder(store, spool)
    go.wait(30)
    for batch in range(10):
        recorder.record([rec(f"w={worker}/b={batch}/i={i}") for i in range(5)])


def test_two_processes_flushing_at_once_write_each_record_once(
    store: HistoryStore, schema: str, tmp_path: Path
) -> None:
    store.upgrade()
    with store.engine.begin() as conn:  # counts every insert and update of an attempt's row
        conn.exec_driver_sql("CREATE TABLE writes (kind text)")
        conn.exec_driver_sql(
            "CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO writes VALUES (TG_OP); RETURN NULL; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER count_writes AFTER INSERT OR UPDATE ON process_instances "
            "FOR EACH ROW EXECUTE FUNCTION count_write()"
        )
    spool = str(tmp_path / "history-spool.jsonl")
    JsonLinesRecorder(spool).record([rec(f"b={b}/i={i}") for b in range(30) for i in range(10)])
    url = store.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("fork")
    go, reports = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_flush_at_once, args=(url, schema, spool, go, reports)) for _ in range(2)]
    procs += [ctx.Process(target=_record_at_once, args=(url, schema, spool, go, w)) for w in range(2)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    # Which process writes the 300 spooled records is a race: a recorder's record() writes the spool's
    # head too, so both flushers may find it empty. What may not happen: a record written twice or lost.
    flushed = [reports.get(timeout=5) for _ in range(2)]
    assert all(isinstance(n, int) and 0 <= n <= 400 for n in flushed)
    recorder = SpoolingRecorder(store, spool)
    recorder.flush()  # what the writers appended behind the last flusher, if any
    assert recorder.pending() == 0
    assert row_count(store) == 400
    with store.engine.connect() as conn:
        writes = dict(conn.exec_driver_sql("SELECT kind, count(*) FROM writes GROUP BY kind").all())
    assert writes == {"INSERT": 400}  # none written twice


def test_a_write_stuck_behind_a_lock_gives_up_after_the_statement_timeout(
    cluster: HistoryCluster, store: HistoryStore, schema: str, tmp_path: Path
) -> None:
    store.upgrade()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "5s"
    recorder = SpoolingRecorder(store, tmp_path / "history-spool.jsonl")
    stuck = sa.create_engine(cluster.uri, **in_schema(schema))
    with stuck.connect() as holder:
        holder.exec_driver_sql("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")  # a writer that never commits
        start = time.monotonic()
        recorder.record([rec("s=1")])
        took = time.monotonic() - start
        holder.rollback()
    stuck.dispose()
    assert DEFAULT_STATEMENT_TIMEOUT_S - 0.5 < took < DEFAULT_STATEMENT_TIMEOUT_S + 2
    assert recorder.pending() == 1
    assert recorder.flush().flushed == 1
    assert row_count(store) == 1
    # The connection's extra says otherwise (as Airflow renders it in the URI): it wins.
    given = cluster.uri + "?statement_timeout=250ms&connect_timeout=4"
    extra = HistoryStore(given, engine_options=in_schema(schema))
    with extra.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "250ms"
        assert conn.exec_driver_sql("SHOW search_path").scalar_one() == schema
        with pytest.raises(sa.exc.OperationalError, match="statement timeout"):
            conn.exec_driver_sql("SELECT pg_sleep(1)")
    extra.dispose()


def test_migrations_are_not_cut_short_by_the_statement_timeout(store: HistoryStore) -> None:
    seen: list[str] = []

    @sa.event.listens_for(store.engine, "after_cursor_execute")
    def _timeout_in_force(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("CREATE TABLE", "CREATE INDEX")):
            probe = cursor.connection.cursor()
            probe.execute("SHOW statement_timeout")
            seen.append(probe.fetchone()[0])
            probe.close()

    store.upgrade()
    assert seen and set(seen) == {"0"}  # a big index may take minutes
    sa.event.remove(store.engine, "after_cursor_execute", _timeout_in_force)
    with store.engine.connect() as conn:  # SET LOCAL: the writes after it keep their limit
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "5s"
