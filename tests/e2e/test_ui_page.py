"""The status page on the real api-server, read over HTTP and in headless Chromium."""

from __future__ import annotations

import html
import json
import pathlib
import re
import shutil
import subprocess
import urllib.request

import pytest

from tests.deploy import PORT, Deployment, api
from tests.e2e.test_live_status import DAG_ID, trigger_until_the_bundle_waits
from tests.waiting import wait_for

BASE = f"http://127.0.0.1:{PORT}"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def get(path: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(BASE + path, timeout=60) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "chromium is not installed: docker/site/up installs it (apt package chromium)"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_page_is_in_the_plugins_and_the_navigation(airflow: Deployment) -> None:
    plugins = api("GET", "/plugins")["plugins"]
    [ours] = [p for p in plugins if p["name"] == "airflow_desc"]  # type: ignore[index]
    assert ours["fastapi_apps"][0]["url_prefix"] == "/desc"  # type: ignore[index]
    [view] = ours["external_views"]  # type: ignore[index]
    assert (view["name"], view["href"], view["url_route"]) == ("DESC status", "desc/", "desc-status")


def test_the_api_server_has_no_dag_files_and_no_cluster_connections(airflow: Deployment) -> None:
    """What the page below shows, it reads from databases: it could not parse a DAG or open SSH.

    The environment it was started with (its /proc/PID/environ is overwritten by setproctitle).
    """
    env = airflow.components["api-server"].env
    assert not any(
        path.suffix == ".py" for path in pathlib.Path(env["AIRFLOW__CORE__DAGS_FOLDER"]).rglob("*")
    )
    assert sorted(n for n in env if n.startswith("AIRFLOW_CONN_")) == ["AIRFLOW_CONN_DESC_HISTORY"]
    assert "DESC_CLUSTERS_FILE" not in env
    assert "AIRFLOW_CONN_PERLMUTTER_SSH" in airflow.components["triggerer"].env  # the others have them
    assert (proc := airflow.components["api-server"].proc) is not None and proc.poll() is None


def test_the_status_page_shows_a_run_in_progress_then_its_plots(
    airflow: Deployment, tmp_path: pathlib.Path
) -> None:
    # The page reads the PostgreSQL history the workers write (the api-server's [desc] history_conn_id).
    run_id = trigger_until_the_bundle_waits(airflow)

    def rows() -> dict[str, dict[str, int]]:
        status, kind, body = get(f"/desc/status.json?run={run_id}")
        assert (status, kind) == (200, "application/json")
        return {r["Process"] or r["Type"]: r for r in json.loads(body)}

    # Live: the deferred bundle, one per stream, Running once SLURM runs its job: the api-server
    # reads the DAG's plan and the job's polled state from the history (no DAG file, no SSH here).
    table = wait_for(
        lambda: (t := rows()) and t["calibrateVisit"]["Running"] == 3 and t, timeout=90, what="Running x3"
    )
    assert table["setupVisits"]["Success"] == 1  # recorded
    assert table["summary"]["Waiting"] == 1

    # What a person sees: the page rendered by a real browser, and its screenshot.
    page = chromium("--dump-dom", f"{BASE}/desc/?run={run_id}")
    assert page.returncode == 0, page.stderr[-2000:]
    dom = page.stdout
    assert "<h1>DESC status</h1>" in dom
    assert "calibrateVisit" in dom and "setupVisits" in dom
    assert f'href="plots/calibrateVisit.png?run={run_id}"' in dom
    assert "process instances of DAG runs in progress" in dom
    shot = tmp_path / "status.png"
    chromium("--window-size=1400,900", f"--screenshot={shot}", f"{BASE}/desc/?run={run_id}")
    assert shot.stat().st_size > 10_000

    assert airflow.wait_run(DAG_ID, run_id, timeout=300) == "success"
    status, kind, body = get(f"/desc/plots/calibrateVisit.png?run={run_id}")
    assert (status, kind) == (200, "image/png") and body[:8] == b"\x89PNG\r\n\x1a\n" and len(body) > 10_000
    status, kind, body = get(f"/desc/status.csv?run={run_id}")
    assert status == 200 and "calibrateVisit" in body.decode()
    # The usage view: the process by its stream variable, the figures, the advice table.
    status, kind, body = get(f"/desc/usage?run={run_id}&process=calibrateVisit")
    usage = body.decode()
    assert status == 200 and '<option value="visit">' in usage and "Resource advice" in usage
    assert f'src="figures/usage_by_stream.png?run={run_id}&amp;process=calibrateVisit"' in usage
    for figure in ("usage_by_stream", "throughput_by_cluster", "failures_by_stream"):
        status, kind, body = get(f"/desc/figures/{figure}.png?run={run_id}&process=calibrateVisit")
        assert (status, kind) == (200, "image/png") and body[:8] == b"\x89PNG\r\n\x1a\n", figure

    # Drill down: the Success count of calibrateVisit lists its 3 instances, each linked to the tail of
    # its log the worker kept in the history (the api-server reads no cluster).
    _, _, body = get(f"/desc/?run={run_id}")
    success = r'href="(instances\?[^"]*process=calibrateVisit&amp;state=success)">3</a>'
    [drill] = re.findall(success, body.decode())
    status, kind, body = get("/desc/" + html.unescape(drill))
    listing = body.decode()
    assert (status, kind) == (200, "text/html; charset=utf-8") and listing.count("visit=") >= 3, listing
    logs = re.findall(r'href="(log/\d+)"', listing)
    assert len(logs) == 3, listing
    status, _, body = get(f"/desc/{logs[0]}")
    page = body.decode()
    assert status == 200 and "== calibrateVisit visit=" in html.unescape(page), page
    pilot = r"airflow-desc-pilot: visit=\d+:calibrateVisit starting at .*\n.*calibrateVisit success"
    assert re.search(pilot, page), page
    # The bundle task's log in the UI's log view: a line per instance, with where its whole log is.
    bundle_log = airflow.task_log(DAG_ID, run_id, "processVisit.bundle", 1, map_index=0)
    assert bundle_log.count("calibrateVisit: success (-); log perlmutter:") == 3, bundle_log[-3000:]
    with pytest.raises(urllib.error.HTTPError) as missing:
        get("/desc/plots/noSuchProcess.png")
    assert missing.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as unknown:
        get("/desc/status.json?workflow=noSuchWorkflow")
    assert unknown.value.code == 404 and "desc_e2e_live" in unknown.value.read().decode()
