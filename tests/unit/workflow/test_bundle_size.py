"""How big bundles are: ``bundling.target_instances``, the walltime cap on a node, the last bundle."""

from __future__ import annotations

import re

import pytest

from airflow_desc.clusters import ClusterProfiles
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow import WorkflowGraph, build_graph, parse_spec
from airflow_desc.workflow.build import StreamWork, bundle_size_for
from airflow_desc.workflow.graph import BundleFit
from tests.unit.workflow.test_graph import PYRAMID

TARGET = "bundling: {threshold: 50, max_task_instances: 100, target_instances: 16, max_walltime: '0:10:00'}"


def mini(
    cpu_seconds: float = 0.05, bundling: str = TARGET, clusters: ClusterProfiles | None = None
) -> WorkflowGraph:
    text = PYRAMID.replace("bundling: {threshold: 50, max_task_instances: 100}", bundling)
    text = text.replace("cpu_seconds: 0.05", f"cpu_seconds: {cpu_seconds}")
    return build_graph(parse_spec(text, "mini.yaml"), "a", clusters=clusters)


def test_the_target_over_the_instances_of_a_stream() -> None:
    # DC1's visit: 2.343 rafts x 1.774 sensors, one processEimage each.
    size, reason = bundle_size_for(StreamWork(2.343 * 1.774, 12.5), 64)
    assert size == 15 and reason == "64 instances per bundle at 4.16 per stream"
    assert bundle_size_for(StreamWork(5.0, 1.0), 64)[0] == 12  # rounded down: 60, not 65
    assert bundle_size_for(StreamWork(64.0, 1.0), 64)[0] == 1
    assert bundle_size_for(StreamWork(200.0, 1.0), 64)[0] == 1  # a stream bigger than the target
    assert bundle_size_for(StreamWork(0.0, 0.0), 64)[0] == 64  # nothing expected per stream


def test_the_walltime_cap_of_a_node() -> None:
    work = StreamWork(4.0, 1000.0)
    assert bundle_size_for(work, 64, cores=128, walltime_s=7200)[0] == 16  # fits: the target decides
    size, reason = bundle_size_for(work, 64, cores=2, walltime_s=1800)
    assert size == 3  # 3 x 1000 core-s on 2 cores: 1500 s <= 1800 s; 4 would be 2000 s
    assert reason.endswith("lowered to fit 2 cores x 1800 s (1e+03 core-s a stream)")
    # One stream's work is more than the node can do in the walltime: still one stream a bundle.
    assert bundle_size_for(StreamWork(4.0, 10_000.0), 64, cores=2, walltime_s=1800)[0] == 1
    # Exactly full: 8 x 450 core-s on 2 cores is 1800 s.
    assert bundle_size_for(StreamWork(1.0, 450.0), 64, cores=2, walltime_s=1800)[0] == 8


def test_sizes_from_the_spec_and_the_cluster_of_the_bundle(clusters: ClusterProfiles) -> None:
    # Mini's visit: 2 rafts x 0.5 sensors = 1 processEimage (2 cpus, an emulated payload) a visit.
    visit = mini().task("processVisit")
    assert visit.bundling.bundle_size == 16
    assert (
        visit.bundling.reason
        == "400 streams in a busy run > threshold 50; 16 instances per bundle at 1 per stream"
    )
    # On perlmutter (2 cores, 30 min), within the spec's 10 minutes: 60 s x 2 cpus a visit -> 10.
    capped = mini(60, clusters=clusters).task("processVisit")
    assert capped.bundling.bundle_size == 10
    assert "lowered to fit 2 cores x 600 s" in capped.bundling.reason
    # Without the spec's max_walltime, the cluster's 30 minutes: 2 x 1800 / 120 = 30 > 16.
    loose = TARGET.replace(", max_walltime: '0:10:00'", "")
    assert mini(60, loose, clusters).task("processVisit").bundling.bundle_size == 16
    # Without profiles there is no node to fit: the target alone.
    assert mini(60).task("processVisit").bundling.bundle_size == 16


def test_the_task_instance_ceiling_wins_over_the_walltime_cap(clusters: ClusterProfiles) -> None:
    # 100 s x 2 cpus a visit fit 6 in 600 s on 2 cores, but 400 visits in bundles of 6 are 67 task
    # instances: over the 55 that max_task_instances leaves (100 - 5 top-level - 2 x 20 patches).
    visit = mini(100, clusters=clusters).task("processVisit")
    assert visit.bundling.bundle_size == 8
    assert visit.bundling.reason.endswith("raised to 8 for <= 100 task instances per run")


