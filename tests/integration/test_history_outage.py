"""The history away and back, on a private PostgreSQL cluster; the triggers' poller writes the spool out.

Each test starts its own PostgreSQL cluster (the site's binaries, ``initdb`` in a fresh directory,
a free port on 127.0.0.1) so that it may stop it, or freeze it with SIGSTOP, without disturbing
the site's clusters or any other test. Two outages:

* the server stopped (``pg_ctl stop``): writes are refused at once and spooled;
* the server frozen after it accepted the connection (every process of the cluster SIGSTOPped:
  its kernel still accepts and acknowledges, nothing answers): only the client's reply deadline
  (``[desc] history_reply_timeout``, here the connection's ``reply_timeout``) gets the writer out.

Either way, once the server answers again, the next poll of a real SLURM job on perlmutter writes
out the spool (no command, no task), and each record is written exactly once (a trigger on the
table counts every insert and update).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_desc.history import HistoryStore, ProcessRecord, SpoolingRecorder
from airflow_desc.history.migrations import HEAD_REVISION
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.triggers.slurm import ClusterPoller, SlurmJobTrigger
from tests.integration.private_postgres import PrivatePostgres
from tests.integration.site import Site
from tests.unit.history.test_store import rec

pytestmark = pytest.mark.usefixtures("in_process_airflow_home")

CONN = "perlmutter_ssh"
# Small limits, so that the test is short: connect 2 s, statements 1 s, an answer 2 s.
LIMITS = "connect_timeout=2&statement_timeout=1s&reply_timeout=2"


@pytest.fixture
def postgres(site: Site) -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres.create(os.environ["DESC_SITE_PG_BIN"])
    yield cluster
    cluster.destroy()


def count_writes(store: HistoryStore) -> None:
    """Count every insert and update of an attempt's row in the table ``writes``."""
    store.upgrade()
    with store.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE writes (kind text)")
        conn.exec_driver_sql(
            "CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO writes VALUES (TG_OP); RETURN NULL; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER count_writes AFTER INSERT OR UPDATE ON process_instances "
            "FOR EACH ROW EXECUTE FUNCTION count_write()"
        )


def streams_and_writes(store: HistoryStore) -> tuple[list[str], dict[str, int]]:
    with store.engine.connect() as conn:
        paths = conn.exec_driver_sql(
            "SELECT s.path FROM process_instances p JOIN streams s ON s.id = p.stream_ref ORDER BY s.path"
        ).scalars()
        writes = dict(conn.exec_driver_sql("SELECT kind, count(*) FROM writes GROUP BY kind").all())
        return list(paths), {str(k): int(v) for k, v in writes.items()}


def record_in_a_thread(recorder: SpoolingRecorder, record: ProcessRecord) -> float:
    """Record as a task does; return how long it took (the thread is given a minute at most)."""
    took: list[float] = []

    def task() -> None:
        start = time.monotonic()
        recorder.record([record])
        took.append(time.monotonic() - start)

    thread = threading.Thread(target=task, daemon=True)
    thread.start()
    thread.join(60)
    assert took, "record() did not return within a minute: the writer hangs on the history"
    return took[0]


def poll_a_real_job(hook: SlurmHook, jobs: list[str], store: HistoryStore, spool: SpoolingRecorder) -> None:
    """Run a trigger for a short real job on perlmutter, its poller writing to ``store``, then let go."""
    job_id = hook.run("sbatch --parsable -t 1 -o /dev/null --wrap 'sleep 1'").stdout.strip().split(";")[0]
    jobs.append(job_id)

    async def main() -> dict[str, object]:
        poller = ClusterPoller.for_cluster(CONN, None, 1.0)
        poller.history, poller.spool = store, spool
        async for event in SlurmJobTrigger(job_id=job_id, ssh_conn_id=CONN, poll_interval=1).run():
            return dict(event.payload)
        raise AssertionError("no event")

    # asyncio.run waits for the executor's threads: the spool's flush, started by a poll, ends first.
    assert asyncio.run(main())["status"] == "done"


def test_what_was_spooled_while_the_history_was_stopped_is_written_by_the_next_poll(
    postgres: PrivatePostgres, hook: SlurmHook, jobs: list[str], tmp_path: Path
) -> None:
    store = HistoryStore(postgres.url(LIMITS))
    count_writes(store)
    recorder = SpoolingRecorder(store, tmp_path / "history-spool.jsonl")
    recorder.record([rec("visit=1")])
    postgres.stop()
    try:
        recorder.record([rec("visit=2")])
        recorder.record([rec("visit=3")])
        assert recorder.pending() == 2
    finally:
        postgres.start()
    assert recorder.pending() == 2  # nobody wrote since: no task, no command
    poll_a_real_job(hook, jobs, store, recorder)
    assert recorder.pending() == 0
    assert streams_and_writes(store) == (["visit=1", "visit=2", "visit=3"], {"INSERT": 3})
    store.dispose()


