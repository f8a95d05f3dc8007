"""`airflow-desc rerun` under the real scheduler: clear what failed, record who and why, rerun only that."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

from tests.deploy import Deployment
from tests.integration.site import Site
from tests.waiting import wait_for

DAG_ID = "desc_e2e_rerun"
CLI = str(pathlib.Path(sys.executable).with_name("airflow-desc"))


def cli(airflow: Deployment, *args: str) -> str:
    proc = subprocess.run([CLI, *args], env=airflow.env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_rerun_clears_the_failed_stream_and_the_history_says_who_and_why(
    airflow: Deployment, site: Site
) -> None:
    db = airflow.history_db  # the PostgreSQL history the workers wrote (the deployment's own schema)
    marker = f"/tmp/desc-e2e-rerun.{time.time_ns()}"
    wait_for(
        lambda: airflow.sql("SELECT 1 FROM dag WHERE dag_id = %s", DAG_ID), timeout=120, what="the DAG parsed"
    )
    airflow.run("dags", "unpause", DAG_ID)
    run_id = f"e2e__rerun__{time.time_ns()}"
    airflow.run("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps({"marker": marker}))
    # The run ends (success: its leaf, summary, was skipped as DC1 counted it; the bundle task failed).
    airflow.wait_run(DAG_ID, run_id, timeout=300)
    assert airflow.task_states(DAG_ID, run_id)["processVisit.bundle"][0] == "failed"

    selection = ["--db", db, "--run", run_id, "--state", "failed"]
    plan = cli(airflow, "rerun", *selection, "--reason", "x", "--dry-run")
    assert "1 process instance(s) in 1 task instance(s)" in plan and "processVisit.bundle[0]" in plan
    assert "dry run: nothing cleared" in plan

    site.run("perlmutter", f"touch {marker}")  # the operator restores the input
    out = cli(
        airflow,
        "rerun",
        *selection,
        "--reason",
        "calibration input restored",
        "--by",
        "e2e-operator",
        "--yes",
    )
    assert "cleared" in out
    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "success"

    rows = json.loads(cli(airflow, "history", "--db", db, "--run", run_id, "--format", "json"))
    attempts = {(r["process"], r["stream"], r["try_number"]): r for r in rows}
    first, again = attempts[("calibrateVisit", "visit=2", 1)], attempts[("calibrateVisit", "visit=2", 2)]
    assert (first["state"], first["triggered_by"]) == ("failed", None)
    assert (again["state"], again["triggered_by"], again["rerun_reason"]) == (
        "success", "e2e-operator", "calibration input restored",
    )  # fmt: skip
    assert ("calibrateVisit", "visit=1", 2) not in attempts  # the bundle reran only what failed
    summary = max((r for r in rows if r["process"] == "summary"), key=lambda r: r["try_number"])
    assert summary["state"] == "success"
    assert summary["rerun_reason"] == "calibration input restored (downstream of the rerun)"
    table = json.loads(cli(airflow, "status", "--db", db, "--run", run_id, "--format", "json"))
    assert table[-1]["Success"] == table[-1]["Total"] == 4  # setupVisits, 2 x calibrateVisit, summary
