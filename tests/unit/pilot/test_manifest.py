"""The launcher's pure parts: manifest checks, the dependency graph, the allocation's size."""

from __future__ import annotations

import pytest

from airflow_desc.pilot import ManifestError, step_name
from airflow_desc.pilot.launcher import (
    allocation_cores,
    allocation_memory_mb,
    load_manifest,
    peak_rss,
    ready_key,
)


def test_heights_follow_the_longest_chain_of_dependents() -> None:
    _, insts = load_manifest({"instances": [
        {"id": "visit=1:processVisit", "command": "x"},
        {"id": "visit=1/raft=R22:processRaft", "command": "x", "depends_on": ["visit=1:processVisit"]},
        {"id": "visit=1/raft=R22/sensor=S11:processEimage", "command": "x",
         "depends_on": ["visit=1/raft=R22:processRaft"]},
        {"id": "lonely", "command": "x"},
    ]})  # fmt: skip
    assert [i.height for i in insts] == [3, 2, 1, 1]
    assert [i.waiting_on for i in insts] == [0, 1, 1, 0]
    sensor = insts[2]
    assert sensor.stream == "visit=1/raft=R22/sensor=S11" and sensor.process == "processEimage"
    assert sensor.log_name == "visit=1_raft=R22_sensor=S11_processEimage"
    assert (sensor.cpus, sensor.memory_mb, sensor.walltime_s) == (1, None, None)


def test_ready_instances_go_longest_chain_then_biggest_then_longest_expected_first() -> None:
    _, insts = load_manifest({"instances": [
        {"id": "short", "command": "x", "estimate_s": 1.5},
        {"id": "unknown", "command": "x"},
        {"id": "long", "command": "x", "estimate_s": 4.9},
        {"id": "long-too", "command": "x", "estimate_s": 4.9},
        {"id": "two-cores", "command": "x", "cpus": 2, "estimate_s": 0.5},
        {"id": "visit", "command": "x", "estimate_s": 0.1},
        {"id": "sensor", "command": "x", "depends_on": ["visit"], "estimate_s": 9},
    ]})  # fmt: skip
    order = [i.id for i in sorted(insts, key=ready_key)]
    # The chain first (it unlocks more), then the biggest, then longest first (manifest order on a
    # tie), and instances without an estimate last, in manifest order (the sensor, once ready,
    # ranks by its own estimate).
    assert order == ["visit", "two-cores", "sensor", "long", "long-too", "short", "unknown"]
    assert insts[0].estimate_s == 1.5 and insts[1].estimate_s is None


def test_without_estimates_the_manifest_order_holds() -> None:
    _, insts = load_manifest({"instances": [{"id": f"t{i}", "command": "x"} for i in range(5)]})
    assert [i.id for i in sorted(insts, key=ready_key)] == ["t0", "t1", "t2", "t3", "t4"]


def test_log_names_stay_unique_when_ids_sanitise_alike() -> None:
    _, insts = load_manifest({"instances": [{"id": "a/b", "command": "x"}, {"id": "a b", "command": "x"}]})
    assert [i.log_name for i in insts] == ["a_b", "a_b-1"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], '"instances" list'),
        ({"instances": [{"id": "a", "command": "x", "cpus": True}]}, "cpus=True must be int"),
        ({"instances": [{"id": "a", "command": "x", "walltime_s": -1}]}, "walltime_s=-1"),
        ({"instances": [{"id": "a", "command": "x", "estimate_s": -2}]}, "estimate_s=-2 must be 0 or more"),
        (
            {"instances": [{"id": "a", "command": "x", "estimate_s": "9"}]},
            "estimate_s='9' must be int or float",
        ),
        ({"instances": [{"id": "a", "command": "x", "depends_on": "b"}]}, "depends_on='b' must be list"),
        ({"instances": [{"id": "a", "command": "x", "depends_on": ["a"]}]}, "cycle through 'a'"),
        ({"instances": ["a"]}, "instances[0] is str"),
    ],
)
def test_manifest_errors_name_the_instance_and_field(data: object, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(data)
    assert message in str(info.value)


def test_step_names_are_safe_for_sacct() -> None:
    assert step_name("visit=1/raft=R22:processRaft") == "visit=1/raft=R22:processRaft"
    assert step_name("a|b,c d") == "a_b_c_d"
    long = step_name("x" * 300)
    assert len(long) == 200 and long == step_name("x" * 300) != step_name("x" * 301)


@pytest.mark.parametrize(
    ("env", "cores"),
    [
        ({"SLURM_CPUS_ON_NODE": "128"}, 128),
        ({"SLURM_JOB_CPUS_PER_NODE": "256(x4)"}, 256),
        ({"SLURM_JOB_CPUS_PER_NODE": "64,32"}, 64),
    ],
)
def test_cores_come_from_slurm(env: dict[str, str], cores: int) -> None:
    assert allocation_cores(env) == cores


def test_without_slurm_cores_and_memory_come_from_the_machine() -> None:
    assert allocation_cores({}) >= 1
    assert allocation_memory_mb({}, 1) > 100


def test_memory_comes_from_slurm() -> None:
    assert allocation_memory_mb({"SLURM_MEM_PER_NODE": "3000"}, 2) == 3000
    assert allocation_memory_mb({"SLURM_MEM_PER_CPU": "1900"}, 4) == 7600


def test_ru_maxrss_below_the_launchers_own_size_is_not_believed() -> None:
    mib = 2**20
    assert peak_rss(500 * 1024, 20 * mib, 400 * mib) == 500 * mib  # the payload's own peak
    assert peak_rss(20 * 1024, 20 * mib, 3 * mib) == 3 * mib  # inherited from the forking Python
    assert peak_rss(20 * 1024, 20 * mib, 0) is None  # and it ended before a sample
