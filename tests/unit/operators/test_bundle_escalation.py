"""Escalation inside bundles: an instance terminated for memory or time asks for more on its next try.

Pure code: the plan, the raise from a pilot record, the saved state and the allocation's time limit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.operators.escalation import escalate_bundle, escalate_request
from airflow_desc.pilot import validate_manifest
from airflow_desc.workflow.bundle_plan import RaisedRequest, allocation_time_limit_s, raised_requests
from airflow_desc.workflow.bundle_planner import plan_bundle
from tests.unit.conftest import SITE, SiteWorkflow

NODE_MB, MAX_S = 4096, 1800  # perlmutter of the site


@pytest.fixture
def bundle(site_workflow: SiteWorkflow) -> Any:
    workflow, task = site_workflow("hungry", "Hungry/processVisit", render=True)

    def plan(raised: dict[str, RaisedRequest] | None = None) -> Any:
        return plan_bundle(workflow, task, [{"visit": 1}, {"visit": 2}], {}, raised=raised)

    return workflow, task, plan


def terminated(reason: str, **ran_with: Any) -> dict[str, Any]:
    return {"state": "terminated", "reason": reason, **ran_with}


def _instance(plan: Any, iid: str) -> Any:
    return next(i for i in plan.instances if i.id == iid)


def _raise(inst: Any, record: dict[str, Any]) -> tuple[RaisedRequest | None, str | None]:
    return escalate_request(inst, record, node_memory_mb=NODE_MB, max_walltime_s=MAX_S)


@pytest.mark.parametrize(
    ("reason", "expected", "expected_note"),
    [
        # Out of memory doubles the memory it ran with.
        ("out-of-memory", RaisedRequest(memory_mb=400), "next try asks for memory 400 MB (x2 of 200 MB)"),
        # A time limit raises the walltime by its factor.
        ("time-limit", RaisedRequest(walltime_s=450), "next try asks for walltime 450 s (x1.5 of 300 s)"),
    ],
)
def test_a_termination_raises_what_it_ran_out_of_by_its_factor(
    bundle: Any, reason: str, expected: RaisedRequest, expected_note: str
) -> None:
    _, _, plan = bundle
    inst = _instance(plan(), "visit=1:calibrate")
    raised, note = _raise(inst, terminated(reason, memory_mb=200, walltime_s=300.0))
    assert raised == expected
    assert note == expected_note


def test_raises_compound_across_tries_through_the_saved_state(bundle: Any) -> None:
    _, _, plan = bundle
    saved: dict[str, Any] = {}
    for expected in (400, 800, 1600, 3200):
        inst = _instance(plan(raised_requests(saved)), "visit=1:calibrate")
        entry = validate_manifest(plan(raised_requests(saved)).manifest("b"))["instances"][0]
        raised, _ = _raise(inst, terminated("out-of-memory", memory_mb=entry["memory_mb"]))
        assert raised is not None and raised.memory_mb == expected
        saved = json.loads(json.dumps({"escalation": {inst.id: raised.to_json()}}))
    # Then a time limit: the walltime is raised, the memory raised before is kept.
    inst = _instance(plan(raised_requests(saved)), "visit=1:calibrate")
    assert (inst.memory_mb, inst.walltime_s) == (3200, 300)
    raised, _ = _raise(inst, terminated("time-limit", memory_mb=3200, walltime_s=300))
    assert raised == RaisedRequest(memory_mb=3200, walltime_s=450)
    # Only that instance: the other visit and process ask for what the spec says.
    other = _instance(plan(raised_requests(saved)), "visit=2:calibrate")
    assert (other.memory_mb, other.walltime_s, other.raised) == (200, 300, None)


def test_memory_stops_at_a_node_and_says_so(bundle: Any) -> None:
    _, _, plan = bundle
    inst = _instance(plan({"visit=1:calibrate": RaisedRequest(memory_mb=3000)}), "visit=1:calibrate")
    raised, note = _raise(inst, terminated("out-of-memory", memory_mb=3000))
    assert raised == RaisedRequest(memory_mb=NODE_MB)
    assert note == "next try asks for memory 4096 MB (x2 capped at 4096 MB)"
    inst = _instance(plan({"visit=1:calibrate": RaisedRequest(memory_mb=NODE_MB)}), "visit=1:calibrate")
    raised, note = _raise(inst, terminated("out-of-memory", memory_mb=NODE_MB))
    assert raised == RaisedRequest(memory_mb=NODE_MB)  # as it was
    assert note is not None and "not raised" in note and "4096 MB is already a whole node's" in note


def test_walltime_stops_at_the_clusters_longest_and_says_so(bundle: Any) -> None:
    _, _, plan = bundle
    inst = _instance(plan(), "visit=1:calibrate")
    raised, note = _raise(inst, terminated("time-limit", walltime_s=1500))
    assert raised == RaisedRequest(walltime_s=MAX_S) and note is not None and "capped at 1800 s" in note
    raised, note = _raise(inst, terminated("time-limit", walltime_s=MAX_S))
    assert raised is None  # inst.raised: nothing raised yet
    assert note is not None and "1800 s is already the cluster's longest" in note


def test_a_factor_of_one_raises_nothing(bundle: Any) -> None:
    _, _, plan = bundle
    inst = _instance(plan(), "visit=1:stubborn")
    raised, note = _raise(inst, terminated("out-of-memory", memory_mb=200))
    assert raised is None and note == "memory not raised for the next try: its escalation memory_factor is 1"


@pytest.mark.parametrize(
    "record",
    [
        {"state": "success", "reason": None, "memory_mb": 200},
        {"state": "failed", "reason": "non-zero-exit", "memory_mb": 200},
        {"state": "skipped", "reason": "upstream-failed"},
        {"state": "skipped", "reason": "allocation-ended"},
        {"state": "failed", "reason": "launch-error"},
    ],
)
def test_other_ends_keep_the_request(bundle: Any, record: dict[str, Any]) -> None:
    _, _, plan = bundle
    earlier = RaisedRequest(memory_mb=400)
    inst = _instance(plan({"visit=1:calibrate": earlier}), "visit=1:calibrate")
    assert _raise(inst, record) == (earlier, None)


def test_a_record_without_what_it_ran_with_falls_back_to_the_plan(bundle: Any) -> None:
    _, _, plan = bundle
    inst = _instance(plan({"visit=1:calibrate": RaisedRequest(memory_mb=300)}), "visit=1:calibrate")
    assert _raise(inst, terminated("out-of-memory"))[0] == RaisedRequest(memory_mb=600)
    assert _raise(inst, terminated("time-limit"))[0] == RaisedRequest(memory_mb=300, walltime_s=450)


def test_the_allocation_asks_for_the_raised_walltimes(bundle: Any) -> None:
    _, _, plan = bundle
    # 4 instances x 300 s on 2 cores, +10 %: 660 s.
    assert allocation_time_limit_s(plan().instances, 2, MAX_S) == 660
    raised = plan({"visit=1:calibrate": RaisedRequest(walltime_s=1200)})
    # Now the longest instance sets it: 1200 s > (1200 + 3 x 300) x 1.1 / 2 = 1155 s.
    assert allocation_time_limit_s(raised.instances, 2, MAX_S) == 1200
    assert allocation_time_limit_s(plan({"visit=1:calibrate": RaisedRequest(walltime_s=MAX_S)}).instances,
                                   1, MAX_S) == MAX_S  # fmt: skip


def test_saved_raises_survive_a_round_trip_and_ignore_junk() -> None:
    saved = json.loads(json.dumps({"escalation": {
        "a": RaisedRequest(memory_mb=400).to_json(),
        "b": RaisedRequest(memory_mb=400, walltime_s=900).to_json(),
        "c": {"memory_mb": "lots"},
        "d": None,
    }}))  # fmt: skip
    assert raised_requests(saved) == {"a": RaisedRequest(400), "b": RaisedRequest(400, 900)}
    assert raised_requests({}) == {}


def test_a_bundle_saves_the_raises_of_this_jobs_records_only_once(bundle: Any) -> None:
    _workflow, _task, plan = bundle
    profile = load_cluster_profiles(SITE).get("perlmutter")
    saved = {"escalation": {"visit=2:calibrate": {"walltime_s": 450}}}
    mine = {
        "visit=1:calibrate": terminated("out-of-memory", memory_mb=200),
        "visit=1:stubborn": terminated("out-of-memory", memory_mb=200),
        "visit=2:stubborn": {"state": "success"},
    }
    first = plan(raised_requests(saved)).instances
    raised, notes = escalate_bundle(first, mine, profile, saved, escalate=True)
    assert raised == {"visit=1:calibrate": {"memory_mb": 400}, "visit=2:calibrate": {"walltime_s": 450}}
    assert set(notes) == {"visit=1:calibrate", "visit=1:stubborn"}
    # Collected again (the worker died before the job counted as recorded): the same raises.
    again = plan(raised_requests({"escalation": raised})).instances
    assert escalate_bundle(again, mine, profile, {"escalation": raised}, escalate=True)[0] == raised
    assert escalate_bundle(first, mine, profile, saved, escalate=False) == (saved["escalation"], {})
