"""A try that finds its cluster in maintenance (or its partition down) defers instead of submitting.

The hook records the commands the operator would run (see ``test_untrusted_reads``); the cluster's
answer is the site-shaped scontrol / sinfo text of tests/data/site with the reservation moved to now.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_desc.slurm.maintenance import ClusterAvailability, parse_availability
from airflow_desc.triggers.hold import SubmissionHoldTrigger
from tests.unit.operators.test_job_rules import TRY2, hook, operator, submits_as  # noqa: F401 - a fixture
from tests.unit.operators.test_untrusted_reads import RecordingHook, context
from tests.unit.slurm import DATA


def in_maintenance(until: datetime) -> ClusterAvailability:
    """The site's answer with its MAINT reservation running from two hours before ``until`` until then."""
    text = (DATA / "availability_maint.txt").read_text()
    text = text.replace("2026-12-06T15:10:00", (until - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S"))
    text = text.replace("2026-12-06T16:10:00", until.strftime("%Y-%m-%dT%H:%M:%S"), 1)
    # The one-node reservation (17:00-18:00 in the recording) moves out of the way, a day later:
    # left where it was, it joined the hold on the day the recording was made.
    for hour in ("17:00:00", "18:00:00"):
        later = until + timedelta(days=1)
        text = text.replace(f"2026-12-06T{hour}", f"{later:%Y-%m-%d}T{hour}")
    found = parse_availability(text, "@@M")[1]
    assert found is not None
    return found


def test_a_job_into_maintenance_defers_without_submitting(hook: RecordingHook) -> None:  # noqa: F811
    until = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    hook.availability = lambda: in_maintenance(until)  # type: ignore[method-assign]
    submitted = submits_as(hook, "901")
    op = operator()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    assert submitted == []
    trigger = deferred.value.trigger
    assert isinstance(trigger, SubmissionHoldTrigger)
    assert deferred.value.method_name == "execute_after_hold"
    assert trigger.reason.startswith(f"waiting for maintenance to end at {until:%Y-%m-%d %H:%M} UTC")
    assert "maintenance reservation desc_maint on partition regular of perlmutter" in trigger.reason
    assert (trigger.partition, trigger.nodes, trigger.ssh_conn_id) == ("regular", 1, "perlmutter_ssh")
    assert trigger.walltime_s == 30 * 60  # no time limit asked: the cluster's longest

    # The window ended: the trigger fires, the same try starts over and submits.
    hook.availability = lambda: ClusterAvailability()  # type: ignore[method-assign]
    with pytest.raises(TaskDeferred) as waiting:
        op.execute_after_hold(context(), {"status": "clear", "reason": trigger.reason, "waited_s": 3600.0})
    assert waiting.value.trigger.job_id == "901"
    assert [s["job_name"] for s in submitted] == [TRY2]  # the try the context runs


def test_a_job_that_ends_before_the_window_goes_now(hook: RecordingHook) -> None:  # noqa: F811
    later = datetime.now(timezone.utc) + timedelta(hours=3)  # the window starts in an hour
    hook.availability = lambda: in_maintenance(later)  # type: ignore[method-assign]
    submitted = submits_as(hook, "901")
    op = operator()
    op.time_limit = "00:10:00"
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    assert deferred.value.trigger.job_id == "901"
    assert len(submitted) == 1
