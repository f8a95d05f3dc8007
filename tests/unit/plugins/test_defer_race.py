"""The scheduler's guard against Airflow's resume-after-defer race (airflow_desc.plugins.defer_race)."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
from airflow.models.taskinstancekey import TaskInstanceKey
from airflow.utils.state import TaskInstanceState

from airflow_desc.plugins import defer_race
from airflow_desc.plugins.defer_race import CurrentTry, stale_defer_exits

KEY = TaskInstanceKey("DC1-DM12_imsim-dithered", "serialingest", "manual__1", try_number=1, map_index=-1)
SUCCESS = (TaskInstanceState.SUCCESS, None)


def now(
    state: str | None, next_method: str | None = "execute_complete", try_number: int = 1
) -> dict[Any, Any]:
    return {KEY.primary: CurrentTry(try_number, state, next_method)}


@pytest.mark.parametrize("state", ["scheduled", "queued", "running"])
def test_a_success_read_after_the_trigger_resumed_the_task_is_the_deferral_exits(state: str) -> None:
    assert stale_defer_exits({KEY: SUCCESS}, now(state)) == [KEY]


@pytest.mark.parametrize(
    ("events", "current"),
    [
        # queued or running without next_method: no deferral to resume; Airflow's mismatch path decides
        ({KEY: SUCCESS}, now("queued", next_method=None)),
        ({KEY: SUCCESS}, now("running", next_method=None)),
        # a task instance that ended, or is deferred still, is Airflow's to judge
        ({KEY: SUCCESS}, now("success")),
        ({KEY: SUCCESS}, now("deferred")),
        # a later try: the event is of an earlier one, which Airflow already tells apart
        ({KEY: SUCCESS}, now("queued", try_number=2)),
        # a failure is never a deferral exit
        ({KEY: (TaskInstanceState.FAILED, None)}, now("queued")),
        # unknown to the metadata DB
        ({KEY: SUCCESS}, {}),
    ],
)
def test_every_other_event_goes_to_airflow(events: dict[Any, Any], current: dict[Any, Any]) -> None:
    assert stale_defer_exits(events, current) == []


def test_events_that_are_not_of_task_instances_pass() -> None:
    assert stale_defer_exits({"a-callback-id": SUCCESS}, now("queued")) == []


def test_the_guard_drops_only_the_stale_event_then_calls_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    other = TaskInstanceKey("d", "t", "r", try_number=1, map_index=-1)
    seen: list[dict[Any, Any]] = []

    def airflow_reads(cls: type, executor: Any, job_id: Any, scheduler_dag_bag: Any, session: Any) -> int:
        seen.append(dict(executor.event_buffer))
        return len(executor.event_buffer)

    monkeypatch.setattr(SchedulerJobRunner, "process_executor_events", classmethod(airflow_reads))
    monkeypatch.setattr(
        defer_race,
        "_current_tries",
        lambda keys, session: {KEY.primary: CurrentTry(1, "queued", "execute_complete")},
    )
    assert defer_race.install() is True
    assert defer_race.install() is False  # wrapped once

    class Executor:
        event_buffer: dict[Any, Any] = {KEY: SUCCESS, other: SUCCESS}

    count = SchedulerJobRunner.process_executor_events(
        executor=Executor(), job_id=1, scheduler_dag_bag=None, session=None
    )
    assert count == 1
    assert seen == [{other: SUCCESS}]
