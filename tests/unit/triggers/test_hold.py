"""SubmissionHoldTrigger: serialization, its judgement, and the poller waking it on a poll's answer.

The answers are the site-shaped scontrol / sinfo outputs of tests/data/site; no SSH (the poller's
:meth:`~airflow_desc.triggers.slurm.ClusterPoller._read_availability` is the part that reads them).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_desc.triggers.hold import SubmissionHoldTrigger
from airflow_desc.triggers.slurm import ClusterPoller, _HoldWatch
from tests.unit.slurm import DATA

UTC = timezone.utc
REASON = "waiting for maintenance to end at 2026-12-06 16:10 UTC (...)"


def trigger(**kwargs: Any) -> SubmissionHoldTrigger:
    args: dict[str, Any] = {
        "ssh_conn_id": "perlmutter_ssh", "cluster": "perlmutter", "reason": REASON, "walltime_s": 600,
        "partition": "regular", **kwargs,
    }  # fmt: skip
    return SubmissionHoldTrigger(**args)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {
            "nodes": 2,
            "partition": None,
            "windows": [["2026-12-10T07:00:00-08:00", "2026-12-10T19:00:00-08:00"]],
            "jump_conn_id": "bastion_ssh",
            "poll_interval": 5,
        },
    ],
    ids=["defaults", "everything"],
)
def test_serialize_round_trip(kwargs: dict[str, Any]) -> None:
    classpath, serialized = trigger(**kwargs).serialize()
    assert json.loads(json.dumps(serialized)) == serialized  # stored in the triggers table
    module_name, _, class_name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert cls is SubmissionHoldTrigger
    assert cls(**serialized).serialize() == (classpath, serialized)
    assert serialized["reason"] == REASON  # what the status page shows
    assert serialized["windows"] == kwargs.get("windows", [])


def answer(name: str, marker: str, before: str = "") -> str:
    return before + (DATA / name).read_text().replace("@@M:", f"{marker}:")


def test_a_poll_that_clears_the_hold_wakes_its_trigger_and_keeps_the_sacct_part() -> None:
    async def scenario() -> None:
        poller = ClusterPoller("perlmutter_ssh", None, interval=30)
        loop = asyncio.get_running_loop()
        in_maint = trigger()
        down = trigger(partition="debug")
        holds = [
            _HoldWatch(in_maint.hold, loop.create_future(), 30),
            _HoldWatch(down.hold, loop.create_future(), 30),
        ]
        poller.holds.extend(holds)
        sacct = "5000026|job|COMPLETED\n"
        # In the maintenance window: nobody wakes; the sacct text before the answer is handed back.
        assert poller._read_availability(answer("availability_maint.txt", "@@X", sacct), "@@X") == sacct
        assert poller.availability is not None and poller.availability.reservations
        in_maint_now = datetime(2026, 12, 6, 15, 30, tzinfo=UTC)
        assert in_maint.hold(poller.availability, in_maint_now) is not None
        # Without a reservation: the job in regular may go (whenever it is now), debug is still down.
        assert poller._read_availability(answer("availability_none.txt", "@@Y"), "@@Y") == ""
        assert holds[0].future.done() and not holds[1].future.done()
        # A half answer (sinfo failed) changes nothing.
        half = answer("availability_none.txt", "@@Z", sacct).replace("@@Z:end\n", "")
        assert poller._read_availability(half, "@@Z") == sacct
        assert not holds[1].future.done()

    asyncio.run(scenario())


def test_the_poll_interval_counts_the_holds() -> None:
    async def scenario() -> None:
        poller = ClusterPoller("perlmutter_ssh", None, interval=30)
        poller.holds.append(_HoldWatch(trigger().hold, asyncio.get_running_loop().create_future(), 4))
        assert poller.current_interval == 4

    asyncio.run(scenario())


def test_profile_windows_hold_without_any_reservation() -> None:
    windows = [["2026-12-06T15:00:00Z", "2026-12-06T17:00:00+00:00"]]
    held = trigger(windows=windows)
    now = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)
    found = held.hold(None, now)
    assert found is not None and found.until == datetime(2026, 12, 6, 17, 0, tzinfo=UTC)
    assert held.hold(None, datetime(2026, 12, 6, 17, 0, tzinfo=UTC)) is None


def test_a_check_that_raises_fails_its_own_wait_only() -> None:
    def broken(availability: Any, now: datetime) -> None:
        raise ValueError("a bug in one trigger")

    async def scenario() -> None:
        poller = ClusterPoller("perlmutter_ssh", None, interval=30)
        loop = asyncio.get_running_loop()
        bad, good = (
            _HoldWatch(broken, loop.create_future(), 30),
            _HoldWatch(trigger().hold, loop.create_future(), 30),
        )
        poller.holds.extend([bad, good])
        assert poller._read_availability(answer("availability_none.txt", "@@Q", "x\n"), "@@Q") == "x\n"
        assert isinstance(bad.future.exception(), ValueError)
        assert good.future.done() and good.future.exception() is None

    asyncio.run(scenario())
