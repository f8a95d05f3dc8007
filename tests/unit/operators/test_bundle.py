"""SlurmBundleOperator's parts that need no cluster: the plan, the manifest, output checks, collection.

The collection (records -> process records, wrapup scripts, summary) runs against a fake hook that
returns a records file as the pilot writes it.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from typing import Any

import pytest

from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.exceptions import SlurmJobFailed, WorkflowSpecError
from airflow_desc.history import JsonLinesRecorder
from airflow_desc.operators.bundle import SlurmBundleOperator
from airflow_desc.operators.bundle_records import refine_reason
from airflow_desc.operators.output_checks import CheckRequest, output_checks_command, parse_output_checks
from airflow_desc.pilot import validate_manifest
from airflow_desc.workflow import parse_spec
from airflow_desc.workflow.bundle_plan import allocation_time_limit_s, bundle_command, plan_bundle
from airflow_desc.workflow.registry import workflow_for
from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.scripts import ScriptOutcome

ROOT = pathlib.Path(__file__).parents[3]
SITE = ROOT / "tests" / "data" / "clusters" / "site.yaml"
DC1_LOCAL = ROOT / "dags" / "workflows" / "dc1-local.yaml"

PYRAMID = (ROOT / "tests" / "data" / "specs" / "pyramid-bundle.yaml").read_text()


@pytest.fixture
def pyramid(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> Any:
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(SITE))
    spec = parse_spec(PYRAMID, f"{tmp_path}/pyramid.yaml")
    render_dags(spec, clusters=load_cluster_profiles(SITE))
    workflow = workflow_for(spec.source)
    return workflow, workflow.task(None, "Pyramid/processVisit")


def variables(workflow: Any) -> dict[str, Any]:
    return workflow.spec.variables_for(None)


# --- the plan -----------------------------------------------------------------------------------------


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
    render_dags(DC1_LOCAL, clusters=load_cluster_profiles(SITE))
    workflow = workflow_for(str(DC1_LOCAL.resolve()))
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


def test_an_emulated_payload_is_shipped_once(pyramid: Any) -> None:
    workflow, task = pyramid
    calibrate = task.process("calibrate")
    command = bundle_command(calibrate, {"visit": 1}, {"out": "a b", "skip_sensor": "S"})
    assert command.startswith('python3 "$DESC_PAYLOAD" --name calibrate-1 ')
    assert "--output 'a b/1.calib'" in command
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    lines = SlurmBundleOperator._payload_lines(plan, "~/dir/payload.py")
    assert "cat > \"$HOME\"/dir/payload.py <<'DESC_PAYLOAD_EOF'" in lines
    assert lines.rstrip().endswith('export DESC_PAYLOAD="$HOME"/dir/payload.py')


# --- output checks ----------------------------------------------------------------------------------


def test_output_checks_run_in_the_work_dir(tmp_path: pathlib.Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.fits").write_text("data")
    (tmp_path / "out" / "empty.fits").write_text("")
    log = tmp_path / "job.log"
    log.write_text("all fine\nPSF determination failed\n")
    requests = [
        CheckRequest("ok", "exists", "out/a.fits", message="missing a"),
        CheckRequest("ok", "non_empty", "out/a.fits", message="empty a"),
        CheckRequest("ok", "glob", "out/*.fits", min_count=2, message="too few"),
        CheckRequest("empty", "non_empty", "out/empty.fits", message="out/empty.fits is empty"),
        CheckRequest("absent", "exists", "out/b.fits", message="out/b.fits does not exist"),
        CheckRequest("cmd", "command", "test -s out/empty.fits", message="validation failed"),
        CheckRequest(
            "log", "log_lacks", "PSF determination failed|Zero sources", message="PSF", log=str(log)
        ),
    ]
    payload = json.dumps([r.__dict__ for r in requests])
    proc = subprocess.run(
        ["bash", "-c", output_checks_command(str(tmp_path))],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
    )
    assert parse_output_checks(proc.stdout) == {
        "empty": "out/empty.fits is empty",
        "absent": "out/b.fits does not exist",
        "cmd": "validation failed",
        "log": "PSF",
    }
    with pytest.raises(ValueError, match="printed no result"):
        parse_output_checks("bash: python3: command not found")


# --- reasons -----------------------------------------------------------------------------------------


def test_a_failed_instances_reason_comes_from_its_log_tail() -> None:
    record = {
        "id": "visit=1:eimage",
        "reason": "non-zero-exit",
        "exit_code": 1,
        "log_tail": "airflow-desc-pilot: visit=1:eimage starting\nTraceback (most recent call last):\n"
        '  File "x.py", line 1\nRuntimeError: PSF determination failed: too few stars\n'
        "airflow-desc-pilot: visit=1:eimage failed",
    }
    reason, message = refine_reason(record, "77")
    assert reason == "python-exception"
    assert message is not None and message.startswith(
        "visit=1:eimage raised RuntimeError: PSF determination failed"
    )
    segv = {"id": "i", "reason": "non-zero-exit", "exit_code": None, "signal": 11, "log_tail": ""}
    assert refine_reason(segv, "77")[0] == "segfault"
    assert refine_reason({"reason": "time-limit", "message": "m"}, "77") == ("time-limit", "m")


# --- collection, wrapups, summary ---------------------------------------------------------------------


class Store:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any, retention: Any = None) -> None:
        self.values[key] = json.loads(json.dumps(value))


class TI:
    dag_id, run_id, task_id, map_index, try_number = "d", "r", "processVisit.bundle", 0, 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, **_: Any) -> Any:
        return None


class Hook:
    """Answers what collection asks the cluster: the records file, the checks, the job log."""

    def __init__(self, records: str, failed_checks: dict[str, str] | None = None) -> None:
        self.records, self.failed_checks, self.commands = records, failed_checks or {}, []

    def run(self, command: str, **_: Any) -> Any:
        self.commands.append(command)
        out = self.records if command.startswith("cat ") else "DESC_CHECKS " + json.dumps(self.failed_checks)
        return type("Result", (), {"stdout": out, "stderr": "", "returncode": 0})()

    def sacct(self, job_ids: list[str]) -> dict[str, Any]:
        return {}

    def read_tail(self, path: str, lines: int = 60) -> str:
        summary = {"cores": 2, "wall_s": 10.0, "core_s_allocated": 20.0, "core_s_held": 18.0, "cpu_s": 17.0}
        return f"airflow-desc-pilot: summary {json.dumps(summary)}\n"


def pilot_record(inst: Any, state: str, job_id: str = "900", **extra: Any) -> str:
    record = {
        "id": inst.id, "stream": inst.id.rpartition(":")[0], "process": inst.process.name, "state": state,
        "reason": None if state == "success" else "non-zero-exit",
        "exit_code": 0 if state == "success" else 2,
        "start": "2026-11-28T01:00:00.000+00:00", "end": "2026-11-28T01:00:05.000+00:00", "elapsed_s": 5.0,
        "total_cpu_s": 4.9, "max_rss_bytes": 2**27, "node": "pm-n1", "cpus": 1, "memory_mb": 400,
        "launcher": "direct", "job_id": job_id, "log_path": f"/logs/{inst.id}.log", **extra,
    }  # fmt: skip
    return json.dumps(record)


def test_collection_records_every_instance_runs_the_wrapups_and_fails_on_a_failure(
    pyramid: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = tmp_path / "history.jsonl"
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(history))
    workflow, task = pyramid
    streams = [{"visit": 1}, {"visit": 2}]
    plan = plan_bundle(workflow, task, streams, variables(workflow))
    op = SlurmBundleOperator(
        task_id="processVisit.bundle", workflow_key=workflow.key, variant=None, bundle_task=task.path,
        streams=streams, cluster="perlmutter", launcher="direct",
    )  # fmt: skip
    store, ti = Store(), TI()
    ctx: Any = {"ti": ti, "task_state_store": store, "dag_run": type("R", (), {"conf": {}})(), "params": {}}
    op._save_bundle_state(ctx, {"scripts": {s.id: s.outcome.to_json() for s in plan.scripts if s.outcome}})
    store.set("slurm", {"job_id": "900", "log_path": "~/job-900.out", "try_number": 1})
    visit2 = [i for i in plan.instances if i.stream["visit"] == 2]
    failing = next(i for i in visit2 if i.process.name == "assemble")
    unfinished = next(
        i for i in visit2 if i.process.name == "eimage" and i.stream["raft"] != failing.stream["raft"]
    )
    lines = []
    for inst in plan.instances:
        if inst is failing:
            lines.append(pilot_record(inst, "failed", log_tail="FATAL: raft assembly failed"))
        elif (
            inst is not unfinished
            and inst.stream.get("raft") == failing.stream["raft"]
            and inst.process.name == "eimage"
        ):
            lines.append(pilot_record(inst, "skipped"))
        elif inst is not unfinished:
            lines.append(pilot_record(inst, "success"))
    first_sensor = next(i for i in plan.instances if i.process.name == "eimage" and i.stream["visit"] == 1)
    hook = Hook("\n".join(lines) + "\n", failed_checks={first_sensor.id: "no output"})
    accounting = _accounting("900", "FAILED", "1:0")
    with pytest.raises(SlurmJobFailed, match=r"bundle visit=1 \+1: .*failed.*terminated"):
        op._conclude(ctx, hook, op._profile(), accounting, plan)  # type: ignore[arg-type]
    recs = {(r.stream, r.process): r for r in JsonLinesRecorder(history).read()}
    assert recs[(failing.id.rpartition(":")[0], "assemble")].state == "failed"
    assert recs[(unfinished.id.rpartition(":")[0], "eimage")].state == "terminated"
    assert recs[(first_sensor.id.rpartition(":")[0], "eimage")].state == "failed"  # its output check
    assert recs[(first_sensor.id.rpartition(":")[0], "eimage")].reason == "output-check"
    # Every batch instance and every script has a record; the wrapup of visit 2 was skipped.
    assert len([r for r in recs.values() if r.process_type == "batch"]) == len(plan.instances)
    assert recs[("visit=2", "wrapupRafts")].state == "skipped"
    assert recs[("visit=2", "wrapupRafts")].reason == "upstream-failed"
    assert recs[("visit=1", "wrapupRafts")].state == "skipped"  # the failed output check
    summary = ti.pushed["bundle_summary"]
    assert summary["streams"] == {"visit=1": "failed", "visit=2": "failed"}
    assert summary["utilisation"]["core_s_held"] == 18.0
    assert summary["process_instances"] == len(plan.instances) + len(plan.scripts)
    # The wrapups' outcomes are kept, so that a rerun does not rerun a wrapup that succeeded.
    assert set(store.values["bundle"]["scripts"]) >= {"visit=1:wrapupRafts", "visit=2:wrapupRafts"}


def _accounting(job_id: str, state: str, exit_code: str) -> Any:
    from airflow_desc.slurm import group_accounting, parse_sacct

    text = f"{job_id}|{state}|{exit_code}"
    return group_accounting(parse_sacct(text, ("JobID", "State", "ExitCode")))[job_id]


def test_only_this_jobs_records_are_recorded_and_earlier_successes_count_as_done(pyramid: Any) -> None:
    workflow, task = pyramid
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    a, b = plan.instances[:2]
    text = "\n".join([pilot_record(a, "success", job_id="1"), pilot_record(b, "failed", job_id="1"),
                      pilot_record(b, "success", job_id="2")])  # fmt: skip
    op = SlurmBundleOperator(task_id="t", workflow_key=workflow.key, variant=None, bundle_task=task.path)
    latest, mine = op._read_records(Hook(text), "~/r.jsonl", "2", "failed")  # type: ignore[arg-type]
    assert set(mine) == {b.id} and latest[a.id]["state"] == "success"
    latest, mine = op._read_records(Hook(text), "~/r.jsonl", "2", "all")  # type: ignore[arg-type]
    assert set(latest) == {b.id}


def test_the_operator_refuses_unknown_settings(pyramid: Any) -> None:
    workflow, task = pyramid
    common = {"task_id": "t", "workflow_key": workflow.key, "variant": None, "bundle_task": task.path}
    with pytest.raises(ValueError, match="launcher must be one of srun, direct"):
        SlurmBundleOperator(launcher="mpirun", **common)
    with pytest.raises(ValueError, match="rerun must be 'failed' or 'all'"):
        SlurmBundleOperator(rerun="some", **common)
    op = SlurmBundleOperator(streams=[{"visit": 1}, {"visit": 2}], **common)
    assert op._label() == "visit=1 +1" and op.retries == 0
    conf = {"dag_run": type("R", (), {"conf": {"desc_rerun": "all"}})()}
    assert op._rerun_mode(conf) == "all"  # type: ignore[arg-type]


def test_script_outcomes_round_trip() -> None:
    outcome = ScriptOutcome("success", {"processRaft": ["R22", "R23"]}, None, "s", "e", 0.1)
    assert ScriptOutcome.from_json(json.loads(json.dumps(outcome.to_json()))) == outcome


def test_duplicate_instance_ids_are_refused(pyramid: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    workflow, task = pyramid
    monkeypatch.setattr("airflow_desc.workflow.bundle_plan.instance_id", lambda stream, process: "same")
    with pytest.raises(WorkflowSpecError, match="share an id"):
        plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))


def test_a_job_counts_as_recorded_only_once_its_instances_are(
    pyramid: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(tmp_path / "history.jsonl"))
    workflow, task = pyramid
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    op = SlurmBundleOperator(
        task_id="processVisit.bundle", workflow_key=workflow.key, variant=None, bundle_task=task.path,
        streams=[{"visit": 1}], cluster="perlmutter", launcher="direct",
    )  # fmt: skip
    store, ti = Store(), TI()
    ctx: Any = {"ti": ti, "task_state_store": store, "dag_run": type("R", (), {"conf": {}})(), "params": {}}
    op._save_bundle_state(ctx, {"scripts": {s.id: s.outcome.to_json() for s in plan.scripts if s.outcome}})

    class Unreachable(Hook):
        def run(self, command: str, **_: Any) -> Any:
            raise OSError("connection lost")

    with pytest.raises(OSError, match="connection lost"):
        op._finish(ctx, Unreachable(""), op._profile(), _accounting("901", "COMPLETED", "0:0"))  # type: ignore[arg-type]
    assert "901" not in (store.values.get("slurm") or {}).get("recorded", [])
    text = "\n".join(pilot_record(i, "success", job_id="901") for i in plan.instances) + "\n"
    summary = op._finish(ctx, Hook(text), op._profile(), _accounting("901", "COMPLETED", "0:0"))  # type: ignore[arg-type]
    assert summary["streams"] == {"visit=1": "success"} and summary["counts"] == {
        "success": len(plan.instances) + len(plan.scripts)
    }
    assert store.values["slurm"]["recorded"] == ["901"]
