"""A run's notifications: the Airflow notifiers a workflow spec names under ``notify``.

The run's ``verdict`` task (:class:`~airflow_desc.operators.verdict.WorkflowVerdictOperator`)
calls them once it has judged the run: ``on_failure`` when it fails the run, ``on_end`` either
way. They run there, on the worker, because the worker has the connections (SMTP, Slack) and the
verdict has the summary; Airflow runs a DAG's own ``on_failure_callback`` in the DAG processor,
which has neither.

Each call builds a new notifier from the spec (a notifier keeps what it rendered), renders its
template fields with the verdict's context plus:

- ``desc_verdict``: ``success`` or ``failed``;
- ``desc_summary``: the verdict's summary (counts per state, the first failures with reasons);
- ``desc_counts``: process instances per state, a dict.

A notifier that takes ``subject``, ``html_content`` or ``text`` and is given none gets the
verdict and the summary there (:data:`DEFAULT_FIELDS`). A notifier that fails is logged; the
verdict stands.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseNotifier

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow.scripts import import_target
from airflow_desc.workflow.spec_models import NotifierSpec, Notify

__all__ = ["DEFAULT_FIELDS", "build_notifier", "check_notifiers", "send_notifications"]

log = logging.getLogger(__name__)

_SUBJECT = "[airflow-desc] {{ dag_run.dag_id }} {{ dag_run.run_id }}: run {{ desc_verdict }}"
#: What a notifier is given when its spec leaves these keyword arguments out (and it takes them).
DEFAULT_FIELDS: Mapping[str, str] = {
    "subject": _SUBJECT,
    "html_content": (
        "<p>DAG <b>{{ dag_run.dag_id }}</b>, run <b>{{ dag_run.run_id }}</b>: {{ desc_verdict }}</p>"
        "<pre>{{ desc_summary | e }}</pre>"
    ),
    "text": _SUBJECT + "\n{{ desc_summary }}",
}


def build_notifier(spec: NotifierSpec, where: str = "notify") -> BaseNotifier:
    """Import the notifier class of ``spec`` and build it with its kwargs (and :data:`DEFAULT_FIELDS`).

    :param spec: the spec's notifier.
    :param where: how messages name it (``<spec file>: notify.on_failure[0]``).
    :raises WorkflowSpecError: naming it, when the class cannot be imported, is no ``BaseNotifier``,
        or refuses its kwargs.
    """
    try:
        value = import_target(spec.notifier)
    except (ImportError, AttributeError) as exc:
        raise WorkflowSpecError(
            f"{where}: cannot import the notifier {spec.notifier!r}: {exc}; install its provider where "
            "DAGs are parsed and tasks run, or fix the path (module.path:Class)"
        ) from None
    if not (isinstance(value, type) and issubclass(value, BaseNotifier)):
        raise WorkflowSpecError(
            f"{where}: {spec.notifier!r} is not an Airflow notifier (a BaseNotifier subclass); name one, "
            "e.g. airflow.providers.smtp.notifications.smtp:SmtpNotifier"
        )
    taken = inspect.signature(value).parameters
    kwargs = {name: text for name, text in DEFAULT_FIELDS.items() if name in taken} | dict(spec.kwargs)
    try:
        return value(**kwargs)
    except (TypeError, ValueError) as exc:
        raise WorkflowSpecError(
            f"{where}: {spec.notifier} refuses its kwargs: {exc}; fix notify's kwargs"
        ) from None


def _named(notify: Notify, *, failed: bool = True) -> list[tuple[str, NotifierSpec]]:
    """Return the notifiers (``on_failure``'s only if ``failed``), each with its place in the spec."""
    groups = ("on_failure", "on_end") if failed else ("on_end",)
    return [(f"notify.{when}[{i}]", spec) for when in groups for i, spec in enumerate(getattr(notify, when))]


def check_notifiers(notify: Notify, source: str) -> None:
    """Build every notifier of a spec once, so that a bad one fails the DAG file, not the run's end.

    :param notify: the spec's ``notify``.
    :param source: the spec file, for messages.
    :raises WorkflowSpecError: for the first notifier that cannot be built.
    """
    for where, spec in _named(notify):
        build_notifier(spec, f"{source}: {where}")


def send_notifications(
    notify: Notify,
    context: Mapping[str, Any],
    *,
    failed: bool,
    summary: str,
    counts: Mapping[str, int],
    source: str = "<spec>",
) -> list[str]:
    """Call the notifiers of a judged run: ``on_failure`` if it failed, then ``on_end``.

    :param notify: the spec's ``notify``.
    :param context: the verdict task's context.
    :param failed: whether the verdict failed the run.
    :param summary: the verdict's summary.
    :param counts: process instances per state.
    :param source: the spec file, for messages.
    :return: one line per notifier that failed (each also logged); the others were sent.
    """
    extra = {"desc_verdict": "failed" if failed else "success", "desc_summary": summary,
             "desc_counts": dict(counts)}  # fmt: skip
    problems: list[str] = []
    for where, spec in _named(notify, failed=failed):
        try:
            build_notifier(spec, f"{source}: {where}")({**context, **extra})
        except Exception as exc:  # noqa: BLE001 - a notifier's failure never changes the verdict
            problems.append(f"{where} ({spec.notifier}) failed: {type(exc).__name__}: {exc}")
            log.warning("%s", problems[-1], exc_info=True)
    return problems
