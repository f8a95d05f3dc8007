"""The pilot on the real site: one perlmutter allocation (2 cores) running a bundle of instances.

Each job's script is :func:`bundle_job_command` inside :func:`render_job_script`, submitted over
ssh like the bundle operator will; the records come back with ``cat`` over ssh and, for srun steps,
are checked against ``sacct``.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_desc.emulate import payload_command
from airflow_desc.pilot import bundle_job_command, parse_records, parse_summary
from airflow_desc.slurm import JobSpec, render_job_script
from tests.integration.site import NODES, Site
from tests.waiting import wait_for

CLUSTER = "perlmutter"
STEP_FIELDS = "JobName,ExitCode,TotalCPU,MaxRSS"
BURN = {"processVisit": 1.0, "processEimage": 1.5, "visitSummary": 1.0}
HOLD_MB = {"processVisit": 150, "processEimage": 120, "visitSummary": 100}


def payload(name: str, process: str) -> str:
    return payload_command(
        "--name", name, "--cpu-seconds", str(BURN[process]), "--memory-mb", str(HOLD_MB[process])
    )  # fmt: skip


def dc1_like_bundle() -> list[dict[str, Any]]:
    """Two visits, each -> two sensors -> a summary: 8 instances in three levels."""
    instances: list[dict[str, Any]] = []
    for visit in (1, 2):
        v = f"visit={visit}"
        instances.append({"id": f"{v}:processVisit", "command": payload(v, "processVisit")})
        sensors = [f"{v}/raft=R22/sensor=S{s}:processEimage" for s in (11, 12)]
        for sensor in sensors:
            command = payload(sensor, "processEimage")
            instances.append({"id": sensor, "command": command, "depends_on": [f"{v}:processVisit"]})
        instances.append(
            {"id": f"{v}:visitSummary", "command": payload(v, "visitSummary"), "depends_on": sensors}
        )
    for inst in instances:
        inst.update(stream=inst["id"].rpartition(":")[0], process=inst["id"].rpartition(":")[2])
        inst.update(cpus=1, memory_mb=400)
    return instances


@pytest.fixture
def remote_dir(site: Site) -> Iterator[str]:
    home = site.run(CLUSTER, "echo $HOME").stdout.strip()
    path = f"{home}/pilot-it/{uuid.uuid4().hex[:10]}"
    site.run(CLUSTER, f"mkdir -p {shlex.quote(path)}")
    yield path
    site.run(CLUSTER, f"rm -rf {shlex.quote(path)}", check=False)


def submit_bundle(site: Site, remote: str, instances: list[dict[str, Any]], launcher: str) -> str:
    command = bundle_job_command(
        json.dumps({"bundle": f"it-{launcher}", "instances": instances}),
        launcher=launcher,
        records_path=f"{remote}/records.jsonl",
        logs_dir=f"{remote}/logs",
        kill_grace_s=3,
    )
    spec = JobSpec(
        job_name=f"pilot-it-{launcher}", command=command, cpus_per_task=2, mem_mb=3000, time_limit_s=300,
        output=f"{remote}/job-%j.out", signal="B:TERM@30",
    )  # fmt: skip
    return site.sbatch(CLUSTER, render_job_script(spec))


def read_back(site: Site, remote: str, job_id: str) -> tuple[dict[str, dict[str, Any]], str]:
    records = parse_records(site.run(CLUSTER, f"cat {shlex.quote(remote)}/records.jsonl").stdout)
    log = site.run(CLUSTER, f"cat {shlex.quote(remote)}/job-{job_id}.out").stdout
    return {r["id"]: r for r in records}, log


def utilisation(log: str) -> str:
    line = next(x for x in log.splitlines() if x.startswith("airflow-desc-pilot: utilisation"))
    print(line)
    return line


def is_step(row: dict[str, str]) -> bool:
    """A numbered step (``1234.5``), not the job, its ``batch`` or its ``extern`` step."""
    return bool(re.fullmatch(r"\d+\.\d+", row["JobID"]))


def seconds(sacct_time: str) -> float:
    minutes, secs = sacct_time.split(":")[-2:]
    return int(minutes) * 60 + float(secs)


@pytest.mark.parametrize("launcher", ["srun", "direct"])
def test_a_bundle_runs_packed_in_one_allocation(site: Site, remote_dir: str, launcher: str) -> None:
    instances = dc1_like_bundle()
    started = time.monotonic()
    job_id = submit_bundle(site, remote_dir, instances, launcher)
    rows = site.wait_done(CLUSTER, job_id, STEP_FIELDS, timeout=180)
    recs, log = read_back(site, remote_dir, job_id)
    job = next(r for r in rows if r["JobID"] == job_id)
    assert job["State"] == "COMPLETED", (rows, log)
    assert set(recs) == {i["id"] for i in instances}, log
    for inst in instances:
        rec = recs[inst["id"]]
        burn, hold = BURN[inst["process"]], HOLD_MB[inst["process"]]
        assert rec["state"] == "success" and rec["reason"] is None, rec
        assert rec["launcher"] == launcher and rec["job_id"] == job_id and rec["node"] in NODES["perlmutter"]
        assert rec["total_cpu_s"] >= 0.8 * burn, rec
        assert rec["max_rss_bytes"] >= 80 * 2**20 and rec["max_rss_bytes"] >= 0.8 * hold * 2**20, rec
        assert rec["elapsed_s"] >= rec["total_cpu_s"] * 0.9
        for dep in inst.get("depends_on", []):
            assert rec["start"] >= recs[dep]["end"], (inst["id"], dep)
    summary = parse_summary(log)
    assert summary and summary["cores"] == 2 and summary["states"] == {"success": 8}, log
    print(f"{launcher}: job {job_id} took {time.monotonic() - started:.1f} s from submit to accounted")
    assert "held by instances" in utilisation(log)
    if launcher == "srun":
        steps = {r["JobName"]: r for r in rows if is_step(r)}
        assert set(steps) == {recs[i]["step_name"] for i in recs} == set(recs), rows
        for name, step in steps.items():
            assert step["State"] == "COMPLETED" and step["ExitCode"] == "0:0", step
            assert step["JobID"] == recs[name]["step_id"], (step, recs[name])
            assert int(step["MaxRSS"]) >= 80 * 2**20, step
            assert seconds(step["TotalCPU"]) >= 0.8 * BURN[recs[name]["process"]], step
    else:
        assert not [r for r in rows if is_step(r)], "direct mode made srun steps"


def test_srun_steps_that_fail_time_out_or_run_out_of_memory(site: Site, remote_dir: str) -> None:
    instances: list[dict[str, Any]] = [
        {"id": "slow", "command": "sleep 120", "walltime_s": 2, "memory_mb": 100},
        {"id": "hog", "command": payload_command("--name", "hog", "--memory-mb", "50", "--fail", "oom"),
         "memory_mb": 200},
        {"id": "psf", "command": payload_command("--name", "psf", "--cpu-seconds", "0.2", "--fail",
                                                 "traceback"), "memory_mb": 200},
        {"id": "after-psf", "command": "true", "depends_on": ["psf"]},
    ]  # fmt: skip
    job_id = submit_bundle(site, remote_dir, instances, "srun")
    rows = site.wait_done(CLUSTER, job_id, STEP_FIELDS, timeout=180)
    recs, log = read_back(site, remote_dir, job_id)
    state = {i: (r["state"], r["reason"]) for i, r in recs.items()}
    assert state == {
        "slow": ("terminated", "time-limit"),
        "hog": ("terminated", "out-of-memory"),
        "psf": ("failed", "non-zero-exit"),
        "after-psf": ("skipped", "upstream-failed"),
    }, log
    assert "PSF determination failed: too few stars" in recs["psf"]["log_tail"]
    assert recs["slow"]["elapsed_s"] < 10 and recs["slow"]["step_id"], recs["slow"]
    steps = {r["JobName"]: r for r in rows if is_step(r)}
    assert set(steps) == {"slow", "hog", "psf"}, rows
    if site.proctrack == "cgroup":
        assert steps["hog"]["State"] == "OUT_OF_MEMORY", steps["hog"]
    assert steps["psf"]["State"] == "FAILED"
    job = next(r for r in rows if r["JobID"] == job_id)
    assert job["State"] == "FAILED" and job["ExitCode"] == "1:0", job  # some instances did not succeed


def test_sigterm_before_the_time_limit_records_what_to_redo(site: Site, remote_dir: str) -> None:
    """``--signal=B:TERM@30`` as SLURM sends it: to the batch shell, which forwards it to the pilot."""
    instances = [{"id": f"long{i}", "command": "sleep 120", "memory_mb": 100} for i in range(3)] + [
        {"id": "after-long0", "command": "true", "depends_on": ["long0"]}
    ]
    job_id = submit_bundle(site, remote_dir, instances, "srun")
    count_logs = f"ls {shlex.quote(remote_dir)}/logs 2>/dev/null | grep -c '\\.log$'"
    wait_for(
        lambda: site.run(CLUSTER, count_logs, check=False).stdout.strip(),
        until=lambda count: count == "2",
        timeout=120,
        interval=0.5,
        what="the pilot starts two instances (two logs)",
    )
    site.run(CLUSTER, f"scancel --batch --signal=TERM {job_id}")
    rows = site.wait_done(CLUSTER, job_id, STEP_FIELDS, timeout=60)
    recs, log = read_back(site, remote_dir, job_id)
    started = {i for i, r in recs.items() if r["start"]}
    assert len(started) == 2 and set(recs) == {i["id"] for i in instances}, log
    for iid, rec in recs.items():
        if iid in started:
            assert (rec["state"], rec["reason"]) == ("terminated", "time-limit"), rec
            assert rec["signal"] == 15 and rec["step_id"], rec  # the step's --run-one reported
        else:
            assert (rec["state"], rec["reason"]) == ("skipped", "allocation-ended"), rec
    assert '"stopped_by":"SIGTERM"' in log
    job = next(r for r in rows if r["JobID"] == job_id)
    assert job["State"] == "FAILED", job  # the pilot exits 128 + SIGTERM
