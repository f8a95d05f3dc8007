"""The plugin's listener: what it records of a marked script task that succeeded, failed or skipped itself."""

from __future__ import annotations

import pathlib
import types
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_desc.history import JsonLinesRecorder, ProcessRecord
from airflow_desc.operators.identity import mark_script_process, note_skip
from airflow_desc.plugins import listener


@pytest.fixture
def history(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "history.jsonl"
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(path))
    return path


def task_instance(task: Any, task_id: str = "setupEimageVisits") -> Any:
    """The attributes of a task instance the listener reads (a RuntimeTaskInstance has them)."""
    return types.SimpleNamespace(
        task=task, dag_id="DC1-DM12_imsim-dithered", run_id="manual__1", task_id=task_id, map_index=-1,
        try_number=1, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )  # fmt: skip


def marked(**fields: Any) -> Any:
    return mark_script_process(types.SimpleNamespace(), **fields)


def only_record(history: pathlib.Path) -> ProcessRecord:
    [rec] = JsonLinesRecorder(history).read()
    return rec


def test_a_script_is_recorded_with_its_variant_and_workflow_identity(history: pathlib.Path) -> None:
    task = marked(
        workflow="DC1-DM12",
        task="DC1-DM12",
        version="1.16",
        variant="imsim-dithered",
        workflow_version="1.16",
    )
    listener.on_task_instance_success(None, task_instance(task))
    rec = only_record(history)
    assert (rec.process, rec.state, rec.process_type) == ("setupEimageVisits", "success", "script")
    # The same workflow identity (name, variant, version) as the batch processes' records.
    assert (rec.workflow, rec.variant, rec.extra) == (
        "DC1-DM12",
        "imsim-dithered",
        {"workflow_version": "1.16"},
    )
    assert rec.reason is None and rec.message is None


def test_a_script_marked_without_a_variant_records_none(history: pathlib.Path) -> None:
    listener.on_task_instance_success(None, task_instance(marked(task="DC1-DM12")))
    rec = only_record(history)
    assert (rec.workflow, rec.variant, rec.extra) == ("DC1-DM12_imsim-dithered", "", {})


def test_a_skip_is_recorded_with_the_reason_the_task_noted(history: pathlib.Path) -> None:
    task = marked(workflow="DC1-DM12", variant="imsim-dithered")
    note_skip(task, "upstream-failed", "upstream processVisit failed")
    listener.on_task_instance_skipped(None, task_instance(task, "launchL1L2"))
    rec = only_record(history)
    assert (rec.process, rec.state, rec.reason, rec.message) == (
        "launchL1L2", "skipped", "upstream-failed", "upstream processVisit failed",
    )  # fmt: skip


def test_a_skip_without_a_note_is_recorded_as_skipped_with_no_message(history: pathlib.Path) -> None:
    # Airflow 3.3 hands on_task_instance_skipped no exception: the message is not known.
    listener.on_task_instance_skipped(None, task_instance(marked(workflow="DC1-DM12")))
    rec = only_record(history)
    assert (rec.state, rec.reason, rec.message) == ("skipped", "skipped", None)


def test_a_failure_keeps_the_last_line_of_its_error(history: pathlib.Path) -> None:
    error = ValueError("while listing\nno visits were ingested for filter r")
    listener.on_task_instance_failed(None, task_instance(marked()), error)
    rec = only_record(history)
    assert (rec.state, rec.reason, rec.message) == (
        "failed", "python-exception", "ValueError: no visits were ingested for filter r",
    )  # fmt: skip


def test_an_unmarked_task_is_not_recorded(history: pathlib.Path) -> None:
    listener.on_task_instance_success(None, task_instance(types.SimpleNamespace()))
    assert not history.exists()
