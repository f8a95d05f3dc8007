"""Airflow's metadata DB read through the DBAPI (status.metadata_db) gives what Airflow's ORM gives.

The tables are Airflow's own (its models' metadata, created in a SQLite file); the rows are what a
run in progress leaves there: task instances in every state, a bundle's streams as its ``streams``
task returned them (an XCom written as Airflow serializes it), deferred task instances on SLURM job
triggers and a submission hold (kwargs encrypted with a Fernet key, as Airflow stores them). The
live process instances read with :class:`MetadataTables` equal those read through the ORM.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from airflow_desc.history import HistoryStore
from airflow_desc.history.live import write_job_states, write_process_plan
from airflow_desc.status import live
from airflow_desc.status.metadata_db import MetadataTables, NotPlain
from airflow_desc.triggers.hold import SubmissionHoldTrigger
from airflow_desc.triggers.slurm import SlurmJobTrigger
from tests.unit.status.test_live_reader import live_plan  # noqa: F401 - a fixture

FERNET_KEY = "juFpW5XVBj-XOP6pNVPz_XPTW87hCLjht4A-K8AGc5E="
AWARE = datetime.now(timezone.utc)  # Airflow's columns
NOW = AWARE.replace(tzinfo=None)  # the history's
STATES = [None, "deferred", "scheduled", "queued", "deferred", "running", "success", "failed", "skipped",
          "up_for_retry", "deferred"]  # fmt: skip


def airflow_tables() -> sa.MetaData:
    """Airflow's metadata tables, from its models."""
    import airflow.models  # noqa: F401 - every model's table
    import airflow.models.dag_version  # noqa: F401
    import airflow.models.serialized_dag  # noqa: F401 - tables other tables' foreign keys name
    import airflow.models.trigger  # noqa: F401
    import airflow.models.xcom  # noqa: F401
    from airflow.models.base import metadata

    return metadata


