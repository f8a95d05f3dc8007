"""How one attempt is named above its log: by ``airflow-desc logs`` and by the status page's log view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["attempt_heading"]


def attempt_heading(row: Mapping[str, Any]) -> str:
    """Return the line that heads one attempt's log: what it is, how it ended, where its log is.

    :param row: a row of :func:`~airflow_desc.history.queries.attempt_logs`.
    """
    attempt = f"try {row['try_number']}" + (f".{row['resubmit']}" if row.get("resubmit") else "")
    ended = str(row["state"]) + (f" ({row['reason']})" if row.get("reason") else "")
    where = f"{row['cluster']}:{row['log_path']}" if row.get("log_path") else "no log recorded"
    stream = row["stream"] or "(top level)"
    return f"== {row['process']} {stream} | {row['dag_id']} {row['run_id']} | {attempt} | {ended} | {where}"
