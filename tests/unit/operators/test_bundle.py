"""SlurmBundleOperator's parts that need no cluster: the payload, collection, wrapups, the summary.

The collection (records -> process records, wrapup scripts, summary) runs against a fake hook that
returns a records file as the pilot writes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
from typing import Any

import pytest

from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.exceptions import SlurmJobFailed
from airflow_desc.history import JsonLinesRecorder, ProcessRecord
from airflow_desc.operators.bundle import SlurmBundleOperator
from airflow_desc.operators.bundle_collect import step_rows
from airflow_desc.operators.bundle_job import payload_lines
from airflow_desc.operators.bundle_logs import with_log_tails
from airflow_desc.operators.bundle_rerun import read_records
from airflow_desc.operators.slurm import FinishedJob
from airflow_desc.workflow.bundle_planner import bundle_command, plan_bundle
from tests.unit.workflow.test_bundle_plan import variables

ROOT = pathlib.Path(__file__).parents[3]
SITE = ROOT / "tests" / "data" / "clusters" / "site.yaml"
DC1_LOCAL = ROOT / "dags" / "workflows" / "dc1-local.yaml"


def test_an_emulated_payload_is_shipped_once(pyramid: Any) -> None:
    workflow, task = pyramid
    calibrate = task.process("calibrate")
    command = bundle_command(calibrate, {"visit": 1}, {"out": "a b", "skip_sensor": "S"})
    assert command.startswith('python3 "$DESC_PAYLOAD" --name calibrate-1 ')
    assert "--output 'a b/1.calib'" in command
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    lines = payload_lines(plan, "~/dir/payload.py")
    assert "cat > \"$HOME\"/dir/payload.py <<'DESC_PAYLOAD_EOF'" in lines
    assert lines.rstrip().endswith('export DESC_PAYLOAD="$HOME"/dir/payload.py')


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

    def read_tails(self, paths: list[str], **_: Any) -> list[str]:
        self.commands.append(f"tails {' '.join(paths)}")
        return [f"the end of {path}\npassword=hunter22\n" for path in paths]

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
        "launcher": "direct", "job_id": job_id, **extra,
        "log_path": f"/home/desc/elsewhere/logs/{re.sub('[/:]', '_', inst.id)}.log",
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
    # As SlurmOperator._submit saves it: the log is in the task instance's own directory.
    log_path = "airflow-desc/d/r/processVisit.bundle.0/t1-900.out"
    store.set("slurm", {"job_id": "900", "log_path": log_path, "try_number": 1})
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
    # Each log's end, read in one call from this task's own logs/ (never where a record says), redacted.
    [tails] = [c for c in hook.commands if c.startswith("tails ")]
    own = "~/airflow-desc/d/r/processVisit.bundle.0/logs/"
    assert all(path.startswith(own) for path in tails.split()[1:])
    failed = recs[(failing.id.rpartition(":")[0], "assemble")]
    assert failed.log_tail == f"the end of {own}{re.sub('[/:]', '_', failing.id)}.log\npassword=[REDACTED]\n"
    assert recs[(unfinished.id.rpartition(":")[0], "eimage")].log_tail is None  # never ran: no log
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
    latest, mine = read_records(Hook(text), "~/r.jsonl", "2", "failed")  # type: ignore[arg-type]
    assert set(mine) == {b.id} and latest[a.id]["state"] == "success"
    latest, mine = read_records(Hook(text), "~/r.jsonl", "2", "all")  # type: ignore[arg-type]
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


def visit_one_bundle(workflow: Any, task: Any, **kwargs: Any) -> tuple[Any, SlurmBundleOperator, Store, Any]:
    """Visit 1's bundle planned, its operator, and a context whose store holds its scripts' outcomes."""
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    op = SlurmBundleOperator(
        task_id="processVisit.bundle", workflow_key=workflow.key, variant=None, bundle_task=task.path,
        streams=[{"visit": 1}], cluster="perlmutter", launcher="direct", **kwargs,
    )  # fmt: skip
    store = Store()
    ctx: Any = {"ti": TI(), "task_state_store": store, "dag_run": type("R", (), {"conf": {}})(), "params": {}}
    op._save_bundle_state(ctx, {"scripts": {s.id: s.outcome.to_json() for s in plan.scripts if s.outcome}})
    return plan, op, store, ctx


def test_a_job_counts_as_recorded_only_once_its_instances_are(
    pyramid: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(tmp_path / "history.jsonl"))
    workflow, task = pyramid
    plan, op, store, ctx = visit_one_bundle(workflow, task)

    class Unreachable(Hook):
        def run(self, command: str, **_: Any) -> Any:
            raise OSError("connection lost")

    with pytest.raises(OSError, match="connection lost"):
        op._finish(ctx, FinishedJob(Unreachable(""), op._profile(), _accounting("901", "COMPLETED", "0:0")))  # type: ignore[arg-type]
    assert "901" not in (store.values.get("slurm") or {}).get("recorded", [])
    text = "\n".join(pilot_record(i, "success", job_id="901") for i in plan.instances) + "\n"
    summary = op._finish(ctx, FinishedJob(Hook(text), op._profile(), _accounting("901", "COMPLETED", "0:0")))  # type: ignore[arg-type]
    assert summary["streams"] == {"visit=1": "success"} and summary["counts"] == {
        "success": len(plan.instances) + len(plan.scripts)
    }
    assert store.values["slurm"]["recorded"] == ["901"]


def test_the_manifest_gets_run_time_estimates_from_the_history(
    pyramid: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workflow, task = pyramid
    name = workflow.graph(None).name
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    op = SlurmBundleOperator(
        task_id="processVisit.bundle", workflow_key=workflow.key, variant=None, bundle_task=task.path,
        streams=[{"visit": 1}], cluster="perlmutter",
    )  # fmt: skip
    history = tmp_path / "history.jsonl"
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(history))
    eimage = next(i for i in plan.instances if i.process.name == "eimage")
    done = ProcessRecord(workflow=name, process="eimage", state="success", stream="visit=0", elapsed_s=30.0)
    JsonLinesRecorder(history).record([done, dataclasses.replace(done, stream="visit=9", elapsed_s=50.0)])
    op._estimate(plan)
    assert eimage.estimate_s == 40.0
    assert {i.estimate_s for i in plan.instances if i.process.name != "eimage"} == {None}
    # A history that cannot be read is only a lost hint: the bundle runs in the spec's order.
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(tmp_path))  # a directory: reading it fails
    op._estimate(plan)
    assert eimage.estimate_s == 40.0  # left as it was
    assert "no run-time estimates from the history" in capsys.readouterr().out  # the task log


def test_instances_whose_logs_cannot_be_read_keep_the_pilots_own_lines_redacted() -> None:
    from airflow_desc.exceptions import ClusterUnreachable
    from airflow_desc.history import ProcessRecord

    class Unreachable:
        def read_tails(self, paths: list[str], **_: Any) -> list[str]:
            raise ClusterUnreachable("perlmutter: connection lost")

    records = [
        ProcessRecord(workflow="w", process="p", state="failed", stream="visit=1", log_path="/x/logs/a.log",
                      log_tail="token=abc123xyz\nTraceback ...\n"),
        ProcessRecord(workflow="w", process="p", state="skipped", stream="visit=2"),
    ]  # fmt: skip
    log = logging.getLogger(__name__)
    out = with_log_tails(Unreachable(), "~/task", records, [], log)  # type: ignore[arg-type]
    assert [r.log_tail for r in out] == ["token=[REDACTED]\nTraceback ...\n", None]


class CountingHook(Hook):
    """Counts sacct calls; sacct answers ``fresh``."""

    def __init__(self, fresh: Any = None) -> None:
        super().__init__("")
        self.fresh, self.sacct_calls = fresh, 0

    def sacct(self, job_ids: list[str]) -> dict[str, Any]:
        self.sacct_calls += 1
        return {self.fresh.job_id: self.fresh} if self.fresh is not None else {}


def _with_steps(job_id: str, names: list[str]) -> Any:
    from airflow_desc.slurm import group_accounting, parse_sacct

    lines = [f"{job_id}|alloc|COMPLETED|0:0", f"{job_id}.batch|batch|COMPLETED|0:0"]
    lines += [f"{job_id}.{n}|{name}|COMPLETED|0:0" for n, name in enumerate(names)]
    return group_accounting(parse_sacct("\n".join(lines), ("JobID", "JobName", "State", "ExitCode")))[job_id]


def test_step_rows_come_from_the_accounting_at_hand_when_it_has_every_started_step(pyramid: Any) -> None:
    """The trigger's event carries the steps: no sacct between the job's end and the task's success."""
    from airflow_desc.pilot import step_name

    workflow, task = pyramid
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    a, b, c = plan.instances[:3]
    mine = {a.id: {"state": "success"}, b.id: {"state": "failed"}, c.id: {"state": "skipped"}}  # c: no step
    op = SlurmBundleOperator(task_id="t", workflow_key=workflow.key, variant=None, bundle_task=task.path)
    hook = CountingHook()
    at_hand = _with_steps("900", [step_name(a.id), step_name(b.id)])
    steps = step_rows(hook, at_hand, mine, launcher=op.launcher)  # type: ignore[arg-type]
    assert set(steps) >= {step_name(a.id), step_name(b.id)} and hook.sacct_calls == 0

    # A step the accounting lacks (slurmdbd had not written it yet): sacct is asked again.
    hook = CountingHook(_with_steps("900", [step_name(a.id), step_name(b.id)]))
    steps = step_rows(hook, _with_steps("900", [step_name(a.id)]), mine, launcher=op.launcher)  # type: ignore[arg-type]
    assert step_name(b.id) in steps and hook.sacct_calls == 1

    # The direct launcher has no steps to read.
    direct = SlurmBundleOperator(
        task_id="t", workflow_key=workflow.key, variant=None, bundle_task=task.path, launcher="direct"
    )
    assert step_rows(hook, _with_steps("900", []), mine, launcher=direct.launcher) == {}  # type: ignore[arg-type]


