"""The live merge over plain rows: :func:`~airflow_desc.status.current.merge_with_history` without pandas.

``airflow-desc status`` merges the live process instances of runs in progress
(:func:`~airflow_desc.status.live.live_process_instances`' rows, as dicts) with the history's counts
(:func:`~airflow_desc.history.status_read.summed_counts`' rows) by the rules of
:func:`~airflow_desc.status.merge.merge_live`, reading what
:func:`~airflow_desc.status.current.merge_with_history` reads (an existence check for the instances
of finished task instances, the latest attempts of the others) through
:class:`~airflow_desc.history.live_records.LiveRecords`. The same counts, in the same order, as the
pandas path: ``tests/unit/status/test_current_rows.py`` holds the two equal on random histories.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from airflow_desc.history.live_records import LatestRow, LiveRecords
from airflow_desc.reports.state_columns import airflow_state_column, slurm_state_column

__all__ = ["RUNS_AGAIN", "UNDER_WAY", "CountRow", "collector_paused", "merge_rows"]

#: ``(task, version, process, process_type, state, count)``: a row of the status table's counts.
CountRow = tuple[str, str, str, str, str, int]
Key = tuple[str, str, str, str, str]

#: Task-instance states in which the instance will run (again): they beat an earlier try's record.
RUNS_AGAIN: frozenset[str | None] = frozenset(
    {None, "scheduled", "queued", "up_for_retry", "restarting", "awaiting_input"}
)
#: Task-instance states of a try under way: they beat a record of an earlier try only.
UNDER_WAY: frozenset[str] = frozenset({"running", "deferred", "up_for_reschedule"})


def _column(row: Mapping[str, Any]) -> str | None:
    """Return a live instance's column as ``merge._live_column`` does (a deferred one's by its job)."""
    state, job, hold = row["ti_state"], row.get("slurm_state"), row.get("hold")
    if state == "deferred" and isinstance(hold, str) and hold:
        return airflow_state_column("queued")
    if state == "deferred" and isinstance(job, str) and job:
        return slurm_state_column(job)
    return airflow_state_column(state)


def _text(value: Any) -> str:
    """Return a key's text as the pandas path makes it (``astype(str)``; a missing value is ``""``)."""
    return "" if value is None else str(value)


def merge_rows(
    counts: Iterable[Sequence[Any]], live: Sequence[Mapping[str, Any]], records: LiveRecords
) -> tuple[list[CountRow], list[CountRow]]:
    """Return the history's counts less what live states supersede, and the live counts.

    :param counts: ``(task, version, process, process_type, state, count, ...)`` rows of the history.
    :param live: live process instances, as mappings of
        :data:`~airflow_desc.status.live.LIVE_COLUMNS`.
    :param records: the history's reads.
    :return: ``(counts, live_counts)``, each of ``(task, version, process, process_type, state,
        count)``: every row of ``counts`` (a superseded count falls to 0 at the least), and the live
        counts in the order the pandas path groups them.
    """
    with collector_paused():
        return _merged(counts, live, records)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector meanwhile (as it was before, after).

    A quarter of a million live rows are dicts and tuples that are kept: the collector scanned them
    again and again, as much CPU as the merge itself. No cycle is made here; reference counting frees
    what is dropped.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


_AGAIN_OR_UNDER_WAY = (RUNS_AGAIN - {None}) | UNDER_WAY
_UNKNOWN = object()
# (task, version, process, process_type, column) as live rows give them.
_RawKey = tuple[Any, Any, Any, Any, str]
_Live = list[tuple[Mapping[str, Any], str]]


