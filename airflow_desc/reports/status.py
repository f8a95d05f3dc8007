"""The DC1 status table: process-instance counts per state, one row per process, and a Totals row.

:func:`status_table` turns the counts of the history store (``history.queries.status_counts``)
and, optionally, live counts read from Airflow task-instance states into the table of the DC1
slides::

    Task      Version  Process       Type   Waiting ... Skipped  Total  Links
    DC1-DM12  1.16     serialingest  Batch        0 ...       0     15  Plot

Each count is of the *latest* attempt of each process instance; attempts are counted
separately by :func:`attempts_table`. The "Plot" link of a row points at
``plots/<process>.png`` (:func:`plot_path`), the CPU / wall-clock figure of that process.

Where the columns come from
---------------------------

A process that has been recorded in the history store is counted by its recorded state
(:data:`~airflow_desc.history.records.PROCESS_STATES`, lower case of the columns). A process
that is an Airflow task and has no record yet is counted from its task-instance state
(:data:`AIRFLOW_STATE_COLUMN`); a SLURM job watched but not yet recorded is counted from its
SLURM state (:data:`SLURM_STATE_COLUMN`). Once a record exists it wins: the record knows what
Airflow and SLURM alone do not (an output check that failed, who cancelled a job).

Airflow task-instance states (``airflow.utils.state.TaskInstanceState``, Airflow 3.3):

=================  ==========  ===========================================================
Airflow            column      why
=================  ==========  ===========================================================
(none)             Waiting     its upstream tasks have not finished
scheduled          Ready       dependencies are met; waiting for a pool or executor slot.
                               This is what Pipeline II called Ready
queued             Queued      handed to the executor, not started on a worker
running            Running     on a worker; for a SLURM operator, the short time it takes
                               to submit (or the whole run of a script process)
deferred           Submitted   the job is in SLURM and a trigger watches it. Airflow cannot
                               tell pending from running: the SLURM state does
                               (:data:`SLURM_STATE_COLUMN`), and the record once written
up_for_reschedule  Submitted   a sensor in reschedule mode, likewise waiting on SLURM
up_for_retry       Waiting     its last try failed and the next one waits out the retry
                               delay (the failed try is counted in :func:`attempts_table`)
restarting         Cancelling  cleared while running: the running try is being stopped,
                               after which the task waits for its new try
awaiting_input     Waiting     waiting for a human's answer (human-in-the-loop operators)
success            Success
failed             Failed      the record, when written, may make it Terminated
                               (time limit, out of memory, node failure ...)
upstream_failed    Skipped     not run because something upstream failed: the DC1 table
                               counts these as skipped
skipped            Skipped
removed            (none)      the task is no longer in the DAG: not counted
=================  ==========  ===========================================================

SLURM job states (the long names of :class:`~airflow_desc.slurm.states.SlurmState`, see the
JOB STATE CODES of https://slurm.schedmd.com/sacct.html):

=================================================  ==========  ============================
SLURM                                              column      why
=================================================  ==========  ============================
PENDING, CONFIGURING, REQUEUED, REQUEUE_FED,       Submitted   in SLURM's queue, not
REQUEUE_HOLD, SPECIAL_EXIT, RESV_DEL_HOLD                      started (or started again)
RUNNING, COMPLETING, SUSPENDED, STOPPED,           Running     holds an allocation
RESIZING, SIGNALING, STAGE_OUT
COMPLETED                                          Success     exit code zero
FAILED                                             Failed      the payload failed
TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL,      Terminated  the system ended it
PREEMPTED, DEADLINE, REVOKED
CANCELLED                                          Cancelled   by the workflow's own user;
                                                   Terminated  by anyone else (an admin):
                                                               :func:`slurm_state_column`
                                                               reads ``CANCELLED by <uid>``
UNKNOWN (unreadable text)                          Failed      never counted as a success
=================================================  ==========  ============================

The Cancelling column has no SLURM state: it counts instances whose cancel was requested
(``scancel`` sent) and that SLURM has not yet reported ended, as the history records them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from airflow_desc.history.records import PROCESS_STATES
from airflow_desc.reports.state_columns import (
    AIRFLOW_STATE_COLUMN,
    SLURM_STATE_COLUMN,
    airflow_state_column,
    slurm_state_column,
)
from airflow_desc.reports.status_rows import (
    STATE_COLUMNS,
    TABLE_COLUMNS,
    TOTALS,
    TYPE_LABELS,
    blank_repeats,
    json_text,
    plot_path,
    row_keys,
    status_rows,
    text_table,
    type_label,
)

__all__ = [
    "AIRFLOW_STATE_COLUMN",
    "COUNT_COLUMNS",
    "SLURM_STATE_COLUMN",
    "STATE_COLUMNS",
    "TABLE_COLUMNS",
    "TYPE_LABELS",
    "airflow_state_column",
    "attempts_table",
    "counts_from_instances",
    "format_text",
    "plot_path",
    "runs_table",
    "slurm_state_column",
    "status_table",
    "to_csv",
    "to_json",
]

#: The columns a counts frame must have (``attempts`` is optional in live counts).
COUNT_COLUMNS: tuple[str, ...] = ("task", "version", "process", "process_type", "state", "count", "attempts")
_KEYS = ["task", "version", "process", "process_type"]
_IDENTITY = ("workflow", "dag_id", "run_id", "task_id", "map_index", "task", "version", "stream", "process")


def _checked_counts(frame: pd.DataFrame, what: str, *, need_attempts: bool) -> pd.DataFrame:
    required = [c for c in COUNT_COLUMNS if c != "attempts" or need_attempts]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{what}: missing column(s) {', '.join(missing)}; a counts frame has {', '.join(COUNT_COLUMNS)}"
        )
    out = frame.loc[:, [c for c in COUNT_COLUMNS if c in frame.columns]].copy()
    for key in _KEYS:
        out[key] = out[key].astype(object).where(out[key].notna(), "").astype(str)
    out["process_type"] = out["process_type"].str.lower()
    states = out["state"].astype(str).str.lower()
    unknown = sorted(set(states) - set(PROCESS_STATES))
    if unknown:
        raise ValueError(
            f"{what}: unknown state(s) {', '.join(unknown)}; states are {', '.join(PROCESS_STATES)} "
            "(map Airflow and SLURM states with airflow_state_column / slurm_state_column first)"
        )
    out["state"] = states
    out["count"] = pd.to_numeric(out["count"]).fillna(0).astype("int64")
    if (out["count"] < 0).any():
        raise ValueError(f"{what}: negative counts")
    if "attempts" in out.columns:
        # An unknown number of attempts is at least one per instance.
        attempts = pd.to_numeric(out["attempts"])
        out["attempts"] = attempts.where(attempts.notna(), out["count"]).astype("int64")
    return out


def _row_keys(data: pd.DataFrame, order: Sequence[tuple[str, str]] | None) -> list[tuple[str, str, str, str]]:
    keys = zip(data["task"], data["version"], data["process"], data["process_type"], strict=True)
    return row_keys(keys, order)


def _index(rows: list[tuple[str, str, str, str]]) -> pd.MultiIndex:
    if not rows:
        return pd.MultiIndex.from_arrays([[], [], [], []], names=_KEYS)
    return pd.MultiIndex.from_tuples(rows, names=_KEYS)


def _labels(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Task": [r[0] for r in rows],
            "Version": [r[1] for r in rows],
            "Process": [r[2] for r in rows],
            "Type": [type_label(r[3]) for r in rows],
        },
        dtype=object,
    )


def _with_totals(table: pd.DataFrame, number_columns: Sequence[str]) -> pd.DataFrame:
    totals: dict[str, Any] = {c: "" for c in table.columns}
    totals["Type"] = TOTALS
    for column in number_columns:
        totals[column] = int(table[column].sum())
    out = pd.concat([table, pd.DataFrame([totals], columns=table.columns)], ignore_index=True)
    for column in number_columns:
        out[column] = out[column].astype("int64")
    for column in table.columns:
        if column not in number_columns:
            out[column] = out[column].astype(object)
    return out


def status_table(
    counts: pd.DataFrame,
    live: pd.DataFrame | None = None,
    order: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Build the DC1 status table.

    :param counts: the history's counts: columns ``task, version, process, process_type, state,
        count, attempts`` (:data:`COUNT_COLUMNS`), one row per group and state of the latest attempt.
    :param live: counts of processes that are Airflow tasks and have no record yet, in the same
        columns (``attempts`` optional; states already mapped with :func:`airflow_state_column`);
        added to ``counts``.
    :param order: ``(task, process)`` pairs, e.g. from the workflow spec: rows come in this order,
        a listed process without any count gets a row of zeros (and no version or type), and
        processes not listed follow in first-seen order. ``None``: first-seen order.
    :return: columns :data:`TABLE_COLUMNS`: ``Task, Version, Process, Type``, the eleven
        :data:`STATE_COLUMNS`, ``Total`` and ``Links`` (``"Plot"``); a last row with ``Type ==
        "Totals"`` sums every count column. ``table.attrs["plot_links"]`` holds each row's link
        target (:func:`plot_path`; ``None`` for the Totals row).
    :raises ValueError: for missing columns, an unknown state or a negative count.
    """
    frames = [_checked_counts(counts, "counts", need_attempts=True)]
    if live is not None:
        frames.append(_checked_counts(live, "live counts", need_attempts=False))
    data = pd.concat(frames, ignore_index=True)
    counted = data[[*_KEYS, "state", "count"]].itertuples(index=False, name=None)
    table = pd.DataFrame(status_rows(counted, order), columns=list(TABLE_COLUMNS), dtype=object)
    table = table.astype({column: "int64" for column in (*STATE_COLUMNS, "Total")})
    table.attrs["plot_links"] = [plot_path(p) for p in table["Process"].iloc[:-1]] + [None]
    return table