def test_an_allocation_moved_to_a_fallback_asks_for_a_whole_node_of_the_fallback(pyramid: Any) -> None:
    workflow, task = pyramid
    op = SlurmBundleOperator(
        task_id="processVisit.bundle", workflow_key=workflow.key, variant=None, bundle_task=task.path,
        streams=[{"visit": 1}], cluster="perlmutter", fallback_clusters=["s3df"], partition="regular",
    )  # fmt: skip
    op._plan_for_submit = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    clusters = load_cluster_profiles(SITE)
    home, fallback = (op._resources(clusters.get(name), {}) for name in ("perlmutter", "s3df"))
    assert (home["cpus"], home["mem_mb"], home["partition"]) == (2, 4096, "regular")
    assert (fallback["cpus"], fallback["mem_mb"], fallback["partition"]) == (1, 8192, "roma")


def test_an_allocation_on_a_fallback_says_so_in_each_record(
    pyramid: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = tmp_path / "history.jsonl"
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(history))
    workflow, task = pyramid
    plan = plan_bundle(workflow, task, [{"visit": 1}], variables(workflow))
    op = SlurmBundleOperator(
        task_id="processVisit.bundle", workflow_key=workflow.key, variant=None, bundle_task=task.path,
        streams=[{"visit": 1}], cluster="perlmutter", fallback_clusters=["s3df"], launcher="direct",
    )  # fmt: skip
    store = Store()
    ctx: Any = {"ti": TI(), "task_state_store": store, "dag_run": type("R", (), {"conf": {}})(), "params": {}}
    op._save_bundle_state(ctx, {"scripts": {s.id: s.outcome.to_json() for s in plan.scripts if s.outcome}})
    moved = {
        "from": "perlmutter",
        "to": "s3df",
        "why": "maintenance",
        "reason": "perlmutter cannot take it now",
    }
    log_path = "airflow-desc/d/r/processVisit.bundle.0/t1-900.out"
    store.set(
        "slurm",
        {"job_id": "900", "log_path": log_path, "try_number": 1, "cluster": "s3df", "fallback": moved},
    )
    hook = Hook("\n".join(pilot_record(inst, "success") for inst in plan.instances) + "\n")
    op._state(ctx)  # as execute_complete reads it first: the allocation is on s3df
    op._conclude(ctx, hook, op._profile(), _accounting("900", "COMPLETED", "0:0"), plan)  # type: ignore[arg-type]
    batch = [r for r in JsonLinesRecorder(history).read() if r.process_type == "batch"]
    assert len(batch) == len(plan.instances) and {r.cluster for r in batch} == {"s3df"}
    assert all(r.extra["fallback"] == moved for r in batch)


