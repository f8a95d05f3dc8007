"""The spooling recorder with real files and real processes: bad lines, its two locks, a killed flusher.

The basic spool behaviour (spool when down, flush once, the command line) is in ``test_store.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_desc.history import HistoryStore, ProcessRecord, SpoolingRecorder
from airflow_desc.history.engine import DEFAULT_CONNECT_TIMEOUT_S
from airflow_desc.history.file_lock import file_lock
from airflow_desc.history.spool import MAX_LINE_BYTES
from tests.unit.history.test_store import Outage, count, rec, rows, spool_lines

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    s = HistoryStore(f"sqlite:///{tmp_path / 'desc' / 'history.db'}")
    yield s
    s.dispose()


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Outage]:
    o = Outage(tmp_path)
    yield o
    o.store.dispose()


def line(record: ProcessRecord, **changes: Any) -> str:
    return json.dumps({**record.to_json(), **changes}, sort_keys=True)


def rejected(recorder: SpoolingRecorder) -> list[dict[str, Any]]:
    if not recorder.rejected_path.exists():
        return []
    return [json.loads(x) for x in recorder.rejected_path.read_text().splitlines()]


# --- what is not a record is set aside, and never blocks the rest -------------------------------------------


def test_a_spool_line_of_a_wrong_type_is_set_aside_and_blocks_nothing(
    store: HistoryStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = SpoolingRecorder(store, tmp_path / "spool.jsonl")
    huge = line(rec("s=huge"), message="x" * (MAX_LINE_BYTES + 10))
    recorder.spool_path.write_text(
        "\n".join([
            line(rec("s=1")),
            line(rec("s=typed"), try_number="2"),  # found on main: blocked every later write for good
            '{"workflow": "DC1-DM12", "process": ',  # not JSON
            "42",  # JSON, not an object
            huge,
            line(rec("s=2")),
            line(rec("s=year"), extra={"survey_year": "the first"}),  # right types; the writer refuses it
            line(rec("s=nested"), extra={"deep": json.loads("[" * 50 + "]" * 50)}),  # a record all the same
        ])
        + "\n"
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="airflow_desc.history.spool"):
        recorder.record([rec("s=3")])
    assert {r.state for r in rows(store)} == {"success"} and count(store) == 4  # s=1, s=2, s=nested, s=3
    assert recorder.pending() == 0
    got = rejected(recorder)
    assert [(r["line"], r["spool"]) for r in got] == [(n, str(recorder.spool_path)) for n in (2, 3, 4, 5, 7)]
    by_line = {r["line"]: r for r in got}
    assert by_line[2]["error"] == "field try_number: expected int, got str '2'"
    assert "s=typed" in by_line[2]["text"]
    assert by_line[3]["text"] == '{"workflow": "DC1-DM12", "process": '
    assert by_line[4]["error"] == "a JSON int, not an object"
    assert f"a line of {len(huge) + 1} bytes, over the limit of {MAX_LINE_BYTES}" in by_line[5]["error"]
    assert len(by_line[5]["text"]) <= 64 * 1024 and by_line[5]["text"].startswith(huge[:100])
    assert "the first" in by_line[7]["error"] and "s=year" in by_line[7]["text"]
    assert any("spool.jsonl:2 is not a process record" in r.getMessage() for r in caplog.records)
    # Later writes go through, and nothing is set aside twice.
    recorder.record([rec("s=4")])
    assert count(store) == 5 and len(rejected(recorder)) == 5


def test_a_record_of_a_wrong_type_given_to_record_is_set_aside_at_once(
    store: HistoryStore, tmp_path: Path
) -> None:
    recorder = SpoolingRecorder(store, tmp_path / "spool.jsonl")
    recorder.record([rec("s=1"), rec("s=2", try_number="2"), rec("s=3", elapsed_s="12 s")])
    assert count(store) == 1 and recorder.pending() == 0
    assert [(r["line"], r["error"][:20]) for r in rejected(recorder)] == [
        (None, "field try_number: ex"),
        (None, "field elapsed_s: exp"),
    ]
    recorder.record([rec("s=4")])
    assert count(store) == 2


def test_a_bad_record_spooled_while_the_db_was_down_is_set_aside_when_it_is_back(
    outage: Outage, tmp_path: Path
) -> None:
    recorder = SpoolingRecorder(outage.store, tmp_path / "spool.jsonl")
    recorder.record([rec("s=1"), rec("s=year", extra={"survey_year": "the first"}), rec("s=2")])
    assert recorder.pending() == 3
    outage.end()
    recorder.record([rec("s=3")])
    assert count(outage.store) == 3 and recorder.pending() == 0
    [bad] = rejected(recorder)
    assert bad["line"] == 2 and "s=year" in bad["text"]


def test_a_line_cut_short_by_a_dead_writer_costs_only_itself(outage: Outage, tmp_path: Path) -> None:
    recorder = SpoolingRecorder(outage.store, tmp_path / "spool.jsonl")
    recorder.spool_path.write_text(line(rec("s=1")) + "\n" + line(rec("s=2"))[:40])  # no newline
    recorder.record([rec("s=3")])  # still down: appended on a line of its own
    assert recorder.spool_path.read_text().count("\n") == 3
    outage.end()
    report = recorder.flush()
    assert (report.flushed, report.rejected) == (2, 1)
    assert [r["line"] for r in rejected(recorder)] == [2]


# --- the file lock covers the files only -------------------------------------------------------------------


def test_a_writer_that_finds_another_flushing_spools_and_returns_at_once(
    store: HistoryStore, tmp_path: Path
) -> None:
    recorder = SpoolingRecorder(store, tmp_path / "spool.jsonl")
    store.upgrade()
    with file_lock(recorder.flush_lock_path):  # another flusher, stuck on its database
        start = time.monotonic()
        recorder.record([rec("s=1", state="running")])
        recorder.record([rec("s=1", state="failed"), rec("s=2")])
        assert time.monotonic() - start < 1
        assert count(store) == 0
        assert [(d["stream"], d["state"]) for d in spool_lines(recorder)] == [
            ("s=1", "running"), ("s=1", "failed"), ("s=2", "success"),
        ]  # fmt: skip
    recorder.record([])  # the next writer writes them, in the order they were made
    assert sorted((r.stream_ref, r.state) for r in rows(store)) == [(2, "failed"), (3, "success")]
    assert recorder.pending() == 0


class _CountingHistory:
    """Triggers counting every insert and update of an attempt row: a record written twice shows."""

    def __init__(self, store: HistoryStore) -> None:
        store.upgrade()
        self.store = store
        with store.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE writes (kind TEXT)")
            for kind in ("INSERT", "UPDATE"):
                conn.exec_driver_sql(
                    f"CREATE TRIGGER count_{kind.lower()} AFTER {kind} ON process_instances "
                    f"BEGIN INSERT INTO writes VALUES ('{kind}'); END"
                )

    def writes(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT kind, count(*) FROM writes GROUP BY kind").all())


def _flush_at_once(url: str, spool: str, go: Any, reports: Any) -> None:
    recorder = SpoolingRecorder(HistoryStore(url, auto_upgrade=False), spool)
    go.wait(30)
    reports.put(recorder.flush().flushed)


def _record_at_once(url: str, spool: str, go: Any, worker: int) -> None:
    recorder = SpoolingRecorder(HistoryStore(url, auto_upgrade=False), spool)
    go.wait(30)
    for batch in range(10):
        recorder.record([rec(f"w={worker}/b={batch}/i={i}") for i in range(5)])


def test_two_processes_flushing_at_once_write_each_record_once(outage: Outage, tmp_path: Path) -> None:
    spool = str(tmp_path / "spool.jsonl")
    recorder = SpoolingRecorder(outage.store, spool)
    for batch in range(30):
        recorder.record([rec(f"b={batch}/i={i}") for i in range(10)])
    assert recorder.pending() == 300
    outage.end()
    history = _CountingHistory(outage.store)
    url = outage.store.url.render_as_string(hide_password=False)
    go, reports = FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_flush_at_once, args=(url, spool, go, reports)) for _ in range(2)]
    procs += [FORK.Process(target=_record_at_once, args=(url, spool, go, w)) for w in range(2)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    flushed = sorted(reports.get(timeout=5) for _ in range(2))
    recorder.flush()  # what the writers appended behind the last flusher, if any
    assert count(outage.store) == 400 and recorder.pending() == 0
    assert history.writes() == {"INSERT": 400}  # never written twice
    # Which process writes the 300 spooled records is a race: a recorder's record() writes the spool's
    # head too, so both flushers may find it empty; none may write more than there was.
    assert sum(flushed) <= 300 + 100


def _killed_while_writing(url: str, spool: str, after_commit: bool) -> None:
    class DiesMidWrite(HistoryStore):
        def record(self, records: Sequence[ProcessRecord]) -> None:
            if after_commit:
                super().record(records)
            os.kill(os.getpid(), signal.SIGKILL)  # a task killed by Airflow mid-write

    SpoolingRecorder(DiesMidWrite(url), spool).flush()


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "after-commit"])
def test_a_flusher_killed_mid_write_loses_nothing_and_doubles_nothing(
    outage: Outage, tmp_path: Path, after_commit: bool
) -> None:
    spool = str(tmp_path / "spool.jsonl")
    recorder = SpoolingRecorder(outage.store, spool)
    recorder.record([rec(f"s={i}", try_number=t) for i in range(20) for t in (1, 2)])
    outage.end()
    outage.store.upgrade()
    url = outage.store.url.render_as_string(hide_password=False)
    killed = FORK.Process(target=_killed_while_writing, args=(url, spool, after_commit))
    killed.start()
    killed.join(60)
    assert killed.exitcode == -signal.SIGKILL
    assert recorder.pending() == 40  # the spool is cut only after a commit it saw
    assert count(outage.store) == (40 if after_commit else 0)
    report = recorder.flush()  # the dead flusher's lock went with it
    assert (report.flushed, report.rejected) == (40, 0)
    assert count(outage.store) == 40
    with outage.store.engine.connect() as conn:
        latest = conn.execute(sa.text("SELECT try_number FROM process_instances WHERE latest")).scalars()
        assert set(latest) == {2}


# --- a history that does not answer -----------------------------------------------------------------------


class SilentServer:
    """A TCP port that accepts connections and never says a word: a PostgreSQL host that hangs."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed by close()
            while True:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)  # held open, never read nor answered

    def url(self) -> str:
        return f"postgresql://desc:pw@127.0.0.1:{self.port}/desc_history"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not
        self.sock.close()
        for conn in self.accepted:
            conn.close()
        self.thread.join(5)


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# What "a few seconds" allows: the connect timeout and the time to give up and spool.
BOUND_S = DEFAULT_CONNECT_TIMEOUT_S + 2


