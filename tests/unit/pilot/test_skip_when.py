"""``skip_when`` in the pilot: a spec's ``skip_if`` on sibling states that only the allocation decides.

The planner evaluates the condition for every combination of those states (tests/unit/workflow/
test_bundle_plan.py); here the pilot applies the combinations once the upstreams have ended, in the
direct launcher (the srun launcher: test_srun_mode.py).
"""

from __future__ import annotations

import pytest

from airflow_desc.pilot import ManifestError
from airflow_desc.pilot.launcher import load_manifest
from tests.unit.pilot import pilot_process
from tests.unit.pilot.pilot_process import NOT_MADE, Runner, instance, make_then_assemble, skip_when, ts

MESSAGE = "skip_if holds: make in ('failed', 'terminated', 'skipped')"


@pytest.mark.parametrize("edge", ["after", "depends_on"])
def test_an_instance_is_skipped_where_its_upstream_failed_and_runs_where_it_succeeded(
    run_pilot: Runner, edge: str
) -> None:
    failed = run_pilot(make_then_assemble(edge, fail=True), name="failed")
    states = {k: (v["state"], v["reason"]) for k, v in failed.by_id.items()}
    expected = "skip-condition" if edge == "after" else "upstream-failed"  # depends_on is checked first
    assert states == {
        "make": ("failed", "non-zero-exit"),
        "assemble": ("skipped", expected),
        "after-assemble": ("success", None),  # after a skip, as after any
        "needs-assemble": ("skipped", "upstream-failed"),
    }, failed.explain()
    if edge == "after":
        assert failed.by_id["assemble"]["message"] == MESSAGE
        assert f"skipped assemble (skip-condition: {MESSAGE})" in failed.stdout
    made = run_pilot(make_then_assemble(edge, fail=False), name="made")
    assert {k: v["state"] for k, v in made.by_id.items()} == dict.fromkeys(
        ("make", "assemble", "after-assemble", "needs-assemble"), "success"
    ), made.explain()
    assert ts(made.by_id["assemble"]["start"]) >= ts(made.by_id["make"]["end"])


def test_a_condition_on_depends_on_upstreams_that_succeeded_still_skips(run_pilot: Runner) -> None:
    # skip_if "make == 'success'" on a depends_on upstream: only a success reaches the condition.
    run = run_pilot([
        instance("make", "true"),
        instance("redo", "true", depends_on=["make"], skip_when=skip_when(["make"], states=[["success"]])),
    ])  # fmt: skip
    assert (run.by_id["redo"]["state"], run.by_id["redo"]["reason"]) == ("skipped", "skip-condition")


def test_a_sub_task_upstream_counts_as_its_instances_combined(run_pilot: Runner) -> None:
    # skip_if "sensors == 'failed' or make == 'failed'": the sub-task failed if one of its instances did.
    both = [("failed", s) for s in ("success", "failed", "terminated", "skipped")]
    both += [(s, "failed") for s in ("success", "terminated", "skipped")]
    run = run_pilot([
        instance("s1", "true"),
        instance("s2", "exit 1"),
        instance("s3", "true"),
        instance("make", "true"),
        instance("summary", "true", after=["s1", "s2", "make"],
                 skip_when=skip_when(["s1", "s2"], ["make"], states=both)),
        instance("summary-ok", "true", after=["s1", "s3", "make"],
                 skip_when=skip_when(["s1", "s3"], ["make"], states=both)),
        # A member decided before the allocation (a plan-time skip) counts too: skipped + success = success.
        instance("only-skipped", "true", after=["make"],
                 skip_when=skip_when(["make"], states=[["skipped"]], known=[["skipped"]])),
    ])  # fmt: skip
    states = {k: (v["state"], v["reason"]) for k, v in run.by_id.items()}
    assert states["summary"] == ("skipped", "skip-condition"), run.explain()
    assert states["summary-ok"] == ("success", None)
    assert states["only-skipped"] == ("success", None)


def test_a_chain_of_condition_skips_cascades_and_nothing_runs_twice(run_pilot: Runner) -> None:
    chain = [instance("make", "exit 2")]
    for i in range(1, 6):
        up = chain[-1]["id"]
        chain.append(instance(f"step{i}", "true", after=[up], skip_when=skip_when([up], states=NOT_MADE)))
    chain.append(instance("last", "true", after=["step5"]))
    run = run_pilot(chain)
    assert [r["id"] for r in run.records].count("last") == 1
    assert {r["id"]: r["state"] for r in run.records} == {
        "make": "failed", **{f"step{i}": "skipped" for i in range(1, 6)}, "last": "success"
    }, run.explain()  # fmt: skip


def test_skip_done_upstreams_count_as_succeeded(run_pilot: Runner) -> None:
    manifest = make_then_assemble("after", fail=False)
    first = run_pilot(manifest, name="first")
    assert first.returncode == 0, first.explain()
    second = run_pilot(manifest[1:], "--skip-done", str(first.records_path), name="second")
    assert second.records == [], second.explain()  # all done: nothing reruns
    rerun = run_pilot(manifest[1:], "--skip-done", str(first.records_path), name="rerun", rerun=["assemble"])
    assert rerun.by_id["assemble"]["state"] == "success", rerun.explain()


def test_a_manifest_without_skip_when_has_no_condition() -> None:
    _, [inst] = load_manifest({"instances": [instance("a", "true")]})
    assert inst.skip_when is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"upstream": [], "states": [], "message": "m"}, 'non-empty "upstream" list'),
        ({"upstream": [{"ids": []}], "states": [], "message": "m"}, "upstream[0] must have a non-empty ids"),
        ({"upstream": [{"ids": ["make"], "known": ["odd"]}], "states": [], "message": "m"},
         "known must be a list of states"),
        ({"upstream": [{"ids": ["make"]}], "states": [["failed", "failed"]], "message": "m"},
         "lists of 1 states each"),
        ({"upstream": [{"ids": ["make"]}], "states": [["broken"]], "message": "m"}, "lists of 1 states each"),
        ({"upstream": [{"ids": ["make"]}], "states": [["failed"]]}, "message must be a non-empty string"),
        ({"upstream": [{"ids": ["other"]}], "states": [["failed"]], "message": "m"},
         "skip_when names 'other', which it does not wait for; list it in depends_on or after"),
    ],
)  # fmt: skip
def test_a_bad_skip_when_is_refused_naming_the_instance(value: object, error: str) -> None:
    manifest = {
        "instances": [
            instance("make", "true"),
            instance("other", "true"),
            instance("assemble", "true", after=["make"], skip_when=value),
        ]
    }
    with pytest.raises(ManifestError, match="assemble") as caught:
        load_manifest(manifest)
    assert error in str(caught.value)


def test_skip_when_holds_on_the_oldest_python_the_pilot_supports(run_pilot: Runner) -> None:
    interpreter = pilot_process.python_3_8()
    if interpreter is None:
        pytest.skip("no Python 3.8 here")
    run = run_pilot(make_then_assemble("after", fail=True), python=interpreter)
    assert run.by_id["assemble"]["reason"] == "skip-condition", run.explain()
