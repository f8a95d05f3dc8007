"""Per-user views under the FAB auth manager, over HTTP against the real api-server.

A deployment whose auth manager is FAB's (tests/e2e/conftest.py ``FAB_USERS``): ``ops`` is an Admin;
``astro``'s role may read one DAG, desc_e2e_live, and edit task instances and DAG runs in general but
edit no DAG. One run of desc_e2e_live (succeeds) and one of desc_e2e_rerun (visit 2 fails its output
check), both from tests/e2e/dags/desc_e2e_workflows.py; both have the processes setupVisits,
calibrateVisit and summary.

1. astro's page, status.json and usage view show desc_e2e_live's instances only; ops's both;
2. astro gets 403 on desc_e2e_rerun's table, plots, figures, drill-down and log tails, and 200 on
   desc_e2e_live's;
3. astro cannot rerun desc_e2e_rerun: the page refuses the selection, Airflow's REST clear refuses
   it too; a rerun of desc_e2e_live, which astro may read but not edit, is refused by Airflow (403
   passed on); ops's dry run of desc_e2e_rerun lists its task instances;
4. without a login, 401.
"""

from __future__ import annotations

import html
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from tests.deploy import PORT, Deployment

LIVE, OTHER = "desc_e2e_live", "desc_e2e_rerun"
BASE = f"http://127.0.0.1:{PORT}"


def call(path: str, token: str | None, form: dict[str, str] | None = None) -> tuple[int, str]:
    """GET ``path`` (POST ``form``, urlencoded) as the user of ``token``; return the status and body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(BASE + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def totals(token: str, query: str = "") -> dict[str, int]:
    """status.json as the user: each process's total instances."""
    status, body = call(f"/desc/status.json{query}", token)
    assert status == 200, body
    return {row["Process"]: row["Total"] for row in json.loads(body) if row["Type"] != "Totals"}


def clear_dry_run(dag_id: str, run_id: str, token: str) -> int:
    """Airflow's own REST clear of a run's task instances (a dry run), as the user: the HTTP status."""
    body = json.dumps({"dry_run": True, "dag_run_id": run_id, "only_failed": False}).encode()
    req = urllib.request.Request(
        f"{BASE}/api/v2/dags/{dag_id}/clearTaskInstances", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_user_sees_plots_drills_down_and_reruns_only_the_dags_their_role_allows(
    airflow_with_fab: Deployment,
) -> None:
    airflow = airflow_with_fab
    live_run = airflow.trigger(LIVE)
    other_run = airflow.trigger(OTHER, {"marker": f"/tmp/desc-e2e-views.{time.time_ns()}"})
    # What an operator does (README "Who sees what"): astro's role may read desc_e2e_live only.
    airflow.grant("desc-live-readers", [f"DAG:{LIVE}"], ["can_read"])
    airflow.grant("desc-live-readers", ["Task Instances", "DAG Runs"], ["can_read", "can_edit"])
    assert airflow.wait_run(LIVE, live_run, timeout=300) == "success"
    assert airflow.wait_run(OTHER, other_run, timeout=300) == "failed"  # visit 2's empty output
    ops, astro = airflow.token("ops"), airflow.token("astro")

    # 1. Only what the role may read: 3 calibrations of desc_e2e_live, not the 2 of desc_e2e_rerun.
    assert totals(ops)["calibrateVisit"] == 5
    assert totals(astro) == {"setupVisits": 1, "calibrateVisit": 3, "summary": 1}
    assert totals(astro, f"?run={live_run}")["calibrateVisit"] == 3
    status, page = call("/desc/", astro)
    assert status == 200 and OTHER not in page and other_run not in page and LIVE in page
    assert OTHER in call("/desc/", ops)[1]
    status, usage = call("/desc/usage?process=calibrateVisit", astro)
    assert status == 200 and OTHER not in usage

    # 2. The other DAG's table, plots, figures, drill-down and log tails: 403; the readable one's: 200.
    ops_listing = call(f"/desc/instances?run={other_run}&process=calibrateVisit&state=failed", ops)[1]
    [other_log] = re.findall(r'href="(log/\d+)"', ops_listing)  # visit 2's failure
    forbidden = [
        f"/desc/?workflow={OTHER}", f"/desc/status.json?run={other_run}",
        f"/desc/status.csv?workflow={OTHER}", f"/desc/plots/calibrateVisit.png?run={other_run}",
        f"/desc/usage?workflow={OTHER}",
        f"/desc/figures/usage_by_stream.png?workflow={OTHER}&process=calibrateVisit",
        f"/desc/figures/failures_by_stream.png?run={other_run}",
        f"/desc/instances?run={other_run}&process=calibrateVisit&state=failed", f"/desc/{other_log}",
    ]  # fmt: skip
    for path in forbidden:
        assert call(path, astro)[0] == 403, path
        assert call(path, ops)[0] == 200, path
    for path in (f"/desc/plots/calibrateVisit.png?run={live_run}", "/desc/figures/cpu_vs_wall.png"):
        assert call(path, astro)[0] == 200, path
    status, listing = call(f"/desc/instances?run={live_run}&process=calibrateVisit&state=success", astro)
    live_logs = re.findall(r'href="(log/\d+)"', listing)
    assert status == 200 and len(live_logs) == 3, listing
    status, tail = call(f"/desc/{live_logs[0]}", astro)
    assert status == 200 and "calibrateVisit" in html.unescape(tail)
    # astro's calibrateVisit failures: desc_e2e_live has none, so none listed (not forbidden).
    status, listing = call("/desc/instances?process=calibrateVisit&state=failed", astro)
    assert status == 200 and not re.findall(r'href="(log/\d+)"', listing)

    # 3. Reruns. Of desc_e2e_rerun: the page refuses the selection, and Airflow refuses the clear.
    form = {"workflow": OTHER, "process": "calibrateVisit", "state": "failed", "reason": "not mine"}
    status, page = call("/desc/rerun", astro, form)
    assert status == 403 and "may not read" in page, page
    assert clear_dry_run(OTHER, other_run, astro) == 403
    # Of desc_e2e_live, readable but not editable: Airflow's clear as astro answers 403, passed on.
    form = {"run": live_run, "process": "calibrateVisit", "reason": "mine to read, not to clear"}
    status, page = call("/desc/rerun", astro, form)
    assert status == 403 and "may not" in html.unescape(page), page
    assert clear_dry_run(LIVE, live_run, astro) == 403
    # ops (Admin) may: the page's dry run lists the task instances a clear would clear.
    form = {"run": other_run, "process": "calibrateVisit", "state": "failed", "reason": "input restored"}
    status, page = call("/desc/rerun", ops, form)
    assert status == 200 and "Nothing is cleared yet" in page and "processVisit.bundle" in page, page
    assert airflow.task_states(OTHER, other_run)["processVisit.bundle"][1] == 1  # nothing was cleared

    # 4. No login, no page.
    assert call("/desc/status.json", None)[0] == 401
