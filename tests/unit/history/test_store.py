"""The SQL history store on SQLite: migrations, the upserting writer, and the spooling recorder."""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import airflow_desc.history as history
from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history import (
    FlushReport,
    HistoryStore,
    JsonLinesRecorder,
    ProcessRecord,
    SpoolingRecorder,
    default_recorder,
    open_history,
    typical_elapsed_of,
)
from airflow_desc.history.engine import VERSION_TABLE, normalize_url
from airflow_desc.history.migrations import HEAD_REVISION
from airflow_desc.history.schema import metadata, process_instances, runs, streams, workflows

REPO = Path(__file__).resolve().parents[3]


def rec(stream: str = "visit=1/raft=R22/sensor=S11", try_number: int = 1, **kw: Any) -> ProcessRecord:
    values: dict[str, Any] = {
        "workflow": "DC1-DM12",
        "process": "processEimage",
        "task": "processSensor",
        "version": "1.0",
        "state": "success",
        "dag_id": "dc1",
        "run_id": "run1",
        "task_id": "processSensor.bundle",
        "map_index": 0,
        "stream": stream,
        "try_number": try_number,
        "cluster": "perlmutter",
        "job_id": "5000001",
        "step": "3",
    }
    values.update(kw)
    return ProcessRecord(**values)


FIELDS = [f.name for f in dataclasses.fields(ProcessRecord)]
# Kept in other tables.
FIELDS = [n for n in FIELDS if n not in ("workflow", "variant", "dag_id", "run_id", "stream", "log_tail")]


def rows(store: HistoryStore, table: sa.Table = process_instances) -> list[sa.Row[Any]]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(table).order_by(table.c.id)))


def count(store: HistoryStore) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(process_instances)).scalar_one())


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    s = HistoryStore(f"sqlite:///{tmp_path / 'desc' / 'history.db'}")
    yield s
    s.dispose()


# --- migrations -------------------------------------------------------------------------------------------


def test_upgrade_is_idempotent_and_keeps_its_own_version_table(store: HistoryStore) -> None:
    assert store.current_revision() is None
    store.upgrade()
    store.upgrade()
    assert store.current_revision() == HEAD_REVISION
    names = set(sa.inspect(store.engine).get_table_names())
    assert names == {
        "workflows", "runs", "streams", "process_instances", "rerun_requests", "rerun_selections",
        "process_plans", "slurm_job_states", "log_tails", "instance_counts", "ssh_key_checks", VERSION_TABLE,
    }  # fmt: skip
    assert "alembic_version" not in names  # Airflow's own version table is never touched


def test_head_revision_is_the_head_of_the_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    from airflow_desc.history.engine import _alembic_config

    assert ScriptDirectory.from_config(_alembic_config()).get_current_head() == HEAD_REVISION


def test_migrations_build_exactly_the_schema_module(store: HistoryStore) -> None:
    store.upgrade()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        diff = compare_metadata(context, metadata)
    assert diff == []
    indexes = {ix["name"] for ix in sa.inspect(store.engine).get_indexes("process_instances")}
    assert {"ix_process_instances_live", "ix_process_instances_superseded"} <= indexes


def test_history_db_shares_a_database_with_an_alembic_version_table(tmp_path: Path) -> None:
    # As if Airflow's metadata lived in the same database: its alembic_version stays as it was.
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('airflow-head')")
    store = HistoryStore(url)
    store.upgrade()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [("airflow-head",)]
        assert conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all() == [(HEAD_REVISION,)]
    store.dispose()
    engine.dispose()


def test_writes_run_the_migrations_first(store: HistoryStore) -> None:
    store.record([rec()])
    assert store.current_revision() == HEAD_REVISION


# --- writer -----------------------------------------------------------------------------------------------


def test_rewriting_a_record_updates_it_instead_of_adding_one(store: HistoryStore) -> None:
    batch = [rec(f"visit=1/raft=R22/sensor=S{i}") for i in range(5)]
    store.record(batch)
    store.record(batch)
    assert count(store) == 5
    store.record([rec("visit=1/raft=R22/sensor=S0", state="failed", exit_code=3, reason="non-zero-exit")])
    got = rows(store)
    assert len(got) == 5
    assert (got[0].state, got[0].exit_code, got[0].reason) == ("failed", 3, "non-zero-exit")


