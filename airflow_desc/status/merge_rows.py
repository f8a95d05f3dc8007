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

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_desc.history.live_records import LatestRow, LiveRecords
from airflow_desc.reports.state_columns import airflow_state_column, slurm_state_column

__all__ = ["RUNS_AGAIN", "UNDER_WAY", "CountRow", "merge_rows"]

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


def _counted(live: dict[Key, int], row: Mapping[str, Any], column: str) -> None:
    kind = _text(row["process_type"]).lower()
    key = (_text(row["task"]), _text(row["version"]), _text(row["process"]), kind, column.lower())
    live[key] = live.get(key, 0) + 1


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
    columns = [(row, _column(row)) for row in live]
    rows = [(row, column) for row, column in columns if column is not None]
    finished = [
        (r, c) for r, c in rows if r["ti_state"] is not None and r["ti_state"] not in _AGAIN_OR_UNDER_WAY
    ]
    rest = [(r, c) for r, c in rows if r["ti_state"] is None or r["ti_state"] in _AGAIN_OR_UNDER_WAY]
    live_counts: dict[Key, int] = {}
    taken = _merge_unfinished(rest, records, live_counts)
    _merge_finished(finished, records, live_counts)
    merged: list[CountRow] = []
    for task, version, process, process_type, state, count, *_ in counts:
        key = (_text(task), _text(version), _text(process), _text(process_type), _text(state))
        merged.append((task, version, process, process_type, state, max(int(count) - taken.get(key, 0), 0)))
    return merged, [(*key, n) for key, n in live_counts.items()]


_AGAIN_OR_UNDER_WAY = (RUNS_AGAIN - {None}) | UNDER_WAY


def _ti(row: Mapping[str, Any]) -> tuple[str, str, str, int]:
    return (row["dag_id"], row["run_id"], row["task_id"], int(row["map_index"]))


def _merge_unfinished(
    rest: list[tuple[Mapping[str, Any], str]], records: LiveRecords, live_counts: dict[Key, int]
) -> dict[Key, int]:
    """Count the instances of task instances that will run (again) or run now; return what they supersede.

    Their task instances' latest attempts are read whole: an instance of its own is matched by its
    task instance and process (its latest attempt, whatever the stream), a bundled one by its stream too.
    """
    if not rest:
        return {}
    latest = records.latest_attempts({_ti(r) for r, _ in rest}, {r["process"] for r, _ in rest})
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
    for bundled in (False, True):
        for row, column in rest:
            if bool(row["bundled"]) is not bundled:
                continue
            key = (*_ti(row), row["process"])
            found = (
                by_stream.get((*key, row["stream"] or ""), [])
                if bundled
                else [alone[key]]
                if key in alone
                else []
            )
            if not found:
                _counted(live_counts, row, column)
                continue
            state = row["ti_state"]
            for rec in found:
                newer = state in UNDER_WAY and int(row["try_number"]) > int(rec[6])
                superseding = (state in RUNS_AGAIN or newer) and not (bundled and rec[7] == "success")
                if superseding:
                    _counted(live_counts, row, column)
                    gone = (
                        _text(rec[8]),
                        _text(rec[9]),
                        _text(row["process"]),
                        _text(rec[10]),
                        _text(rec[7]),
                    )
                    taken[gone] = taken.get(gone, 0) + 1
    return taken


def _merge_finished(
    finished: list[tuple[Mapping[str, Any], str]], records: LiveRecords, live_counts: dict[Key, int]
) -> None:
    """Count the instances of finished task instances that nothing is recorded of (else their record wins)."""
    unrecorded: list[tuple[Mapping[str, Any], str]] = []
    for bundled in (False, True):
        part = [(r, c) for r, c in finished if bool(r["bundled"]) is bundled]
        if not part:
            continue
        found = records.recorded(
            {(r["dag_id"], r["run_id"]) for r, _ in part}, task_ids={r["task_id"] for r, _ in part},
            processes={r["process"] for r, _ in part}, by_stream=bundled,
        )  # fmt: skip
        for row, column in part:
            key: tuple[Any, ...] = (*_ti(row), row["process"])
            if bundled:
                key = (*key, row["stream"] if isinstance(row["stream"], str) else "")
            if key not in found:
                unrecorded.append((row, column))
    for bundled in (False, True):  # as merge_live lays them: of their own first
        for row, column in unrecorded:
            if bool(row["bundled"]) is bundled:
                _counted(live_counts, row, column)