def test_a_real_command_counts_at_its_walltime_request(clusters: ClusterProfiles) -> None:
    # processPatch (2 real commands of 1 h a patch, 20 patches a run) bundled from threshold 10.
    bundling = TARGET.replace(
        "threshold: 50, max_task_instances: 100", "threshold: 10, max_task_instances: 1000"
    )
    patch = mini(bundling=bundling).task("processPatch")
    assert patch.bundling.state == "bundle" and patch.bundling.bundle_size == 8  # 16 / 2 a patch
    # 2 x 3600 core-s a patch on a 2-core node for 10 minutes: not even one fits; still 1.
    assert mini(bundling=bundling, clusters=clusters).task("processPatch").bundling.bundle_size == 1


def test_a_fan_out_under_the_threshold_is_not_bundled() -> None:
    at = mini(bundling=TARGET.replace("threshold: 50", "threshold: 20")).task("processPatch")
    assert at.bundling.state == "none" and at.bundling.reason == "20 streams in a busy run <= threshold 20"
    over = mini(bundling=TARGET.replace("threshold: 50", "threshold: 19")).task("processPatch")
    assert over.bundling.state == "bundle" and over.bundling.bundle_size == 8


@pytest.mark.parametrize(
    ("streams", "size", "lengths"),
    [
        (51, 15, [13, 13, 13, 12]),  # DC1's 51 visits at scale 0.01: no bundle of 6
        (16, 15, [8, 8]),  # one over: two half bundles, not 15 + 1
        (15, 15, [15]),
        (1, 15, [1]),
        (0, 15, []),
        (7, 3, [3, 2, 2]),
    ],
)
def test_the_last_partial_bundle_is_evened_out(streams: int, size: int, lengths: list[int]) -> None:
    text = PYRAMID.replace(
        "    expected_streams: 400 * scale\n", f"    expected_streams: 400 * scale\n    bundle_size: {size}\n"
    )
    visit = build_graph(parse_spec(text, "mini.yaml"), "a").task("processVisit")
    bundles = visit.split_streams(list(range(streams)))
    assert [len(b) for b in bundles] == lengths
    assert [s for b in bundles for s in b] == list(range(streams))  # in order, each once


@pytest.mark.parametrize(
    ("bundling", "message"),
    [
        ("{max_walltime: soon}", "mini.yaml:14: bundling.max_walltime: cannot read 'soon' as a walltime"),
        ("{target_instances: 0}", "mini.yaml:14: bundling.target_instances: must be at least 1, got 0"),
        ("{target_instance: 3}", "bundling.target_instance: unknown key; did you mean 'target_instances'?"),
    ],
)
def test_bad_bundling_settings_name_the_field(bundling: str, message: str) -> None:
    text = PYRAMID.replace("bundling: {threshold: 50, max_task_instances: 100}", f"bundling: {bundling}")
    with pytest.raises(WorkflowSpecError, match=re.escape(message)):
        parse_spec(text, "mini.yaml")


def test_a_size_the_walltime_lowered_keeps_what_run_times_may_fit_again(clusters: ClusterProfiles) -> None:
    # 60 s x 2 cpus a visit lowered 16 to 10 on perlmutter (2 cores, the spec's 10 minutes).
    capped = mini(60, clusters=clusters).task("processVisit").bundling
    assert capped.fit is not None
    assert (capped.fit.target_size, capped.fit.cores, capped.fit.walltime_s) == (16, 2, 600)
    assert capped.fit.work == (("processEimage", 1.0, 2),)  # 2 rafts x 0.5 sensors a visit
    # A size the walltime did not lower has nothing to fit again.
    assert mini(0.05, clusters=clusters).task("processVisit").bundling.fit is None
    assert mini(60).task("processVisit").bundling.fit is None  # no profiles, no node


def test_measured_run_times_fit_up_to_the_target_with_room_to_spare() -> None:
    fit = BundleFit(target_size=35, cores=2, walltime_s=1800, work=(("task0", 1.0, 1), ("task1", 1.0, 1)))
    # 4 s + 5 s a stream, twice over: 18 core-s; 2 x 1800 / 18 = 200 streams fit: the target, 35.
    size, why = fit.fitted_size(20, {"task0": 4.0, "task1": 5.0})
    assert size == 35
    assert why == (
        "median run times task0 4 s, task1 5 s: 2 x the measured work of 35 streams fits "
        "2 cores x 1800 s (walltime requests: 20)"
    )
    # 60 s + 40 s a stream, twice over: 200 core-s; 18 streams fit, between the lowered 10 and 35.
    assert fit.fitted_size(10, {"task0": 60.0, "task1": 40.0})[0] == 18
    # Slower than the walltime requests said: never below the lowered size.
    assert fit.fitted_size(20, {"task0": 600.0, "task1": 600.0})[0] == 20
    # A process never recorded: the lowered size, saying which.
    assert fit.fitted_size(20, {"task0": 4.0}) == (
        20, "no run time recorded for task1: the walltime requests' size",
    )  # fmt: skip
