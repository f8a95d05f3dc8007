"""`airflow-desc status` merges live task-instance states of a run in progress with the history."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.deploy import Deployment
from tests.integration.test_maintenance import create_maintenance, delete_maintenance
from tests.waiting import wait_for

DAG_ID = "desc_e2e_live"


def status_and_notes(
    airflow: Deployment, run_id: str, *command: str
) -> tuple[dict[str, dict[str, object]], str]:
    """The status table of ``run_id`` (the PostgreSQL history its workers wrote, and live states), and
    the notes printed with it."""
    proc = subprocess.run(
        [*command, "status", "--db", airflow.history_db, "--run", run_id, "--format", "json"],
        env=airflow.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr, proc.stderr
    return {str(row["Process"] or row["Type"]): row for row in json.loads(proc.stdout)}, proc.stderr


def status(airflow: Deployment, run_id: str, *command: str) -> dict[str, dict[str, object]]:
    return status_and_notes(airflow, run_id, *command)[0]


def counts(row: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in row.items() if isinstance(v, int) and v and k != "Total"}


def bundle_state(airflow: Deployment, run_id: str) -> str | None:
    rows = airflow.sql(
        "SELECT state FROM task_instance WHERE dag_id = %s AND run_id = %s "
        "AND task_id = 'processVisit.bundle' AND map_index = 0",
        DAG_ID, run_id,
    )  # fmt: skip
    return str(rows[0][0]) if rows and rows[0][0] else None


def trigger_until_the_bundle_waits(airflow: Deployment) -> str:
    """Trigger desc_e2e_live and return its run id once the bundle's job is submitted (deferred)."""
    run_id = airflow.trigger(DAG_ID)
    deferred = lambda: bundle_state(airflow, run_id) == "deferred"  # noqa: E731
    wait_for(deferred, timeout=180, what="the bundle's job", interval=0.5)
    return run_id


def test_status_counts_a_run_in_progress_from_airflow_and_the_history(airflow: Deployment) -> None:
    run_id = trigger_until_the_bundle_waits(airflow)

    cli = str(pathlib.Path(sys.executable).with_name("airflow-desc"))

    # The deferred bundle stands for its 3 streams; the job's own state (sacct on perlmutter) says
    # Running once the allocation starts: Airflow alone would only say Submitted.
    def running() -> dict[str, dict[str, object]] | None:
        table = status(airflow, run_id, cli)
        return table if counts(table["calibrateVisit"]) == {"Running": 3} else None

    table = wait_for(running, timeout=90, what="calibrateVisit Running x3", interval=1)
    assert counts(table["setupVisits"]) == {"Success": 1}  # recorded by the listener
    assert counts(table["summary"]) == {"Waiting": 1}  # no task-instance state yet
    assert table["Totals"]["Total"] == 5

    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "success"
    airflow_cli = str(pathlib.Path(sys.executable).with_name("airflow"))
    table = status(airflow, run_id, airflow_cli, "desc")  # the same command, as `airflow desc`
    assert counts(table["setupVisits"]) == {"Success": 1}
    assert counts(table["calibrateVisit"]) == {"Success": 3}
    assert counts(table["summary"]) == {"Success": 1}
    assert table["Totals"]["Total"] == 5


@pytest.mark.exclusive  # a maintenance reservation of all of perlmutter: run alone
def test_a_run_waiting_for_maintenance_counts_queued_and_says_why(airflow: Deployment) -> None:
    """The bundle defers before submitting (a MAINT reservation of perlmutter): Queued, with the reason,
    as the status page shows it (the same counts and notes); it runs once the reservation is gone."""
    cli = str(pathlib.Path(sys.executable).with_name("airflow-desc"))
    name = create_maintenance("perlmutter", "desc_e2e_maint")
    try:
        run_id = trigger_until_the_bundle_waits(airflow)

        def queued() -> tuple[dict[str, dict[str, object]], str] | None:
            table, notes = status_and_notes(airflow, run_id, cli)
            return (table, notes) if counts(table["calibrateVisit"]) == {"Queued": 3} else None

        table, notes = wait_for(queued, timeout=90, what="calibrateVisit Queued x3", interval=1)
        assert (
            "task instance(s) not submitted yet, counted as Queued: waiting for maintenance to end at"
            in notes
        )
        assert f"maintenance reservation {name} on partition regular of perlmutter" in notes, notes
    finally:
        delete_maintenance("perlmutter", name)
    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "success"
    assert counts(status(airflow, run_id, cli)["calibrateVisit"]) == {"Success": 3}
