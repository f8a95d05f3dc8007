"""The status page's app without a logged-in user, and its HTML (pure)."""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from airflow_desc.history import HistoryFilter, ProcessRecord
from airflow_desc.plugins import DescPlugin
from airflow_desc.plugins.ui import EXTERNAL_VIEW, URL_PREFIX, app
from airflow_desc.reports.html import render_rerun_page, render_status_page
from airflow_desc.reports.status import attempts_table, status_table


def test_every_route_needs_a_logged_in_user() -> None:
    client = TestClient(app)
    for path in ("/", "/status.json", "/status.csv", "/plots/processEimage.png", "/instances", "/log/1"):
        response = client.get(path)
        assert response.status_code == 401, (path, response.text)
    assert client.post("/rerun", data={"process": "processEimage", "reason": "x"}).status_code == 401


def test_the_plugin_mounts_the_app_and_adds_the_navigation_entry() -> None:
    plugin = DescPlugin()
    [mounted] = plugin.fastapi_apps
    assert mounted["app"] is app and mounted["url_prefix"] == URL_PREFIX == "/desc"
    assert plugin.external_views == [EXTERNAL_VIEW]
    assert not str(EXTERNAL_VIEW["href"]).startswith("/")  # relative: the UI may sit under a prefix


def counts() -> pd.DataFrame:
    return pd.DataFrame(
        [("processSensor", "1.0", "process<Eimage>", "batch", "success", 4, 5),
         ("processSensor", "1.0", "process<Eimage>", "batch", "failed", 1, 1)],
        columns=["task", "version", "process", "process_type", "state", "count", "attempts"],
    )  # fmt: skip


def test_the_page_escapes_names_and_carries_the_selection_in_every_link() -> None:
    table = status_table(counts())
    html = render_status_page(
        table, attempts_table(counts()), workflows=["DC1-DM12", "<b>x</b>"], variants=["imsim-dithered"],
        selected={"workflow": "DC1-DM12", "run": "run a&b", "variant": None}, notes=["2 in <progress>"],
    )  # fmt: skip
    assert "process<Eimage>" not in html and "process&lt;Eimage&gt;" in html
    assert "<b>x</b>" not in html and "2 in &lt;progress&gt;" in html
    assert 'href="plots/process_Eimage_' in html  # plot_path's safe file name
    assert "?workflow=DC1-DM12&amp;run=run+a%26b" in html  # the selection, URL-encoded, HTML-escaped
    assert 'href="status.json?workflow=DC1-DM12&amp;run=run+a%26b"' in html
    assert '<option value="DC1-DM12" selected>' in html
    assert 'value="run a&amp;b"' in html
    assert "<tfoot>" in html  # the Totals row


def test_the_page_offers_a_rerun_of_its_rows_and_the_rerun_page_asks_before_clearing() -> None:
    html = render_status_page(
        status_table(counts()), attempts_table(counts()), workflows=[], variants=[],
        selected={"workflow": "DC1-DM12", "run": None, "variant": None}, rerun_states=["success", "failed"],
    )  # fmt: skip
    assert '<form method="post" action="rerun">' in html
    assert '<input type="checkbox" name="process" value="process&lt;Eimage&gt;">' in html
    assert '<input type="hidden" name="workflow" value="DC1-DM12">' in html
    rows = [{"dag_id": "dc1", "run_id": "r1", "task_id": "processVisit.bundle", "map_index": 0,
             "state": "success", "try_number": 1, "selected": 2}]  # fmt: skip
    page = render_rerun_page(
        message="2 selected", rows=rows, fields={"process": ["a", "b"], "reason": ["bad <PSF>"]}, user="ops",
        confirm=True, back="?workflow=DC1-DM12",
    )  # fmt: skip
    assert (
        '<input type="hidden" name="process" value="a"><input type="hidden" name="process" value="b">' in page
    )
    assert 'value="bad &lt;PSF&gt;"' in page and '<input type="hidden" name="confirm" value="1">' in page
    assert "Clear these 1 task instances as ops" in page
    assert "confirm" not in render_rerun_page(message="done", rows=rows, fields={}, user="ops", confirm=False)


def test_the_rerun_reaches_this_api_server_as_configured_never_at_the_request_s_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_desc.plugins.ui import _api_base

    monkeypatch.setenv("AIRFLOW__API__PORT", "18123")
    assert _api_base() == "http://127.0.0.1:18123"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.org/campaigns/")
    assert _api_base() == "https://airflow.example.org/campaigns"
    monkeypatch.setenv("AIRFLOW__DESC__API_URL", "http://api.internal:8080")
    assert _api_base() == "http://api.internal:8080"


