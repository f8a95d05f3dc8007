"""Queries on the history store (SQLite): attempts with filters, the status table, per-process usage."""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airflow_desc.history import HistoryFilter, HistoryStore, ProcessRecord
from airflow_desc.history.count_queries import _status_counts_window
from airflow_desc.history.queries import (
    LATEST_COLUMNS,
    PROCESS_INSTANCE_COLUMNS,
    STATUS_COLUMNS,
    USAGE_COLUMNS,
    dag_ids_of,
    latest_attempts,
    process_instances,
    process_usage,
    status_counts,
    typical_elapsed,
)

T0 = datetime(2018, 1, 8, 8, 0, 0)
GB = 2**30


def rec(stream: str, state: str = "success", try_number: int = 1, **kw: Any) -> ProcessRecord:
    hours = kw.pop("hours", 0)
    values: dict[str, Any] = {
        "workflow": "DC1-DM12",
        "process": "processEimage",
        "task": "processSensor",
        "version": "1.0",
        "dag_id": "dc1",
        "run_id": "run1",
        "task_id": "processSensor.bundle",
        "map_index": 0,
        "stream": stream,
        "state": state,
        "try_number": try_number,
        "cluster": "perlmutter",
        "node": "nid000001",
        "job_id": str(5000000 + try_number),
        "step": "0",
        "reason": {"success": "success", "failed": "non-zero-exit", "terminated": "time-limit"}.get(state),
        "submit_time": T0 + timedelta(hours=hours),
        "start_time": T0 + timedelta(hours=hours, minutes=5),
        "end_time": T0 + timedelta(hours=hours, minutes=20),
        "elapsed_s": 900.0,
        "total_cpu_s": 850.0,
        "max_rss_bytes": int(1.4 * GB),
        "req_cpus": 1,
        "req_mem_bytes": 2 * GB,
        "req_walltime_s": 7200.0,
    }
    values.update(kw)
    return ProcessRecord(**values)


SENSOR = "visit=1/raft=R22/sensor=S{}"
HISTORY = [
    rec(SENSOR.format(0), extra={"run_conf": {"survey_year": 1, "visits": [1, 2]}}),
    rec(SENSOR.format(1), "terminated", 1),
    rec(SENSOR.format(1), "success", 2, hours=30, triggered_by="alice", rerun_reason="time limit: 4 h"),
    rec(SENSOR.format(2), "failed", 1, exit_code=3),
    rec(SENSOR.format(2), "failed", 2, hours=30, exit_code=3, cluster="s3df", node="sdfrome001"),
    rec(SENSOR.format(3), "terminated", 1, reason="out-of-memory", max_rss_bytes=2 * GB, hours=2),
    rec(
        "visit=1/raft=R22",
        process="setupEimageSensors",
        task="processRaft",
        process_type="script",
        cluster=None,
        node="airflow-worker-1",
        job_id=None,
        step=None,
    ),  # fmt: skip
    rec("visit=2/raft=R01/sensor=S00", run_id="run2", hours=50),
    rec(
        "visit=2/raft=R01/sensor=S01",
        "skipped",
        run_id="run2",
        hours=50,
        reason=None,
        submit_time=None,
        start_time=None,
        end_time=None,
    ),  # fmt: skip
    rec(
        "",
        process="report",
        task="DC1-DM12",
        version="1.16",
        process_type="script",
        task_id="report",
        map_index=-1,
        run_id="run2",
        hours=60,
    ),  # fmt: skip
    rec(
        "year=1/visit=7",
        workflow="Twinkles",
        task="Twinkles",
        variant="dithered",
        dag_id="twinkles",
        run_id="tw_y1",
        cluster="s3df",
        node="sdfrome002",
        hours=100,
    ),  # fmt: skip
]


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    s = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    # Written out of order, twice: neither may matter.
    s.record(HISTORY[::-1])
    s.record(HISTORY[:5])
    yield s
    s.dispose()


def as_record(row: pd.Series) -> ProcessRecord:
    values: dict[str, Any] = {}
    for name in PROCESS_INSTANCE_COLUMNS:
        if name in ("run_conf", "workflow_version", "spec_digest"):  # of the run, not of the record
            continue
        value = row[name]
        if isinstance(value, pd.Timestamp):
            value = value.to_pydatetime()
        elif value is pd.NaT or (not isinstance(value, dict | list) and pd.isna(value)):
            value = None
        elif hasattr(value, "item"):
            value = value.item()
        values[name] = value
    return ProcessRecord(**values)


