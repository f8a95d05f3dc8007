"""``skip_if`` on siblings run in the same allocation: the planner hands the pilot the combinations.

Found by the 1/10-scale DC1: level1AssembleCoadd (``after`` level1MakeTempExpCoadd, ``skip_if`` it did
not succeed) ran after failed MakeTempExps inside bundles, because the planner counted the planned
sibling as a success. The spec: ``tests/data/specs/desc-it-bundle-skip.yaml`` (the pilot's side:
tests/unit/pilot/test_skip_when.py; on the site: tests/integration/test_bundle.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.pilot import validate_manifest
from airflow_desc.workflow.bundle_plan import BundlePlan
from airflow_desc.workflow.bundle_planner import plan_bundle
from tests.specs import spec_text
from tests.unit.conftest import SiteWorkflow

NAME = "desc-it-bundle-skip"
TASK = "desc_it_bundle_skip/processVisit"
NOT_SUCCESS = [["failed"], ["terminated"], ["skipped"]]


def plan(site_workflow: SiteWorkflow, monkeypatch: pytest.MonkeyPatch, text: str | None = None,
         **values: Any) -> tuple[BundlePlan, dict[str, dict[str, Any]]]:  # fmt: skip
    """Plan visit 301 of the spec (or of ``text``, a variant): the plan and its manifest entries by id."""
    if text is not None:
        monkeypatch.setattr("tests.unit.conftest.spec_text", lambda name: text)
    workflow, task = site_workflow(NAME, TASK)
    planned = plan_bundle(workflow, task, [{"visit": 301}], {**workflow.spec.variables_for(None), **values})
    entries = validate_manifest(planned.manifest("b"))["instances"]
    return planned, {e["id"]: e for e in entries}


def test_a_skip_if_on_a_sibling_in_the_allocation_reaches_the_pilot(
    site_workflow: SiteWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned, entries = plan(site_workflow, monkeypatch)
    assert not planned.skipped  # nothing is decided before the allocation
    sensors = sorted(i for i in entries if i.endswith(":eimage"))
    assert entries["visit=301:assembleCoadd"]["skip_when"] == {
        "upstream": [{"ids": ["visit=301:makeTempExp"], "known": []}],
        "states": NOT_SUCCESS,  # what the non-bundled path would skip on, with its message
        "message": "skip_if holds: makeTempExp in ('failed', 'terminated', 'skipped')",
    }
    # A sub-task: its state is its instances' states combined, as for a stream.
    assert entries["visit=301:summarizeSensors"]["skip_when"] == {
        "upstream": [{"ids": sensors, "known": []}],
        "states": [["failed"]],
        "message": "skip_if holds: processSensor == 'failed'",
    }
    assert entries["visit=301:summarizeSensors"]["after"] == sensors
    assert all("skip_when" not in entries[i] for i in ("visit=301:makeTempExp", "visit=301:measure"))


def test_the_condition_is_evaluated_for_every_combination_of_the_states(
    site_workflow: SiteWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = spec_text(NAME).replace(
        """after: [processSensor]
        skip_if: "processSensor == 'failed'\"""",
        """after: [processSensor, makeTempExp]
        skip_if: "processSensor == 'failed' and makeTempExp != 'success'\"""",
    )
    _, entries = plan(site_workflow, monkeypatch, text)
    condition = entries["visit=301:summarizeSensors"]["skip_when"]
    assert [g["ids"][0].rpartition(":")[2] for g in condition["upstream"]] == ["makeTempExp", "eimage"]
    assert condition["states"] == [[state, "failed"] for state in ("failed", "terminated", "skipped")]


def test_variables_that_decide_the_condition_alone_decide_it_before_the_allocation(
    site_workflow: SiteWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        spec_text(NAME)
        .replace('seed: "5"', 'seed: "5"\n  coadd: true')
        .replace(
            "skip_if: \"makeTempExp in ('failed', 'terminated', 'skipped')\"",
            "skip_if: \"not coadd or makeTempExp == 'failed'\"",
        )
    )
    planned, entries = plan(site_workflow, monkeypatch, text, coadd=False)
    _, kind, message = planned.skipped["visit=301:assembleCoadd"]
    assert (kind, message) == ("skip-condition", "skip_if holds: not coadd or makeTempExp == 'failed'")
    # What depends on it is planned to skip as upstream-failed, as before.
    assert planned.skipped["visit=301:measure"][1] == "upstream-failed"
    _, entries = plan(site_workflow, monkeypatch, text, coadd=True)
    assert entries["visit=301:assembleCoadd"]["skip_when"]["states"] == [["failed"]]


def test_members_skipped_before_the_allocation_count_in_their_sub_task(
    site_workflow: SiteWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = plan(site_workflow, monkeypatch)
    sensor = next(i.stream["sensor"] for i in first.instances if i.process.name == "eimage")
    text = spec_text(NAME).replace(
        "emulate: {cpu_seconds: 0.1, fail: exit", f"skip_if: \"sensor == '{sensor}'\"\n            emulate: "
        "{cpu_seconds: 0.1, fail: exit"
    )  # fmt: skip
    planned, entries = plan(site_workflow, monkeypatch, text)
    assert f"visit=301/sensor={sensor}:eimage" in planned.skipped
    [group] = entries["visit=301:summarizeSensors"]["skip_when"]["upstream"]
    assert group["known"] == ["skipped"] and f"sensor={sensor}" not in str(group["ids"])


def test_a_wrapup_script_decides_on_the_real_outcomes_of_the_allocation(
    site_workflow: SiteWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned, _ = plan(site_workflow, monkeypatch)
    [wrapup] = [s for s in planned.scripts if s.phase == "after"]
    for state, skipped in (("failed", True), ("terminated", True), ("success", False)):
        upstream = planned.upstream_states(wrapup, {"visit=301:makeTempExp": state})
        skip = wrapup.process.skip_reason(upstream, wrapup.stream, {})
        assert (skip is not None) == skipped, state
        assert skip is None or (skip.kind, skip.message) == (
            "skip-condition", "skip_if holds: makeTempExp != 'success'"
        )  # fmt: skip


def test_a_skip_if_on_too_many_siblings_in_a_bundle_is_refused_when_loaded(
    site_workflow: SiteWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "".join(f"      b{i}:\n        type: batch\n        command: 'true'\n" for i in range(4))
    condition = "makeTempExp == 'failed' or b0 == b1 or b2 == b3"
    text = (
        spec_text(NAME)
        .replace(
            "      assembleCoadd:",
            extra + "      assembleCoadd:",
        )
        .replace(
            "after: [makeTempExp]\n        skip_if: \"makeTempExp in ('failed', 'terminated', 'skipped')\"",
            f'after: [makeTempExp, b0, b1, b2, b3]\n        skip_if: "{condition}"',
        )
    )
    with pytest.raises(WorkflowSpecError) as caught:
        plan(site_workflow, monkeypatch, text)
    assert (
        "processVisit/assembleCoadd: skip_if names the states of 5 processes or sub-tasks that run in the "
        "same bundle (b0, b1, b2, b3, makeTempExp); inside a bundle it may name at most 4"
    ) in str(caught.value)
