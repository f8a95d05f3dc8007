"""What the status page reads of runs in progress, written for real: a poller's job states, plans.

On both histories: a SQLite file and the site's PostgreSQL history (a fresh schema of
``desc_history`` per test, dropped afterwards). The poller polls a real job of the perlmutter
cluster over SSH and writes what sacct said to the history, where the status page reads it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_desc.history import HistoryStore
from airflow_desc.history.live import (
    job_states,
    process_plan_digest,
    process_plans_of,
    write_job_states,
    write_process_plan,
)
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.status.live import slurm_states
from airflow_desc.triggers.slurm import ClusterPoller, SlurmJobTrigger
from tests.integration.site import Site
from tests.integration.test_poller import first_event, sbatch_loop, state_of
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("in_process_airflow_home")

CONN = "perlmutter_ssh"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, site: Site) -> Iterator[HistoryStore]:
    if request.param == "sqlite":
        s = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
        yield s
        s.dispose()
        return
    uri = os.environ["DESC_SITE_HISTORY_DB_URI"]
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    s = HistoryStore(uri, engine_options={"connect_args": {"options": f"-csearch_path={schema}"}})
    try:
        yield s
    finally:
        s.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def test_plans_and_states_on_both_histories(store: HistoryStore) -> None:
    plan: dict[str, Any] = {"format": 1, "dag_id": "d", "workflow": "w", "variant": "", "tasks": {},
                            "bundles": {}, "order": [["t", "p"]]}  # fmt: skip
    digest = write_process_plan(store, "d", plan)
    assert process_plan_digest(store.engine, "d") == digest
    assert process_plans_of(store.engine, ["d"]) == {"d": plan}
    write_job_states(store, CONN, None, {"1": "PENDING", "2": "RUNNING"}, poll_interval_s=1)
    write_job_states(store, CONN, None, {"1": "RUNNING"}, poll_interval_s=1)
    states, notes = slurm_states(store.engine, {"a": (CONN, "", "1"), "b": (CONN, "", "2")})
    assert states == {"a": "RUNNING", "b": "RUNNING"} and notes == []


def test_a_real_poll_writes_the_jobs_states(
    store: HistoryStore, hook: SlurmHook, jobs: list[str], token: str
) -> None:
    [job_id] = sbatch_loop(hook, 1, f"--hold -J desc-poll-states-{token} -t 1 -o /dev/null --wrap true")
    jobs.append(job_id)

    def polled() -> str | None:
        found = job_states(store.engine, [(CONN, "", job_id)]).get((CONN, "", job_id))
        return None if found is None else found.state

    async def scenario() -> dict[str, Any]:
        poller = ClusterPoller.for_cluster(CONN, None, 1)
        poller.history = store
        waiting = asyncio.create_task(
            first_event(SlurmJobTrigger(job_id=job_id, ssh_conn_id=CONN, poll_interval=1))
        )
        try:
            # The held job as sacct says it, in the history: what the status page counts as Submitted.
            await asyncio.to_thread(
                wait_for, polled, until=lambda s: s == "PENDING", timeout=60, what=f"job {job_id} PENDING"
            )
            await asyncio.to_thread(hook.scancel, [job_id])
            return await asyncio.wait_for(waiting, timeout=120)
        finally:
            waiting.cancel()

    event = asyncio.run(scenario())
    assert state_of(event) == "CANCELLED"
    # The poll that saw the job end wrote that too: the table follows the job to its end.
    assert (polled() or "").startswith("CANCELLED")
    found = job_states(store.engine, [(CONN, "", job_id)])[(CONN, "", job_id)]
    assert found.poll_interval_s == 1.0 and found.age_s() < 3600
    jobs.clear()