def counts(frame: pd.DataFrame) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r.process, r.state): (r.count, r.attempts) for r in frame.itertuples()}


# --- process_instances ------------------------------------------------------------------------------------


def test_one_row_per_attempt_with_every_record_field(store: HistoryStore) -> None:
    frame = process_instances(store.engine)
    assert tuple(frame.columns) == PROCESS_INSTANCE_COLUMNS
    assert len(frame) == len(HISTORY)
    got = sorted((as_record(row) for _, row in frame.iterrows()), key=lambda r: r.key())
    assert got == sorted(HISTORY, key=lambda r: r.key())


def test_run_conf_comes_with_each_attempt(store: HistoryStore) -> None:
    frame = process_instances(store.engine, HistoryFilter(run_id="run1"))
    assert all(conf == {"survey_year": 1, "visits": [1, 2]} for conf in frame["run_conf"])
    assert process_instances(store.engine, HistoryFilter(run_id="run2"))["run_conf"].isna().all()


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"workflow": "Twinkles"}, {"year=1/visit=7"}),
        ({"run_id": "run2"}, {"visit=2/raft=R01/sensor=S00", "visit=2/raft=R01/sensor=S01", ""}),
        ({"process": "setupEimageSensors"}, {"visit=1/raft=R22"}),
        ({"stream_glob": "visit=1/*"}, {SENSOR.format(i) for i in range(4)} | {"visit=1/raft=R22"}),
        ({"stream_glob": "*/sensor=S0?"}, {"visit=2/raft=R01/sensor=S00", "visit=2/raft=R01/sensor=S01"}),
        ({"stream_glob": "VISIT=1/*"}, set()),  # case-sensitive
        ({"stream_glob": ""}, {""}),
        ({"state": "terminated"}, {SENSOR.format(1), SENSOR.format(3)}),
        ({"state": "terminated", "latest_only": True}, {SENSOR.format(3)}),
        ({"state": "failed", "latest_only": True, "workflow": "DC1-DM12"}, {SENSOR.format(2)}),
        ({"reason": "out-of-memory"}, {SENSOR.format(3)}),
        ({"cluster": "s3df"}, {SENSOR.format(2), "year=1/visit=7"}),
        ({"node": "sdfrome001"}, {SENSOR.format(2)}),
        ({"since": T0 + timedelta(hours=40)}, {"visit=2/raft=R01/sensor=S00", "", "year=1/visit=7"}),
        ({"since": T0 + timedelta(hours=2), "until": T0 + timedelta(hours=31)},
         {SENSOR.format(1), SENSOR.format(2), SENSOR.format(3)}),
        # Aware bounds are compared in UTC, as aware times are stored.
        ({"since": datetime(2018, 1, 12, 13, tzinfo=timezone(timedelta(hours=1)))}, {"year=1/visit=7"}),
    ],
)  # fmt: skip
def test_filters(store: HistoryStore, filters: dict[str, Any], expected: set[str]) -> None:
    selection = {k: v for k, v in filters.items() if k != "latest_only"}
    latest_only = filters.get("latest_only", False)
    frame = process_instances(store.engine, HistoryFilter(**selection), latest_only=latest_only)
    assert set(frame["stream"]) == expected


def test_latest_only_gives_one_row_per_instance(store: HistoryStore) -> None:
    frame = process_instances(store.engine, latest_only=True)
    assert len(frame) == len(HISTORY) - 2
    assert frame.groupby(["run_id", "stream", "process"]).size().max() == 1
    assert set(frame.loc[frame["stream"] == SENSOR.format(1), "try_number"]) == {2}


def test_limit_and_order_of_first_recording(store: HistoryStore) -> None:
    frame = process_instances(store.engine, limit=3)
    assert list(frame["stream"]) == ["year=1/visit=7", "", "visit=2/raft=R01/sensor=S01"]


