"""The bundle planner, without Airflow: what one allocation runs, its manifest, its time limit.

The pyramid spec (``tests/data/specs/pyramid-bundle.yaml``: visit > raft > sensor, bundled) and
DC1's visit bundle; setup scripts run for real on this process, as on a worker.
"""

from __future__ import annotations

import functools
import json
import pathlib
import shlex
from typing import Any

import pytest

from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.operators.job_script import container_for
from airflow_desc.pilot import validate_manifest
from airflow_desc.slurm.script import CONTAINER_SUPERVISOR_NAME, container_supervisor, measured_payload
from airflow_desc.workflow.bundle_plan import CONTAINER_ENV, allocation_time_limit_s
from airflow_desc.workflow.bundle_planner import plan_bundle
from airflow_desc.workflow.registry import load_workflow
from airflow_desc.workflow.scripts import ScriptOutcome
from tests.unit.conftest import s3df_profile

ROOT = pathlib.Path(__file__).parents[3]
SITE = ROOT / "tests" / "data" / "clusters" / "site.yaml"
DC1_LOCAL = ROOT / "dags" / "workflows" / "dc1-local.yaml"


def variables(workflow: Any) -> dict[str, Any]:
    return workflow.spec.variables_for(None)


def test_a_plan_lists_every_batch_instance_with_its_dependencies(pyramid: Any) -> None:
    workflow, task = pyramid
    plan = plan_bundle(workflow, task, [{"visit": 1}, {"visit": 2}], variables(workflow))
    ids = [i.id for i in plan.instances]
    assert len(ids) == 2 * (1 + 2 * (1 + 2))  # 2 visits x (calibrate + 2 rafts x (assemble + 2 sensors))
    by_id = {i.id: i for i in plan.instances}
    sensor = next(i for i in plan.instances if i.process.name == "eimage" and i.stream["visit"] == 2)
    raft_id = f"visit=2/raft={sensor.stream['raft']}:assemble"
    # visit -> its rafts -> their sensors: through the setup scripts that depend on them.
    assert set(sensor.depends_on) == {"visit=2:calibrate", raft_id}
    assert by_id[raft_id].depends_on == ["visit=2:calibrate"]
    assert by_id["visit=2:calibrate"].depends_on == []
    # Setup scripts ran now; the wrapup waits for the allocation.
    phases = {(s.process.name, s.phase, s.outcome.state if s.outcome else None) for s in plan.scripts}
    assert phases == {("setupRafts", "before", "success"), ("setupSensors", "before", "success"),
                      ("wrapupRafts", "after", None)}  # fmt: skip
    manifest = validate_manifest(plan.manifest("b"))
    entry = next(e for e in manifest["instances"] if e["id"] == sensor.id)
    assert entry["stream"] == sensor.id.rpartition(":")[0] and entry["process"] == "eimage"
    assert (entry["cpus"], entry["memory_mb"], entry["walltime_s"]) == (1, 400, 600)
    assert entry["command"].startswith('python3 "$DESC_PAYLOAD" --name eimage-2-')
    assert by_id[raft_id].command == f"assemble 2 {sensor.stream['raft']}"
    # Members: everything below a stream, for its state.
    members = plan.members[("Pyramid/processVisit", "visit=2")]
    assert sensor.id in members and "visit=2:wrapupRafts" in members and "visit=2:setupRafts" in members


def test_run_time_estimates_reach_the_manifest_for_longest_first(pyramid: Any) -> None:
    workflow, task = pyramid
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    assert "estimate_s" not in json.dumps(plan.manifest("b"))  # none known: the spec's order
    # What the history says of each process; nonsense is no estimate.
    count = plan.set_estimates({"eimage": 42.5, "assemble": float("nan"), "calibrate": -1, "other": 9.0})
    assert count == len([i for i in plan.instances if i.process.name == "eimage"]) > 0
    entries = validate_manifest(plan.manifest("b"))["instances"]
    assert {e["process"]: e.get("estimate_s") for e in entries} == {
        "eimage": 42.5, "assemble": None, "calibrate": None
    }  # fmt: skip


