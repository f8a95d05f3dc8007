"""The plugin's listener: what it records of a marked script task that succeeded, failed or skipped itself."""

from __future__ import annotations

import logging
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


# --- the process plan stored when a task starts ---


@pytest.fixture
def configured_history(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    """The configured history: the embedded SQLite of a throwaway AIRFLOW_HOME (JSONL set besides)."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("DESC_HISTORY_CONN_ID", raising=False)
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(tmp_path / "records.jsonl"))  # redirects records only
    monkeypatch.setattr(listener, "_PLANS_STORED", {})
    return tmp_path / "airflow" / "desc" / "history.db"


def test_a_generated_dags_plan_is_stored_once_where_the_status_page_reads_it(
    configured_history: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_desc.history import open_history
    from airflow_desc.history.live import process_plan_digest
    from airflow_desc.status.live import stored_plans
    from airflow_desc.workflow.render import render_dags
    from airflow_desc.workflow.spec import parse_spec
    from tests.specs import spec_text
    from tests.unit.conftest import SITE

    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(SITE))
    [(dag_id, dag)] = render_dags(parse_spec(spec_text("live"), source="live.yaml")).items()
    digest = listener.store_plan(dag)
    assert digest is not None
    engine = open_history(f"sqlite:///{configured_history}").engine
    assert process_plan_digest(engine, dag_id) == digest
    plan = stored_plans(engine, [dag_id])[dag_id]
    assert set(plan.tasks) == {"setupVisits", "ingest", "checkVisit.validate"}
    assert list(plan.bundles) == ["processVisit.bundle"]
    # A new process (a new worker) finds it stored: no second write.
    monkeypatch.setattr(listener, "_PLANS_STORED", {})
    monkeypatch.setattr("airflow_desc.history.live.write_process_plan", _no_write)
    assert listener.store_plan(dag) == digest


def _no_write(*args: Any) -> str:
    raise AssertionError("the plan was stored already: no write expected")


def test_a_dag_not_tagged_desc_has_no_plan(configured_history: pathlib.Path) -> None:
    dag = types.SimpleNamespace(dag_id="other", tags=["e2e"], tasks=[])
    assert listener.store_plan(dag) is None
    assert not configured_history.exists()


def test_an_unreachable_history_is_a_warning_and_the_task_runs_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DESC_HISTORY_CONN_ID", "no_such_history_conn")
    monkeypatch.setattr(listener, "_PLANS_STORED", {})
    dag = types.SimpleNamespace(dag_id="hand", tags=["desc"], tasks=[])
    with caplog.at_level(logging.WARNING, logger="airflow_desc.plugins.listener"):
        assert listener.store_plan(dag) is None
    assert "the process plan of DAG hand is not stored in the history" in caplog.text
    assert "no_such_history_conn" in caplog.text
