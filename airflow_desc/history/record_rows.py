"""A record's rows for the writer (:mod:`airflow_desc.history.writer`): pure, no database.

What :class:`~airflow_desc.history.writer.HistoryStore` builds from a batch of
:class:`~airflow_desc.history.records.ProcessRecord`: each attempt's ``process_instances`` columns
(:func:`record_row`, NUL characters dropped: :func:`clean`), the streams enclosing a stream path
(:func:`ancestors`) as ``streams`` rows naming their parents (:func:`stream_rows`), the workflow a
record belongs to (:func:`workflow_identity`), the rerun request an attempt answers
(:func:`request_for`) and one record per key (:func:`dedupe`).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from airflow_desc.history.records import AttemptKey, ProcessRecord

__all__ = [
    "RECORD_COLUMNS",
    "TaskInstanceKey",
    "ancestors",
    "chunks",
    "clean",
    "dedupe",
    "record_row",
    "request_for",
    "stream_rows",
    "workflow_identity",
]

#: ``(dag_id, run_id, task_id, map_index)``.
TaskInstanceKey = tuple[str, str, str, int]

#: ProcessRecord fields stored as process_instances columns of the same name.
RECORD_COLUMNS = (
    "task_id",
    "map_index",
    "process",
    "try_number",
    "resubmit",
    "task",
    "version",
    "process_type",
    "state",
    "cluster",
    "job_id",
    "step",
    "slurm_state",
    "exit_code",
    "signal",
    "reason",
    "message",
    "submit_time",
    "start_time",
    "end_time",
    "elapsed_s",
    "total_cpu_s",
    "max_rss_bytes",
    "req_cpus",
    "req_mem_bytes",
    "req_walltime_s",
    "node",
    "log_path",
    "triggered_by",
    "rerun_reason",
    "extra",
)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Yield ``items`` in slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def ancestors(path: str) -> list[str]:
    """``a/b/c`` -> ``["", "a", "a/b", "a/b/c"]``: every stream enclosing ``path``, and itself."""
    out = [""]
    parts = [p for p in path.split("/") if p] if path else []
    for i in range(1, len(parts) + 1):
        out.append("/".join(parts[:i]))
    if path and out[-1] != path:
        out.append(path)  # an odd path ("a//b", "/a"): keep it as given, under its cleaned parents
    return out


def stream_rows(
    streams: Sequence[tuple[int, str]], ids: Mapping[tuple[int, str], int]
) -> list[dict[str, Any]]:
    """Return the ``streams`` rows of (run, path) pairs, each naming its parent's id in ``ids``."""
    rows = []
    for run_ref, path in streams:
        parent = _parent(path)
        rows.append(
            {
                "run_ref": run_ref,
                "path": path,
                "parent_ref": None if parent is None else ids[(run_ref, parent)],
            }
        )
    return rows


def _parent(path: str) -> str | None:
    if path == "":
        return None
    chain = ancestors(path)
    return chain[-2]


def dedupe(records: Iterable[ProcessRecord]) -> list[ProcessRecord]:
    """Keep the last record of each key, in first-seen order (one statement may not hit a row twice)."""
    latest: dict[AttemptKey, ProcessRecord] = {}
    for record in records:
        latest[record.key()] = record
    return list(latest.values())


record_values = operator.attrgetter(*RECORD_COLUMNS)


def record_row(record: ProcessRecord) -> dict[str, Any]:
    """Return the record's :data:`RECORD_COLUMNS` by name, :func:`clean` (``extra`` is cleaned apart)."""
    values: Sequence[Any] = record_values(record)
    # One probe of the texts, then clean only in the rare record that needs it: a flusher's batch
    # is a million values.
    if "\x00" in "".join([v for v in values if isinstance(v, str)]):
        values = [clean(v) for v in values]
    return dict(zip(RECORD_COLUMNS, values, strict=True))


def clean(value: Any) -> Any:
    """Drop NUL characters (a log tail may hold them): PostgreSQL refuses them in text and JSON."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def request_for(
    requests: Mapping[TaskInstanceKey, list[Any]], record: ProcessRecord
) -> tuple[str, str] | None:
    """Return (who, why) of the latest request that cleared this attempt's task instance before it ran."""
    asked = [q for q in requests.get((record.dag_id, record.run_id, record.task_id, record.map_index), [])
             if q.after_try < record.try_number]  # fmt: skip
    return (asked[-1].requested_by, asked[-1].reason) if asked else None


def workflow_identity(record: ProcessRecord) -> tuple[str, str, str]:
    """Return the ``workflows`` row a record belongs to: name, variant, the top-level workflow's version."""
    return (record.workflow, record.variant, str(record.extra.get("workflow_version") or ""))
