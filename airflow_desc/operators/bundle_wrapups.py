"""A bundle's wrapup scripts, run on the worker once its batch instances are recorded (no Airflow).

The end of step 3 of :mod:`~airflow_desc.operators.bundle`: :func:`run_wrapups` runs the plan's
wrapup scripts (``wrapupEimageSensors`` per raft, then ``wrapupEimageRafts`` per visit), each
after what it follows, skipped when an upstream it ``depends_on`` did not succeed or its
``skip_if`` holds; one that succeeded in an earlier try runs again only when a rerun selected it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc.workflow.bundle_plan import BundlePlan, PlannedScript
from airflow_desc.workflow.scripts import ScriptOutcome, call_script
from airflow_desc.workflow.spec_templates import Scalar

if TYPE_CHECKING:
    from airflow_desc.workflow.registry import LoadedWorkflow

__all__ = ["run_wrapups"]


def run_wrapups(
    workflow: LoadedWorkflow,
    plan: BundlePlan,
    states: dict[str, str],
    variables: Mapping[str, Scalar],
    outcomes: dict[str, Any],
    rerun: str,
    again: frozenset[str] = frozenset(),
) -> list[PlannedScript]:
    """Run the wrapup scripts, deepest streams first (the plan's order), each after what it follows.

    :param states: the latest state of every process instance, by id: updated with the wrapups'.
    :param outcomes: the scripts' saved outcomes, by id (earlier tries'): updated with those run now.
    :param rerun: ``failed``: a wrapup that succeeded in an earlier try is not run again, but ``again``.
    :param again: the ids this try reruns whatever their earlier state (a rerun's selection).
    :return: the wrapups run (or skipped) now, to be recorded.
    """
    ran: list[PlannedScript] = []
    for script in plan.scripts:
        if script.phase != "after":
            continue
        earlier = outcomes.get(script.id)
        done = isinstance(earlier, dict) and earlier.get("state") == "success"
        if rerun == "failed" and done and script.id not in again:
            states[script.id] = "success"
            continue
        upstream = plan.upstream_states(script, states)
        skip = script.process.skip_reason(upstream, script.stream, variables)
        if skip is not None:
            script.outcome = ScriptOutcome.skipped(skip.message)
            script.reason = skip.kind
        else:
            script.outcome, _ = call_script(workflow, script.process, script.stream, variables)
        script.ran_now = True
        states[script.id] = script.outcome.state
        outcomes[script.id] = script.outcome.to_json()
        ran.append(script)
    return ran