# --- drill-down and logs, on a real SQLite history (the auth manager's answer given) ---


@pytest.fixture
def drill(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app on a SQLite history of two DAGs; the user may read only ``dc1``."""
    from airflow_desc.history import open_history
    from airflow_desc.plugins import ui

    url = f"sqlite:///{tmp_path / 'history.db'}"
    monkeypatch.setenv("DESC_HISTORY_CONN_ID", url)
    monkeypatch.setattr(ui, "_STORES", {})
    monkeypatch.setattr(ui, "_readable_dags", lambda user: {"dc1"})
    common = {"workflow": "DC1", "process": "processEimage", "task_id": "b", "cluster": "perlmutter"}
    open_history(url).record([
        ProcessRecord(**common, state="failed", dag_id="dc1", run_id="r1", stream="visit=1", reason="oops",
                      message="<script>x</script>", node="pm-n1", total_cpu_s=3.5, elapsed_s=4.0,
                      max_rss_bytes=3 * 2**20, log_path="/w/logs/v1.log", log_tail="Trace <b>x</b>\n"),
        ProcessRecord(**common, state="failed", dag_id="secret", run_id="r9", stream="visit=9",
                      log_tail="not yours\n"),
        ProcessRecord(**{**common, "workflow": "Secret", "process": "hidden"}, state="failed",
                      dag_id="secret", run_id="r8", stream="visit=8", elapsed_s=2.0, total_cpu_s=1.0),
    ])  # fmt: skip
    app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="astro", role="viewer")
    yield TestClient(app)
    app.dependency_overrides.clear()


def test_a_count_lists_its_instances_and_each_links_to_its_log_tail(drill: TestClient) -> None:
    page = drill.get("/instances", params={"process": "processEimage", "state": "failed"})
    assert page.status_code == 200, page.text
    html = page.text
    assert "visit=1" in html and "visit=9" not in html  # only the DAGs this user may read
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert ">3.50<" in html and ">4<" in html and ">3<" in html and "pm-n1" in html  # CPU, wall, MaxRSS MB
    [link] = re.findall(r'href="(log/\d+)"', html)
    log = drill.get(f"/{link}")
    assert log.status_code == 200 and "Trace &lt;b&gt;x&lt;/b&gt;" in log.text
    assert "perlmutter:/w/logs/v1.log" in log.text


def test_a_drill_down_or_a_log_of_a_dag_the_user_may_not_read_is_forbidden(drill: TestClient) -> None:
    from airflow_desc.history.queries import attempt_logs
    from airflow_desc.plugins.ui import _store

    theirs = attempt_logs(_store().engine, HistoryFilter(run_id="r9"))
    assert drill.get(f"/log/{int(theirs['attempt_id'][0])}").status_code == 403
    query = {"process": "processEimage", "state": "failed", "run": "r9"}
    assert drill.get("/instances", params=query).status_code == 403
    assert drill.get("/log/999999").status_code == 404
    assert drill.get("/instances", params={"process": "processEimage", "state": "bogus"}).status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/status.json?workflow=Secret", "/status.csv?run=r9", "/?run=r8", "/plots/hidden.png",
        "/plots/processEimage.png?run=r9", "/usage?workflow=Secret", "/figures/cpu_vs_wall.png?run=r8",
        "/figures/usage_by_stream.png?process=hidden", "/instances?process=hidden&state=failed",
        "/instances?process=hidden&state=success",
    ],
)  # fmt: skip
def test_a_selection_only_dags_the_user_may_not_read_hold_is_forbidden(drill: TestClient, path: str) -> None:
    response = drill.get(path)
    assert response.status_code == 403, response.text
    assert "may not read" in response.text


def test_what_the_user_may_read_leaves_the_other_dags_out(drill: TestClient) -> None:
    table = drill.get("/status.json")
    assert table.status_code == 200, table.text
    rows = {row["Process"]: row for row in table.json() if row["Type"] != "Totals"}
    assert list(rows) == ["processEimage"] and rows["processEimage"]["Failed"] == 1  # dc1's only
    for path in ("/plots/processEimage.png", "/figures/cpu_vs_wall.png?workflow=DC1"):
        figure = drill.get(path)
        assert (figure.status_code, figure.content[:4]) == (200, b"\x89PNG"), path
    # A readable process with nothing in this state lists nothing: not forbidden.
    empty = drill.get("/instances", params={"process": "processEimage", "state": "success"})
    assert empty.status_code == 200 and "visit=" not in empty.text
    assert drill.get("/status.json", params={"workflow": "NoSuch"}).status_code == 404


def test_a_rerun_of_a_dag_the_user_may_not_read_is_refused_before_airflow_is_asked(drill: TestClient) -> None:
    page = drill.post("/rerun", data={"process": "hidden", "reason": "mine now"})
    assert page.status_code == 403 and "may not read" in page.text


def test_the_status_page_links_each_recorded_count_to_its_instances() -> None:
    table = status_table(counts())
    html = render_status_page(
        table, attempts_table(counts()), workflows=[], variants=[], selected={"workflow": None, "run": "r 1"}
    )
    assert 'href="instances?run=r+1&amp;process=process%3CEimage%3E&amp;state=success">4</a>' in html
    assert 'state=failed">1</a>' in html
    assert "state=terminated" not in html  # a zero count links nowhere


# --- who may read every DAG, under the real auth managers ---


def fab_user(*resources: str) -> Any:
    """A FAB user whose one role may ``can_read`` these resources (``DAGs``: every DAG; ``DAG:<id>``: one)."""
    from airflow.providers.fab.auth_manager.models import Action, Permission, Resource, Role, User

    read = Action(name="can_read")
    role = Role(name="r", permissions=[Permission(action=read, resource=Resource(name=r)) for r in resources])
    return User(id=1, username="astro", roles=[role])


def test_under_fab_a_user_who_may_read_one_dag_is_not_taken_for_one_who_may_read_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.api_fastapi import app as api_app
    from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager

    from airflow_desc.plugins import ui

    manager = FabAuthManager()
    monkeypatch.setattr(api_app, "get_auth_manager", lambda: manager)
    assert ui._readable_dags(fab_user("DAGs")) is None
    reader = fab_user("DAG:dc1")
    # Asked without a DAG, FAB answers whether the user may list DAGs: yes, for a reader of one.
    assert manager.is_authorized_dag(method="GET", user=reader)
    # Which DAGs FAB reads from the metadata DB's DAG table (tests/e2e/test_user_views.py runs it for real).
    monkeypatch.setattr(manager, "get_authorized_dag_ids", lambda *, user, method: {"dc1"})
    assert ui._readable_dags(reader) == {"dc1"}


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_under_the_simple_auth_manager_every_role_reads_every_dag(
    monkeypatch: pytest.MonkeyPatch, role: str
) -> None:
    from airflow.api_fastapi import app as api_app
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    from airflow_desc.plugins import ui

    monkeypatch.setattr(api_app, "get_auth_manager", SimpleAuthManager)
    assert ui._readable_dags(SimpleAuthManagerUser(username="astro", role=role)) is None


def test_the_status_page_warns_of_a_cluster_whose_key_expired(drill: TestClient) -> None:
    from datetime import datetime, timedelta, timezone

    from airflow_desc.history.key_checks import KeyCheck, write_key_check
    from airflow_desc.plugins.ui import _store

    now = datetime.now(timezone.utc)
    for conn, cluster, expires in (("pm_ssh", "perlmutter", -timedelta(minutes=3)),
                                   ("s3_ssh", "s3df", timedelta(days=1))):  # fmt: skip
        cert = f"/k/{conn}-cert.pub"
        write_key_check(_store(), KeyCheck(conn, "", cluster, f"the certificate {cert}", cert, now + expires,
                                           now, "poll"))  # fmt: skip
    page = drill.get("/")
    assert page.status_code == 200, page.text
    assert "cluster perlmutter: the SSH certificate for pm_ssh expired at " in page.text
    assert "renew the key with sshproxy; its tasks wait deferred until it is renewed" in page.text
    assert "s3_ssh" not in page.text  # a day left: nothing to say


def test_status_json_is_the_table_of_airflow_desc_status_whichever_path_reads_it(
    drill: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    import sqlalchemy as sa

    from airflow_desc.plugins import ui
    from tests.unit.status.test_metadata_db import airflow_tables

    metadata = tmp_path / "airflow.db"  # Airflow's tables, nothing running: the history's counts only
    engine = sa.create_engine(f"sqlite:///{metadata}")
    airflow_tables().create_all(engine)
    engine.dispose()
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{metadata}")
    selected = {"workflow": None, "run": None, "variant": None}
    plain = ui._plain_json(selected, {"dc1"})
    assert plain is not None  # the DBAPI path (issue #13 item 3), as `airflow-desc status` reads it
    assert drill.get("/status.json").json() == json.loads(plain)
    monkeypatch.setattr(ui, "_plain_json", lambda selected, dag_ids: None)  # pandas' path
    assert drill.get("/status.json").json() == json.loads(plain)
    assert ui._plain_json({**selected, "workflow": "NoSuch"}, {"dc1"}) is None  # then a 404 names it