def _merged(
    counts: Iterable[Sequence[Any]], live: Sequence[Mapping[str, Any]], records: LiveRecords
) -> tuple[list[CountRow], list[CountRow]]:
    columns: dict[tuple[Any, Any, Any], Any] = {}  # by (state, job state, hold): a few distinct ones
    finished: tuple[_Live, _Live] = ([], [])  # of their own, bundled
    rest: tuple[_Live, _Live] = ([], [])
    for row in live:
        state = row["ti_state"]
        how = (state, row.get("slurm_state"), row.get("hold"))
        column = columns.get(how, _UNKNOWN)
        if column is _UNKNOWN:
            column = columns[how] = _column(row)
        if column is None:
            continue  # a removed task instance counts nowhere
        part = finished if state is not None and state not in _AGAIN_OR_UNDER_WAY else rest
        part[1 if row["bundled"] else 0].append((row, column))
    counted: dict[_RawKey, int] = {}
    taken = _merge_unfinished(rest, records, counted)
    _merge_finished(finished, records, counted)
    merged: list[CountRow] = []
    for task, version, process, process_type, state, count, *_ in counts:
        key = (_text(task), _text(version), _text(process), _text(process_type), _text(state))
        merged.append((task, version, process, process_type, state, max(int(count) - taken.get(key, 0), 0)))
    live_counts: dict[Key, int] = {}
    for (task, version, process, process_type, column), n in counted.items():  # first seen first
        key = (_text(task), _text(version), _text(process), _text(process_type).lower(), column.lower())
        live_counts[key] = live_counts.get(key, 0) + n
    return merged, [(*key, n) for key, n in live_counts.items()]


def _count(counted: dict[_RawKey, int], row: Mapping[str, Any], column: str) -> None:
    key = (row["task"], row["version"], row["process"], row["process_type"], column)
    counted[key] = counted.get(key, 0) + 1


def _merge_unfinished(
    rest: tuple[_Live, _Live], records: LiveRecords, counted: dict[_RawKey, int]
) -> dict[Key, int]:
    """Count the instances of task instances that will run (again) or run now; return what they supersede.

    Their task instances' latest attempts are read whole: an instance of its own is matched by its
    task instance and process (its latest attempt, whatever the stream), a bundled one by its stream too.
    """
    rows = [*rest[0], *rest[1]]
    if not rows:
        return {}
    latest = records.latest_attempts(
        {(r["dag_id"], r["run_id"], r["task_id"], int(r["map_index"])) for r, _ in rows},
        {r["process"] for r, _ in rows},
    )
    alone: dict[tuple[Any, ...], LatestRow] = {}
    by_stream: dict[tuple[Any, ...], list[LatestRow]] = {}
    for rec in latest:  # (dag_id, run_id, task_id, map_index, stream, process, try_number, state ...)
        key = (rec[0], rec[1], rec[2], int(rec[3]), rec[5])
        best = alone.get(key)
        if best is None or int(rec[6]) >= int(best[6]):  # the highest try; the last of equal ones
            alone[key] = rec
        by_stream.setdefault((*key, rec[4] or ""), []).append(rec)
    taken: dict[Key, int] = {}
    # The pandas path lays the instances of their own first, then the bundled ones.
    for bundled, part in enumerate(rest):
        for row, column in part:
            key = (row["dag_id"], row["run_id"], row["task_id"], int(row["map_index"]), row["process"])
            if bundled:
                found = by_stream.get((*key, row["stream"] or ""), [])
            else:
                found = [alone[key]] if key in alone else []
            if not found:
                _count(counted, row, column)
                continue
            state = row["ti_state"]
            for rec in found:
                newer = state in UNDER_WAY and int(row["try_number"]) > int(rec[6])
                if (state in RUNS_AGAIN or newer) and not (bundled and rec[7] == "success"):
                    _count(counted, row, column)
                    gone = (
                        _text(rec[8]),
                        _text(rec[9]),
                        _text(row["process"]),
                        _text(rec[10]),
                        _text(rec[7]),
                    )
                    taken[gone] = taken.get(gone, 0) + 1
    return taken


def _merge_finished(finished: tuple[_Live, _Live], records: LiveRecords, counted: dict[_RawKey, int]) -> None:
    """Count the instances of finished task instances that nothing is recorded of (else their record wins)."""
    unrecorded: tuple[_Live, _Live] = ([], [])
    for bundled, part in enumerate(finished):
        if not part:
            continue
        refs, found = records.recorded(
            {(r["dag_id"], r["run_id"]) for r, _ in part}, task_ids={r["task_id"] for r, _ in part},
            processes={r["process"] for r, _ in part}, by_stream=bool(bundled),
        )  # fmt: skip
        for row, column in part:
            ref = refs.get((row["dag_id"], row["run_id"]))
            key: tuple[Any, ...] = (ref, row["task_id"], int(row["map_index"]), row["process"])
            if bundled:
                stream = row["stream"]
                key = (*key, stream if isinstance(stream, str) else "")
            if ref is None or key not in found:
                unrecorded[bundled].append((row, column))
    for part in unrecorded:  # as merge_live lays them: of their own first
        for row, column in part:
            _count(counted, row, column)