def test_the_last_record_of_a_key_in_one_batch_wins(store: HistoryStore) -> None:
    store.record([rec(state="failed"), rec(state="terminated"), rec(state="success")])
    assert [r.state for r in rows(store)] == ["success"]


def test_each_field_of_a_record_is_stored(store: HistoryStore) -> None:
    t0 = datetime(2018, 1, 8, 8, 0, 0)
    r = rec(
        state="terminated", slurm_state="OUT_OF_MEMORY", exit_code=0, signal=9, reason="out-of-memory",
        message="ran out of memory", submit_time=t0, start_time=t0 + timedelta(seconds=30),
        end_time=t0 + timedelta(seconds=630), elapsed_s=600.0, total_cpu_s=590.5, max_rss_bytes=2**31,
        req_cpus=1, req_mem_bytes=2**31, req_walltime_s=7200.0, node="nid000123", log_path="/logs/x.log",
        triggered_by="alice", rerun_reason="OOM: rerun with 4 GB", extra={"accounting": [{"JobID": "1"}]},
    )  # fmt: skip
    store.record([r])
    [row] = rows(store)
    for name in FIELDS:
        assert getattr(row, name) == getattr(r, name), name
    assert row.latest is True


def test_aware_times_are_stored_in_utc_and_naive_ones_as_given(store: HistoryStore) -> None:
    aware = datetime(2018, 1, 8, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    store.record([rec(start_time=aware, end_time=datetime(2018, 1, 8, 9, 0))])
    [row] = rows(store)
    assert row.start_time == datetime(2018, 1, 8, 8, 0)
    assert row.end_time == datetime(2018, 1, 8, 9, 0)


def test_nul_characters_are_dropped(store: HistoryStore) -> None:
    store.record([rec(message="bad\x00byte", extra={"tail": "a\x00b"})])
    [row] = rows(store)
    assert (row.message, row.extra) == ("badbyte", {"tail": "ab"})


def test_workflows_runs_and_nested_streams(store: HistoryStore) -> None:
    store.record(
        [
            rec("visit=1/raft=R22/sensor=S11", extra={"run_conf": {"survey_year": 3, "visits": [1]}}),
            rec("visit=1/raft=R22/sensor=S12", variant="imsim-dithered"),
            rec("", process="report", task_id="report", map_index=-1, run_id="run2"),
        ]
    )
    with store.engine.connect() as conn:
        wf = conn.execute(sa.select(workflows.c.name, workflows.c.variant).order_by(workflows.c.id)).all()
        assert wf == [("DC1-DM12", ""), ("DC1-DM12", "imsim-dithered")]
        run_rows = conn.execute(sa.select(runs.c.run_id, runs.c.conf, runs.c.survey_year).order_by(runs.c.id))
        assert run_rows.all() == [("run1", {"survey_year": 3, "visits": [1]}, 3), ("run2", None, None)]
        paths = {r.id: (r.path, r.parent_ref) for r in conn.execute(sa.select(streams))}
    by_path = {path: (id_, parent) for id_, (path, parent) in paths.items()}
    assert set(by_path) == {
        "",
        "visit=1",
        "visit=1/raft=R22",
        "visit=1/raft=R22/sensor=S11",
        "visit=1/raft=R22/sensor=S12",
    }  # fmt: skip  (run2's root "" is another row)
    assert len(paths) == 6
    sensor_parent = by_path["visit=1/raft=R22/sensor=S11"][1]
    assert paths[sensor_parent][0] == "visit=1/raft=R22"
    assert paths[by_path["visit=1"][1]][0] == ""


def test_a_later_run_conf_fills_in_but_never_erases(store: HistoryStore) -> None:
    store.record([rec()])
    store.record([rec("x=1", extra={"run_conf": {"survey_year": 2}})])
    store.record([rec("x=2")])
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(runs.c.conf, runs.c.survey_year)).all() == [({"survey_year": 2}, 2)]


