"""Reruns under the real scheduler and api-server, through Airflow's permissions.

One run of desc_e2e_rerun (tests/e2e/dags/desc_e2e_workflows.py) on a deployment whose simple auth
manager has users (tests/e2e/conftest.py ``USERS``: ops an admin, lead a user, viewer a viewer):

1. visit 2's calibration exits 0 with an empty output: Failed, reason output-check;
2. the viewer's ``airflow-desc rerun`` is refused by Airflow (403), nothing cleared or selected;
3. ops fixes the input and reruns what failed: the bundle reruns visit 2 only, Success;
4. ops reruns what "appeared to succeed" (visit 1, success, "bad PSF model"): the bundle reruns it
   and not visit 2;
5. lead clears ``summary`` with Airflow's own REST API and a note: recorded as lead's, with the note;
6. lead uses the status page's Rerun (dry run first, then the clear, with the UI's cookie); the
   viewer's is refused;
7. lead clears the whole DAG run with the UI's endpoint and a note: recorded as lead's too.

Every rerun's attempts carry the authenticated user and the reason in the history.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tests.deploy import PORT, Deployment, api
from tests.integration.site import Site
from tests.waiting import wait_for

DAG_ID = "desc_e2e_rerun"
CLI = str(pathlib.Path(sys.executable).with_name("airflow-desc"))
BUNDLE = "processVisit.bundle"


def cli(airflow: Deployment, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CLI, *args], env=airflow.env, capture_output=True, text=True, timeout=180)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


def attempts(airflow: Deployment, run_id: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    rows = json.loads(
        cli(airflow, "history", "--db", airflow.history_db, "--run", run_id, "--format", "json").stdout
    )
    return {(r["process"], r["stream"], r["try_number"]): r for r in rows}


def latest(
    rows: dict[tuple[str, str, int], dict[str, Any]], process: str, stream: str = ""
) -> dict[str, Any]:
    return max(
        (r for (p, s, _), r in rows.items() if (p, s) == (process, stream)), key=lambda r: r["try_number"]
    )


def page_rerun(form: dict[str, Any], *, token: str, cookie: bool = False) -> tuple[int, str]:
    """POST the status page's Rerun form as a user (a bearer token, or the UI's session cookie)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    headers.update({"Cookie": f"_token={token}"} if cookie else {"Authorization": f"Bearer {token}"})
    req = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/desc/rerun", data=urllib.parse.urlencode(form, doseq=True).encode(),
        method="POST", headers=headers,
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_reruns_clear_through_airflow_as_the_authenticated_user_and_rerun_exactly_the_selection(
    airflow_with_users: Deployment, site: Site
) -> None:
    airflow = airflow_with_users
    db = airflow.history_db
    marker = f"/tmp/desc-e2e-rerun.{time.time_ns()}"
    wait_for(
        lambda: airflow.sql("SELECT 1 FROM dag WHERE dag_id = %s", DAG_ID), timeout=120, what="the DAG parsed"
    )
    airflow.run("dags", "unpause", DAG_ID)
    run_id = f"e2e__rerun__{time.time_ns()}"
    airflow.run("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps({"marker": marker}))
    # 1. The run ends failed: its verdict read visit 2's calibration, Failed by its output check.
    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "failed"
    states = airflow.task_states(DAG_ID, run_id)
    assert (states[BUNDLE][0], states["verdict"][0]) == ("failed", "failed")
    first = attempts(airflow, run_id)[("calibrateVisit", "visit=2", 1)]
    assert (first["state"], first["reason"], first["exit_code"]) == ("failed", "output-check", 0)
    assert "the calibration wrote no output" in first["message"]

    # 2. A viewer may read but not clear: Airflow refuses the dry run, nothing is cleared or selected.
    selection = ["--db", db, "--run", run_id, "--state", "failed"]
    refused = cli(
        airflow, "rerun", *selection, "--reason", "x", "--api-conn", "desc_api_viewer", "--yes", ok=False
    )
    assert "403" in refused.stderr and "may not" in refused.stderr
    assert airflow.task_states(DAG_ID, run_id)[BUNDLE] == states[BUNDLE]
    assert airflow.history.sql("SELECT count(*) FROM rerun_selections") == [(0,)]

    plan = cli(airflow, "rerun", *selection, "--reason", "x", "--dry-run").stdout
    assert "1 process instance(s) in 1 task instance(s)" in plan and f"{BUNDLE}[0]" in plan
    assert "dry run: nothing cleared" in plan

    # 3. The operator restores the input and reruns what failed, as ops (the API connection's user).
    site.run("perlmutter", f"touch {marker}")
    assert (
        "cleared"
        in cli(airflow, "rerun", *selection, "--reason", "calibration input restored", "--yes").stdout
    )
    # The verdict is downstream of the bundle: cleared with it, it reruns and the run turns green.
    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "success"
    assert airflow.task_states(DAG_ID, run_id)["verdict"] == ("success", 2)
    rows = attempts(airflow, run_id)
    again = rows[("calibrateVisit", "visit=2", 2)]
    assert (again["state"], again["triggered_by"], again["rerun_reason"]) == (
        "success", "ops", "calibration input restored",
    )  # fmt: skip
    assert rows[("calibrateVisit", "visit=2", 1)]["state"] == "failed"  # both tries in the history
    assert ("calibrateVisit", "visit=1", 2) not in rows  # the bundle reran only what failed
    summary = latest(rows, "summary")
    assert summary["state"] == "success" and summary["triggered_by"] == "ops"
    assert summary["rerun_reason"] == "calibration input restored (downstream of the rerun)"

    # 4. "Appeared to succeed": visit 1's success is selected; the bundle reruns it, not visit 2.
    chosen = [
        "--db",
        db,
        "--run",
        run_id,
        "--state",
        "success",
        "--process",
        "calibrateVisit",
        "--stream",
        "visit=1",
    ]
    out = cli(airflow, "rerun", *chosen, "--reason", "bad PSF model", "--yes").stdout
    assert "1 process instance(s) in 1 task instance(s)" in out
    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "success"
    rows = attempts(airflow, run_id)
    redone = rows[("calibrateVisit", "visit=1", 3)]
    assert (redone["state"], redone["triggered_by"], redone["rerun_reason"]) == (
        "success",
        "ops",
        "bad PSF model",
    )
    assert ("calibrateVisit", "visit=2", 3) not in rows
    assert latest(rows, "summary")["rerun_reason"] == "bad PSF model (downstream of the rerun)"

    # 5. A clear in Airflow's own REST API, by lead, with a note: who from the audit log, why from the note.
    lead = airflow.token("lead")
    before = airflow.task_states(DAG_ID, run_id)["summary"][1]
    api("POST", f"/dags/{DAG_ID}/clearTaskInstances", {
        "dag_run_id": run_id, "task_ids": ["summary"], "dry_run": False, "only_failed": False,
        "note": "summary template fixed",
    }, token=lead)  # fmt: skip
    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "success"
    assert airflow.task_states(DAG_ID, run_id)["summary"][1] == before + 1
    summary = latest(attempts(airflow, run_id), "summary")
    assert (summary["triggered_by"], summary["rerun_reason"]) == ("lead", "summary template fixed")

    # 6. The status page's Rerun: the dry run first (nothing cleared), then the clear, as lead.
    form = {"run": run_id, "process": ["calibrateVisit"], "state": "success", "stream": "visit=2",
            "reason": "flat field replaced"}  # fmt: skip
    tries = airflow.task_states(DAG_ID, run_id)[BUNDLE][1]
    status, page = page_rerun(form, token=lead)
    assert status == 200 and "Nothing is cleared yet" in page and "Clear these" in page and BUNDLE in page
    assert airflow.task_states(DAG_ID, run_id)[BUNDLE][1] == tries
    status, page = page_rerun({**form, "confirm": "1"}, token=airflow.token("viewer"))
    assert status == 403 and "403" in page  # the viewer reads the page, Airflow refuses the clear
    status, page = page_rerun({**form, "confirm": "1"}, token=lead, cookie=True)
    assert status == 200 and "Cleared" in page and "as lead" in page, page
    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "success"
    rows = attempts(airflow, run_id)
    redone = rows[("calibrateVisit", "visit=2", tries + 1)]
    assert (redone["state"], redone["triggered_by"], redone["rerun_reason"]) == (
        "success", "lead", "flat field replaced",
    )  # fmt: skip
    assert ("calibrateVisit", "visit=1", tries + 1) not in rows
    # 7. The UI's Clear of the whole DAG run (its own endpoint), by lead, with the run's note.
    before = airflow.task_states(DAG_ID, run_id)["summary"][1]
    api("POST", f"/dags/{DAG_ID}/dagRuns/{run_id}/clear", {"dry_run": False, "note": "whole run again"},
        token=lead)  # fmt: skip
    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "success"
    rows = attempts(airflow, run_id)
    summary = rows[("summary", "", before + 1)]
    assert (summary["triggered_by"], summary["rerun_reason"]) == ("lead", "whole run again")
    table = json.loads(cli(airflow, "status", "--db", db, "--run", run_id, "--format", "json").stdout)
    assert table[-1]["Success"] == table[-1]["Total"] == 4  # setupVisits, 2 x calibrateVisit, summary
