"""The permanent history of process instances: records, recorders, and (later) the SQL store."""

from __future__ import annotations

import os
from pathlib import Path

from airflow_desc.history.records import (
    PROCESS_STATES,
    JsonLinesRecorder,
    ProcessRecord,
    Recorder,
    process_state,
)

__all__ = [
    "PROCESS_STATES",
    "JsonLinesRecorder",
    "ProcessRecord",
    "Recorder",
    "default_recorder",
    "process_state",
]


def default_recorder() -> Recorder:
    """The recorder operators use unless given one.

    ``DESC_HISTORY_JSONL`` names a JSON-lines file; the default is ``$AIRFLOW_HOME/desc/history.jsonl``.
    """
    path = os.environ.get("DESC_HISTORY_JSONL")
    if not path:
        home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
        path = str(Path(home) / "desc" / "history.jsonl")
    return JsonLinesRecorder(path)