def test_latest_marks_the_highest_try_whatever_order_attempts_arrive_in(store: HistoryStore) -> None:
    def latest() -> dict[int, bool]:
        return {r.try_number: r.latest for r in rows(store)}

    store.record([rec(try_number=2, state="success")])
    assert latest() == {2: True}
    store.record([rec(try_number=1, state="terminated")])  # late, e.g. from a spool
    assert latest() == {1: False, 2: True}
    store.record([rec(try_number=3, state="failed")])
    assert latest() == {1: False, 2: False, 3: True}
    store.record([rec(try_number=3, state="success")])  # rewriting the latest keeps it latest
    assert latest() == {1: False, 2: False, 3: True}
    store.record([rec(try_number=1, state="failed"), rec(try_number=4)])
    assert latest() == {1: False, 2: False, 3: False, 4: True}


def test_attempts_of_other_instances_are_untouched(store: HistoryStore) -> None:
    store.record([rec("a=1"), rec("a=2"), rec("a=1", process="other")])
    store.record([rec("a=1", try_number=2)])
    assert [(r.process, r.stream_ref, r.try_number, r.latest) for r in rows(store)] == [
        ("processEimage", 2, 1, False),
        ("processEimage", 3, 1, True),
        ("other", 2, 1, True),
        ("processEimage", 2, 2, True),
    ]


def test_empty_batch_touches_nothing(store: HistoryStore) -> None:
    store.record([])
    assert store.current_revision() is None


# --- URLs and connections ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg2"),
        ("postgresql://u:p@h/db", "postgresql+psycopg2"),
        ("postgresql+psycopg2://u:p@h/db", "postgresql+psycopg2"),
        ("sqlite:////tmp/x.db", "sqlite"),
    ],
)
def test_normalize_url(given: str, driver: str) -> None:
    url = normalize_url(given)
    assert url.drivername == driver
    assert url.password == ("p" if "p@" in given else None)


def test_connection_id_is_resolved_lazily_through_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DESC_HISTORY_UNIT", "postgres://desc:secret@db.example:5433/desc_history"
    )
    store = HistoryStore.from_conn_id("desc_history_unit")
    assert store._url is None  # nothing asked of Airflow yet
    assert store.url.render_as_string(hide_password=False) == (
        "postgresql+psycopg2://desc:secret@db.example:5433/desc_history"
    )
    assert "secret" not in repr(store)


