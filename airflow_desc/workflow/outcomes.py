"""How process instances end, in words the planner, the operators and the history share (no Airflow).

A :class:`Skip` says why an instance does not run (its kind is the history's reason class);
:func:`combine_states` makes one state of a sub-task's stream from its instances' states (the
pilot's own, which decides ``skip_if`` inside an allocation with it);
:class:`MinSuccess` is how much of a sub-task must succeed for its dependent to run
(``depends_on: {processVisit: {min_success: 0.95}}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from airflow_desc.pilot.launcher import combine_states
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
