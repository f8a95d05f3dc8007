"""tests/exact_trigger.py, the floor's trigger of benchmarks/latency.py."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from tests.exact_trigger import ExactDateTimeTrigger


def test_serialize_round_trip() -> None:
    moment = datetime(2026, 12, 6, 13, 0, 5, 250000, tzinfo=timezone.utc).isoformat()
    path, kwargs = ExactDateTimeTrigger(moment).serialize()
    assert path == "tests.exact_trigger.ExactDateTimeTrigger"
    assert ExactDateTimeTrigger(**kwargs).serialize() == (path, {"moment": moment})


def test_a_moment_gone_by_fires_at_once_with_the_moment() -> None:
    moment = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()

    async def first() -> object:
        async for event in ExactDateTimeTrigger(moment).run():
            return event.payload
        return None

    assert asyncio.run(first()) == moment


def test_a_naive_moment_is_refused() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        ExactDateTimeTrigger("2026-12-06T13:00:05")
