"""The DC1 workflow spec (dags/workflows/dc1.yaml) against DC1's own status table."""

from __future__ import annotations

import csv
import math
import pathlib

import pytest

from airflow_desc.workflow import WorkflowGraph, WorkflowSpec, build_graph, estimate_task_instances
from airflow_desc.workflow.outcomes import Skip

ROOT = pathlib.Path(__file__).parents[3]
# The workflow of the spec and graph fixtures (tests/unit/workflow/conftest.py).
WORKFLOW = DC1 = ROOT / "dags" / "workflows" / "dc1.yaml"
VARIANT = "imsim-dithered"
DATA = ROOT / "tests" / "data"
# A copy of the DC1 status table (../shared/dc1-status-table.tsv): the authority for names.
STATUS_TABLE = DATA / "specs" / "dc1-status-table.tsv"
VARIANTS = ("imsim-dithered", "imsim-undithered", "phosim-dithered", "phosim-undithered")
DC1_RUNS = 15

HIERARCHY = [
    "DC1-DM12",
    "DC1-DM12/level1",
    "DC1-DM12/level1/level1ProcessFilter",
    "DC1-DM12/level1/level1ProcessFilter/level1ProcessPatch",
    "DC1-DM12/level1/level1ProcessFilter/processimageDifferenceVisit",
    "DC1-DM12/level1/level1ProcessFilter/processimageDifferenceVisit/processimageDifferenceRaft",
    "DC1-DM12/level1/level1ProcessFilter/processimageDifferenceVisit/processimageDifferenceRaft/"
    "processimageDifferenceSensor",
    "DC1-DM12/level2",
    "DC1-DM12/level2/level2ProcessPatch",
    "DC1-DM12/level2/level2ProcessPatch/level2ProcessFilter",
    # Beside level2ProcessFilter: its streams come from level2SetupMeasureFilters, a script of
    # level2ProcessPatch that runs after mergeDetections.
    "DC1-DM12/level2/level2ProcessPatch/level2MeasureFilter",
    "DC1-DM12/level2/processForcedPhotometryVisit",
    "DC1-DM12/level2/processForcedPhotometryVisit/processForcedPhotometryRaft",
    "DC1-DM12/level2/processForcedPhotometryVisit/processForcedPhotometryRaft/processForcedPhotometrySensor",
    "DC1-DM12/processVisit",
    "DC1-DM12/processVisit/processRaft",
    "DC1-DM12/processVisit/processRaft/processSensor",
]

STREAMS_FROM = {
    "level1": "launchL1L2",
    "level2": "launchL1L2",
    "processVisit": "setupEimageVisits",
    "processRaft": "setupEimageRafts",
    "processSensor": "setupEimageSensors",
    "level1ProcessFilter": "level1SetupFilters",
    "level1ProcessPatch": "level1SetupPatches",
    "processimageDifferenceVisit": "setupImageDifferenceVisits",
    "processimageDifferenceRaft": "setupImageDifferenceRafts",
    "processimageDifferenceSensor": "setupImageDifferenceSensors",
    "level2ProcessPatch": "level2SetupPatches",
    "level2ProcessFilter": "level2SetupFilters",
    "level2MeasureFilter": "level2SetupMeasureFilters",
    "processForcedPhotometryVisit": "setupForcedPhotometryVisits",
    "processForcedPhotometryRaft": "setupForcedPhotometryRafts",
    "processForcedPhotometrySensor": "setupForcedPhotometrySensors",
}


def status_table() -> list[dict[str, str]]:
    with STATUS_TABLE.open(newline="") as stream:
        return list(csv.DictReader(stream, delimiter="\t"))


def test_every_task_and_process_of_the_status_table(graph: WorkflowGraph) -> None:
    expected = [(r["task"], r["version"], r["process"], r["type"]) for r in status_table()]
    assert len(expected) == 42
    assert graph.status_rows() == expected


def test_the_task_hierarchy(graph: WorkflowGraph) -> None:
    assert [t.path for t in graph.iter_tasks()] == HIERARCHY
    assert {t.name: t.streams_from for t in graph.iter_tasks() if t.streams_from} == STREAMS_FROM
    for task in graph.iter_tasks():
        for child in task.children:
            source = task.process(STREAMS_FROM[child.name])
            assert source.type == "script" and child.name in source.feeds


def test_variants_are_separate_dags(spec: WorkflowSpec) -> None:
    assert spec.variant_names == VARIANTS
    graphs = [build_graph(spec, variant) for variant in VARIANTS]
    assert [g.dag_id for g in graphs] == [f"DC1-DM12_{v}" for v in VARIANTS]
    assert {g.variables["repo"] for g in graphs} == {f"dc1/{v}/repo" for v in VARIANTS}
    for g, variant in zip(graphs, VARIANTS, strict=True):
        assert g.tags == ("desc", "DC1-DM12", "version:1.16", f"variant:{variant}")
    ingest = [g.root.process("serialingest").dm_command for g in graphs]
    assert len(set(ingest)) == 4 and "/DC1/phosim/undithered/raw/" in str(ingest[3])


