"""What the status page needs of runs in progress, kept in the history so that it reads databases only.

Two tables of :mod:`airflow_desc.history.schema`, written where the knowledge is and read where it
is shown (the api-server, ``airflow-desc status``), which then parses no DAG file and opens no SSH:

* ``process_plans``: per DAG id, a JSON document saying which process instances each of its task
  instances stands for, and the workflow's order of its processes. The history stores it as it is
  given (:func:`write_process_plan`): its meaning is :mod:`airflow_desc.status.plans`'. The
  plugin's listener writes it in the worker, where the DAG is loaded, when a task starts and the
  stored digest differs (:func:`process_plan_digest`: one small SELECT).
* ``slurm_job_states``: per cluster login (SSH connection and bastion, ``""`` for none) and job
  id, the job's state as sacct last printed it, when, and the poller's interval then. Each poll
  of a triggerer's per-cluster poller writes the states of every job it polled in one
  transaction (:func:`write_job_states`), which also deletes the rows no poll touched for
  :data:`KEEP_JOB_STATES_S`.

Writes go through a :class:`~airflow_desc.history.writer.HistoryStore` (migrations first, the
history's timeouts); reads take an engine.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from airflow_desc.history.live_records import JobKey, JobState
from airflow_desc.history.schema import process_plans, slurm_job_states
from airflow_desc.history.writer import HistoryStore

__all__ = [
    "KEEP_JOB_STATES_S",
    "JobState",
    "job_states",
    "plan_digest",
    "process_plan_digest",
    "process_plans_of",
    "write_job_states",
    "write_process_plan",
]

#: Seconds a job's state is kept after the last poll that saw it (a day): a job polled no more
#: has ended or is watched no more, and the table stays as small as what is watched.
KEEP_JOB_STATES_S = 86_400.0
# Rows per IN (...) list: below SQLite's variable limit.
_IN_CHUNK = 300


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _insert(store: HistoryStore, table: sa.Table) -> Any:
    if store.dialect == "postgresql":
        return postgresql.insert(table)
    if store.dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the history store runs on PostgreSQL or SQLite, not {store.dialect}")


def plan_digest(plan: Mapping[str, Any]) -> str:
    """Return the digest of a plan document (SHA-256 of its canonical JSON)."""
    text = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def process_plan_digest(engine: Engine, dag_id: str) -> str | None:
    """Return the digest of the plan stored for ``dag_id``, or ``None`` when none is.

    A database whose schema predates the table has none either.
    """
    if "process_plans" not in _tables(engine):
        return None
    with engine.connect() as conn:
        found = conn.execute(sa.select(process_plans.c.digest).where(process_plans.c.dag_id == dag_id))
        return found.scalar_one_or_none()


def write_process_plan(store: HistoryStore, dag_id: str, plan: Mapping[str, Any]) -> str:
    """Store ``plan`` as the plan of ``dag_id``, replacing any; return its digest.

    :param store: the history.
    :param dag_id: the DAG.
    :param plan: a JSON document (:meth:`airflow_desc.status.plans.DagProcesses.to_json`).
    """
    digest = plan_digest(plan)
    store.ping()  # the migrations first
    stmt = _insert(store, process_plans)
    stmt = stmt.on_conflict_do_update(
        index_elements=["dag_id"],
        set_={
            "digest": stmt.excluded.digest,
            "plan": stmt.excluded.plan,
            "written_at": stmt.excluded.written_at,
        },
    )
    with store.engine.begin() as conn:
        conn.execute(stmt, {"dag_id": dag_id, "digest": digest, "plan": dict(plan), "written_at": _utcnow()})
    return digest


def process_plans_of(engine: Engine, dag_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Return the stored plans of these DAGs, by DAG id (DAGs without one are left out)."""
    wanted = sorted(set(dag_ids))
    if not wanted or "process_plans" not in _tables(engine):
        return {}
    found: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            query = sa.select(process_plans.c.dag_id, process_plans.c.plan).where(
                process_plans.c.dag_id.in_(chunk)
            )
            for dag_id, plan in conn.execute(query):
                if isinstance(plan, str):  # a JSON column read back as text (never on our dialects)
                    plan = json.loads(plan)
                found[dag_id] = plan
    return found


