"""How process instances end, in words the planner, the operators and the history share (no Airflow).

A :class:`Skip` says why an instance does not run (its kind is the history's reason class);
:func:`combine_states` makes one state of a sub-task's stream from its instances' states;
:class:`MinSuccess` is how much of a sub-task must succeed for its dependent to run
(``depends_on: {processVisit: {min_success: 0.95}}``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from airflow_desc.workflow.thresholds import MinSuccess, StreamCounts

__all__ = ["MinSuccess", "Skip", "StreamCounts", "combine_states"]


@dataclass(frozen=True)
class Skip:
    """Why a process instance does not run.

    :param kind: the history's reason class: ``upstream-failed`` (something it ``depends_on`` did
        not succeed for its stream) or ``skip-condition`` (its ``skip_if`` holds).
    :param message: what the skip says, e.g. ``upstream processVisit failed``.
    """

    kind: Literal["upstream-failed", "skip-condition"]
    message: str

    def __str__(self) -> str:
        return self.message


def combine_states(states: Iterable[str]) -> str:
    """Return the state of a stream of a sub-task from the states of its process instances.

    Failed if any failed, else terminated if any was, else success if any succeeded or there was
    nothing to run; skipped only when everything was skipped (a skip caused by a failure is counted
    by that failure).
    """
    seen = set(states)
    for state in ("failed", "terminated"):
        if state in seen:
            return state
    if not seen or "success" in seen:
        return "success"
    if seen <= {"skipped", "cancelled"}:
        return "skipped"
    return "failed"
