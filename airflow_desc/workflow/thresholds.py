"""How much of a sub-task must succeed for what ``depends_on`` it to run (no Airflow).

``depends_on: {processVisit: {min_success: 0.95}}`` in a spec is a :class:`MinSuccess`; the
streams of the sub-task, counted as :class:`StreamCounts`, meet it or not. The spec models and
rules, the operators and the run's verdict share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["MinSuccess", "StreamCounts"]


@dataclass(frozen=True)
class StreamCounts:
    """How the streams of a sub-task (below one stream of its parent) ended.

    :param succeeded: streams whose every instance succeeded (or was skipped by a condition).
    :param failed: streams with a Failed / Terminated / Cancelled instance.
    :param skipped: streams where everything was Skipped (not counted in the fraction).
    """

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0

    @classmethod
    def of(cls, states: Iterable[str]) -> StreamCounts:
        """Count the streams, one :func:`combine_states` state each."""
        listed = list(states)
        ok = sum(s == "success" for s in listed)
        skipped = sum(s == "skipped" for s in listed)
        return cls(ok, len(listed) - ok - skipped, skipped)

    @property
    def ran(self) -> int:
        """Streams that were not entirely Skipped: the denominator of the fraction."""
        return self.succeeded + self.failed

    def __str__(self) -> str:
        text = f"{self.succeeded} of {self.ran} streams succeeded"
        return text + (f", {self.skipped} skipped" if self.skipped else "")


@dataclass(frozen=True)
class MinSuccess:
    """How much of a sub-task must succeed for a process or sub-task that ``depends_on`` it to run.

    ``depends_on: {processVisit: {min_success: 0.95}}``: a fraction in (0, 1] of the sub-task's
    streams (below the dependent's own stream) that were not entirely Skipped, or a whole number
    of streams (``min_success: 150``; met too when every stream succeeded and there are fewer).
    The failed streams are left for a rerun; a plain ``depends_on: [x]`` is ``min_success: 1.0``.

    :param fraction: the fraction, or ``None`` for a count.
    :param count: the count, or ``None`` for a fraction.
    """

    fraction: float | None = None
    count: int | None = None

    @classmethod
    def parse(cls, value: Any) -> MinSuccess:
        """Read a spec's ``min_success`` value.

        :raises ValueError: with what to write, for anything but a fraction in (0, 1] or a
            whole number of at least 1.
        """
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return cls(count=value)
        if isinstance(value, float) and math.isfinite(value) and 0 < value <= 1:
            return cls(fraction=value)
        raise ValueError(
            f"expected a fraction in (0, 1] or a whole number of streams (at least 1), got {value!r}; "
            "write e.g. 0.95 or 150"
        )

    def met(self, counts: StreamCounts) -> bool:
        """Whether enough streams succeeded (no stream that ran: met, as an empty sub-task succeeds)."""
        if counts.failed == 0:
            return True
        if self.count is not None:
            return counts.succeeded >= self.count
        assert self.fraction is not None
        # Compared in whole streams: 0.95 of 20 is 19, not 18.999...
        return counts.succeeded >= math.ceil(self.fraction * counts.ran - 1e-9)

    def __str__(self) -> str:
        return f"min_success {self.count if self.count is not None else f'{self.fraction:g}'}"
