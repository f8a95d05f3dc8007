"""airflow-desc's status table as ctrl_bps states: counts per label, and the run's state.

``bps report`` shows, per label, how many jobs are in each ``lsst.ctrl.bps.WmsStates``. The
status page's ``status.json`` (:func:`airflow_desc.reports.status.to_json`) has a row per
process with a count per state column; a label is the sub-task of that name
(:mod:`airflow_desc.bps.translate`), and an init or final job the top-level process of that name.
Names, not ``WmsStates`` members, are returned here, so that this module imports no LSST code:
the service turns them into ``WmsStates[name]``.

===========  ===========  =====================================================================
column       WmsStates    why
===========  ===========  =====================================================================
Waiting      UNREADY      its upstream has not finished (or its try waits out the retry delay)
Ready        READY        dependencies met, waiting for a slot
Queued       PENDING      handed to the executor
Submitted    PENDING      in SLURM's queue (or, unknown to SLURM yet, just submitted)
Running      RUNNING
Success      SUCCEEDED
Failed       FAILED       the payload failed, or an output check did
Terminated   FAILED       the system ended it (time limit, out of memory, node failure)
Cancelling   DELETED      being cancelled
Cancelled    DELETED      cancelled by the workflow's people (``bps cancel``, a clear)
Skipped      PRUNED       not run: something it depends on did not succeed
===========  ===========  =====================================================================

A label's jobs that have no row (its streams are not made) count as UNREADY while the run goes on
(the label waits for its upstream), as PRUNED once it has ended (an upstream label failed, or the
run was cancelled: they will not run), so that each label's counts add up to its jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["COLUMN_STATES", "RUN_STATES", "label_states", "run_state"]

#: Each state column of the status table, as a ``WmsStates`` name.
COLUMN_STATES: dict[str, str] = {
    "Waiting": "UNREADY",
    "Ready": "READY",
    "Queued": "PENDING",
    "Submitted": "PENDING",
    "Running": "RUNNING",
    "Success": "SUCCEEDED",
    "Failed": "FAILED",
    "Terminated": "FAILED",
    "Cancelling": "DELETED",
    "Cancelled": "DELETED",
    "Skipped": "PRUNED",
}
#: An Airflow DAG run's state (``DagRunState``) as a ``WmsStates`` name.
RUN_STATES: dict[str, str] = {
    "queued": "PENDING",
    "running": "RUNNING",
    "success": "SUCCEEDED",
    "failed": "FAILED",
}


def label_states(
    rows: Iterable[Mapping[str, Any]], jobs: Mapping[str, int], missing: str = "UNREADY"
) -> dict[str, dict[str, int]]:
    """Count each label's jobs per ``WmsStates`` name.

    :param rows: the status table's rows (``status.json``), keyed by column name.
    :param jobs: each label's number of jobs (the spec's ``expected_streams``; 1 for an init or
        final job): the labels reported, in this order.
    :param missing: the state of jobs without a row: ``UNREADY``, or ``PRUNED`` once the run ended.
    :return: ``{label: {state name: count}}``, only states with a count.
    """
    counts: dict[str, dict[str, int]] = {label: {} for label in jobs}
    for row in rows:
        label = str(row.get("Task") if row.get("Task") in jobs else row.get("Process"))
        if label not in jobs or row.get("Type") == "Totals":
            continue
        for column, state in COLUMN_STATES.items():
            if count := int(row.get(column) or 0):
                counts[label][state] = counts[label].get(state, 0) + count
    for label, expected in jobs.items():
        unseen = expected - sum(counts[label].values())
        if unseen > 0:
            counts[label][missing] = counts[label].get(missing, 0) + unseen
    return counts


def run_state(dag_run_state: str | None) -> str:
    """Return the ``WmsStates`` name of a DAG run's state (``UNKNOWN`` for none or another)."""
    return RUN_STATES.get(dag_run_state or "", "UNKNOWN")
