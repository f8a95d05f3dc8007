"""A trigger that fires at its moment, to the event loop's precision: the floor of benchmarks/latency.py.

Airflow's ``DateTimeTrigger`` sleeps a second at a time once less than 20 s remain, so it fires up
to a second after its moment: a floor measured from its moment would be ~0.5 s high on average.
This one sleeps until the moment itself. It lives here, not in the benchmark, because the triggerer
imports it by its path, and the repository is on every deployed component's ``PYTHONPATH``
(tests/deploy.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

__all__ = ["ExactDateTimeTrigger"]


class ExactDateTimeTrigger(BaseTrigger):
    """Fire one event, the moment itself, as soon as the moment has come.

    :param moment: an ISO 8601 time with its offset (``datetime.isoformat()`` of an aware datetime).
    """

    def __init__(self, moment: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        at = datetime.fromisoformat(moment)
        if at.tzinfo is None:
            raise ValueError(f"moment {moment!r} has no UTC offset; give an aware time")
        self.moment = moment

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the kwargs that rebuild this trigger."""
        return f"{type(self).__module__}.{type(self).__qualname__}", {"moment": self.moment}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Sleep until the moment, then yield it."""
        left = (datetime.fromisoformat(self.moment) - datetime.now(timezone.utc)).total_seconds()
        await asyncio.sleep(max(0.0, left))
        yield TriggerEvent(self.moment)  # type: ignore[no-untyped-call]
