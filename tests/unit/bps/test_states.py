"""The status table's rows as ctrl_bps states per label (what `bps report` will show)."""

from __future__ import annotations

from airflow_desc.bps.states import COLUMN_STATES, label_states, run_state
from airflow_desc.reports.status import STATE_COLUMNS


def row(task: str, process: str, **counts: int) -> dict[str, object]:
    return {
        "Task": task,
        "Version": "1",
        "Process": process,
        "Type": "Batch",
        **dict.fromkeys(STATE_COLUMNS, 0),
        **counts,
    }


def test_every_state_column_has_a_wms_state() -> None:
    assert set(COLUMN_STATES) == set(STATE_COLUMNS)


def test_counts_per_label_add_up_to_its_jobs() -> None:
    rows = [
        row("run1", "pipetaskInit", Success=1),
        row("run1", "bpsQuanta", Success=1),
        row("task0", "task0", Success=3, Failed=1, Terminated=1),
        row("task1", "task1", Running=1, Submitted=1, Queued=1, Skipped=2),
        {"Task": "", "Process": "", "Type": "Totals", "Success": 5},
    ]
    jobs = {"pipetaskInit": 1, "task0": 5, "task1": 6, "task2": 5, "finalJob": 1}

    assert label_states(rows, jobs) == {
        "pipetaskInit": {"SUCCEEDED": 1},
        "task0": {"SUCCEEDED": 3, "FAILED": 2},
        "task1": {"RUNNING": 1, "PENDING": 2, "PRUNED": 2, "UNREADY": 1},
        "task2": {"UNREADY": 5},  # no streams yet: waiting for task1
        "finalJob": {"UNREADY": 1},
    }


def test_jobs_without_a_row_are_pruned_once_the_run_has_ended() -> None:
    rows = [row("task0", "task0", Failed=1, Success=1)]
    assert label_states(rows, {"task0": 2, "task1": 2}, missing="PRUNED") == {
        "task0": {"SUCCEEDED": 1, "FAILED": 1},
        "task1": {"PRUNED": 2},
    }


def test_a_dag_runs_state_is_the_submissions() -> None:
    assert [run_state(s) for s in ("queued", "running", "success", "failed", None, "odd")] == [
        "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "UNKNOWN", "UNKNOWN",
    ]  # fmt: skip