def test_glob_treats_sql_wildcards_as_plain_characters(tmp_path: Path) -> None:
    s = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    s.record([rec("x=a_b"), rec("x=aXb"), rec("x=a%b"), rec("x=[a]")])
    assert set(process_instances(s.engine, HistoryFilter(stream_glob="x=a_b"))["stream"]) == {"x=a_b"}
    assert set(process_instances(s.engine, HistoryFilter(stream_glob="x=a%b"))["stream"]) == {"x=a%b"}
    assert set(process_instances(s.engine, HistoryFilter(stream_glob="x=a?b"))["stream"]) == {
        "x=a_b",
        "x=aXb",
        "x=a%b",
    }
    assert set(process_instances(s.engine, HistoryFilter(stream_glob="x=[a]"))["stream"]) == {"x=[a]"}
    s.dispose()


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"workflow": "DC2"}, "unknown workflow 'DC2'; the history holds: DC1-DM12, Twinkles"),
        ({"process": "processEImage"}, "unknown process 'processEImage'; the history holds: processEimage, "
                                       "report, setupEimageSensors"),
        ({"state": "done"}, "unknown state 'done'; the states are: waiting, ready, queued, submitted, "
                            "running, success, failed, terminated, cancelling, cancelled, skipped"),
        ({"run_id": "run9"}, "unknown run_id 'run9'; the history holds: run1, run2, tw_y1"),
    ],
)  # fmt: skip
def test_unknown_names_list_the_valid_ones(
    store: HistoryStore, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        process_instances(store.engine, HistoryFilter(**filters))


def test_unknown_names_in_an_empty_history(tmp_path: Path) -> None:
    s = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    s.upgrade()
    with pytest.raises(ValueError, match=r"holds: \(none\)"):
        process_instances(s.engine, HistoryFilter(workflow="DC1-DM12"))
    assert process_instances(s.engine).empty
    assert status_counts(s.engine).empty
    s.dispose()


# --- status_counts ----------------------------------------------------------------------------------------


def test_status_table_counts_the_latest_attempt_and_all_attempts(store: HistoryStore) -> None:
    frame = status_counts(store.engine)
    assert tuple(frame.columns) == STATUS_COLUMNS
    assert frame.to_dict("records") == [
        {"task": "DC1-DM12", "version": "1.16", "process": "report", "process_type": "script",
         "state": "success", "count": 1, "attempts": 1},
        {"task": "Twinkles", "version": "1.0", "process": "processEimage", "process_type": "batch",
         "state": "success", "count": 1, "attempts": 1},
        {"task": "processRaft", "version": "1.0", "process": "setupEimageSensors", "process_type": "script",
         "state": "success", "count": 1, "attempts": 1},
        {"task": "processSensor", "version": "1.0", "process": "processEimage", "process_type": "batch",
         "state": "failed", "count": 1, "attempts": 2},
        {"task": "processSensor", "version": "1.0", "process": "processEimage", "process_type": "batch",
         "state": "skipped", "count": 1, "attempts": 1},
        {"task": "processSensor", "version": "1.0", "process": "processEimage", "process_type": "batch",
         "state": "success", "count": 3, "attempts": 4},
        {"task": "processSensor", "version": "1.0", "process": "processEimage", "process_type": "batch",
         "state": "terminated", "count": 1, "attempts": 1},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"workflow": "Twinkles"}, {("processEimage", "success"): (1, 1)}),
        ({"variant": "dithered"}, {("processEimage", "success"): (1, 1)}),
        ({"workflow": "DC1-DM12", "variant": ""},
         {("report", "success"): (1, 1), ("setupEimageSensors", "success"): (1, 1),
          ("processEimage", "failed"): (1, 2), ("processEimage", "skipped"): (1, 1),
          ("processEimage", "success"): (3, 4), ("processEimage", "terminated"): (1, 1)}),
        ({"run_id": "run2"}, {("report", "success"): (1, 1), ("processEimage", "skipped"): (1, 1),
                              ("processEimage", "success"): (1, 1)}),
        # The window applies to each instance's latest attempt; its earlier attempts still count.
        ({"since": T0 + timedelta(hours=20), "until": T0 + timedelta(hours=55)},
         {("processEimage", "failed"): (1, 2), ("processEimage", "success"): (2, 3)}),
        ({"until": T0 + timedelta(hours=1)}, {("processEimage", "success"): (1, 1),
                                              ("setupEimageSensors", "success"): (1, 1)}),
    ],
)  # fmt: skip
def test_status_table_filters(store: HistoryStore, filters: dict[str, Any], expected: dict[Any, Any]) -> None:
    assert counts(status_counts(store.engine, HistoryFilter(**filters))) == expected
    assert counts(_status_counts_window(store.engine, HistoryFilter(**filters))) == expected


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"workflow": "DC2"}, "unknown workflow 'DC2'; the history holds: DC1-DM12, Twinkles"),
        ({"variant": "undithered"}, "unknown variant 'undithered'; the history holds: '', dithered"),
        (
            {"workflow": "Twinkles", "variant": ""},
            "unknown variant of Twinkles ''; the history holds: dithered",
        ),
        ({"run_id": "nope"}, "unknown run_id 'nope'"),
    ],
)
def test_status_table_unknown_names(store: HistoryStore, filters: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        status_counts(store.engine, HistoryFilter(**filters))


def random_attempts(
    rng: random.Random, instances: int, more: Callable[[], dict[str, Any]] = dict
) -> list[ProcessRecord]:
    """Random attempts of ``instances`` process instances in random order: retries (up to 3 tries),
    resubmissions (up to 3 jobs a try), some attempts written twice with another state; ``more``
    draws further fields of each record."""
    pending: list[ProcessRecord] = []
    for instance in range(instances):
        stream = f"visit={instance % 7}/sensor={instance}"
        process = rng.choice(["processEimage", "imageDifference", "setupEimageSensors"])
        run_id = rng.choice(["run1", "run2", "run3"])
        for try_number in range(1, rng.choice([1, 1, 1, 2, 3]) + 1):
            for resubmit in range(rng.choice([1, 1, 1, 2, 3])):
                for _ in range(rng.choice([1, 1, 2])):  # some attempts are written twice, changed
                    pending.append(
                        rec(stream, rng.choice(["success", "failed", "terminated", "skipped", "running"]),
                            try_number, process=process, run_id=run_id, resubmit=resubmit, **more())
                    )  # fmt: skip
    rng.shuffle(pending)
    return pending


def test_status_table_agrees_with_a_recount_of_random_histories(tmp_path: Path) -> None:
    """Attempts written in random order, batches and rewrites: the latest flag never drifts.

    Some tries resubmitted their job after node failures: (try, resubmit) orders the attempts.
    """
    rng = random.Random(7)
    s = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    final: dict[tuple[Any, ...], ProcessRecord] = {}
    pending = random_attempts(rng, 300, lambda: {"hours": rng.uniform(0, 100)})
    while pending:
        n = rng.randint(1, 40)  # one cut: two draws dropped or repeated records
        batch, pending = pending[:n], pending[n:]
        s.record(batch)
        for r in batch:
            final[r.key()] = r
    expected: collections.Counter[tuple[str, str]] = collections.Counter()
    attempts: collections.Counter[tuple[str, str]] = collections.Counter()
    by_instance: dict[tuple[Any, ...], list[ProcessRecord]] = collections.defaultdict(list)
    for r in final.values():
        by_instance[r.key()[:-2]].append(r)
    for tries in by_instance.values():
        last = max(tries, key=lambda r: r.attempt())
        expected[(last.process, last.state)] += 1
        attempts[(last.process, last.state)] += len(tries)
    want = {k: (expected[k], attempts[k]) for k in expected}
    assert counts(status_counts(s.engine)) == want
    assert counts(_status_counts_window(s.engine)) == want
    latest = process_instances(s.engine, latest_only=True)
    assert len(latest) == len(by_instance)
    s.dispose()


# --- process_usage ----------------------------------------------------------------------------------------


def test_process_usage_gives_the_figures_columns(store: HistoryStore) -> None:
    frame = process_usage(store.engine, "processEimage")
    assert tuple(frame.columns) == USAGE_COLUMNS
    assert len(frame) == 9
    oom = frame[frame["reason"] == "out-of-memory"].iloc[0]
    assert (oom["max_rss"], oom["req_mem"], oom["state"]) == (2 * GB, 2 * GB, "terminated")
    assert frame["elapsed"].dtype == "float64"
    assert (
        list(frame["end_time"])
        == sorted(frame["end_time"].dropna()) + [pd.NaT] * frame["end_time"].isna().sum()
    )


def test_process_usage_filters(store: HistoryStore) -> None:
    def usage(**filters: Any) -> int:
        return len(process_usage(store.engine, "processEimage", HistoryFilter(**filters)))

    assert usage(workflow="DC1-DM12") == 8
    assert usage(run_id="run1") == 6
    assert len(process_usage(store.engine, "processEimage", latest_only=True)) == 7
    assert usage(cluster="s3df") == 2
    assert usage(since=T0 + timedelta(hours=29)) == 4


def test_typical_elapsed_is_the_median_of_the_newest_successes(tmp_path: Path) -> None:
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    runs = [rec(f"s={i}", elapsed_s=float(10 + i), hours=i) for i in range(7)]  # 10..16 s
    runs += [rec("s=9", "failed", elapsed_s=999.0, hours=20)]  # failures say nothing of a success's length
    runs += [rec("s=1", process="other", elapsed_s=3.0), rec("s=2", process="other", elapsed_s=4.0)]
    runs += [rec("s=1", workflow="Twinkles", dag_id="tw", process="other", elapsed_s=100.0, hours=30)]
    store.record(runs)
    assert typical_elapsed(store.engine, ["processEimage", "other", "unknown"], workflow="DC1-DM12") == {
        "processEimage": 13.0, "other": 3.5
    }  # fmt: skip
    assert typical_elapsed(store.engine, ["processEimage"], sample=2) == {"processEimage": 15.5}  # 15, 16
    assert typical_elapsed(store.engine, ["other"]) == {"other": 4.0}  # any workflow: 3, 4, 100
    store.dispose()


def test_process_usage_of_an_unknown_process(store: HistoryStore) -> None:
    with pytest.raises(ValueError, match="unknown process 'processEImage'; the history holds: processEimage"):
        process_usage(store.engine, "processEImage")


def test_latest_attempts_of_some_runs(store: HistoryStore) -> None:
    frame = latest_attempts(store.engine, [("dc1", "run1"), ("dc1", "no-such-run")])
    assert tuple(frame.columns) == LATEST_COLUMNS
    got = {(r.stream, r.process): (r.try_number, r.state) for r in frame.itertuples()}
    assert got == {
        (SENSOR.format(0), "processEimage"): (1, "success"),
        (SENSOR.format(1), "processEimage"): (2, "success"),
        (SENSOR.format(2), "processEimage"): (2, "failed"),
        (SENSOR.format(3), "processEimage"): (1, "terminated"),
        ("visit=1/raft=R22", "setupEimageSensors"): (1, "success"),
    }
    only = latest_attempts(
        store.engine, [("dc1", "run1"), ("dc1", "run2")], processes=["setupEimageSensors", "report"]
    )
    assert sorted(only["process"]) == ["report", "setupEimageSensors"]
    assert only.set_index("process").loc["report", "map_index"] == -1
    assert latest_attempts(store.engine, [("dc1", "run2")], task_ids=["report"])["process"].tolist() == [
        "report"
    ]
    assert latest_attempts(store.engine, []).empty


def test_queries_refuse_filters_they_cannot_apply(store: HistoryStore) -> None:
    with pytest.raises(TypeError, match="status_counts selects by .*, not by process"):
        status_counts(store.engine, HistoryFilter(process="processEimage"))
    with pytest.raises(TypeError, match="dag_ids_of selects by .*, not by state"):
        dag_ids_of(store.engine, HistoryFilter(state="failed"))
    with pytest.raises(TypeError, match="process_usage of 'processEimage' with a filter on process 'report'"):
        process_usage(store.engine, "processEimage", HistoryFilter(process="report"))


def test_dag_ids_of_ignores_the_time_window(store: HistoryStore) -> None:
    assert dag_ids_of(store.engine, HistoryFilter(until=T0 - timedelta(days=1))) == dag_ids_of(store.engine)


def test_a_tries_node_failed_job_is_an_attempt_of_its_own_and_the_resubmission_is_latest(
    store: HistoryStore,
) -> None:
    lost = rec("s=nf", "terminated", 2, resubmit=0, slurm_state="NODE_FAIL", reason="node-failure")
    again = rec("s=nf", "success", 2, resubmit=1)
    first = rec("s=nf", "failed", 1)
    store.record([again])
    store.record([lost, first])  # the earlier attempts arrive late (from a spool): still superseded
    frame = process_instances(store.engine, HistoryFilter(stream_glob="s=nf"))
    got = sorted(zip(frame["try_number"], frame["resubmit"], frame["state"], strict=True))
    assert got == [(1, 0, "failed"), (2, 0, "terminated"), (2, 1, "success")]
    latest = process_instances(store.engine, HistoryFilter(stream_glob="s=nf"), latest_only=True)
    assert list(zip(latest["try_number"], latest["resubmit"], strict=True)) == [(2, 1)]
    assert [r.key()[-2:] for r in (first, lost, again)] == [(1, 0), (2, 0), (2, 1)]
    assert sorted([again, first, lost], key=ProcessRecord.attempt) == [first, lost, again]
