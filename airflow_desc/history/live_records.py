"""What the live merge reads of the history, through the DBAPI alone (sqlite3, psycopg2).

``airflow-desc status`` with runs in progress reads, besides the counts
(:mod:`~airflow_desc.history.status_read`): the DAGs' process plans and the polled SLURM job
states (:mod:`~airflow_desc.history.live`), the DAG ids a selection covers, the latest attempts of
the live task instances that may supersede their record, and which of the finished ones have a
record (:mod:`~airflow_desc.history.count_queries`). :class:`LiveRecords` asks the same SQL as
those SQLAlchemy queries (``ix_process_instances_live`` answers the last two), so that the live
path imports neither SQLAlchemy nor pandas: half a second of start-up.
``tests/unit/status/test_current_rows.py`` holds the table it gives equal to the SQLAlchemy and
pandas path's, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_desc.history.filters import INSTANCE_FIELDS, HistoryFilter

__all__ = ["JobKey", "JobState", "LatestRow", "LiveRecords"]

# Values per IN (...) list: below SQLite's variable limit.
_IN_CHUNK = 500

#: (SSH connection id, bastion connection id or "", job id): a job as a trigger names it.
JobKey = tuple[str, str, str]
#: A latest attempt as ``count_queries.LATEST_COLUMNS`` names its fields: ``(dag_id, run_id,
#: task_id, map_index, stream, process, try_number, state, task, version, process_type)``.
LatestRow = tuple[str, str, str, int, str, str, int, str, str, str, str]


@dataclass(frozen=True)
class JobState:
    """A job's state as the last poll saw it.

    :param state: as sacct prints it (``RUNNING``, ``PENDING``, ``CANCELLED by 0`` ...).
    :param polled_at: when (naive UTC).
    :param poll_interval_s: the poller's interval then, in seconds.
    """

    state: str
    polled_at: datetime
    poll_interval_s: float

    def age_s(self, now: datetime | None = None) -> float:
        """Seconds since the poll (``now``: naive UTC, default now)."""
        return ((now or datetime.now(timezone.utc).replace(tzinfo=None)) - self.polled_at).total_seconds()


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


class LiveRecords:
    """Reads of a history at the head revision for the live merge, plain tuples out.

    :param conn: a DBAPI connection to the history (sqlite3 or psycopg2), e.g. from
        :func:`~airflow_desc.history.status_read.open_dbapi`; the caller closes it.
    :param placeholder: its parameter placeholder (``?`` or ``%s``).
    """

    def __init__(self, conn: Any, placeholder: str) -> None:
        self.conn = conn
        self.placeholder = placeholder
        # The partial index's own predicate, as each database must see it to use the index.
        self._latest = "pi.latest" if placeholder == "%s" else "pi.latest = 1"
        self._run_refs: dict[tuple[str, str], int] | None = None

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql.replace("?", self.placeholder), tuple(args))
            return cursor.fetchall()  # type: ignore[no-any-return]  # tuples, from sqlite3 and psycopg2
        finally:
            cursor.close()

    def process_plans(self, dag_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Return the stored plans of these DAGs, by DAG id (as ``history.live.process_plans_of``)."""
        wanted = sorted(set(dag_ids))
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(wanted):
            sql = f"SELECT dag_id, plan FROM process_plans WHERE dag_id IN ({_marks(chunk)})"
            for dag_id, plan in self._rows(sql, chunk):
                found[dag_id] = json.loads(plan) if isinstance(plan, str) else plan
        return found

    def job_states(self, jobs: Iterable[JobKey]) -> dict[JobKey, JobState]:
        """Return the last polled state of each of these jobs (as ``history.live.job_states``)."""
        by_login: dict[tuple[str, str], set[str]] = {}
        for ssh, jump, job_id in jobs:
            by_login.setdefault((ssh, jump or ""), set()).add(job_id)
        found: dict[JobKey, JobState] = {}
        for (ssh, jump), ids in sorted(by_login.items()):
            for chunk in _chunks(sorted(ids)):
                sql = (
                    "SELECT job_id, state, polled_at, poll_interval_s FROM slurm_job_states "
                    f"WHERE ssh_conn_id = ? AND jump_conn_id = ? AND job_id IN ({_marks(chunk)})"
                )
                for job_id, state, polled_at, interval in self._rows(sql, [ssh, jump, *chunk]):
                    if not isinstance(polled_at, datetime):  # SQLite: the text SQLAlchemy wrote
                        polled_at = datetime.fromisoformat(str(polled_at))
                    found[(ssh, jump, job_id)] = JobState(state, polled_at, float(interval))
        return found

    def dag_ids(self, selection: HistoryFilter | None = None) -> list[str]:
        """Return the DAG ids of the runs a selection covers, sorted (as ``queries.dag_ids_of``)."""
        selection = selection or HistoryFilter()
        selection.require_only(INSTANCE_FIELDS, "dag_ids")
        where, args = [], []
        for column, field in (("w.name", "workflow"), ("w.variant", "variant"), ("w.version", "version"),
                              ("r.run_id", "run_id")):  # fmt: skip
            value = getattr(selection, field)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if selection.dag_ids is not None:
            dags = sorted(selection.dag_ids)
            if not dags:
                return []
            where.append(f"r.dag_id IN ({_marks(dags)})")
            args += dags
        sql = "SELECT DISTINCT r.dag_id FROM runs r JOIN workflows w ON w.id = r.workflow_ref"
        return sorted(
            str(d) for (d,) in self._rows(sql + (" WHERE " + " AND ".join(where) if where else ""), args)
        )

    def _refs(self, dag_runs: Iterable[tuple[str, str]]) -> dict[int, tuple[str, str]]:
        """Return the history's id of each of these runs that it holds: id -> (dag_id, run_id)."""
        if self._run_refs is None:
            self._run_refs = {(d, r): ref for ref, d, r in self._rows("SELECT id, dag_id, run_id FROM runs")}
        return {self._run_refs[run]: run for run in set(dag_runs) if run in self._run_refs}

    def latest_attempts(
        self, task_instances: Collection[tuple[str, str, str, int]], processes: Collection[str]
    ) -> list[LatestRow]:
        """Return the latest attempts of these processes in these task instances.

        As ``queries.latest_attempts(..., task_instances=...)``: a statement per run and task, its
        map indexes listed, through ``ix_process_instances_live``.

        :param task_instances: ``(dag_id, run_id, task_id, map_index)``.
        :param processes: the processes.
        """
        names = self._refs((d, r) for d, r, _t, _m in task_instances)
        if not names or not processes:
            return []
        refs = {run: ref for ref, run in names.items()}
        wanted: dict[tuple[int, str], set[int]] = {}
        for dag_id, run_id, task_id, map_index in task_instances:
            if (dag_id, run_id) in refs:
                wanted.setdefault((refs[dag_id, run_id], task_id), set()).add(int(map_index))
        procs = sorted(set(processes))
        head = (
            "SELECT pi.run_ref, pi.task_id, pi.map_index, s.path, pi.process, pi.try_number, pi.state, "
            "pi.task, pi.version, pi.process_type FROM process_instances pi "
            "JOIN streams s ON s.id = pi.stream_ref "
            f"WHERE {self._latest} AND pi.process IN ({_marks(procs)}) AND pi.run_ref = ? AND pi.task_id = ? "
        )
        found: list[LatestRow] = []
        for (ref, task_id), indexes in sorted(wanted.items()):
            for chunk in _chunks(sorted(indexes)):
                sql = head + f"AND pi.map_index IN ({_marks(chunk)})"
                found.extend(
                    (*names[row[0]], *row[1:]) for row in self._rows(sql, [*procs, ref, task_id, *chunk])
                )
        return found

    def recorded(
        self,
        dag_runs: Iterable[tuple[str, str]],
        *,
        task_ids: Collection[str],
        processes: Collection[str],
        by_stream: bool,
    ) -> tuple[dict[tuple[str, str], int], set[tuple[Any, ...]]]:
        """Return which process instances of these runs have a recorded attempt.

        As ``queries.recorded_instances``, each run named by the history's id (not a new tuple per
        record: a quarter of a million of them at the worst case): ``(run id, task_id, map_index,
        process)``, plus the stream's path with ``by_stream``; ``ix_process_instances_live`` answers
        without the attempts.

        :return: the history's id of each of these runs it holds, and the instances recorded.
        """
        names = self._refs(dag_runs)
        ids = {run: ref for ref, run in names.items()}
        if not names or not task_ids or not processes:
            return ids, set()
        refs, tasks, procs = sorted(names), sorted(set(task_ids)), sorted(set(processes))
        where = (
            f"WHERE {self._latest} AND pi.run_ref IN ({_marks(refs)}) AND pi.task_id IN ({_marks(tasks)}) "
            f"AND pi.process IN ({_marks(procs)})"
        )
        if by_stream:
            sql = (
                "SELECT pi.run_ref, pi.task_id, pi.map_index, pi.process, s.path "
                "FROM process_instances pi JOIN streams s ON s.id = pi.stream_ref "
            )
        else:
            sql = (
                "SELECT DISTINCT pi.run_ref, pi.task_id, pi.map_index, pi.process FROM process_instances pi "
            )
        return ids, set(self._rows(sql + where, [*refs, *tasks, *procs]))
