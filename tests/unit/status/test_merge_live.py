"""Merging live task-instance states with the history's counts (status.merge.merge_live)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from airflow_desc.history.queries import LATEST_COLUMNS, STATUS_COLUMNS
from airflow_desc.reports.status import status_table
from airflow_desc.status.live import LIVE_COLUMNS, hold_notes
from airflow_desc.status.merge import merge_live

ROW = {"task": "processVisit", "version": "3.2", "process": "calibrateVisit", "process_type": "batch"}


def live_row(
    state: str | None, try_number: int = 1, *, bundled: bool = False, index: int = 0
) -> dict[str, Any]:
    return {
        "dag_id": "d", "run_id": "r", "task_id": "processVisit.bundle" if bundled else "calibrate",
        "map_index": index, "stream": f"visit={index}" if bundled else None, "ti_state": state,
        "try_number": try_number, "bundled": bundled, **ROW,
    }  # fmt: skip


def record(state: str, try_number: int = 1, *, bundled: bool = False, index: int = 0) -> dict[str, Any]:
    return {
        "dag_id": "d", "run_id": "r", "task_id": "processVisit.bundle" if bundled else "calibrate",
        "map_index": index, "stream": f"visit={index}", "try_number": try_number, "state": state, **ROW,
    }  # fmt: skip


def counts_of(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=list(LATEST_COLUMNS))
    if frame.empty:
        return pd.DataFrame(columns=list(STATUS_COLUMNS))
    grouped = frame.groupby(["task", "version", "process", "process_type", "state"]).size()
    out = grouped.rename("count").reset_index()
    out["attempts"] = out["count"]
    return out


def merged(live: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, int]:
    counts, live_counts = merge_live(
        counts_of(records), pd.DataFrame(live, columns=list(LIVE_COLUMNS)),
        pd.DataFrame(records, columns=list(LATEST_COLUMNS)),
    )  # fmt: skip
    table = status_table(counts, live_counts)
    row = table.iloc[0]
    return {c: int(row[c]) for c in table.columns[4:-2] if int(row[c])}


@pytest.mark.parametrize(
    ("state", "column"),
    [(None, "Waiting"), ("scheduled", "Ready"), ("queued", "Queued"), ("deferred", "Submitted"),
     ("running", "Running"), ("up_for_retry", "Waiting"), ("restarting", "Cancelling"),
     ("upstream_failed", "Skipped")],
)  # fmt: skip
def test_without_a_record_the_task_instance_state_counts(state: str | None, column: str) -> None:
    assert merged([live_row(state)], []) == {column: 1}


def test_a_removed_task_is_not_counted() -> None:
    counts, live = merge_live(counts_of([]), pd.DataFrame([live_row("removed")]), pd.DataFrame())
    assert live.empty


def test_a_finished_task_instance_is_counted_by_its_record() -> None:
    # Airflow says failed; the record knows SLURM ended it for time.
    assert merged([live_row("failed")], [record("terminated")]) == {"Terminated": 1}


def test_a_cleared_or_retried_instance_leaves_its_recorded_column() -> None:
    assert merged([live_row(None)], [record("failed")]) == {"Waiting": 1}
    assert merged([live_row("up_for_retry")], [record("terminated")]) == {"Waiting": 1}
    assert merged([live_row("queued", 2)], [record("failed")]) == {"Queued": 1}


def test_a_try_under_way_beats_an_earlier_try_only() -> None:
    assert merged([live_row("deferred", 2)], [record("failed", 1)]) == {"Submitted": 1}
    # The record of this very try was written before the task instance finished: it wins.
    assert merged([live_row("running", 2)], [record("success", 2)]) == {"Success": 1}


def test_a_cleared_bundle_keeps_the_successes_it_will_not_rerun() -> None:
    live = [live_row("queued", 2, bundled=True, index=i) for i in range(3)]
    records = [record("success", bundled=True, index=0), record("failed", bundled=True, index=1)]
    assert merged(live, records) == {"Success": 1, "Queued": 2}


def test_counts_outside_the_live_runs_are_kept() -> None:
    other = {**record("success"), "run_id": "older"}
    assert merged([live_row("scheduled")], [other]) == {"Success": 1, "Ready": 1}


@pytest.mark.parametrize(
    ("slurm_state", "column"),
    [("PENDING", "Submitted"), ("RUNNING", "Running"), ("COMPLETING", "Running"), ("COMPLETED", "Success"),
     ("TIMEOUT", "Terminated"), ("CANCELLED by 0", "Cancelled"), (None, "Submitted")],
)  # fmt: skip
def test_a_deferred_task_counts_by_its_jobs_state(slurm_state: str | None, column: str) -> None:
    assert merged([{**live_row("deferred"), "slurm_state": slurm_state}], []) == {column: 1}


def test_the_jobs_state_is_only_for_deferred_task_instances() -> None:
    assert merged([{**live_row("queued"), "slurm_state": "RUNNING"}], []) == {"Queued": 1}


def test_a_task_deferred_before_submitting_is_queued_with_what_it_waits_for() -> None:
    waiting = "waiting for maintenance to end at 2026-12-06 16:10 UTC (maintenance reservation m ...)"
    assert merged([{**live_row("deferred"), "hold": waiting}], []) == {"Queued": 1}
    # A later try waiting out maintenance supersedes the earlier try's record, as a queued one would.
    assert merged([{**live_row("deferred", 2), "hold": waiting}], [record("failed")]) == {"Queued": 1}
    assert hold_notes([waiting, waiting, "waiting for partition debug of s3df to come up: ..."]) == [
        f"2 task instance(s) not submitted yet, counted as Queued: {waiting}",
        "1 task instance(s) not submitted yet, counted as Queued: waiting for partition debug of s3df to "
        "come up: ...",
    ]
