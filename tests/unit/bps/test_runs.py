"""What `bps submit` / `report` / `restart` decide, without Airflow running: ids, conf, files, what to clear.

The REST calls themselves are exercised against a real api-server by tests/e2e/test_bps_submit.py. Here
the task structure is that of the DAG a real GenericWorkflow renders (tests/data/bps/addtask-3x4.json);
only the task-instance states are made up.
"""

from __future__ import annotations

import http.server
import json
import pathlib
import socket
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from airflow_desc.bps.api import AirflowRestApi, ApiSettings
from airflow_desc.bps.runs import (
    BUNDLE_SUFFIX,
    AirflowRuns,
    Submission,
    dag_id_of,
    install_dag_files,
    restart_targets,
    run_id_for,
    summarize,
)
from airflow_desc.bps.translate import dag_file_text, job_counts
from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.exceptions import BpsApiError
from airflow_desc.reports.status import STATE_COLUMNS
from airflow_desc.workflow.naming import BUNDLE_TASK
from airflow_desc.workflow.render import render_dags
from tests.unit.bps.test_translate import JOBS, RUN, SITE, write_spec


def test_the_wms_id_is_the_run_id_and_names_its_dag() -> None:
    assert run_id_for("u_tester_simple_run1_20261206T1") == "bps__u_tester_simple_run1_20261206T1"
    assert dag_id_of("bps__u_tester_simple_run1_20261206T1") == "u_tester_simple_run1_20261206T1"
    assert dag_id_of("bps__bps_odd_name") == "bps_odd_name"  # a DAG id translate.py made from a run name
    assert dag_id_of("plain_dag") == "plain_dag"
    with pytest.raises(BpsApiError, match="pass the id `bps submit` printed"):
        dag_id_of(" ")


def test_the_bundle_suffix_is_that_of_the_rendered_tasks() -> None:
    assert BUNDLE_SUFFIX == f".{BUNDLE_TASK}"


def test_a_submissions_jobs_per_label_are_in_the_workflows_order() -> None:
    assert list(job_counts(JOBS).items()) == [
        ("pipetaskInit", 1), ("task0", 4), ("task1", 4), ("task2", 4), ("finalJob", 1),
    ]  # fmt: skip


def test_the_submission_travels_in_the_run_conf() -> None:
    submission = Submission(run=RUN, jobs=job_counts(JOBS), path="/submit", operator="tester", project="dev")
    assert Submission.from_conf(submission.to_conf(), "ignored") == submission
    # A run of the DAG triggered otherwise (the UI): its DAG id, no jobs.
    assert Submission.from_conf({"scale": 1}, "dag") == Submission(run="dag", jobs={})


def test_the_dag_files_are_installed_once_and_another_submission_of_the_name_is_refused(
    tmp_path: pathlib.Path,
) -> None:
    submit, folder = tmp_path / "submit", tmp_path / "dags"
    submit.mkdir()
    folder.mkdir()
    spec = write_spec(submit)

    installed = install_dag_files([spec, spec.with_suffix(".py")], folder)
    assert installed == folder / f"{RUN}.py"
    assert sorted(p.name for p in folder.iterdir()) == [f"{RUN}.py", f"{RUN}.yaml"]  # no partial files left
    assert installed.read_text() == dag_file_text(f"{RUN}.yaml")
    install_dag_files([spec, spec.with_suffix(".py")], folder)  # the same again (a second `bps submit`)

    spec.write_text(spec.read_text() + "# another\n")
    with pytest.raises(BpsApiError, match=rf"{RUN}.yaml exists and is another submission's"):
        install_dag_files([spec, spec.with_suffix(".py")], folder)
    with pytest.raises(BpsApiError, match="set airflowDagFolder in the BPS config"):
        install_dag_files([spec, spec.with_suffix(".py")], tmp_path / "missing")


def downstream_of(tmp_path: pathlib.Path, **settings: Any) -> dict[str, list[str]]:
    """Each task's downstream tasks in the real submission's DAG, as ``GET /dags/{id}/tasks`` gives them."""
    dag = render_dags(write_spec(tmp_path, **settings), clusters=load_cluster_profiles(SITE))[RUN]
    return {task.task_id: sorted(task.downstream_task_ids) for task in dag.tasks}


def ti(task_id: str, state: str, map_index: int = -1) -> dict[str, Any]:
    return {"task_id": task_id, "map_index": map_index, "state": state}


