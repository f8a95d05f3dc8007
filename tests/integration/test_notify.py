"""Notifications on the local site: a real run's verdict mails a real SMTP server (aiosmtpd).

`airflow dags test` of dags/desc_it_notify.py (version 2.0, side by side: DAG ``desc_it_notify_v2.0``):
two SLURM jobs on perlmutter, one failing. The SMTP provider's ``SmtpNotifier`` sends the run's
failure to the operators and its end to the campaign list, each with the verdict's summary; a
green run sends the end only. The records carry the workflow's version and the spec's digest.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator

import pytest

from airflow_desc.history import JsonLinesRecorder
from tests.integration.airflow_env import AirflowEnv, explain
from tests.smtp_sink import SmtpSink, html_body

DAG_ID = "desc_it_notify_v2.0"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def _run(env: AirflowEnv, sink: SmtpSink, history: pathlib.Path, **conf: str) -> tuple[str, str]:
    smtp = {"AIRFLOW_CONN_DESC_IT_SMTP": json.dumps(sink.connection())}
    proc = env.dags_test(DAG_ID, history=history, conf=conf or None, timeout=600, extra_env=smtp)
    text = proc.stdout + proc.stderr
    finished = re.search(r"DagRun Finished: .*?run_id=(\S+?), .*?state=(\w+)", text)
    assert finished, explain(proc)
    return finished.group(1), finished.group(2)


def test_a_failed_run_mails_its_failure_and_its_end_with_the_summary(
    airflow_env: AirflowEnv, sink: SmtpSink, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    run_id, state = _run(airflow_env, sink, history)
    assert state == "failed"
    failure, end = sink.received()
    assert sink.recipients == [["desc-ops@desc.example.org"], ["campaign@desc.example.org"]]
    assert failure["From"] == "airflow@desc.example.org"
    assert failure["Subject"] == f"[airflow-desc] {DAG_ID} {run_id}: run failed"
    body = html_body(failure)
    assert "run FAILED: 3 process instances (failed 1, success 2)" in body
    assert "work/step [visit=2]: failed, non-zero-exit" in body
    assert end["Subject"] == f"{DAG_ID}: 2 succeeded"  # the spec's own subject, templated
    assert "run FAILED: 3 process instances" in html_body(end)
    records = [r for r in JsonLinesRecorder(history).read() if r.run_id == run_id]
    assert {r.dag_id for r in records} == {DAG_ID}
    assert {r.extra["workflow_version"] for r in records} == {"2.0"}
    [digest] = {r.extra["spec_digest"] for r in records}
    assert re.fullmatch("[0-9a-f]{64}", digest)


def test_a_green_run_mails_its_end_only(
    airflow_env: AirflowEnv, sink: SmtpSink, tmp_path: pathlib.Path
) -> None:
    _, state = _run(airflow_env, sink, tmp_path / "history.jsonl", fail_visit="0")
    assert state == "success"
    [end] = sink.received()
    assert end["Subject"] == f"{DAG_ID}: 3 succeeded"
    assert "run SUCCESS: 3 process instances (success 3)" in html_body(end)
