"""Notifications under the real scheduler: a run's verdict, on the worker, mails a real SMTP server.

tests/integration/test_notify.py proves the same through ``airflow dags test``; here two runs of
desc_e2e_notify (tests/e2e/dags/desc_e2e_workflows.py: desc_e2e_rerun with a ``notify`` block) are
triggered through the REST API and run by the scheduler (LocalExecutor): one whose visit 2 fails its
output check, one whose input is there before it starts. The SMTP provider's ``SmtpNotifier`` reaches
the sink (aiosmtpd, tests/smtp_sink.py) through the connection ``desc_e2e_smtp`` that only the
components running tasks have in their environment (tests/deploy.py), as in production:

- the failed run: its failure to the operators, then its end to the campaign list, each with the
  verdict's summary;
- the green run: its end only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from tests.deploy import SMTP_PORT, Deployment, api
from tests.integration.site import Site
from tests.smtp_sink import SmtpSink, html_body

DAG_ID = "desc_e2e_notify"
SMTP_CONN = "AIRFLOW_CONN_DESC_E2E_SMTP"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(port=SMTP_PORT) as server:
        yield server


def trigger(marker: str) -> str:
    """Unpause and trigger a run through the REST API, as a user's client would; return its id."""
    api("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    run_id = f"e2e__notify__{time.time_ns()}"
    api(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        {"dag_run_id": run_id, "logical_date": None, "conf": {"marker": marker}},
    )
    return run_id


def mails_of(sink: SmtpSink, run_id: str) -> list[tuple[list[str], EmailMessage]]:
    """The messages about ``run_id`` (the default subject names the run), each with its recipients."""
    return [(to, m) for to, m in zip(sink.recipients, sink.received(), strict=True) if run_id in m["Subject"]]


def summary_of(message: EmailMessage) -> list[str]:
    """The verdict's summary in a message's HTML body (the notifier's default ``html_content``), by line."""
    return html_body(message).split("<pre>")[1].split("</pre>")[0].splitlines()


def test_the_verdict_on_the_worker_mails_a_failed_runs_failure_and_end_and_a_green_runs_end(
    airflow: Deployment, site: Site, sink: SmtpSink
) -> None:
    assert [name for name, c in airflow.components.items() if SMTP_CONN in c.env] == ["scheduler"]
    airflow.wait_parsed(DAG_ID)
    stamp = time.time_ns()
    ready = f"/tmp/desc-e2e-notify.{stamp}.ready"
    site.run("perlmutter", f"touch {ready}")
    failing, green = trigger(f"/tmp/desc-e2e-notify.{stamp}.missing"), trigger(ready)
    assert airflow.wait_run(DAG_ID, failing, timeout=300) == "failed"
    assert airflow.wait_run(DAG_ID, green, timeout=300) == "success"
    # The scheduler's task process ran each verdict (LocalExecutor: the scheduler is the worker).
    hosts = airflow.sql(
        "SELECT run_id, state, hostname FROM task_instance"
        " WHERE dag_id = %s AND task_id = 'verdict' AND run_id IN (%s, %s)",
        DAG_ID, failing, green,
    )  # fmt: skip
    assert sorted(hosts) == sorted([(failing, "failed", "scheduler"), (green, "success", "scheduler")])

    # The run's verdict has ended when the run has: its mails are in the sink.
    [(ops, failure), (campaign, end)] = mails_of(sink, failing)
    assert (ops, campaign) == (["desc-ops@desc.example.org"], ["campaign@desc.example.org"])
    assert failure["From"] == "airflow@desc.example.org"
    assert failure["Subject"] == end["Subject"] == f"[airflow-desc] {DAG_ID} {failing}: run failed"
    for message in (failure, end):
        summary = summary_of(message)
        assert summary[0] == "run FAILED: 4 process instances (failed 1, skipped 1, success 2)"
        assert "processVisit/calibrateVisit [visit=2]: failed, output-check" in summary[2]

    [(campaign, end)] = mails_of(sink, green)
    assert campaign == ["campaign@desc.example.org"]
    assert end["Subject"] == f"[airflow-desc] {DAG_ID} {green}: run success"
    assert summary_of(end) == ["run SUCCESS: 4 process instances (success 4)"]
