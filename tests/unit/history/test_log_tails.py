"""Log tails in the history (SQLite): kept with their attempt, read back by attempt_logs, migrated."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_desc.history import HistoryFilter, HistoryStore, JsonLinesRecorder, ProcessRecord
from airflow_desc.history.engine import _alembic_config
from airflow_desc.history.queries import ATTEMPT_LOG_COLUMNS, attempt_logs
from airflow_desc.history.schema import log_tails


def rec(stream: str, try_number: int = 1, **kw: Any) -> ProcessRecord:
    values: dict[str, Any] = {
        "workflow": "DC1-DM12", "process": "processEimage", "task": "processSensor", "state": "success",
        "dag_id": "dc1", "run_id": "run1", "task_id": "processSensor.bundle", "map_index": 0,
        "stream": stream, "try_number": try_number, "cluster": "perlmutter", "job_id": "500",
        "log_path": f"/home/desc/airflow-desc/x/logs/{stream.replace('/', '_')}.log",
        "elapsed_s": 10.0, "total_cpu_s": 9.5, "max_rss_bytes": 2**27, "node": "pm-n1",
    }  # fmt: skip
    values.update(kw)
    return ProcessRecord(**values)


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    s = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    yield s
    s.dispose()


def tails(store: HistoryStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(log_tails.c.tail).order_by(log_tails.c.attempt_ref)).scalars())


def test_a_tail_is_kept_with_its_attempt_and_replaced_by_a_later_write_of_it(store: HistoryStore) -> None:
    store.record([rec("visit=1", log_tail="one\x00\n"), rec("visit=2")])
    assert tails(store) == ["one\n"]  # NUL dropped (PostgreSQL refuses it); no tail, no row
    store.record([rec("visit=1", log_tail="one, again\n")])
    store.record([rec("visit=1")])  # the same attempt written again without a tail keeps it
    assert tails(store) == ["one, again\n"]


def test_attempt_logs_lists_the_latest_attempts_or_one_try_with_their_tails(store: HistoryStore) -> None:
    store.record([
        rec("visit=1", state="failed", reason="python-exception", log_tail="Traceback\nValueError: PSF\n"),
        rec("visit=1", try_number=2, log_tail="try 2 ok\n"),
        rec("visit=2", log_tail="visit 2 ok\n"),
        rec("visit=3", process="assemble"),
    ])  # fmt: skip
    frame = attempt_logs(store.engine, HistoryFilter(process="processEimage"), with_tails=True)
    assert tuple(frame.columns) == (*ATTEMPT_LOG_COLUMNS, "tail")
    assert list(zip(frame["stream"], frame["try_number"], frame["tail"], strict=True)) == [
        ("visit=1", 2, "try 2 ok\n"), ("visit=2", 1, "visit 2 ok\n"),
    ]  # fmt: skip
    first = attempt_logs(store.engine, HistoryFilter(process="processEimage"), try_number=1, with_tails=True)
    assert list(first["tail"]) == ["Traceback\nValueError: PSF\n", "visit 2 ok\n"]
    assert list(first["reason"]) == ["python-exception", None]
    failed = attempt_logs(store.engine, HistoryFilter(state="failed", stream_glob="visit=*"), try_number=1)
    assert list(failed["stream"]) == ["visit=1"] and "tail" not in failed.columns
    one = attempt_logs(store.engine, attempt_id=int(failed["attempt_id"][0]), with_tails=True)
    assert one["tail"][0].startswith("Traceback") and bool(one["has_tail"][0])
    assert not attempt_logs(store.engine, HistoryFilter(process="assemble"))["has_tail"][0]
    none = attempt_logs(store.engine, HistoryFilter(process="processEimage", dag_ids=["other"]))
    assert none.empty
    with pytest.raises(ValueError, match="unknown process 'nope'"):
        attempt_logs(store.engine, HistoryFilter(process="nope"))


def test_a_tail_travels_through_the_json_lines_of_the_spool(tmp_path: Path) -> None:
    record = rec("visit=1", log_tail="line\n")
    JsonLinesRecorder(tmp_path / "spool.jsonl").record([record])
    assert JsonLinesRecorder(tmp_path / "spool.jsonl").read() == [record]
    assert dataclasses.asdict(record)["log_tail"] == "line\n"


def test_the_migration_goes_down_and_up_again(store: HistoryStore) -> None:
    from alembic import command

    store.record([rec("visit=1", log_tail="kept\n")])
    config = _alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    assert "log_tails" not in sa.inspect(store.engine).get_table_names()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    assert tails(store) == []  # the tails went with the table; the attempts stay
    store.record([rec("visit=1", log_tail="kept again\n")])
    assert tails(store) == ["kept again\n"]
