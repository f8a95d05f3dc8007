"""The status page's app without a logged-in user, and its HTML (pure)."""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from airflow_desc.plugins import DescPlugin
from airflow_desc.plugins.ui import EXTERNAL_VIEW, URL_PREFIX, app
from airflow_desc.reports.html import render_rerun_page, render_status_page
from airflow_desc.reports.status import attempts_table, status_table


def test_every_route_needs_a_logged_in_user() -> None:
    client = TestClient(app)
    for path in ("/", "/status.json", "/status.csv", "/plots/processEimage.png"):
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
