"""The live reader's side of the history: stored plans, the workflow order, polled SLURM job states.

On a real SQLite history file, with rows as the listener and the pollers write them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from airflow_desc.history import HistoryStore
from airflow_desc.history.live import write_job_states, write_process_plan
from airflow_desc.status.dag_plans import dag_processes_from_graph
from airflow_desc.status.live import (
    SLURM_JOB_TRIGGER,
    STALE_AFTER_POLLS,
    STALE_SLACK_S,
    SUBMISSION_HOLD_TRIGGER,
    DagProcesses,
    ProcessIdentity,
    process_order,
    slurm_states,
    stored_plans,
)
from airflow_desc.triggers.hold import SubmissionHoldTrigger
from airflow_desc.triggers.slurm import SlurmJobTrigger
from airflow_desc.workflow.build import build_graph
from airflow_desc.workflow.spec import parse_spec
from tests.specs import spec_text

T0 = datetime(2026, 12, 6, 5, 0, 0)


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")


@pytest.fixture
def live_plan() -> DagProcesses:
    return dag_processes_from_graph(
        build_graph(parse_spec(spec_text("live"), source="live.yaml"), None), "live_local"
    )


def test_the_trigger_is_named_as_airflow_stores_it() -> None:
    classpath, _ = SlurmJobTrigger(job_id="1", ssh_conn_id="pm_ssh").serialize()
    assert classpath == SLURM_JOB_TRIGGER
    held = SubmissionHoldTrigger(ssh_conn_id="pm_ssh", cluster="pm", reason="waiting", walltime_s=60)
    assert held.serialize()[0] == SUBMISSION_HOLD_TRIGGER


def test_deferred_jobs_get_their_polled_states(store: HistoryStore) -> None:
    write_job_states(
        store, "pm_ssh", None, {"101": "RUNNING", "102": "PENDING"}, poll_interval_s=30, polled_at=T0
    )
    write_job_states(store, "s3_ssh", "bastion_ssh", {"101": "COMPLETED"}, poll_interval_s=30, polled_at=T0)
    jobs = {  # trigger id -> the trigger's kwargs: ssh, jump, job id
        1: ("pm_ssh", "", "101"),
        2: ("pm_ssh", "", "102"),
        3: ("s3_ssh", "bastion_ssh", "101"),
        4: ("pm_ssh", "", "103"),  # deferred a moment ago: no poll saw it yet
    }
    states, notes = slurm_states(store.engine, jobs, now=T0 + timedelta(seconds=45))
    assert states == {1: "RUNNING", 2: "PENDING", 3: "COMPLETED"}
    assert notes == []


def test_a_state_older_than_a_few_polls_is_not_trusted_and_said_so(store: HistoryStore) -> None:
    write_job_states(store, "pm_ssh", None, {"101": "RUNNING"}, poll_interval_s=10, polled_at=T0)
    limit = STALE_AFTER_POLLS * 10 + STALE_SLACK_S
    write_job_states(store, "s3_ssh", "bastion_ssh", {"7": "RUNNING"}, poll_interval_s=10, polled_at=T0)
    write_job_states(
        store, "s3_ssh", None, {"8": "RUNNING"}, poll_interval_s=600, polled_at=T0
    )  # slow poller
    jobs = {1: ("pm_ssh", "", "101"), 2: ("s3_ssh", "bastion_ssh", "7"), 3: ("s3_ssh", "", "8")}
    states, notes = slurm_states(store.engine, jobs, now=T0 + timedelta(seconds=limit))
    assert states == {1: "RUNNING", 2: "RUNNING", 3: "RUNNING"}
    states, notes = slurm_states(store.engine, jobs, now=T0 + timedelta(seconds=limit + 1))
    assert states == {3: "RUNNING"}  # the others are left to their task instances: Submitted
    why = "counted as Submitted. The triggerer's poller writes them every poll; is the triggerer running?"
    assert notes == [
        f"pm_ssh: the SLURM states of 1 job(s) were last polled {limit + 1:.0f} s ago or more: {why}",
        f"s3_ssh (via bastion_ssh): the SLURM states of 1 job(s) were last polled {limit + 1:.0f} s ago or "
        f"more: {why}",
    ]


def test_plans_are_read_back_and_order_the_table(store: HistoryStore, live_plan: DagProcesses) -> None:
    other = DagProcesses(
        "hand",
        "hand",
        tasks={"j": ProcessIdentity("j", "demo", "1", "batch", "hand")},
        order=(("demo", "j"),),
    )
    write_process_plan(store, "live_local", live_plan.to_json())
    write_process_plan(store, "hand", other.to_json())
    plans = stored_plans(store.engine, ["live_local", "hand", "never_ran"])
    assert plans == {"live_local": live_plan, "hand": other}
    # Each DAG in its workflow's order (the spec's, depth first), DAGs by id.
    assert process_order(store.engine, ["live_local", "hand"]) == [("demo", "j"), *live_plan.order]
    assert process_order(store.engine, ["never_ran"]) == []


def test_a_plan_this_version_cannot_read_is_left_out_with_a_warning(
    store: HistoryStore, live_plan: DagProcesses, caplog: pytest.LogCaptureFixture
) -> None:
    write_process_plan(store, "live_local", {**live_plan.to_json(), "format": 99})
    with caplog.at_level(logging.WARNING, logger="airflow_desc.status.live"):
        assert stored_plans(store.engine, ["live_local"]) == {}
    assert "the stored process plan of DAG live_local is not read" in caplog.text
    assert "format 99" in caplog.text