def test_a_bundle_taken_over_waits_for_the_job_that_took_it_and_collects_from_it(
    pyramid: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own job (900) ended without running: its claim names 955, whose pilot ran its instances."""
    from airflow.sdk.exceptions import TaskDeferred

    monkeypatch.setenv("DESC_HISTORY_JSONL", str(tmp_path / "history.jsonl"))
    workflow, task = pyramid
    plan, op, store, ctx = visit_one_bundle(workflow, task, take_over=True)
    store.set("slurm", {"job_id": "900", "log_path": "airflow-desc/d/r/processVisit.bundle.0/t1-900.out",
                        "try_number": 1})  # fmt: skip

    class Claimed(Hook):
        def read_tail(self, path: str, lines: int = 60, max_bytes: int = 0) -> str:
            if path.endswith("/claim-900"):
                assert path == "~/airflow-desc/d/r/processVisit.bundle.0/claim-900"
                return "955\n"
            return super().read_tail(path, lines)

        def owners(self, job_ids: list[str]) -> dict[str, Any]:
            from airflow_desc.slurm.ownership import JobOwner

            return {job: JobOwner(job, "bundle.1f2e3d4c5b6a.t3", 1001, None) for job in job_ids}

    text = "\n".join(pilot_record(i, "success", job_id="955") for i in plan.instances) + "\n"
    with pytest.raises(TaskDeferred) as deferred:
        op._finish(ctx, FinishedJob(Claimed(text), op._profile(), _accounting("900", "CANCELLED", "0:0")))  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert (trigger.job_id, trigger.cancel_on_kill) == ("955", False)  # never cancelled for this task
    assert "900" not in store.values["slurm"].get("recorded", [])  # until 955 is collected
    from airflow_desc.slurm import group_accounting, parse_sacct

    fields = ("JobID", "JobName", "State", "ExitCode")
    thief = group_accounting(parse_sacct("955|bundle.1f2e3d4c5b6a.t3|COMPLETED|0:0", fields))["955"]
    summary = op._finish(ctx, FinishedJob(Claimed(text), op._profile(), thief))  # type: ignore[arg-type]
    assert summary["job_id"] == "955" and summary["counts"] == {
        "success": len(plan.instances) + len(plan.scripts)
    }
    assert store.values["slurm"]["recorded"] == ["955", "900"]
    batch = [r for r in JsonLinesRecorder(tmp_path / "history.jsonl").read() if r.process_type == "batch"]
    assert {(r.job_id, r.try_number) for r in batch} == {("955", 1)}  # this task's try, not 955's (.t3)
    # The job that took it over cancelled (its own task cleared): this bundle's instances ended with it,
    # a failure to retry, not "cancelled by its own user" (that was another task's job).
    store.set("slurm", {**store.values["slurm"], "recorded": []})
    cut = "\n".join(pilot_record(i, "success", job_id="956") for i in plan.instances[:-1]) + "\n"
    with pytest.raises(SlurmJobFailed, match="terminated") as failed:
        op._finish(
            ctx, FinishedJob(Claimed(cut), op._profile(), _accounting("956", "CANCELLED by 1001", "0:15"))
        )  # type: ignore[arg-type]
    assert "its own user" not in str(failed.value)
    # Without take_over the claim is never read: the job's end is the bundle's.
    op.take_over = False
    assert (
        op._taken_by(ctx, FinishedJob(Claimed(text), op._profile(), _accounting("900", "CANCELLED", "0:0")))
        is None
    )  # type: ignore[arg-type]
