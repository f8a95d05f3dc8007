"""The last task of a generated DAG: the run's verdict (see :mod:`airflow_desc.workflow.verdict`).

Generated tasks run with trigger rule ``all_done`` and a bundle task may succeed while streams
inside it failed, so Airflow's own rule (a run fails when a leaf failed) would paint a run green
that lost process instances. :class:`WorkflowVerdictOperator` is a leaf downstream of every other
leaf: clearing a failed task clears it too, and its rerun reads only each instance's latest attempt,
so a cleared-and-fixed run turns green.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history import latest_records_of_run
from airflow_desc.operators.notify import send_notifications
from airflow_desc.workflow.naming import VERDICT_TASK
from airflow_desc.workflow.registry import workflow_for
from airflow_desc.workflow.verdict import judge_run

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["WorkflowVerdictOperator"]


class WorkflowVerdictOperator(BaseOperator):
    """Fail the DAG run when one of its process instances ended Failed or Terminated (not tolerated).

    Reads the latest attempt of each process instance of the run from the history
    (:func:`~airflow_desc.history.latest_records_of_run`) and the run's failed task instances (one
    without a record failed before recording anything); logs the summary; fails without retrying
    when the run failed. Then it calls the spec's notifiers (``notify``: ``on_failure`` when the
    run failed, ``on_end`` either way; :mod:`airflow_desc.operators.notify`). While the history
    cannot be read (its database down at the run's end) it waits deferred, reading again after 5,
    10, 20 ... 60 s, up to ``history_wait_s``; then it fails (and retries: a run is never judged
    without its records).

    :param workflow_key: the loaded workflow.
    :param variant: the variant.
    :param history_wait_s: how long to wait for an unreachable history before failing.
    """

    template_fields: Sequence[str] = ()
    ui_color = "#d9d2e9"

    def __init__(
        self, *, workflow_key: str, variant: str | None, history_wait_s: float = 1800.0, **kwargs: Any
    ) -> None:
        kwargs.setdefault("task_id", VERDICT_TASK)
        kwargs.setdefault("trigger_rule", "all_done")
        kwargs.setdefault("retries", 2)
        super().__init__(**kwargs)
        self.workflow_key = workflow_key
        self.variant = variant
        self.history_wait_s = history_wait_s

    def execute(self, context: Context) -> dict[str, Any]:
        """Judge the run; return the counts per state (raise when the run failed)."""
        return self._judge(context, waited_s=0.0)

    def execute_complete(self, context: Context, event: Any = None, waited_s: float = 0.0) -> dict[str, Any]:
        """Read the history again after waiting for it (deferred)."""
        return self._judge(context, waited_s=waited_s)

    def _judge(self, context: Context, waited_s: float) -> dict[str, Any]:
        ti: Any = context["ti"]
        graph = workflow_for(self.workflow_key).graph(self.variant)
        try:
            records = latest_records_of_run(ti.dag_id, ti.run_id)
        except HistoryUnavailable as exc:
            if waited_s >= self.history_wait_s:
                raise HistoryUnavailable(
                    f"{exc}; waited {waited_s:.0f} s for it: clear this task once the history answers"
                ) from exc
            delay = next_history_wait(waited_s)
            self.log.warning("%s; the verdict waits %.0f s (deferred) and reads it again", exc, delay)
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=delay)),
                method_name="execute_complete",
                kwargs={"waited_s": waited_s + delay},
            )
        found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id) or {}
        verdict = judge_run(graph, records, _failed_tasks(found, self.task_id))
        summary = verdict.summary()
        for line in summary.splitlines():
            self.log.info("%s", line)
        spec = workflow_for(self.workflow_key).spec
        problems = send_notifications(
            spec.notify, context, failed=verdict.failed, summary=summary, counts=verdict.counts,
            source=spec.source,
        )  # fmt: skip
        for problem in problems:
            self.log.warning("notification not sent: %s", problem)
        if verdict.failed:
            raise AirflowFailException(summary)
        return {"counts": dict(verdict.counts), "tolerated": len(verdict.tolerated)}


def next_history_wait(waited_s: float) -> float:
    """Return how long to wait before reading an unreachable history again: 5, 5, 10, 20, 40, 60, 60 ... s."""
    return min(60.0, max(5.0, waited_s))


def _failed_tasks(states: dict[str, Any], own_id: str) -> list[str]:
    """Return the keys (``task_id``, ``task_id_<map index>``) of the failed task instances but this one."""
    return [key for key, state in states.items() if str(state) == "failed" and key != own_id]
