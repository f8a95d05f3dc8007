"""DM-like *script* processes: the Python functions the emulated workflows name as ``callable``.

A workflow spec's script process (``type: script``) names ``module.path:function``; the specs of
``dags/workflows`` name these. They run on the Airflow worker (a task of their own at the top
levels, inside the bundle task in a bundled sub-task). Calling convention (see
:mod:`airflow_desc.workflow.spec`): the function gets the process's ``kwargs``, variables filled
in; a function with an ``expected_streams`` parameter also gets, per sub-task it feeds, that
sub-task's expected stream count for this run (``{"processRaft": 2.343}``), which is how the
setup scripts size their fan-outs with the run's ``scale``.

:func:`make_streams` returns the streams of the sub-task it feeds: visit ids, filters, patches,
rafts or sensors, as DC1's setup scripts listed them. Counts follow ``expected_streams`` by
deterministic stochastic rounding (the same arguments give the same streams; the mean over many
parents is the expectation) and are at least 1, so every level of a tiny run is exercised.
:func:`launch` starts level 1 and / or level 2 of DC1, :func:`wrapup` closes a stream and
:func:`report` ends a run; they only log.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Mapping
from typing import Any

__all__ = ["RAFTS", "SENSORS", "launch", "make_streams", "report", "stream_count", "wrapup"]

log = logging.getLogger(__name__)

#: The 21 science rafts of the LSST camera (the 5 x 5 grid without its corners).
RAFTS = tuple(
    f"R{x}{y}" for x in range(5) for y in range(5) if (x, y) not in {(0, 0), (0, 4), (4, 0), (4, 4)}
)
#: The 9 sensors of a raft.
SENSORS = tuple(f"S{x}{y}" for x in range(3) for y in range(3))
_FIRST_VISIT = 2200
_KINDS = ("visit", "filter", "patch", "raft", "sensor")


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).digest()
    return random.Random(digest)


def stream_count(expected: float, *seed: Any, minimum: int = 1) -> int:
    """Return a whole number of streams whose mean is ``expected``, the same for the same ``seed``.

    :param expected: the expected count (e.g. 2.343 rafts per visit).
    :param seed: what identifies the parent stream (the draw is deterministic).
    :param minimum: the fewest streams to return.
    """
    if expected <= 0:
        return 0
    whole = math.floor(expected)
    extra = 1 if _rng("count", expected, *seed).random() < expected - whole else 0
    return max(minimum, whole + extra)


def _expected(expected_streams: Mapping[str, float] | float | None) -> float | None:
    if expected_streams is None:
        return None
    if isinstance(expected_streams, Mapping):
        values = [float(v) for v in expected_streams.values()]
        return values[0] if len(values) == 1 else (max(values) if values else None)
    return float(expected_streams)


def _split(text: Any) -> list[str]:
    return [part.strip() for part in str(text).replace(",", "^").split("^") if part.strip()]


def make_streams(
    kind: str, expected_streams: Mapping[str, float] | float | None = None, **context: Any
) -> list[str | int]:
    """Return the streams of the sub-task this setup script feeds.

    :param kind: ``visit`` (visit ids), ``filter`` (from ``filters``, e.g. ``u^g^r``), ``patch``
        (``"x,y"`` patch ids), ``raft`` (``R22``...) or ``sensor`` (``S11``...).
    :param expected_streams: the fed sub-task's expected streams per parent stream (a mapping
        by sub-task name, or one number); default: all the choices (``filter``) or one.
    :param context: the rest of the process's kwargs (``visit``, ``raft``, ``filters``,
        ``visits``...); they seed the draw, so that each parent stream gets its own streams.
        ``visits`` other than ``all`` that lists ids (``2201^2202``) gives those visits.
    :raises ValueError: for an unknown kind.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown stream kind {kind!r}; use one of {', '.join(_KINDS)}")
    expected = _expected(expected_streams)
    seed = (kind, *sorted((k, str(v)) for k, v in context.items()))
    rng = _rng("streams", *seed)
    if kind == "filter":
        filters = _split(context.get("filters", "u^g^r^i^z^y"))
        count = len(filters) if expected is None else min(len(filters), stream_count(expected, *seed))
        return list(filters[:count])
    if kind == "visit":
        listed = _split(context.get("visits", "all"))
        if listed and all(part.isdigit() for part in listed):
            ids = [int(part) for part in listed]
            count = len(ids) if expected is None else min(len(ids), stream_count(expected, *seed))
            return list(ids[:count])
        count = 1 if expected is None else stream_count(expected, *seed)
        start = _FIRST_VISIT + rng.randrange(0, 100_000)
        return [start + index * 7 for index in range(count)]
    count = 1 if expected is None else stream_count(expected, *seed)
    if kind == "patch":
        side = max(1, math.isqrt(max(count - 1, 0)) + 1)
        cells = [f"{x},{y}" for x in range(side) for y in range(side)]
        offset = rng.randrange(0, 10)
        return [f"{int(c.split(',')[0]) + offset},{c.split(',')[1]}" for c in cells[:count]]
    choices = RAFTS if kind == "raft" else SENSORS
    return sorted(rng.sample(choices, min(count, len(choices))))


def launch(
    level1: bool = True, level2: bool = True, expected_streams: Mapping[str, float] | None = None
) -> dict[str, list[str]]:
    """Launch DC1's level 1 and / or level 2 processing: one stream of each that is asked for.

    :param level1: run level 1 (template coadds, image differencing).
    :param level2: run level 2 (deep coadds, measurement, forced photometry).
    :param expected_streams: unused; the kwargs decide.
    """
    wanted = {"level1": level1, "level2": level2}
    log.info("launching %s", ", ".join(name for name, on in wanted.items() if on) or "nothing")
    return {name: ([name] if _truthy(on) else []) for name, on in wanted.items()}


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def wrapup(**context: Any) -> None:
    """Close a stream (DC1's wrapup scripts registered outputs and cleaned scratch): log it."""
    log.info("wrapup %s", ", ".join(f"{k}={v}" for k, v in sorted(context.items())) or "(top level)")


def report(**context: Any) -> dict[str, Any]:
    """End a run: log and return what it was given (the status table is ``airflow-desc report``)."""
    log.info("run finished; the status table: airflow-desc report")
    return {"reported": True, **{k: v for k, v in context.items() if isinstance(v, str | int | float | bool)}}