def test_processes_carry_payloads_and_dm_commands(graph: WorkflowGraph) -> None:
    for process in graph.iter_processes():
        if process.type == "batch":
            assert process.emulated and process.dm_command, process.path
            assert process.resources is not None and process.resources.cluster in ("perlmutter", "s3df")
        else:
            assert process.callable and process.callable.startswith("airflow_desc.emulate.scripts:"), (
                process.path
            )
    eimage = graph.task("processSensor").process("processEimage")
    assert eimage.render_command({"visit": 2201, "raft": "R22", "sensor": "S11"}, dm=True) == (
        "processEimage.py dc1/imsim-dithered/repo --rerun dm12 --id visit=2201 raft=R22 sensor=S11 "
        "--configfile /global/common/software/lsst/cori-haswell-gcc/DC1/config/processEimage.py"
    )
    command = eimage.render_command({"visit": 2201, "raft": "R22", "sensor": "S11"})
    assert command.startswith(
        "python3 - --name processEimage-2201-R22-S11 --cpu-seconds 3.0 --memory-mb 1500.0 "
        "--output dc1/imsim-dithered/repo/rerun/dm12/calexp/v2201/R22/calexp_S11.fits "
    )
    assert "--fail traceback --fail-rate 0.012 --seed 1 <<'DESC_PAYLOAD_EOF'" in command
    launch = graph.root.process("launchL1L2")
    assert launch.render_kwargs() == {"level1": True, "level2": True}
    assert launch.feeds == ("level1", "level2")


def test_resources_are_realistic(graph: WorkflowGraph) -> None:
    def memory(task: str, process: str) -> int | None:
        resources = graph.task(task).process(process).resources
        assert resources is not None
        return resources.memory_mb

    assert memory("level1ProcessPatch", "level1AssembleCoadd") == memory(
        "level2ProcessFilter", "level2AssembleCoadd"
    )
    assert (memory("level1ProcessPatch", "level1AssembleCoadd") or 0) > 20000  # "> 20 GB coadd jobs"
    assert memory("processSensor", "processEimage") == 2000  # "2 GB per core"
    serialingest = graph.root.process("serialingest").resources
    assert serialingest is not None and serialingest.cpus == 16  # ingests in parallel


def test_dc1_skip_semantics(graph: WorkflowGraph) -> None:
    patch = {"filter": "r", "patch": "1,2"}
    assemble = graph.task("level1ProcessPatch").process("level1AssembleCoadd")
    wrapup_patch = graph.task("level1ProcessPatch").process("level1WrapupPatch")
    # DC1: level1AssembleCoadd's 1853 skips are level1MakeTempExpCoadd's 1497 failed + 356 terminated.
    for state in ("failed", "terminated"):
        assert assemble.skip_reason({"level1MakeTempExpCoadd": state}, patch) is not None
        # level1WrapupPatch: skipped 1854 = 1853 + the 1 terminated level1AssembleCoadd.
        assert wrapup_patch.skip_reason({"level1AssembleCoadd": "skipped"}, patch) is not None
    assert assemble.skip_reason({"level1MakeTempExpCoadd": "success"}, patch) is None
    assert wrapup_patch.skip_reason({"level1AssembleCoadd": "terminated"}) == Skip(
        "upstream-failed", "upstream level1AssembleCoadd terminated"
    )
    # report ran 15 of 15 though wrapup failed 6 and was skipped 9 times.
    report = graph.root.process("report")
    assert (
        report.skip_reason({"wrapup": "failed"}) is None and report.skip_reason({"wrapup": "skipped"}) is None
    )
    visits = graph.task("level1ProcessFilter").process("setupImageDifferenceVisits")
    assert visits.skip_reason({"level1ProcessPatch": "failed"}, {"filter": "r"}) is None
    off = {**graph.variables, "image_differencing": False}
    assert visits.skip_reason({"level1ProcessPatch": "success"}, {"filter": "r"}, off) == Skip(
        "skip-condition", "skip_if holds: not image_differencing"
    )


def test_output_checks(graph: WorkflowGraph) -> None:
    values = {**graph.variables, "visit": 2201, "raft": "R22", "sensor": "S11"}
    checks = graph.task("processSensor").process("processEimage").checks
    assert [c.kind for c in checks] == ["exists", "log_lacks"]
    assert checks[0].target(values) == "dc1/imsim-dithered/repo/rerun/dm12/calexp/v2201/R22/calexp_S11.fits"
    assert checks[1].failure_message(values) == "processEimage logged a PSF / detection failure but exited 0"
    with_checks = sorted(p.name for p in graph.iter_processes() if p.checks)
    assert with_checks == [
        "level1AssembleCoadd",
        "level2AssembleCoadd",
        "measureCoadd",
        "processEimage",
        "serialingest",
    ]


