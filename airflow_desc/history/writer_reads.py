"""What the writer reads in a batch's transaction (:mod:`airflow_desc.history.writer`).

Under the lock the batch holds on its runs: the attempts already recorded of the instances it
writes (:func:`held_attempts`, from which :mod:`~airflow_desc.history.latest` decides the
``latest`` flags and the counts), the rerun requests of its runs (:func:`rerun_requests`) and the
ids of streams already there (:func:`select_streams`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from airflow_desc.history.latest import COUNT_GROUP, INSTANCE_COLUMNS, HeldAttempt
from airflow_desc.history.record_rows import TaskInstanceKey, chunks
from airflow_desc.history.records import ProcessRecord
from airflow_desc.history.schema import process_instances, rerun_requests, streams

__all__ = ["HELD_COLUMNS", "IN_CHUNK", "KEY_COLUMNS", "held_attempts", "rerun_requests_of", "select_streams"]

#: Parameters per IN (...) list: below SQLite's variable limit.
IN_CHUNK = 500
#: An attempt's key: its instance, try and resubmission.
KEY_COLUMNS = (*INSTANCE_COLUMNS, "try_number", "resubmit")
#: What the writer reads of the attempts already recorded of the instances it writes.
HELD_COLUMNS = tuple(dict.fromkeys((*KEY_COLUMNS, *COUNT_GROUP)))


def held_attempts(
    conn: Connection, rows: Sequence[Mapping[str, Any]], created: set[int]
) -> list[HeldAttempt]:
    """Return the recorded attempts of the instances of ``rows`` (none in the streams just ``created``).

    Read by (run, stream) through the attempts' unique index, and narrowed to the instances here;
    under the lock the batch holds on its runs, so that no other writer adds an attempt meanwhile.
    """
    pi = process_instances
    wanted: dict[int, set[int]] = {}
    instances = set()
    for row in rows:
        if row["stream_ref"] not in created:
            wanted.setdefault(row["run_ref"], set()).add(row["stream_ref"])
            instances.add(tuple(row[c] for c in INSTANCE_COLUMNS))
    columns = [pi.c[name] for name in HELD_COLUMNS]
    held = []
    for run_ref, stream_refs in sorted(wanted.items()):
        for chunk in chunks(sorted(stream_refs), IN_CHUNK):
            query = sa.select(pi.c.id, pi.c.latest, *columns).where(
                pi.c.run_ref == run_ref, pi.c.stream_ref.in_(chunk)
            )
            for id_, latest, *values in conn.execute(query):
                found = dict(zip(HELD_COLUMNS, values, strict=True))
                if tuple(found[c] for c in INSTANCE_COLUMNS) in instances:
                    held.append(HeldAttempt(int(id_), bool(latest), found))
    return held


def select_streams(conn: Connection, wanted: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Return the ids of the ``(run, path)`` streams already there."""
    by_run: dict[int, list[str]] = {}
    for run_ref, path in wanted:
        by_run.setdefault(run_ref, []).append(path)
    found: dict[tuple[int, str], int] = {}
    for run_ref, paths in by_run.items():
        for chunk in chunks(sorted(paths), IN_CHUNK):
            query = sa.select(streams.c.id, streams.c.path).where(
                streams.c.run_ref == run_ref, streams.c.path.in_(chunk)
            )
            for id_, path in conn.execute(query):
                found[(run_ref, path)] = id_
    return found


def rerun_requests_of(conn: Connection, batch: Sequence[ProcessRecord]) -> dict[TaskInstanceKey, list[Any]]:
    """Return the rerun requests of the batch's DAG runs, by task instance, oldest first."""
    wanted = sorted({(r.dag_id, r.run_id) for r in batch if r.try_number > 1})
    found: dict[TaskInstanceKey, list[Any]] = {}
    for chunk in chunks(wanted, IN_CHUNK):
        query = (
            sa.select(rerun_requests)
            .where(sa.tuple_(rerun_requests.c.dag_id, rerun_requests.c.run_id).in_(list(chunk)))
            .order_by(rerun_requests.c.requested_at, rerun_requests.c.id)
        )
        for row in conn.execute(query):
            found.setdefault((row.dag_id, row.run_id, row.task_id, row.map_index), []).append(row)
    return found