def test_unknown_connection_id_says_what_to_define(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_HISTORY", raising=False)
    store = HistoryStore.from_conn_id("no_such_history")
    with pytest.raises(HistoryUnavailable, match="AIRFLOW_CONN_NO_SUCH_HISTORY"):
        store.engine  # noqa: B018


def test_store_needs_exactly_one_target() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        HistoryStore()
    with pytest.raises(ValueError, match="exactly one"):
        HistoryStore("sqlite://", conn_id="x")


# --- default recorder -------------------------------------------------------------------------------------


@pytest.fixture
def airflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    for name in (
        "DESC_HISTORY_JSONL",
        "DESC_HISTORY_CONN_ID",
        "AIRFLOW__DESC__HISTORY_CONN_ID",
        "DESC_SPOOL_DIR",
        "AIRFLOW__DESC__SPOOL_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(history, "_recorders", {})
    return home


def test_default_recorder_jsonl_override_comes_first(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(airflow_home / "h.jsonl"))
    monkeypatch.setenv("DESC_HISTORY_CONN_ID", "desc_history")
    recorder = default_recorder()
    assert isinstance(recorder, JsonLinesRecorder)
    assert recorder.path == airflow_home / "h.jsonl"


def test_default_recorder_is_embedded_sqlite_under_airflow_home(airflow_home: Path) -> None:
    recorder = default_recorder()
    assert isinstance(recorder, SpoolingRecorder)
    assert recorder.store.url.database == str(airflow_home / "desc" / "history.db")
    assert recorder.spool_path == airflow_home / "desc" / "history-spool.jsonl"
    recorder.record([rec()])
    assert count(recorder.store) == 1
    assert default_recorder() is recorder  # one per process and configuration


@pytest.mark.parametrize("where", ["jsonl", "sqlite"])
def test_typical_run_times_come_from_where_records_go(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    if where == "jsonl":
        monkeypatch.setenv("DESC_HISTORY_JSONL", str(airflow_home / "h.jsonl"))
    monkeypatch.setattr(history, "_stores", {})
    default_recorder().record(
        [rec(f"s={i}", elapsed_s=float(s)) for i, s in enumerate((4, 8, 6))]
        + [rec("s=9", state="failed", elapsed_s=500.0), rec("s=1", process="x", elapsed_s=1.0)]
    )
    found = typical_elapsed_of(["processEimage", "x", "y"], workflow="DC1-DM12")
    assert found == {"processEimage": 6.0, "x": 1.0}
    assert typical_elapsed_of(["processEimage"], workflow="Twinkles") == {}


@pytest.mark.parametrize("variable", ["DESC_HISTORY_CONN_ID", "AIRFLOW__DESC__HISTORY_CONN_ID"])
def test_default_recorder_uses_the_configured_connection(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "desc_history_unit")
    recorder = default_recorder()
    assert isinstance(recorder, SpoolingRecorder)
    assert recorder.store.conn_id == "desc_history_unit"
    assert open_history().conn_id == "desc_history_unit"


def test_the_spool_directory_is_desc_spool_dir_else_the_option_else_airflow_home(
    airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_recorder().spool_path == airflow_home / "desc" / "history-spool.jsonl"  # type: ignore[attr-defined]
    monkeypatch.setenv("AIRFLOW__DESC__SPOOL_DIR", str(tmp_path / "shared"))
    assert default_recorder().spool_path == tmp_path / "shared" / "history-spool.jsonl"  # type: ignore[attr-defined]
    monkeypatch.setenv("DESC_SPOOL_DIR", str(tmp_path / "env"))
    assert default_recorder().spool_path == tmp_path / "env" / "history-spool.jsonl"  # type: ignore[attr-defined]


def test_open_history_takes_urls_and_connection_ids(airflow_home: Path, tmp_path: Path) -> None:
    assert open_history(f"sqlite:///{tmp_path / 'x.db'}").url.database == str(tmp_path / "x.db")
    assert open_history("some_conn").conn_id == "some_conn"
    assert open_history().url.database == str(airflow_home / "desc" / "history.db")


# --- spooling ---------------------------------------------------------------------------------------------


class Outage:
    """A SQLite history whose directory is a plain file until :meth:`end` (so even root cannot open it)."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "history-dir"
        self.dir.write_text("not a directory\n")
        self.store = HistoryStore(f"sqlite:///{self.dir / 'history.db'}")

    def end(self) -> None:
        self.dir.unlink()
        self.dir.mkdir()


@pytest.fixture
def outage(tmp_path: Path) -> Outage:
    o = Outage(tmp_path)
    yield o
    o.store.dispose()


def spool_lines(recorder: SpoolingRecorder) -> list[dict[str, Any]]:
    text = recorder.spool_path.read_text() if recorder.spool_path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_unreachable_db_spools_and_warns_how_to_flush(
    outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = SpoolingRecorder(outage.store, tmp_path / "spool" / "history-spool.jsonl")
    batch = [rec(f"s={i}") for i in range(3)]
    with caplog.at_level(logging.WARNING, logger="airflow_desc.history.spool"):
        recorder.record(batch)  # does not raise: the operator's work goes on
    assert [ProcessRecord.from_json(d) for d in spool_lines(recorder)] == batch
    assert JsonLinesRecorder(recorder.spool_path).read() == batch  # the JSON-lines format
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(recorder.spool_path) in warning
    assert "airflow-desc history flush" in warning
    assert "spooled 3 record(s)" in warning
    assert recorder.pending() == 3


def test_next_successful_write_flushes_the_spool_first(outage: Outage, tmp_path: Path) -> None:
    recorder = SpoolingRecorder(outage.store, tmp_path / "spool.jsonl")
    recorder.record([rec("s=1"), rec("s=2")])
    recorder.record([rec("s=1", state="failed")])  # a newer version of a spooled record
    outage.end()
    recorder.record([rec("s=3")])
    assert recorder.pending() == 0
    got = {(r.stream_ref, r.state) for r in rows(outage.store)}
    assert len(got) == 3 and count(outage.store) == 3
    assert [r.state for r in rows(outage.store) if r.stream_ref == 2] == ["failed"]  # newest version won


def test_flush_writes_everything_once_and_empties_the_spool(outage: Outage, tmp_path: Path) -> None:
    recorder = SpoolingRecorder(outage.store, tmp_path / "spool.jsonl")
    for i in range(4):
        recorder.record([rec(f"s={i}"), rec(f"s={i}")])
    recorder.record([rec("s=0")])  # the same record spooled again
    with pytest.raises(sa.exc.OperationalError):
        recorder.flush()  # still down: the error is raised, the spool kept
    assert recorder.pending() == 9
    outage.end()
    report = recorder.flush()
    assert (report.flushed, report.rejected, report.rejected_path) == (9, 0, None)
    assert count(outage.store) == 4
    assert recorder.pending() == 0
    assert recorder.flush().flushed == 0


def test_a_flush_repeated_after_a_crash_before_truncation_writes_nothing_twice(
    store: HistoryStore, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    batch = [rec(f"s={i}", try_number=t) for i in range(3) for t in (1, 2)]
    JsonLinesRecorder(spool).record(batch)
    store.record(batch)  # committed, then the flusher died before emptying the spool
    report = SpoolingRecorder(store, spool).flush()
    assert report.flushed == 6
    assert count(store) == 6
    assert sum(r.latest for r in rows(store)) == 3


def test_corrupt_spool_lines_are_kept_aside_and_the_rest_flushed(
    store: HistoryStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = SpoolingRecorder(store, tmp_path / "spool.jsonl")
    good = [rec(f"s={i}") for i in range(3)]
    lines = [json.dumps(r.to_json()) for r in good]
    bad_state = json.dumps({**good[0].to_json(), "stream": "s=9", "state": "exploded"})
    recorder.spool_path.write_text(
        "\n".join(
            [lines[0], '{"workflow": "DC1", "process": "p", "sta', lines[1], "[1, 2]", bad_state, lines[2]]
        )
        + "\n\n"
        + '{"truncated by a crash": '  # no newline: the last write never finished
    )
    with caplog.at_level(logging.WARNING, logger="airflow_desc.history.spool"):
        report = recorder.flush()
    assert (report.flushed, report.rejected) == (3, 4)
    assert report.rejected_path == tmp_path / "spool.jsonl.rejected"
    assert count(store) == 3
    assert recorder.pending() == 0
    rejected = [json.loads(line) for line in report.rejected_path.read_text().splitlines()]
    assert [r["line"] for r in rejected] == [2, 4, 5, 8]
    assert rejected[0]["text"] == '{"workflow": "DC1", "process": "p", "sta'
    assert "exploded" in rejected[2]["error"]
    assert all(r["spool"] == str(recorder.spool_path) and r["error"] for r in rejected)
    assert any("spool.jsonl:2 is not a process record" in r.getMessage() for r in caplog.records)


def test_corrupt_lines_are_kept_aside_once_even_when_the_db_is_down(outage: Outage, tmp_path: Path) -> None:
    recorder = SpoolingRecorder(outage.store, tmp_path / "spool.jsonl")
    recorder.record([rec("s=1")])
    with open(recorder.spool_path, "a") as f:
        f.write("garbage\n")
    recorder.record([rec("s=2")])  # still down: appended, the spool is not even read
    with pytest.raises(sa.exc.OperationalError):
        recorder.flush()  # reads it: garbage moves aside, the records stay spooled
    recorder.record([rec("s=3")])
    with pytest.raises(sa.exc.OperationalError):
        recorder.flush()
    assert len(recorder.rejected_path.read_text().splitlines()) == 1
    assert [d["stream"] for d in spool_lines(recorder)] == ["s=1", "s=2", "s=3"]
    outage.end()
    assert recorder.flush() == FlushReport(flushed=3, rejected=0, rejected_path=None)
    assert len(recorder.rejected_path.read_text().splitlines()) == 1
    assert count(outage.store) == 3


def test_a_record_the_db_refuses_is_kept_aside_and_does_not_block_the_others(
    store: HistoryStore, tmp_path: Path
) -> None:
    recorder = SpoolingRecorder(store, tmp_path / "spool.jsonl")
    unstorable = rec("s=bad", extra={"not json": {1, 2}})  # a set: cannot be bound as JSON
    recorder.record([rec("s=1"), unstorable, rec("s=2")])
    assert count(store) == 2
    [rejected] = [json.loads(line) for line in recorder.rejected_path.read_text().splitlines()]
    assert rejected["line"] is None and "s=bad" in rejected["text"] and "set" in rejected["error"]
    recorder.record([rec("s=3")])
    assert count(store) == 3
    assert recorder.pending() == 0


def test_unknown_connection_id_spools_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_HISTORY", raising=False)
    recorder = SpoolingRecorder(HistoryStore.from_conn_id("no_such_history"), tmp_path / "spool.jsonl")
    recorder.record([rec()])
    assert recorder.pending() == 1


def _spool_from_another_process(url: str, spool: str, worker: int) -> None:
    recorder = SpoolingRecorder(HistoryStore(url), spool)
    for batch in range(20):
        recorder.record([rec(f"w={worker}/b={batch}/i={i}") for i in range(5)])


def test_concurrent_processes_spool_and_flush_without_losing_or_doubling(
    outage: Outage, tmp_path: Path
) -> None:
    spool = str(tmp_path / "spool.jsonl")
    url = outage.store.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_spool_from_another_process, args=(url, spool, w)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    recorder = SpoolingRecorder(outage.store, spool)
    assert recorder.pending() == 400
    outage.end()
    # Half the workers write while the spool is flushed: every record lands exactly once.
    workers = [ctx.Process(target=_spool_from_another_process, args=(url, spool, w)) for w in range(4, 6)]
    for p in workers:
        p.start()
    report = recorder.flush()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    assert report.rejected == 0
    recorder.flush()
    assert count(outage.store) == 600
    assert recorder.pending() == 0


def test_flush_command_line(outage: Outage, tmp_path: Path) -> None:
    spool = tmp_path / "spool.jsonl"
    SpoolingRecorder(outage.store, spool).record([rec("s=1"), rec("s=2")])
    outage.end()
    url = outage.store.url.render_as_string(hide_password=False)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")}
    argv = [sys.executable, "-m", "airflow_desc.history", "flush", "--db", url, "--spool", str(spool)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "flushed 2 record(s)" in proc.stdout
    assert count(outage.store) == 2


def test_a_rerun_request_names_who_and_why_on_the_attempts_after_it(store: HistoryStore) -> None:
    from airflow_desc.history.records import RerunRequest
    from airflow_desc.history.schema import process_instances as pi

    def attempt(stream: str, try_number: int, task_id: str = "processSensor.bundle") -> ProcessRecord:
        return ProcessRecord(
            workflow="DC1-DM12", task="processSensor", version="1.0", process="processEimage",
            state="success", dag_id="dc1", run_id="r1", task_id=task_id, map_index=3, stream=stream,
            try_number=try_number,
        )  # fmt: skip

    store.record([attempt("visit=1/sensor=S0", 1), attempt("visit=1/sensor=S1", 1)])
    when = datetime(2026, 11, 28, 12, 0)
    store.request_reruns([
        RerunRequest("dc1", "r1", "processSensor.bundle", 3, 1, "alice", "first fix", when),
        RerunRequest("dc1", "r1", "processSensor.bundle", 3, 1, "bob", "out of memory: more memory", when),
    ])  # fmt: skip
    store.record([
        attempt("visit=1/sensor=S1", 2),  # the bundle's rerun: its failed stream
        attempt("visit=1/sensor=S0", 2, task_id="other.bundle"),  # another task instance
    ])  # fmt: skip
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(pi.c.task_id, pi.c.stream_ref, pi.c.try_number, pi.c.triggered_by, pi.c.rerun_reason)
            .order_by(pi.c.id)
        ).all()  # fmt: skip
    got = [(t, n, who, why) for t, _, n, who, why in rows]
    assert got == [
        ("processSensor.bundle", 1, None, None),  # before the request: untouched
        ("processSensor.bundle", 1, None, None),
        ("processSensor.bundle", 2, "bob", "out of memory: more memory"),  # the latest request wins
        ("other.bundle", 2, None, None),
    ]