def test_a_restart_clears_the_failed_bundle_the_labels_below_and_the_final_job(
    tmp_path: pathlib.Path,
) -> None:
    downstream = downstream_of(tmp_path, bundling={"threshold": 3})
    instances = [
        ti("pipetaskInit", "success"),
        ti("bpsQuanta", "success"),
        ti("task0.streams", "success"),
        ti("task0.bundle", "success", 0),
        ti("task0.bundle", "failed", 1),  # one quantum of it failed
        # Below: the streams tasks made no streams (task0 did not succeed), the bundles expanded to none.
        *(ti(f"task{n}.streams", "success") for n in (1, 2)),
        *(ti(f"task{n}.bundle", "skipped") for n in (1, 2)),
        ti("finalJob", "success"),
        ti("verdict", "failed"),
    ]

    assert restart_targets(instances, downstream) == [
        "finalJob",
        ["task0.bundle", 1],  # a cleared bundle reruns only its quanta that did not succeed
        "task1.bundle",
        "task1.streams",
        "task2.bundle",
        "task2.streams",
        "verdict",
    ]


def test_a_restart_keeps_quanta_that_succeeded_alone_in_their_task_instance(tmp_path: pathlib.Path) -> None:
    downstream = downstream_of(tmp_path)  # no bundles: a task instance per quantum
    instances = [
        ti("pipetaskInit", "success"),
        ti("bpsQuanta", "success"),
        *(ti(f"task{n}.streams", "success") for n in range(3)),
        *(ti("task0.task0", "failed" if i == 2 else "success", i) for i in range(4)),
        ti("task1.task1", "skipped"),
        ti("task2.task2", "upstream_failed"),
        ti("finalJob", "success"),
        ti("verdict", "failed"),
    ]

    assert restart_targets(instances, downstream) == [
        "finalJob",
        ["task0.task0", 2],
        "task1.streams",
        "task1.task1",
        "task2.streams",
        "task2.task2",
        "verdict",
    ]


def test_nothing_failed_nothing_to_restart(tmp_path: pathlib.Path) -> None:
    downstream = downstream_of(tmp_path)
    assert restart_targets([ti("pipetaskInit", "success"), ti("verdict", "success")], downstream) == []


def row(task: str, process: str, **counts: int) -> dict[str, object]:
    return {"Task": task, "Process": process, "Type": "Batch", **dict.fromkeys(STATE_COLUMNS, 0), **counts}


def test_a_report_counts_each_label_and_says_deleted_after_bps_cancel() -> None:
    conf = Submission(run=RUN, jobs={"pipetaskInit": 1, "task0": 3, "finalJob": 1}).to_conf()
    dag_run = {"dag_id": RUN, "dag_run_id": run_id_for(RUN), "state": "running", "conf": conf}
    rows = [row(RUN, "pipetaskInit", Success=1), row("task0", "task0", Running=2)]

    summary = summarize(dag_run, rows)

    assert (summary.run_id, summary.state, summary.run_summary) == (
        f"bps__{RUN}", "RUNNING", "pipetaskInit:1;task0:3;finalJob:1",
    )  # fmt: skip
    assert summary.labels == {
        "pipetaskInit": {"SUCCEEDED": 1},
        "task0": {"RUNNING": 2, "UNREADY": 1},
        "finalJob": {"UNREADY": 1},
    }
    assert summary.totals() == {"SUCCEEDED": 1, "RUNNING": 2, "UNREADY": 2}
    cancelled = summarize({**dag_run, "state": "failed", "note": "bps cancel"}, rows)
    assert cancelled.state == "DELETED"
    assert cancelled.labels["finalJob"] == {"PRUNED": 1}  # the run ended: it will not run
    assert summarize({**dag_run, "state": "failed", "note": "bps restart"}, rows).state == "FAILED"


def test_the_settings_come_from_the_bps_config_before_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_DESC_API_URL", "http://env:8080")
    monkeypatch.setenv("AIRFLOW_DESC_API_USER", "env-user")
    monkeypatch.setenv("AIRFLOW_DESC_API_PASSWORD", "env-pw")
    monkeypatch.delenv("AIRFLOW_DESC_API_TOKEN", raising=False)
    config = {"airflowApiUrl": "http://config:8080"}

    assert ApiSettings.load(config.get) == ApiSettings("http://config:8080", "env-user", "env-pw")
    assert ApiSettings.load().url == "http://env:8080"
    monkeypatch.delenv("AIRFLOW_DESC_API_PASSWORD")
    with pytest.raises(BpsApiError, match="has no password: set AIRFLOW_DESC_API_PASSWORD"):
        ApiSettings.load()


