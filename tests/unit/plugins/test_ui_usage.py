"""The status page's usage view: figures by stream and the advice table, from a SQLite history.

The route functions run for real on the history; only who is logged in is given (the e2e tests
log in through a real api-server).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient

from airflow_desc.history import ProcessRecord, open_history
from airflow_desc.plugins import ui

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def client(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    store = open_history(f"sqlite:///{tmp_path / 'history.db'}")
    store.record([
        ProcessRecord(
            workflow="DC1-DM12", task="processSensor", process="processEimage", dag_id="DC1", run_id="r1",
            task_id="processSensor.bundle", map_index=0, stream=f"visit={2200 + v}/raft={raft}",
            state="success" if (v, raft) != (1, "R22") else "terminated",
            reason=None if (v, raft) != (1, "R22") else "out-of-memory",
            elapsed_s=100.0 + v, total_cpu_s=90.0,
            max_rss_bytes=2**30, req_mem_bytes=2**31, req_walltime_s=600, req_cpus=1, cluster="perlmutter",
            process_type="batch",
        )
        for v in range(3) for raft in ("R01", "R22")
    ])  # fmt: skip
    monkeypatch.setattr(ui, "_store", lambda: store)
    monkeypatch.setattr(ui, "_readable_dags", lambda user: None)
    ui.app.dependency_overrides[get_user] = lambda: object()
    try:
        yield TestClient(ui.app)
    finally:
        ui.app.dependency_overrides.clear()


def test_the_usage_view_offers_the_processes_their_variables_and_the_advice(client: TestClient) -> None:
    query = {"workflow": "DC1-DM12", "process": "processEimage", "variable": "raft"}
    page = client.get("/usage", params=query)
    assert page.status_code == 200, page.text
    html = page.text
    assert '<option value="processEimage" selected>' in html
    assert '<option value="raft" selected>' in html and '<option value="visit">' in html
    figure = "figures/usage_by_stream.png?workflow=DC1-DM12&amp;process=processEimage&amp;variable=raft"
    assert f'src="{figure}"' in html
    assert "Resource advice" in html and "ran out of memory" in html  # the advice table's line
    assert 'href="./?workflow=DC1-DM12"' in html  # back to the status table, same selection


def test_without_a_process_the_view_shows_the_overall_figures_only(client: TestClient) -> None:
    html = client.get("/usage", params={"process": "nope"}).text
    assert "usage_by_stream.png" not in html and "throughput_by_cluster.png" in html


@pytest.mark.parametrize(
    "query",
    [
        "usage_by_stream.png?process=processEimage&variable=raft",
        "failures_by_stream.png",
        "failures_by_stream.png?variable=visit",
        "throughput_by_cluster.png?workflow=DC1-DM12",
        "cpu_vs_wall.png",
        "memory_vs_requested.png",
    ],
)
def test_each_figure_is_a_png(client: TestClient, query: str) -> None:
    response = client.get(f"/figures/{query}")
    assert response.status_code == 200, response.text
    assert response.content[:8] == PNG_MAGIC and response.headers["content-type"] == "image/png"


def test_unknown_figures_and_selections_are_refused_with_the_reason(client: TestClient) -> None:
    assert "the figures: usage_by_stream" in client.get("/figures/pie.png").json()["detail"]
    assert client.get("/figures/usage_by_stream.png").status_code == 400
    response = client.get("/figures/cpu_vs_wall.png", params={"workflow": "nope"})
    assert response.status_code == 404 and "nope" in response.json()["detail"]


def test_the_new_routes_need_a_logged_in_user() -> None:
    for path in ("/usage", "/figures/cpu_vs_wall.png"):
        assert TestClient(ui.app).get(path).status_code == 401