def test_an_instance_whose_skip_condition_holds_is_skipped_before_the_allocation(pyramid: Any) -> None:
    workflow, task = pyramid
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    sensor = next(i for i in plan.instances if i.process.name == "eimage")
    values = {**variables(workflow), "skip_sensor": sensor.stream["sensor"]}
    plan = plan_bundle(workflow, task, [{"visit": 1}], values)
    skipped = plan.skipped[sensor.id]
    assert skipped[1:] == ("skip-condition", "skip_if holds: sensor == skip_sensor")
    assert sensor.id not in {i.id for i in plan.instances}


def test_a_failed_setup_script_leaves_its_streams_unmade(
    pyramid: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow, task = pyramid
    real = __import__("airflow_desc.emulate.scripts", fromlist=["make_streams"]).make_streams

    def flaky(kind: str, expected_streams: Any = None, **kw: Any) -> Any:
        if kind == "sensor" and kw.get("visit") == 2:
            raise OSError("no sensors listed for this raft")
        return real(kind, expected_streams, **kw)

    monkeypatch.setattr("airflow_desc.emulate.scripts.make_streams", flaky)
    from airflow_desc.workflow.scripts import import_callable

    import_callable.cache_clear()
    try:
        plan = plan_bundle(workflow, task, [{"visit": 1}, {"visit": 2}], variables(workflow))
    finally:
        import_callable.cache_clear()
    failed = [s for s in plan.scripts if s.outcome and s.outcome.state == "failed"]
    assert failed and all(s.process.name == "setupSensors" and s.stream["visit"] == 2 for s in failed)
    assert (
        failed[0].outcome is not None
        and failed[0].outcome.message == "OSError: no sensors listed for this raft"
    )
    assert not [i for i in plan.instances if i.process.name == "eimage" and i.stream["visit"] == 2]
    assert [i for i in plan.instances if i.process.name == "assemble" and i.stream["visit"] == 2]


def test_a_plan_is_rebuilt_from_the_scripts_outcomes_without_running_them(pyramid: Any) -> None:
    workflow, task = pyramid
    first = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    known = {s.id: s.outcome for s in first.scripts if s.outcome is not None}
    again = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow), known=known, run_scripts=False)
    assert [i.id for i in again.instances] == [i.id for i in first.instances]
    assert not any(s.ran_now for s in again.scripts)
    lost = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow), known={}, run_scripts=False)
    assert [i.id for i in lost.instances] == ["visit=1:calibrate"]


def test_the_dc1_visit_bundle_has_one_instance_per_sensor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(SITE))
    workflow = load_workflow(DC1_LOCAL, clusters=load_cluster_profiles(SITE))
    task = workflow.task("imsim-dithered", "DC1-DM12/processVisit")
    values = workflow.spec.variables_for("imsim-dithered", {"scale": 0.001})
    plan = plan_bundle(workflow, task, [{"visit": 2201}], values)
    sensors = [s for s in plan.scripts if s.process.name == "setupEimageSensors"]
    made = sum(len(s.outcome.feeds["processSensor"]) for s in sensors if s.outcome)
    assert len(plan.instances) == made >= 1
    assert all(i.process.name == "processEimage" and not i.depends_on for i in plan.instances)
    assert {s.process.name for s in plan.scripts if s.phase == "after"} == {
        "wrapupEimageSensors",
        "wrapupEimageRafts",
    }
    inst = plan.instances[0]
    assert (inst.process.resources.cpus, inst.process.resources.memory_mb) == (1, 2000)  # type: ignore[union-attr]
    assert "dc1/imsim-dithered/repo/rerun/dm12/calexp/v2201/" in inst.command


def test_the_allocation_asks_for_the_packed_work_within_the_limit(pyramid: Any) -> None:
    workflow, task = pyramid
    plan = plan_bundle(workflow, task, [{"visit": 1}, {"visit": 2}], variables(workflow))
    # 14 instances x 600 s on 2 cores, +10 %: 4620 s, above perlmutter's 30 minutes.
    assert allocation_time_limit_s(plan.instances, 2, 1800) == 1800
    assert allocation_time_limit_s(plan.instances[:1], 2, 1800) == 600
    assert allocation_time_limit_s([], 2, 1800) == 300