def test_a_history_that_never_answers_holds_a_task_a_few_seconds_at_most(
    silent: SilentServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    recorder = SpoolingRecorder(HistoryStore(silent.url()), spool)
    start = time.monotonic()
    recorder.record([rec("s=1")])
    took = time.monotonic() - start
    assert took < BOUND_S, f"record() took {took:.1f} s"
    assert silent.accepted  # it did reach the port, and waited there
    assert [d["stream"] for d in spool_lines(recorder)] == ["s=1"]
    # A later flush against a working history writes it.
    working = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    assert SpoolingRecorder(working, spool).flush().flushed == 1
    assert count(working) == 1 and recorder.pending() == 0
    working.dispose()


def test_tasks_finishing_together_behind_a_silent_history_do_not_queue(
    silent: SilentServer, tmp_path: Path
) -> None:
    # Found on main: three tasks waited 10, 20 and 30 s, each behind the one holding the spool lock.
    spool = tmp_path / "spool.jsonl"
    took: dict[int, float] = {}

    def task(i: int) -> None:
        start = time.monotonic()
        SpoolingRecorder(HistoryStore(silent.url()), spool).record([rec(f"s={i}")])
        took[i] = time.monotonic() - start

    threads = [threading.Thread(target=task, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(took) == [0, 1, 2]
    assert max(took.values()) < BOUND_S, took
    assert sorted(d["stream"] for d in spool_lines(SpoolingRecorder(HistoryStore("sqlite://"), spool))) == [
        "s=0", "s=1", "s=2",
    ]  # fmt: skip


def test_flush_pending_writes_the_spool_once_the_db_is_back_without_waiting_or_raising(
    outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool.jsonl"
    recorder = SpoolingRecorder(outage.store, spool)
    assert recorder.flush_pending() is None  # nothing spooled: nothing tried
    recorder.record([rec("s=1")])
    with caplog.at_level(logging.WARNING, logger="airflow_desc.history.spool"):
        assert recorder.flush_pending() is False  # still down: a warning, the record stays
    assert recorder.pending() == 1 and "unavailable" in caplog.text
    outage.end()
    assert recorder.flush_pending(min_interval_s=3600) is None  # tried a moment ago
    other = SpoolingRecorder(outage.store, spool)
    with file_lock(other.flush_lock_path):  # another process is writing the spool out
        assert other.flush_pending() is None
    assert other.flush_pending(min_interval_s=3600) is True
    assert recorder.pending() == 0 and count(outage.store) == 1