def write_job_states(
    store: HistoryStore,
    ssh_conn_id: str,
    jump_conn_id: str | None,
    states: Mapping[str, str],
    *,
    poll_interval_s: float,
    polled_at: datetime | None = None,
    keep_s: float = KEEP_JOB_STATES_S,
) -> None:
    """Store one poll's job states of one cluster login, and prune the states no poll kept fresh.

    One transaction: the upsert of every state, then the deletion of rows (of any login) polled
    last more than ``keep_s`` seconds before ``polled_at``.

    :param store: the history.
    :param ssh_conn_id: the cluster's SSH connection.
    :param jump_conn_id: its bastion connection (``None`` or ``""``: none).
    :param states: job id -> state as sacct printed it.
    :param poll_interval_s: the poller's interval, for readers to judge a state's age by.
    :param polled_at: when the poll was (default now; naive means UTC).
    :param keep_s: how long a row no poll refreshes is kept.
    """
    now = polled_at or _utcnow()
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc).replace(tzinfo=None)
    rows = [
        {"ssh_conn_id": ssh_conn_id, "jump_conn_id": jump_conn_id or "", "job_id": str(job_id),
         "state": str(state), "polled_at": now, "poll_interval_s": float(poll_interval_s)}
        for job_id, state in sorted(states.items())
    ]  # fmt: skip
    store.ping()  # the migrations first
    stmt = _insert(store, slurm_job_states)
    stmt = stmt.on_conflict_do_update(
        index_elements=["ssh_conn_id", "jump_conn_id", "job_id"],
        set_={c: stmt.excluded[c] for c in ("state", "polled_at", "poll_interval_s")},
    )
    with store.engine.begin() as conn:
        if rows:
            conn.execute(stmt, rows)
        conn.execute(
            slurm_job_states.delete().where(slurm_job_states.c.polled_at < now - timedelta(seconds=keep_s))
        )


def job_states(engine: Engine, jobs: Iterable[JobKey]) -> dict[JobKey, JobState]:
    """Return the last polled state of each of these jobs (jobs no poll saw are left out).

    :param engine: the history's engine.
    :param jobs: ``(ssh_conn_id, jump_conn_id or "", job_id)`` of each job.
    """
    by_login: dict[tuple[str, str], set[str]] = {}
    for ssh, jump, job_id in jobs:
        by_login.setdefault((ssh, jump or ""), set()).add(job_id)
    if not by_login or "slurm_job_states" not in _tables(engine):
        return {}
    t = slurm_job_states
    found: dict[JobKey, JobState] = {}
    with engine.connect() as conn:
        for (ssh, jump), ids in sorted(by_login.items()):
            wanted = sorted(ids)
            for start in range(0, len(wanted), _IN_CHUNK):
                query = sa.select(t.c.job_id, t.c.state, t.c.polled_at, t.c.poll_interval_s).where(
                    t.c.ssh_conn_id == ssh, t.c.jump_conn_id == jump,
                    t.c.job_id.in_(wanted[start : start + _IN_CHUNK]),
                )  # fmt: skip
                for job_id, state, polled_at, interval in conn.execute(query):
                    found[(ssh, jump, job_id)] = JobState(state, polled_at, float(interval))
    return found


_UPGRADED: weakref.WeakSet[Engine] = weakref.WeakSet()


def _tables(engine: Engine) -> set[str]:
    """Return the tables of the history's schema (a database not upgraded yet lacks the newer ones).

    Once an engine's database has both tables it keeps them: it is not asked again.
    """
    ours = {"process_plans", "slurm_job_states"}
    if engine in _UPGRADED:
        return ours
    names = set(sa.inspect(engine).get_table_names())
    if ours <= names:
        _UPGRADED.add(engine)
    return names