@pytest.fixture
def metadata_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Airflow's tables in a SQLite file: runs of ``live_local`` in progress and finished, another DAG's."""
    from airflow.models.crypto import get_fernet
    from airflow.models.trigger import Trigger
    from airflow.models.xcom import XComModel

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", FERNET_KEY)
    get_fernet.cache_clear()
    path = tmp_path / "airflow.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata = airflow_tables()
    metadata.create_all(engine)
    t = metadata.tables
    kinds = [  # each deferred task instance its own trigger, of these in turn
        SlurmJobTrigger(job_id="101", ssh_conn_id="pm_ssh").serialize(),
        SlurmJobTrigger(job_id="102", ssh_conn_id="s3_ssh", jump_conn_id="bastion").serialize(),
        SubmissionHoldTrigger(ssh_conn_id="pm_ssh", cluster="pm", reason="waiting for maintenance",
                              walltime_s=60).serialize(),
    ]  # fmt: skip
    runs = [("live_local", "r1", "running"), ("live_local", "r2", "queued"), ("live_local", "r3", "success"),
            ("other", "r1", "running")]  # fmt: skip
    made = [[{"visit": "1"}, {"visit": "2"}], [{"visit": "3"}]]
    task_instances = [
        ("ingest", -1), ("setupVisits", -1), ("processVisit.streams", -1), ("checkVisit.validate", -1),
        *(("checkVisit.validate", i) for i in range(3)), *(("processVisit.bundle", i) for i in range(3)),
    ]  # fmt: skip
    with engine.begin() as conn:
        conn.execute(
            t["dag_tag"].insert(),
            [{"name": "desc", "dag_id": "live_local"}, {"name": "x", "dag_id": "other"}],
        )
        conn.execute(t["dag_run"].insert(), [
            {"id": i, "dag_id": dag_id, "run_id": run_id, "run_type": "manual", "state": state,
             "logical_date": None, "data_interval_end": None, "run_after": AWARE}
            for i, (dag_id, run_id, state) in enumerate(runs)
        ])  # fmt: skip
        conn.execute(t["xcom"].insert(), [
            {"dag_run_id": i, "dag_id": dag_id, "run_id": run_id, "task_id": "processVisit.streams",
             "map_index": -1, "key": "return_value", "value": XComModel.serialize_value(made),
             "timestamp": AWARE}
            for i, (dag_id, run_id, _) in enumerate(runs)
        ])  # fmt: skip
        rows, triggers = [], []
        for n, ((dag_id, run_id, _), (task_id, map_index)) in enumerate(
            (run, ti) for run in runs for ti in task_instances
        ):
            state = STATES[n % len(STATES)]
            if state == "deferred":
                classpath, kwargs = kinds[len(triggers) % len(kinds)]
                encrypted = Trigger.encrypt_kwargs(kwargs)
                triggers.append({"id": len(triggers) + 1, "classpath": classpath, "kwargs": encrypted,
                                 "created_date": AWARE})  # fmt: skip
            rows.append({
                "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index,
                "state": state, "try_number": n % 3, "pool": "default_pool",
                "trigger_id": len(triggers) if state == "deferred" else None,
            })  # fmt: skip
        conn.execute(t["trigger"].insert(), triggers)
        conn.execute(t["task_instance"].insert(), rows)
    engine.dispose()
    get_fernet.cache_clear()
    return path


@pytest.fixture
def history(tmp_path: Path, live_plan: Any) -> HistoryStore:  # noqa: F811 - the fixture imported above
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    write_process_plan(store, "live_local", live_plan.to_json())
    write_job_states(store, "pm_ssh", None, {"101": "RUNNING"}, poll_interval_s=30, polled_at=NOW)
    write_job_states(store, "s3_ssh", "bastion", {"102": "PENDING"}, poll_interval_s=30, polled_at=NOW)
    return store


def _both(
    metadata_db: Path, history: HistoryStore, **kw: Any
) -> tuple[list[Any], list[Any], list[str], list[str]]:
    args = (history.engine, {"workflow": None, "variant": None, "workflow_version": None},
            kw.get("dag_ids"), kw.get("run_id"), True)  # fmt: skip
    notes: tuple[list[str], list[str]] = ([], [])
    with MetadataTables(sqlite3.connect(metadata_db), "?", FERNET_KEY) as tables:
        ours = live._live_rows(tables, *args, notes[0])
    engine = sa.create_engine(f"sqlite:///{metadata_db}")
    with Session(engine) as session:
        theirs = live._live_rows(live._OrmTables(session), *args, notes[1])
    engine.dispose()
    return ours, theirs, *notes


def _ages_out(notes: list[str]) -> list[str]:
    return [re.sub(r"\b\d+ s ago", "N s ago", note) for note in notes]


def test_the_dbapi_reads_what_the_orm_reads(metadata_db: Path, history: HistoryStore) -> None:
    ours, theirs, our_notes, their_notes = _both(metadata_db, history)
    assert ours == theirs
    # A note says how long ago the states were polled, as of each read: the two reads may be a second apart.
    assert _ages_out(our_notes) == _ages_out(their_notes)
    assert any("waiting for maintenance" in note for note in our_notes)
    runs = {r["run_id"] for r in ours}
    assert runs == {"r1", "r2"}  # the finished run and the other DAG's are not live
    assert {r["slurm_state"] for r in ours} == {None, "RUNNING", "PENDING"}
    assert {r["hold"] for r in ours} == {None, "waiting for maintenance"}
    assert {r["stream"] for r in ours if r["bundled"]} == {"visit=1", "visit=2", "visit=3"}
    for kw in ({"run_id": "r2"}, {"dag_ids": ["live_local"]}, {"dag_ids": []}, {"dag_ids": ["other"]}):
        ours, theirs, _, _ = _both(metadata_db, history, **kw)
        assert ours == theirs, kw


def test_a_value_only_airflow_reads_is_left_to_the_orm(metadata_db: Path) -> None:
    conn = sqlite3.connect(metadata_db)
    with conn:
        conn.execute("UPDATE xcom SET value = ?", ('"[[{\\"__classname__\\": \\"builtins.tuple\\"}]]"',))
    with MetadataTables(conn, "?", FERNET_KEY) as tables, pytest.raises(NotPlain):
        tables.xcom_values("live_local", ["r1"], ["processVisit.streams"])
    with (
        MetadataTables(sqlite3.connect(metadata_db), "?", None) as tables,
        pytest.raises(NotPlain, match="fernet"),
    ):
        tables.trigger_kwargs(["live_local"], ["r1"], live.SLURM_JOB_TRIGGER)


# A fresh interpreter: Airflow's configuration is not imported there (it is here, by the fixtures).
_FIND = """
import sys
from airflow_desc.status.metadata_db import open_metadata_tables
tables = open_metadata_tables()
assert "airflow" not in sys.modules, "imported Airflow"
print(None if tables is None else sorted(tables.active_runs("desc", None, None)))
"""


def _found(env: dict[str, str], tmp_path: Path) -> str:
    root = Path(__file__).resolve().parents[3]
    full = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__DATABASE__")}
    full.update(env, PYTHONPATH=str(root), AIRFLOW_CONFIG=str(tmp_path / "airflow.cfg"))
    out = subprocess.run([sys.executable, "-c", _FIND], env=full, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_the_metadata_db_is_found_as_airflow_finds_it(metadata_db: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{metadata_db}"
    assert _found({}, tmp_path) == "None"  # Airflow's default: Airflow says where
    assert (
        _found({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}, tmp_path)
        == "[('live_local', 'r1'), ('live_local', 'r2')]"
    )
    (tmp_path / "airflow.cfg").write_text(f"[database]\nsql_alchemy_conn = {url}\n")
    assert _found({}, tmp_path) == "[('live_local', 'r1'), ('live_local', 'r2')]"
    assert (
        _found({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": "echo x"}, tmp_path) == "None"
    )  # only Airflow runs it
