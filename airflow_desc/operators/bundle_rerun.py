"""What a bundle's try runs again: the rerun mode, a rerun's selection, the records of earlier tries.

The rules are step 4 of a bundle's life (:mod:`~airflow_desc.operators.bundle`): ``failed`` reruns
what did not succeed, ``all`` everything, and a rerun's selection in the history
(:class:`~airflow_desc.history.records.RerunSelection`) runs again whatever its earlier state. The
operator hands in its task instance, hook and log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history import rerun_selection_of
from airflow_desc.pilot import parse_records
from airflow_desc.slurm.quoting import quote_path
from airflow_desc.workflow.scripts import ScriptOutcome

if TYPE_CHECKING:
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.operators.job_checks import TaskLog

__all__ = ["RERUN_MODES", "known_outcomes", "read_records", "rerun_ids", "rerun_mode", "rerun_selection"]

#: What a try reruns: what did not succeed, or everything.
RERUN_MODES = ("failed", "all")


def rerun_mode(conf: Mapping[str, Any] | None, default: str) -> str:
    """Return the run's ``desc_rerun`` from its conf if it is a rerun mode, else ``default``."""
    mode = (conf or {}).get("desc_rerun", default)
    return mode if mode in RERUN_MODES else default


def rerun_ids(saved: Mapping[str, Any]) -> frozenset[str]:
    """Return the ids this try reruns whatever their earlier state, from the bundle's saved state."""
    return frozenset(saved.get("rerun_ids") or ())


def known_outcomes(
    saved: Mapping[str, Any], rerun: str, selected: frozenset[str]
) -> dict[str, ScriptOutcome]:
    """Return the earlier tries' script outcomes to reuse: none for ``all``, not the selected ones."""
    outcomes = {k: ScriptOutcome.from_json(v) for k, v in (saved.get("scripts") or {}).items()}
    if rerun == "all":
        return {}
    return {k: v for k, v in outcomes.items() if k not in selected}


def rerun_selection(ti: Any, *, label: str, log: TaskLog) -> frozenset[str]:
    """Return the process instances a rerun selected for this try (none on a first try or a retry)."""
    try_number = int(ti.try_number or 1)
    if try_number <= 1:
        return frozenset()
    try:
        return rerun_selection_of(ti.dag_id, ti.run_id, ti.task_id, int(ti.map_index), try_number)
    except HistoryUnavailable as exc:
        log.warning(
            "bundle %s: the history did not answer (%s): cannot read which instances a rerun "
            "selected; rerunning only what did not succeed (clear the task again once it answers)",
            label, exc,
        )  # fmt: skip
        return frozenset()


def read_records(
    hook: SlurmHook, path: str, job_id: str | None, rerun: str
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Return the latest record of each instance, and job ``job_id``'s records, from the records file.

    With ``rerun="all"`` only that job's records count: earlier tries' are not done work.
    """
    result = hook.run(f"cat -- {quote_path(path)} 2>/dev/null", check=False)
    latest: dict[str, dict[str, Any]] = {}
    mine: dict[str, dict[str, Any]] = {}
    for record in parse_records(result.stdout):
        iid = record.get("id")
        if not isinstance(iid, str):
            continue
        if job_id is not None and str(record.get("job_id")) == job_id:
            mine[iid] = record
            latest[iid] = record
        elif rerun == "failed":
            latest[iid] = record
    return latest, mine
