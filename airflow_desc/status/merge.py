"""Merging the live states of DAG runs in progress with the history's counts.

:func:`merge_live` decides, for each live process instance (:mod:`airflow_desc.status.live`),
whether its task instance's state or its latest recorded attempt counts in the status table; the
state -> column tables it uses are those of :mod:`airflow_desc.reports.status`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from airflow_desc.reports.status import airflow_state_column, slurm_state_column

__all__ = ["RUNS_AGAIN", "UNDER_WAY", "merge_live", "summed_live"]

# A row of the status table, as reports.status groups counts: the counts' columns before ``state``.
_KEYS = ["task", "version", "process", "process_type"]

#: Task-instance states in which the instance will run (again): they beat an earlier try's record.
RUNS_AGAIN: frozenset[str | None] = frozenset(
    {None, "scheduled", "queued", "up_for_retry", "restarting", "awaiting_input"}
)
#: Task-instance states of a try under way: they beat a record of an earlier try only.
UNDER_WAY: frozenset[str] = frozenset({"running", "deferred", "up_for_reschedule"})


_TI_KEY = ["dag_id", "run_id", "task_id", "map_index", "process"]


def _latest_per_key(recorded: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Return the record with the highest try of each key."""
    ordered = recorded.sort_values("try_number", kind="stable")
    return ordered.drop_duplicates(key, keep="last")


def _live_column(state: str | None, job: object, hold: object) -> str | None:
    """Return a live instance's column: a deferred one's by its job's state, Queued before it submitted."""
    if state == "deferred" and isinstance(hold, str) and hold:
        return airflow_state_column("queued")  # waiting for maintenance to end: nothing submitted yet
    if state == "deferred" and isinstance(job, str) and job:
        return slurm_state_column(job)
    return airflow_state_column(state)


