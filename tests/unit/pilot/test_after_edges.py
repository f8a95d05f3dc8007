"""``after`` edges inside the pilot: waited for whatever the upstream's end state, unlike ``depends_on``.

The manifest checks run on :func:`load_manifest`; the scheduling runs the launcher (``direct``) on
tiny shell commands.
"""

from __future__ import annotations

import pytest

from airflow_desc.pilot import ManifestError
from airflow_desc.pilot.launcher import load_manifest
from tests.unit.pilot.pilot_process import Runner, instance, ts


def test_an_after_upstream_releases_its_instance_however_it_ended(run_pilot: Runner) -> None:
    run = run_pilot([
        instance("broken", "sleep 0.3; exit 3"),
        instance("slow", "sleep 30", walltime_s=0.3),
        instance("needs-broken", "true", depends_on=["broken"]),
        instance("after-broken", "true", after=["broken"]),
        instance("after-slow", "true", after=["slow"]),
        instance("after-skipped", "true", after=["needs-broken"]),
    ])  # fmt: skip
    recs = run.by_id
    assert run.returncode == 1, run.explain()
    assert {k: (v["state"], v["reason"]) for k, v in recs.items()} == {
        "broken": ("failed", "non-zero-exit"),
        "slow": ("terminated", "time-limit"),
        "needs-broken": ("skipped", "upstream-failed"),
        "after-broken": ("success", None),
        "after-slow": ("success", None),
        "after-skipped": ("success", None),
    }
    # Waited for: each started only once its upstream had ended.
    assert ts(recs["after-broken"]["start"]) >= ts(recs["broken"]["end"])
    assert ts(recs["after-slow"]["start"]) >= ts(recs["slow"]["end"])


def test_depends_on_and_after_mix_on_one_instance(run_pilot: Runner) -> None:
    run = run_pilot([
        instance("ok", "true"),
        instance("bad", "exit 1"),
        instance("runs", "true", depends_on=["ok"], after=["bad"]),
        instance("skipped", "true", depends_on=["bad"], after=["ok"]),
        instance("both", "true", depends_on=["bad"], after=["bad"]),  # depends_on is the stronger
    ])  # fmt: skip
    states = {k: v["state"] for k, v in run.by_id.items()}
    assert states == {"ok": "success", "bad": "failed", "runs": "success", "skipped": "skipped",
                      "both": "skipped"}, run.explain()  # fmt: skip
    assert "upstream bad did not succeed" in run.by_id["skipped"]["message"]


def test_an_after_chain_keeps_its_order(run_pilot: Runner) -> None:
    run = run_pilot(
        [
            instance("first", "sleep 0.2; exit 2"),
            instance("second", "sleep 0.2", after=["first"]),
            instance("third", "true", after=["second"]),
        ],
        cores=3,
    )
    recs = run.by_id
    assert [recs[i]["state"] for i in ("first", "second", "third")] == ["failed", "success", "success"]
    assert ts(recs["second"]["start"]) >= ts(recs["first"]["end"])
    assert ts(recs["third"]["start"]) >= ts(recs["second"]["end"])


# --skip-done with an `after` upstream no longer in the manifest: test_launcher, beside depends_on.


def test_after_edges_count_in_the_graph() -> None:
    _, insts = load_manifest({"instances": [
        {"id": "a", "command": "x"},
        {"id": "b", "command": "x", "after": ["a"]},
        {"id": "c", "command": "x", "depends_on": ["a", "b"], "after": ["a", "b"]},
    ]})  # fmt: skip
    a, b, c = insts
    assert (b.depends_on, b.after) == ((), ("a",))
    assert (c.depends_on, c.after) == (("a", "b"), ())  # an id in both lists counts once, as depends_on
    assert [i.waiting_on for i in insts] == [0, 1, 2]
    assert [i.height for i in insts] == [3, 2, 1]


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([{"id": "a", "command": "x", "after": ["nope"]}], "instances[0] (a): after names 'nope'"),
        (
            [{"id": "a", "command": "x"}, {"id": "b", "command": "x", "depends_on": ["zz"]}],
            "instances[1] (b): depends_on names 'zz'",
        ),
        ([{"id": "a", "command": "x", "after": "b"}], "instances[0] (a): after='b' must be list"),
        (
            [{"id": "a", "command": "x", "after": [1]}],
            "instances[0] (a): after must be a list of instance ids",
        ),
        (
            [{"id": "a", "command": "x", "after": ["b"]}, {"id": "b", "command": "x", "depends_on": ["a"]}],
            "cycle through 'a', 'b'",
        ),
        ([{"id": "a", "command": "x", "after": ["a"]}], "cycle through 'a'"),
    ],
)
def test_bad_after_edges_name_the_instance_and_field(instances: list[object], message: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest({"instances": instances})
    assert message in str(info.value)
