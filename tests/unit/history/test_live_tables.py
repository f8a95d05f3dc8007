"""The history's process plans and polled SLURM job states (history.live), on a real SQLite file."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_desc.history import HistoryStore
from airflow_desc.history.engine import head_revision
from airflow_desc.history.live import (
    KEEP_JOB_STATES_S,
    JobState,
    job_states,
    plan_digest,
    process_plan_digest,
    process_plans_of,
    write_job_states,
    write_process_plan,
)
from airflow_desc.history.schema import slurm_job_states

T0 = datetime(2026, 12, 6, 5, 0, 0)
PLAN = {
    "format": 1,
    "dag_id": "d1",
    "workflow": "w",
    "variant": "",
    "tasks": {},
    "bundles": {},
    "order": [["t", "p"]],
}


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")


def test_a_plan_is_stored_once_per_dag_and_replaced_when_it_changes(store: HistoryStore) -> None:
    assert process_plan_digest(store.engine, "d1") is None  # not even the tables yet
    assert process_plans_of(store.engine, ["d1"]) == {}
    digest = write_process_plan(store, "d1", PLAN)
    assert digest == plan_digest(PLAN) == process_plan_digest(store.engine, "d1")
    changed = {**PLAN, "order": [["t", "p"], ["t", "q"]]}
    assert plan_digest(changed) != digest
    write_process_plan(store, "d1", changed)
    write_process_plan(store, "d2", {**PLAN, "dag_id": "d2"})
    assert process_plans_of(store.engine, ["d1", "d2", "d3"]) == {
        "d1": changed,
        "d2": {**PLAN, "dag_id": "d2"},
    }
    assert process_plan_digest(store.engine, "d1") == plan_digest(changed)


def test_the_digest_does_not_depend_on_key_order() -> None:
    assert plan_digest({"a": 1, "b": [1, 2]}) == plan_digest({"b": [1, 2], "a": 1})
    assert plan_digest({"a": 1}) != plan_digest({"a": 2})


def test_one_poll_writes_every_state_of_its_login(store: HistoryStore) -> None:
    write_job_states(
        store, "pm_ssh", None, {"101": "PENDING", "102": "RUNNING"}, poll_interval_s=30, polled_at=T0
    )
    write_job_states(store, "s3_ssh", "bastion", {"101": "COMPLETED"}, poll_interval_s=5, polled_at=T0)
    later = T0 + timedelta(seconds=30)
    write_job_states(store, "pm_ssh", "", {"101": "RUNNING"}, poll_interval_s=30, polled_at=later)
    asked = [("pm_ssh", "", "101"), ("pm_ssh", "", "102"), ("s3_ssh", "bastion", "101"),
             ("s3_ssh", "", "101"), ("pm_ssh", "", "999")]  # fmt: skip
    found = job_states(store.engine, asked)
    assert found == {
        ("pm_ssh", "", "101"): JobState("RUNNING", later, 30.0),
        ("pm_ssh", "", "102"): JobState("RUNNING", T0, 30.0),
        ("s3_ssh", "bastion", "101"): JobState("COMPLETED", T0, 5.0),  # another login: another job
    }
    assert found[("pm_ssh", "", "102")].age_s(later) == 30.0


def test_rows_no_poll_refreshed_for_a_day_are_pruned_by_the_next_write(store: HistoryStore) -> None:
    write_job_states(
        store, "pm_ssh", None, {"1": "RUNNING", "2": "RUNNING"}, poll_interval_s=30, polled_at=T0
    )
    day = T0 + timedelta(seconds=KEEP_JOB_STATES_S)
    write_job_states(
        store, "pm_ssh", None, {"2": "RUNNING"}, poll_interval_s=30, polled_at=day - timedelta(seconds=1)
    )
    write_job_states(
        store, "s3_ssh", None, {"3": "PENDING"}, poll_interval_s=30, polled_at=day + timedelta(seconds=1)
    )
    with store.engine.connect() as conn:
        left = sorted(conn.execute(sa.select(slurm_job_states.c.job_id)).scalars())
    assert left == ["2", "3"]  # job 1 (any login's) was polled last over a day before


def test_reading_a_history_without_the_tables_finds_nothing(store: HistoryStore) -> None:
    store.upgrade("0002")
    assert job_states(store.engine, [("pm_ssh", "", "1")]) == {}
    assert process_plans_of(store.engine, ["d1"]) == {}
    again = HistoryStore(store.url)  # as a later process would open it
    write_job_states(again, "pm_ssh", None, {"1": "RUNNING"}, poll_interval_s=1)  # upgrades first
    assert again.current_revision() == head_revision()