def summed_live(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Return the live counts of :func:`merge_live` of several sets of live instances, summed."""
    both = pd.concat([p for p in parts if not p.empty] or parts[:1], ignore_index=True)
    summed = both.groupby([*_KEYS, "state"], sort=False)["count"].sum().reset_index()
    return summed.astype({"count": "int64"})


def merge_live(
    counts: pd.DataFrame, live: pd.DataFrame, recorded: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge the live states of DAG runs in progress with the history's counts.

    Each live process instance (:func:`~airflow_desc.status.live.live_process_instances`) is
    counted by its task-instance state (:func:`~airflow_desc.reports.status.airflow_state_column`)
    unless the history already tells more:

    * no record yet: counted live (Waiting, Ready, Queued, Submitted, Running ...); a deferred
      task instance whose job's state was read (``slurm_state``) is counted by that state
      (:func:`~airflow_desc.reports.status.slurm_state_column`: PENDING is Submitted, RUNNING
      Running ...); one deferred before it submitted (``hold``: waiting for maintenance to end) is
      Queued;
    * the task instance finished (success, failed, skipped ...): the record wins, it knows what
      Airflow does not (an output check, a time limit, who cancelled);
    * a bundled instance recorded ``success``: the record wins, a cleared bundle reruns only what
      did not succeed;
    * the task instance will run again (none, scheduled, queued, up_for_retry, restarting: cleared
      or retried): counted live, and its recorded latest attempt leaves its column;
    * a try under way (running, deferred): counted live when it is a later try than the record's,
      and the record leaves its column; otherwise the record (of this very try) wins.

    An instance that is a task instance of its own (``stream`` is null) is matched by its task
    instance and process; a bundled one by its stream too.

    :param counts: the history's counts (``history.queries.status_counts``).
    :param live: live process instances (columns of :data:`~airflow_desc.status.live.LIVE_COLUMNS`).
    :param recorded: the latest recorded attempt of each live instance (more rows do no harm;
        one per instance): columns of ``history.queries.LATEST_COLUMNS``.
    :return: ``(counts, live_counts)``, ready for
        :func:`~airflow_desc.reports.status.status_table` ``(counts, live)``.
    """
    empty = pd.DataFrame(columns=[*_KEYS, "state", "count"]).astype({"count": "int64"})
    if live.empty:
        return counts.copy(), empty
    data = live.reset_index(drop=True).copy()
    data["ti_state"] = data["ti_state"].astype(object).where(data["ti_state"].notna(), None)
    slurm = data["slurm_state"] if "slurm_state" in data.columns else pd.Series([None] * len(data))
    hold = data["hold"] if "hold" in data.columns else pd.Series([None] * len(data))
    data["column"] = [
        _live_column(state, job, why) for state, job, why in zip(data["ti_state"], slurm, hold, strict=True)
    ]
    data = data[data["column"].notna()].reset_index(drop=True)
    data["map_index"] = data["map_index"].astype("int64")
    data["stream"] = data["stream"].astype(object).where(data["stream"].notna(), "")
    kept = ["try_number", "state", "task", "version", "process_type"]
    rec = recorded.reindex(columns=[*_TI_KEY, "stream", *kept])
    rec["map_index"] = rec["map_index"].astype("int64")
    rec["try_number"] = rec["try_number"].astype("int64")
    rec["stream"] = rec["stream"].astype(object).where(rec["stream"].notna(), "")
    for frame in (data, rec):
        for column in ("dag_id", "run_id", "task_id", "process", "stream"):
            if frame[column].dtype != object:  # an empty frame's columns are float
                frame[column] = frame[column].astype(object)
    own = [f"rec_{c}" for c in kept]
    bundled = data["bundled"].astype(bool).to_numpy()
    alone, packed = data[~bundled], data[bundled]
    # A task instance of its own has one stream: its latest attempt, whatever the stream is called.
    by_ti = _latest_per_key(rec[rec["task_id"].isin(set(alone["task_id"]))], _TI_KEY)
    by_stream = rec[rec["task_id"].isin(set(packed["task_id"]))]
    merged = pd.concat(
        [
            alone.merge(by_ti[[*_TI_KEY, *kept]].set_axis([*_TI_KEY, *own], axis=1), how="left", on=_TI_KEY),
            packed.merge(
                by_stream[[*_TI_KEY, "stream", *kept]].set_axis([*_TI_KEY, "stream", *own], axis=1),
                how="left", on=[*_TI_KEY, "stream"],
            ),
        ],
        ignore_index=True,
    )  # fmt: skip
    has_record = merged["rec_state"].notna().to_numpy()
    state = merged["ti_state"]
    runs_again = state.isin([s for s in RUNS_AGAIN if s is not None]).to_numpy() | state.isna().to_numpy()
    newer = state.isin(list(UNDER_WAY)).to_numpy() & (
        merged["try_number"].to_numpy(dtype="int64")
        > merged["rec_try_number"].fillna(0).to_numpy(dtype="int64")
    )
    kept_success = merged["bundled"].astype(bool).to_numpy() & merged["rec_state"].eq("success").to_numpy()
    superseding = has_record & (runs_again | newer) & ~kept_success
    counted = ~has_record | superseding
    live_rows = merged[counted].assign(state=merged.loc[counted, "column"].str.lower())
    live_counts = (
        live_rows.astype({k: str for k in _KEYS}).groupby([*_KEYS, "state"], sort=False).size()
        .rename("count").reset_index().astype({"count": "int64"})
    )  # fmt: skip
    out = counts.copy()
    gone = merged[superseding]
    if not gone.empty and not out.empty:
        taken = (
            gone[[f"rec_{k}" if k != "process" else k for k in _KEYS] + ["rec_state"]]
            .astype(str).set_axis([*_KEYS, "state"], axis=1).value_counts()
        )  # fmt: skip
        index = pd.MultiIndex.from_frame(out[[*_KEYS, "state"]].astype(str))
        minus = taken.reindex(index, fill_value=0).to_numpy(dtype=np.int64)
        out["count"] = np.maximum(out["count"].to_numpy(dtype=np.int64) - minus, 0)
    return out, live_counts