def test_script_outcomes_round_trip() -> None:
    outcome = ScriptOutcome("success", {"processRaft": ["R22", "R23"]}, None, "s", "e", 0.1)
    assert ScriptOutcome.from_json(json.loads(json.dumps(outcome.to_json()))) == outcome


def test_duplicate_instance_ids_are_refused(pyramid: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow, task = pyramid
    monkeypatch.setattr("airflow_desc.workflow.bundle_planner.instance_id", lambda stream, process: "same")
    with pytest.raises(WorkflowSpecError, match="share an id"):
        plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))


def test_a_rerun_selection_reruns_what_waits_for_it_in_the_bundle_and_nothing_else(pyramid: Any) -> None:
    workflow, task = pyramid
    plan = plan_bundle(workflow, task, [{"visit": 1}, {"visit": 2}], variables(workflow))
    sensor = next(i for i in plan.instances if i.process.name == "eimage" and i.stream["visit"] == 2)
    # A sensor: itself, and the wrapup of its visit (which waits for the rafts), not its siblings.
    assert plan.rerun_closure({sensor.id}) == {sensor.id, "visit=2:wrapupRafts"}
    # A visit's calibration: everything of that visit that waits for it, nothing of visit 1.
    closure = plan.rerun_closure({"visit=2:calibrate"})
    visit2 = {i.id for i in plan.instances if i.stream["visit"] == 2}
    assert closure == visit2 | {"visit=2:wrapupRafts"}
    # A setup script: itself and the batch instances of its stream and below.
    raft = next(s for s in plan.scripts if s.process.name == "setupSensors" and s.stream["visit"] == 1)
    below = {
        i.id for i in plan.instances if i.stream.get("raft") == raft.stream["raft"] and i.stream["visit"] == 1
    }
    assert plan.rerun_closure({raft.id}) == {raft.id, *below, "visit=1:wrapupRafts"}
    assert plan.rerun_closure({"visit=9:calibrate"}) == set()  # not this bundle's


EIMAGE = '                type: batch\n                skip_if: "sensor == skip_sensor"\n'


def test_each_instance_runs_in_its_own_processs_container(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (ROOT / "tests" / "data" / "specs" / "pyramid-bundle.yaml").read_text()
    assert EIMAGE in text
    path = tmp_path / "pyramid.yaml"
    path.write_text(
        text.replace(EIMAGE, EIMAGE + "                resources: {container: localhost/eimage:1}\n")
    )
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(SITE))
    workflow = load_workflow(path, clusters=load_cluster_profiles(SITE))
    plan = plan_bundle(
        workflow, workflow.task(None, "Pyramid/processVisit"), [{"visit": 1}], variables(workflow)
    )
    by_id = {i.id: i for i in plan.instances}
    podman = {"container_runtime": "podman", "container_options": ["--pull=never"]}
    for default in (None, "localhost/default:1"):
        profile = s3df_profile(**podman, container_image=default)
        manifest = plan.manifest("b", containers=functools.partial(container_for, profile), env=["MINE"])
        for entry in validate_manifest(manifest)["instances"]:
            inst = by_id[entry["id"]]
            image = "localhost/eimage:1" if inst.process.name == "eimage" else default
            assert entry.get("container") == image, entry
            if image is None:
                assert entry["command"] == inst.command
                continue
            words = shlex.split(entry["command"])
            # A shell that names the container and stops it when it is stopped (container_supervisor).
            assert words[:4] == ["bash", "-c", container_supervisor(), CONTAINER_SUPERVISOR_NAME]
            assert words[4:7] == ["podman", "--rm", "--pull=never"]
            assert entry["container_runtime"] == "podman"
            passed = [words[i + 1] for i, w in enumerate(words) if w == "--env"]
            assert passed == [*CONTAINER_ENV, "MINE", "DESC_USAGE_FILE"] and "DESC_PAYLOAD" in passed
            assert words[-4:] == [image, "bash", "-c", measured_payload(inst.command)]
    # Without containers (no cluster said how), the commands are the planner's own.
    assert all("container" not in e for e in plan.manifest("b")["instances"])
