"""A run's notifications: the spec's notifiers built, checked when rendered, called with the verdict."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from airflow.sdk import BaseNotifier

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.operators.notify import build_notifier, check_notifiers, send_notifications
from airflow_desc.workflow.spec import parse_spec
from airflow_desc.workflow.spec_models import NotifierSpec, Notify
from tests.specs import spec_text

HERE = __name__
CONTEXT = {"dag_run": type("Run", (), {"dag_id": "DC1-DM12_v1.16", "run_id": "r1"})()}


class Collecting(BaseNotifier):
    """A notifier that keeps what it would have sent (a real ``BaseNotifier``: templates rendered)."""

    template_fields = ("subject", "html_content", "to")
    sent: ClassVar[list[dict[str, str]]] = []

    def __init__(self, to: str, subject: str | None = None, html_content: str | None = None) -> None:
        super().__init__()
        self.to, self.subject, self.html_content = to, subject, html_content

    def notify(self, context: Any) -> None:
        Collecting.sent.append({"to": self.to, "subject": str(self.subject), "body": str(self.html_content)})


class Broken(BaseNotifier):
    """A notifier whose server does not answer."""

    def notify(self, context: Any) -> None:
        raise ConnectionRefusedError("smtp.example.org:25 refused the connection")


def spec(path: str = f"{HERE}:Collecting", **kwargs: Any) -> NotifierSpec:
    return NotifierSpec(notifier=path, kwargs=kwargs)


@pytest.fixture(autouse=True)
def _nothing_sent() -> None:
    Collecting.sent.clear()


def test_the_verdict_and_its_summary_fill_what_the_spec_leaves_out() -> None:
    notify = Notify(
        on_failure=(spec(to="ops@example.org"),),
        on_end=(spec(to="log@example.org", subject="{{ desc_verdict }}!"),),
    )
    summary = (
        "run FAILED: 2 process instances (failed 1, success 1)\n  DC1-DM12/p: failed, non-zero-exit: <oops>"
    )
    problems = send_notifications(
        notify, CONTEXT, failed=True, summary=summary, counts={"failed": 1, "success": 1}
    )
    assert problems == []
    failure, end = Collecting.sent
    assert failure["to"] == "ops@example.org"
    assert failure["subject"] == "[airflow-desc] DC1-DM12_v1.16 r1: run failed"
    assert f"<pre>{summary.replace('<oops>', '&lt;oops&gt;')}</pre>" in failure["body"]
    assert (end["to"], end["subject"]) == ("log@example.org", "failed!")
    # A green run: on_end only.
    Collecting.sent.clear()
    send_notifications(
        notify, CONTEXT, failed=False, summary="run SUCCESS: 1 process instances (success 1)", counts={}
    )
    assert [(m["to"], m["subject"]) for m in Collecting.sent] == [("log@example.org", "success!")]


def test_a_notifier_that_fails_is_reported_and_the_others_still_go(caplog: pytest.LogCaptureFixture) -> None:
    notify = Notify(on_failure=(spec(f"{HERE}:Broken"),), on_end=(spec(to="log@example.org"),))
    problems = send_notifications(
        notify, CONTEXT, failed=True, summary="run FAILED", counts={}, source="w.yaml"
    )
    refused = "ConnectionRefusedError: smtp.example.org:25 refused the connection"
    assert problems == [f"notify.on_failure[0] ({HERE}:Broken) failed: {refused}"]
    assert [m["to"] for m in Collecting.sent] == ["log@example.org"]
    assert "notify.on_failure[0]" in caplog.text


@pytest.mark.parametrize(
    ("notifier", "message"),
    [
        (spec("airflow.providers.nothing:Notifier"),
         "w.yaml: notify.on_failure\\[0\\]: cannot import the notifier 'airflow.providers.nothing:Notifier'"),
        (spec(f"{HERE}:spec"), "is not an Airflow notifier \\(a BaseNotifier subclass\\)"),
        (spec(to="x", cc="y"), f"{HERE}:Collecting refuses its kwargs: .*'cc'; fix notify's kwargs"),
    ],
)  # fmt: skip
def test_a_bad_notifier_fails_when_the_dag_is_rendered(notifier: NotifierSpec, message: str) -> None:
    with pytest.raises(WorkflowSpecError, match=message):
        check_notifiers(Notify(on_failure=(notifier,)), "w.yaml")


def test_the_smtp_providers_notifier_is_built_from_a_spec() -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    text = spec_text("mini") + (
        "notify:\n  on_failure:\n    - notifier: airflow.providers.smtp.notifications.smtp:SmtpNotifier\n"
        "      kwargs: {to: desc-ops@example.org, from_email: airflow@example.org, smtp_conn_id: desc_smtp}\n"
    )
    [notifier_spec] = parse_spec(text, "mini.yaml").notify.on_failure
    notifier = build_notifier(notifier_spec)
    assert isinstance(notifier, SmtpNotifier)
    assert (notifier.to, notifier.smtp_conn_id) == ("desc-ops@example.org", "desc_smtp")
    assert "desc_summary" in str(notifier.html_content) and "desc_verdict" in str(notifier.subject)


def test_a_notifier_is_named_by_its_import_path() -> None:
    text = spec_text("mini") + "notify:\n  on_end:\n    - notifier: SmtpNotifier\n"
    with pytest.raises(
        WorkflowSpecError, match=r"mini.yaml:[0-9]+: notify.on_end\[0\].notifier: .*write module.path:Class"
    ):
        parse_spec(text, "mini.yaml")
