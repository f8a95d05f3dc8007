"""The live merge without pandas or SQLAlchemy (status.merge_rows, status.current_rows) prints the same table.

``airflow-desc status`` reads the counts, the live states and the records it merges through the
DBAPI and merges plain rows; the path it replaced (``current_counts``: SQLAlchemy, pandas,
``merge_with_history``) is the reference: on random histories and live states (every task-instance
state, retries, bundles whose streams moved, instances not recorded yet) the status table is the same,
row for row; and the CLI prints the same in every format from a metadata DB of Airflow's own tables.
``tests/integration/test_history_counts.py`` runs the first on PostgreSQL.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airflow_desc.history import HistoryFilter, HistoryStore
from airflow_desc.history.live import write_job_states
from airflow_desc.history.live_records import LiveRecords
from airflow_desc.history.queries import status_counts
from airflow_desc.history.status_read import counts_of
from airflow_desc.reports.status import status_table
from airflow_desc.reports.status_rows import status_rows
from airflow_desc.status.current import merge_with_history
from airflow_desc.status.merge_rows import merge_rows
from tests.unit.history.test_queries import rec
from tests.unit.status.test_live_reader import live_plan  # noqa: F401 - a fixture
from tests.unit.status.test_merge_with_history import random_history, random_live
from tests.unit.status.test_metadata_db import FERNET_KEY
from tests.unit.status.test_metadata_db import history as history  # noqa: F401 - a fixture
from tests.unit.status.test_metadata_db import metadata_db as metadata_db  # noqa: F401 - a fixture


def live_dicts(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The live rows as live_rows gives them: dicts of plain values, None for none."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")  # type: ignore[return-value]


def assert_same_table(store: HistoryStore, conn: Any, placeholder: str, live: pd.DataFrame) -> None:
    """The plain merge's table (through ``conn``) is the pandas merge's (through the store's engine)."""
    counts = counts_of(conn.cursor(), placeholder, HistoryFilter())
    assert counts is not None
    merged, live_counts = merge_rows(counts, live_dicts(live), LiveRecords(conn, placeholder))
    old_counts, old_live = merge_with_history(store.engine, status_counts(store.engine), live)
    assert sum(n for *_, n in live_counts) > 0 and any(
        new[5] < old[5] for new, old in zip(merged, counts, strict=True)
    )
    assert status_rows([*merged, *live_counts]) == status_table(old_counts, old_live).to_numpy().tolist()


def write_random_history(store: HistoryStore, seed: int) -> pd.DataFrame:
    """Write a random history into ``store``; return random live rows over it."""
    rng = random.Random(seed)
    history_rows = random_history(rng)
    for start in range(0, len(history_rows), 50):
        store.record(history_rows[start : start + 50])
    return random_live(rng)


@pytest.mark.parametrize("seed", range(6))
def test_the_plain_merge_gives_the_pandas_table(tmp_path: Path, seed: int) -> None:
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    live = write_random_history(store, seed)
    conn = sqlite3.connect(tmp_path / "h.db")
    try:
        assert_same_table(store, conn, "?", live)
        for part in (live[live["ti_state"] == "success"], live[live["ti_state"] != "success"]):
            merged, live_counts = merge_rows(counts_of(conn.cursor(), "?", HistoryFilter()) or [],
                                             live_dicts(part), LiveRecords(conn, "?"))  # fmt: skip
            old = merge_with_history(store.engine, status_counts(store.engine), part)
            assert status_rows([*merged, *live_counts]) == status_table(*old).to_numpy().tolist()
    finally:
        conn.close()
        store.dispose()


_RUN = """
import sys
from airflow_desc.cli import history_commands, main
plain = history_commands._status_without_pandas
if sys.argv[1] == "general":
    history_commands._status_without_pandas = lambda args: False
else:
    def spied(args):
        answered = plain(args)
        print(f"answered: {answered}", file=sys.stderr)
        return answered
    history_commands._status_without_pandas = spied
sys.exit(main(sys.argv[2:]))
"""


def test_status_prints_what_the_general_path_prints(
    metadata_db: Path,
    history: HistoryStore,
    tmp_path: Path,
) -> None:
    """A live run whose task instances are in every state, some recorded: same output, notes, exit.

    In new processes: the DBAPI path reads Airflow's configuration only where Airflow is not imported.
    """
    store = history
    records = [  # the live runs' instances: some recorded, a retried one, a bundle's streams
        rec("live", state, try_number, workflow="live", dag_id="live_local", run_id=run_id, task_id=task_id,
            map_index=map_index, process=process, task=task, version=version, process_type=kind)
        for run_id in ("r1", "r2")
        for task_id, map_index, process, task, version, kind, state, try_number in [
            ("ingest", -1, "ingest", "live", "3.1", "batch", "failed", 1),
            ("setupVisits", -1, "setupVisits", "live", "3.1", "script", "success", 1),
            ("checkVisit.validate", 1, "validate", "checkVisit", "3.1", "batch", "terminated", 2),
            ("checkVisit.validate", 2, "validate", "checkVisit", "3.1", "batch", "success", 1),
        ]
    ] + [
        rec(f"visit={v}", state, 1, workflow="live", dag_id="live_local", run_id="r1",
            task_id="processVisit.bundle", map_index=0, process="calibrateVisit", task="processVisit",
            version="3.2", process_type="batch")
        for v, state in (("1", "success"), ("2", "failed"))
    ]  # fmt: skip
    store.record(records)
    # Polled now: the fixture's time is the module's import, minutes ago in a whole suite, when the
    # states are stale and their note says how old they are, which differs from one run to the next.
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    write_job_states(store, "pm_ssh", None, {"101": "RUNNING"}, poll_interval_s=30, polled_at=now)
    write_job_states(store, "s3_ssh", "bastion", {"102": "PENDING"}, poll_interval_s=30, polled_at=now)
    root = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(PYTHONPATH=str(root), AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__FERNET_KEY=FERNET_KEY,
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{metadata_db}")  # fmt: skip
    for fmt in ("csv", "json", "table"):  # the table last: compared with --no-live below
        argv = ["status", "--db", str(store.engine.url), "--format", fmt]
        fast, general = (
            subprocess.run(
                [sys.executable, "-c", _RUN, way, *argv], env=env, capture_output=True, text=True, timeout=300
            )  # fmt: skip
            for way in ("plain", "general")
        )
        assert fast.stderr.endswith("answered: True\n"), fast.stderr[-3000:]
        assert (fast.returncode, fast.stdout, fast.stderr.removesuffix("answered: True\n")) == (
            general.returncode,
            general.stdout,
            general.stderr,
        )
        assert general.returncode == 0 and "waiting for maintenance" in general.stderr  # the live notes
    history_only = subprocess.run(
        [sys.executable, "-m", "airflow_desc.cli", "status", "--no-live", "--db", str(store.engine.url)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert history_only.stdout not in (fast.stdout, "")  # the live states changed the table