def test_bundling_at_full_scale(graph: WorkflowGraph) -> None:
    bundled = {t.name: t.bundling.bundle_size for t in graph.iter_tasks() if t.bundling.state == "bundle"}
    assert set(bundled) == {
        "level1ProcessPatch",
        "processimageDifferenceVisit",
        "level2ProcessPatch",
        "processVisit",
    }
    # Each sized for itself: about 64 batch instances (bundling.target_instances), level 2's
    # patches raised to keep a busy run within max_task_instances.
    assert bundled == {
        "processVisit": 15,  # 64 / (2.343 rafts x 1.774 sensors)
        "processimageDifferenceVisit": 64,  # ~1 sensor a visit
        "level1ProcessPatch": 32,  # 2 batch processes a patch
        "level2ProcessPatch": 11,  # 10 aims at 64 / 5.86; 11 keeps the run within 1000 TIs
    }
    assert "1000 task instances" in graph.task("level2ProcessPatch").bundling.reason
    inside = {t.name for t in graph.iter_tasks() if t.bundling.state == "in-bundle"}
    assert "processSensor" in inside and "level2MeasureFilter" in inside
    # setupEimageSensors, wrapupEimageRafts...: run by the bundle task, not task instances.
    assert graph.task("processRaft").process("setupEimageSensors").runs_as == "in-bundle"


def test_task_instances_of_the_full_dc1_campaign(graph: WorkflowGraph) -> None:
    estimate = estimate_task_instances(graph, runs=DC1_RUNS)
    print()
    print(estimate.format())
    assert estimate.total <= 20_000
    assert estimate.busy_run <= 1_000 and estimate.per_run <= 1_000
    bundles = {t.path.rpartition("/")[2]: t.in_busy_run for t in estimate.tasks}
    size = graph.task("processVisit").bundling.bundle_size
    assert size is not None and bundles["processVisit"] == math.ceil(5114.5 / size)


def test_task_instances_with_the_fanouts_of_the_status_table(graph: WorkflowGraph) -> None:
    streams = {row["task"]: int(row["total"]) for row in status_table()}
    parents = {t.name: graph.task(t.parent_path).name for t in graph.iter_tasks() if t.parent_path}
    fanout = {name: streams[name] / streams[parent] for name, parent in parents.items()}
    assert fanout["processVisit"] == 76717 / 15
    estimate = estimate_task_instances(graph, fanout, runs=DC1_RUNS)
    print()
    print(estimate.format())
    assert estimate.total <= 20_000 and estimate.busy_run <= 1_500
    spec_estimate = estimate_task_instances(graph, runs=DC1_RUNS)
    assert estimate.total == pytest.approx(spec_estimate.total, rel=0.01)
    by_path = {t.path: t for t in estimate.tasks}
    assert by_path[
        "DC1-DM12/processVisit/processRaft/processSensor"
    ].streams_per_run * DC1_RUNS == pytest.approx(318833)


@pytest.mark.parametrize(
    ("scale", "sizes"),
    [
        (0.01, {"processVisit": 15, "processimageDifferenceVisit": 64, "level2ProcessPatch": 10}),
        (0.1, {"processVisit": 15, "processimageDifferenceVisit": 64, "level2ProcessPatch": 10,
               "level1ProcessPatch": 32}),
    ],
)  # fmt: skip
def test_bundles_of_many_visits_and_patches_at_the_benchmark_scales(
    spec: WorkflowSpec, scale: float, sizes: dict[str, int]
) -> None:
    """Sensor-level work packs many visits per bundle; level 2's patches, a fan-out of 5+, are bundled."""
    graph = build_graph(spec, VARIANT, overrides={"scale": scale})
    bundled = {t.name: t.bundling.bundle_size for t in graph.iter_tasks() if t.bundling.state == "bundle"}
    assert bundled == sizes
    assert graph.task("processSensor").bundling.state == "in-bundle"
    assert graph.task("level2ProcessFilter").bundling.state == "in-bundle"
    # The levels and their thresholds stay where they were: launchL1L2 waits for half the visits.
    assert set(graph.root.process("launchL1L2").min_success) == {"processVisit"}
    forced = graph.task("level2").process("setupForcedPhotometryVisits").min_success
    assert {k: v.fraction for k, v in forced.items()} == {"level2ProcessPatch": 0.85}
    if scale == 0.01:  # 4 level-1 patches a run (104.6 x 0.01 x 3.5 filters): under the threshold
        assert graph.task("level1ProcessPatch").bundling.state == "none"
        assert "<= threshold 5" in graph.task("level1ProcessPatch").bundling.reason


def test_small_scale_for_tests(spec: WorkflowSpec) -> None:
    small = build_graph(spec, "phosim-dithered", overrides={"scale": 0.001})
    assert small.task("processVisit").expected_streams == pytest.approx(5.1145)
    assert small.task("processVisit").bundling.state == "bundle"  # bundle: always
    assert small.task("level2ProcessPatch").bundling.state == "none"
    estimate = estimate_task_instances(small)
    print()
    print(estimate.format())
    assert estimate.busy_run < 100