def test_a_write_to_a_frozen_history_is_spooled_within_the_deadline_and_written_once_after(
    postgres: PrivatePostgres, hook: SlurmHook, jobs: list[str], tmp_path: Path
) -> None:
    store = HistoryStore(postgres.url(LIMITS))
    count_writes(store)
    recorder = SpoolingRecorder(store, tmp_path / "history-spool.jsonl")
    recorder.record([rec("visit=1")])  # the pool now holds a connection to a live backend
    postgres.signal(signal.SIGSTOP)
    try:
        # The pooled connection's ping gets no answer (2 s), its replacement's login neither (2 s).
        took = [record_in_a_thread(recorder, rec(f"visit={i}")) for i in (2, 3)]
        assert recorder.pending() == 2
    finally:
        postgres.signal(signal.SIGCONT)
    print(f"record() against the frozen history took {took[0]:.1f} s and {took[1]:.1f} s")
    poll_a_real_job(hook, jobs, store, recorder)
    assert recorder.pending() == 0
    assert streams_and_writes(store) == (["visit=1", "visit=2", "visit=3"], {"INSERT": 3})
    store.dispose()


def test_a_frozen_history_does_not_hold_up_the_pollers_state_write(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    store = HistoryStore(postgres.url(LIMITS))
    poller = ClusterPoller(CONN, None, 1.0, history=store)
    assert asyncio.run(poller.write_states({"101": "RUNNING"}))
    postgres.signal(signal.SIGSTOP)
    try:
        start = time.monotonic()
        written = asyncio.run(asyncio.wait_for(poller.write_states({"101": "COMPLETED"}), 60))
        took = time.monotonic() - start
    finally:
        postgres.signal(signal.SIGCONT)
    print(f"the poller's write against the frozen history gave up after {took:.1f} s")
    assert written is False  # a warning, the polling goes on
    assert asyncio.run(poller.write_states({"101": "COMPLETED"}))  # and the next poll's write lands
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT state FROM slurm_job_states").scalar_one() == "COMPLETED"
    store.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_migration_0004_keeps_the_recorded_attempts_as_the_first_job_of_their_try(
    backend: str, postgres: PrivatePostgres, tmp_path: Path
) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from airflow_desc.history.engine import VERSION_TABLE, _alembic_config
    from airflow_desc.history.queries import process_instances
    from airflow_desc.history.schema import metadata

    url = postgres.url(LIMITS) if backend == "postgresql" else f"sqlite:///{tmp_path / 'history.db'}"
    store = HistoryStore(url)
    store.upgrade("0003")
    with store.engine.begin() as conn:  # an attempt as 0003 stored it, before resubmit existed
        conn.exec_driver_sql("INSERT INTO workflows (name, variant, version) VALUES ('w', '', '')")
        conn.exec_driver_sql(
            "INSERT INTO runs (workflow_ref, dag_id, run_id, created_at) "
            "VALUES (1, 'dc1', 'run1', '2026-01-01')"
        )
        conn.exec_driver_sql("INSERT INTO streams (run_ref, path) VALUES (1, 's=nf')")
        conn.exec_driver_sql(
            "INSERT INTO process_instances (workflow_ref, run_ref, stream_ref, task_id, map_index, process, "
            "try_number, task, version, process_type, state, slurm_state, recorded_at) VALUES "
            "(1, 1, 1, 't', -1, 'p', 1, 'w', '', 'batch', 'terminated', 'NODE_FAIL', '2026-01-01')"
        )
    store.upgrade()
    assert store.current_revision() == HEAD_REVISION
    with store.engine.connect() as conn:
        opts = {"version_table": VERSION_TABLE, "compare_type": True}
        assert compare_metadata(MigrationContext.configure(conn, opts=opts), metadata) == []
    resubmitted = rec("s=nf", dag_id="dc1", run_id="run1", task_id="t", map_index=-1, process="p",
                      workflow="w", task="w", version="", resubmit=1)  # fmt: skip
    store.record([resubmitted])  # the try's next job: a row of its own, the latest
    frame = process_instances(store.engine)
    assert sorted(zip(frame["resubmit"], frame["state"], strict=True)) == [(0, "terminated"), (1, "success")]
    assert list(process_instances(store.engine, latest_only=True)["resubmit"]) == [1]
    config = _alembic_config()
    with store.engine.begin() as conn:  # and back: the try keeps its last job
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT state FROM process_instances").scalars().all() == ["success"]
    store.dispose()