def attempts_table(counts: pd.DataFrame, order: Sequence[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Count attempts per process, shown next to the status table (which counts latest attempts).

    :param counts: the history's counts, as for :func:`status_table`.
    :param order: row order, as for :func:`status_table`.
    :return: columns ``Task, Version, Process, Type, Instances, Attempts, Retries, Retries (now
        Success)``: ``Retries`` = attempts beyond the first of each instance; ``Retries (now
        Success)`` = those spent on instances whose latest attempt succeeded, i.e. the retries that
        paid off. A last ``Totals`` row sums them.
    :raises ValueError: for missing columns, an unknown state, or fewer attempts than instances.
    """
    data = _checked_counts(counts, "counts", need_attempts=True)
    short = data[data["attempts"] < data["count"]]
    if not short.empty:
        first = short.iloc[0]
        raise ValueError(
            f"counts: {first['task']}/{first['process']} ({first['state']}) has {first['attempts']} attempts "
            f"for {first['count']} instances; every instance has at least one attempt"
        )
    data["retries"] = data["attempts"] - data["count"]
    data["retries_success"] = data["retries"].where(data["state"] == "success", 0)
    rows = _row_keys(data, order)
    table = _labels(rows)
    for source, column in (
        ("count", "Instances"),
        ("attempts", "Attempts"),
        ("retries", "Retries"),
        ("retries_success", "Retries (now Success)"),
    ):
        sums = data.groupby(_KEYS, sort=False)[source].sum().reindex(_index(rows), fill_value=0)
        table[column] = sums.to_numpy(dtype=np.int64)
    return _with_totals(table, ["Instances", "Attempts", "Retries", "Retries (now Success)"])


#: The columns of :func:`runs_table`, and the attempt columns they come from.
RUN_COLUMNS = {
    "Workflow": "workflow",
    "Version": "workflow_version",
    "Variant": "variant",
    "DAG": "dag_id",
    "Run": "run_id",
    "Spec digest": "spec_digest",
}


def runs_table(instances: pd.DataFrame) -> pd.DataFrame:
    """Return which spec produced each run of a report: one row per run, with its attempts counted.

    The spec digest is the spec file's SHA-256 (``sha256sum``), then ``+`` the render overlay's
    (``LoadedWorkflow.spec_digest``); empty for runs recorded before the history kept it.

    :param instances: attempts as ``history.queries.process_instances`` returns them (columns
        ``workflow``, ``workflow_version``, ``variant``, ``dag_id``, ``run_id``, ``spec_digest``;
        a missing one is shown empty).
    :return: columns ``Workflow, Version, Variant, DAG, Run, Spec digest, Attempts``, in the order
        of the runs' first attempts.
    """
    columns: dict[str, pd.Series] = {}
    for column, source in RUN_COLUMNS.items():
        values = instances[source] if source in instances.columns else pd.Series("", index=instances.index)
        columns[column] = values.astype(object).where(values.notna(), "").astype(str)
    data = pd.DataFrame(columns, index=instances.index)
    counted = data.groupby(list(RUN_COLUMNS), sort=False).size().rename("Attempts").reset_index()
    return counted.astype({"Attempts": "int64"})


def counts_from_instances(instances: pd.DataFrame) -> pd.DataFrame:
    """Count process instances as ``history.queries.status_counts`` does, from a frame of attempts.

    For a report made without the SQL store (a JSON-lines history, a test). An instance is
    identified by the columns of :meth:`~airflow_desc.history.records.ProcessRecord.key` present
    in the frame, try number aside (``workflow, dag_id, run_id, task_id, map_index, task, version,
    stream, process``); its latest attempt is the one with the highest ``try_number`` (the last
    row on a tie or when there is no ``try_number``).

    :param instances: one row per attempt, columns named as ProcessRecord fields; at least
        ``task``, ``process``, ``state``.
    :return: a counts frame (:data:`COUNT_COLUMNS`), groups in first-seen order.
    :raises ValueError: if ``task``, ``process`` or ``state`` is missing from a non-empty frame.
    """
    if instances.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype="int64" if c in ("count", "attempts") else object) for c in COUNT_COLUMNS}
        )
    missing = [c for c in ("task", "process", "state") if c not in instances.columns]
    if missing:
        raise ValueError(f"counts_from_instances: the frame lacks column(s) {', '.join(missing)}")
    identity = [c for c in _IDENTITY if c in instances.columns]
    tries = (
        pd.to_numeric(instances["try_number"], errors="coerce").fillna(0)
        if "try_number" in instances.columns
        else 0
    )
    data = instances.assign(
        _instance=instances.groupby(identity, dropna=False, sort=False).ngroup().to_numpy(),
        _row=np.arange(len(instances)),
        _try=tries,
    )
    for column, default in (("version", ""), ("process_type", "batch")):
        if column not in data.columns:
            data[column] = default
    latest = data.sort_values(["_try", "_row"], kind="stable").drop_duplicates("_instance", keep="last")
    latest = latest.sort_values("_instance", kind="stable")
    latest = latest.assign(attempts=latest["_instance"].map(data.groupby("_instance").size()))
    for key in _KEYS:
        latest[key] = latest[key].astype(object).where(latest[key].notna(), "").astype(str)
    counts = latest.groupby([*_KEYS, "state"], sort=False).agg(
        count=("state", "size"), attempts=("attempts", "sum")
    )
    return counts.reset_index().astype({"count": "int64", "attempts": "int64"})


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else f"{float(value):.2f}"
    return str(value)


def _blank_repeats(table: pd.DataFrame, columns: Iterable[str]) -> list[list[str]]:
    """Cells as text, a run of equal Task (and Version under it) shown once, as the DC1 slides do."""
    cells = [[_cell(v) for v in row] for row in table.itertuples(index=False, name=None)]
    return blank_repeats([str(c) for c in table.columns], cells, columns)


def format_text(table: pd.DataFrame, *, blank_repeats: bool = True) -> str:
    """Render a table as aligned text, like the DC1 slide: text left, numbers right.

    :param table: any table of this module (or :func:`~airflow_desc.reports.advice.resource_advice`).
    :param blank_repeats: show a run of equal ``Task`` and ``Version`` values once, as the slide does.
    :return: a header line, a rule, and one line per row, each ending in a newline.
    """
    names = [str(c) for c in table.columns]
    cells = _blank_repeats(table, ("Task", "Version") if blank_repeats else ())
    numeric = [
        pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        for c in table.columns
    ]
    return text_table(names, cells, numeric)


def to_csv(table: pd.DataFrame) -> str:
    """Render a table as CSV text: a header line, one line per row, Unix line ends, no index.

    :param table: any table of this module.
    """
    return str(table.to_csv(index=False, lineterminator="\n"))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def to_json(table: pd.DataFrame) -> str:
    """Render a table as a JSON list of records, one object per row, keyed by column name.

    :param table: any table of this module; counts stay integers, missing values become ``null``.
    """
    rows = ([_plain(v) for v in row] for row in table.itertuples(index=False, name=None))
    return json_text([str(c) for c in table.columns], rows)