def test_an_api_server_that_does_not_answer_is_named_with_what_to_set() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = AirflowRestApi(ApiSettings(f"http://127.0.0.1:{port}"), timeout=5)

    said = rf"list DAGs: the Airflow api-server at http://127.0.0.1:{port} did not answer .*API_URL"
    with pytest.raises(BpsApiError, match=said) as raised:
        api.call("GET", "/api/v2/dags", what="list DAGs")
    assert raised.value.status == 0


def test_airflow_launcher_direct_is_an_overlay_beside_the_spec_installed_before_the_dag_file(
    tmp_path: pathlib.Path,
) -> None:
    from airflow_desc.bps.translate import LAUNCHERS, overlay_text
    from airflow_desc.workflow.overlays import LAUNCHERS as RENDERED

    assert LAUNCHERS == RENDERED  # the plugin's copy (its distribution does not ship workflow/)
    submit, folder = tmp_path / "submit", tmp_path / "dags"
    submit.mkdir()
    folder.mkdir()
    spec = write_spec(submit, bundling={"threshold": 2, "target_instances": 2})
    overlay = spec.with_suffix(".site.yaml")
    overlay.write_text(overlay_text(spec.name, "direct"))
    spec.with_suffix(".py").write_text(dag_file_text(overlay.name))
    installed = install_dag_files([spec, overlay, spec.with_suffix(".py")], folder)
    assert sorted(p.name for p in folder.iterdir()) == [f"{RUN}.py", f"{RUN}.site.yaml", f"{RUN}.yaml"]
    # The installed DAG renders the overlay: the same DAG id, its bundles on the direct launcher.
    dag = render_dags(folder / overlay.name, clusters=load_cluster_profiles(SITE))[RUN]
    bundles = [t for t in dag.tasks if t.task_id.endswith(f".{BUNDLE_TASK}")]
    assert bundles and {getattr(t, "partial_kwargs", {}).get("launcher", getattr(t, "launcher", None))
                        for t in bundles} == {"direct"}  # fmt: skip
    assert installed.read_text() == dag_file_text(overlay.name)


class _ParseWaits(http.server.BaseHTTPRequestHandler):
    """An api-server whose dag-processor has not parsed the DAG (404) and lists ``import_errors``."""

    import_errors: ClassVar[list[dict[str, str]]] = []
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.asked.append(self.path.split("?")[0])
        if self.path.startswith("/api/v2/importErrors"):
            body = {"import_errors": self.import_errors, "total_entries": len(self.import_errors)}
            self._answer(200, body)
        else:
            self._answer(404, {"detail": "The Dag with ID: `x` was not found"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def parse_waits() -> Iterator[tuple[AirflowRuns, type[_ParseWaits]]]:
    handler = type("Handler", (_ParseWaits,), {"import_errors": [], "asked": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        yield AirflowRuns(AirflowRestApi(ApiSettings(url=url, token="t"))), handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_wait_for_the_parse_names_the_dag_files_import_error(
    parse_waits: tuple[AirflowRuns, type[_ParseWaits]], tmp_path: pathlib.Path
) -> None:
    runs, handler = parse_waits
    handler.import_errors.append(
        {"filename": str(tmp_path / "x.py"), "stack_trace": "SpecError: x.yaml:3: bad"}
    )
    with pytest.raises(
        BpsApiError, match=r"could not import the DAG file .*x\.py:\nSpecError: x\.yaml:3: bad"
    ):
        runs.wait_parsed("x", tmp_path / "x.py", timeout=30, interval=0.01)
    # The DAG is asked for every interval, the import errors every fourth time.
    assert handler.asked == ["/api/v2/dags/x"] * 4 + ["/api/v2/importErrors"]


def test_the_wait_for_the_parse_gives_up_after_its_timeout_saying_what_to_check(
    parse_waits: tuple[AirflowRuns, type[_ParseWaits]], tmp_path: pathlib.Path
) -> None:
    runs, handler = parse_waits
    with pytest.raises(
        BpsApiError, match=r"not parsed within 0 s after copying x\.py .* raise airflowParseTimeout"
    ):
        runs.wait_parsed("x", tmp_path / "x.py", timeout=0, interval=0.01)
    assert handler.asked == ["/api/v2/dags/x", "/api/v2/importErrors"]  # its import errors read last
