"""The verdict waits, deferred, for a history that cannot be read (its database down at the run's end)."""

from __future__ import annotations

import pathlib
import socket
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history import latest_records_of_run
from airflow_desc.operators.verdict import WorkflowVerdictOperator, next_history_wait


@pytest.fixture
def history_down(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The history is a PostgreSQL on a port nothing listens on (connection refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: refused
    monkeypatch.delenv("DESC_HISTORY_JSONL", raising=False)
    monkeypatch.setenv("DESC_HISTORY_CONN_ID", f"postgresql://desc:desc@127.0.0.1:{port}/history")
    monkeypatch.setenv("DESC_SPOOL_DIR", str(tmp_path / "spool"))


class TI:
    dag_id, run_id = "d", "r"


def test_an_unreachable_history_raises_history_unavailable(history_down: None) -> None:
    with pytest.raises(HistoryUnavailable, match="the history cannot be read"):
        latest_records_of_run("d", "r")


def test_the_verdict_defers_then_gives_up_naming_what_to_do(history_down: None, pyramid: Any) -> None:
    workflow, _ = pyramid
    op = WorkflowVerdictOperator(workflow_key=workflow.key, variant=None, history_wait_s=30)
    context: Any = {"ti": TI()}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs == {"waited_s": 5.0}
    with pytest.raises(TaskDeferred) as again:
        op.execute_complete(context, None, waited_s=20.0)
    assert again.value.kwargs == {"waited_s": 40.0}
    with pytest.raises(HistoryUnavailable, match="waited 40 s for it: clear this task"):
        op.execute_complete(context, None, waited_s=40.0)


def test_the_waits_grow_to_a_minute() -> None:
    waits, waited = [], 0.0
    for _ in range(8):
        waits.append(next_history_wait(waited))
        waited += waits[-1]
    assert waits == [5, 5, 10, 20, 40, 60, 60, 60]
