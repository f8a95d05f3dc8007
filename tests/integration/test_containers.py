"""Payloads in containers on the local site: rootless podman, the site's payload image, no registry.

tests/integration/dags/desc_it_container.py renders tests/data/specs/desc-it-container.yaml: a single
job, and a bundle of two visits whose instances each run in their own container. What the payloads
wrote says they ran in the image (its /etc/desc-payload-image and /etc/os-release, which the nodes
lack) in the job's working directory, with the pilot's variables passed in. burnJob (a single job) and
burn (bundled) burn 3 CPU-s and hold 150 MB in their containers, whose processes SLURM does not see
(runc gives them a cgroup of their own): their records still have that CPU and memory, which the
containers measured themselves (airflow_desc.slurm.script.measured_payload). The same spec naming an
image the site does not have fails every payload as container-error, the message naming the image.
A scancelled container job, and a bundled container instance past its walltime, leave no container
(podman ps) and no payload process (ps) behind: airflow_desc.slurm.script.container_supervisor.
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import uuid

import pytest

from airflow_desc.pilot import bundle_job_command, parse_records
from airflow_desc.slurm import ContainerSpec, JobSpec, render_job_script
from airflow_desc.slurm.script import container_command
from airflow_desc.workflow.bundle_plan import CONTAINER_ENV
from tests.integration.airflow_env import AirflowEnv, batch_records, explain
from tests.integration.site import Site
from tests.waiting import wait_for

# A bundle asks for a whole perlmutter node: beside the parallel suite it would wait in SLURM's queue.
# The runs' timeouts are hang guards only: other sessions' jobs on the site held the queue 5 min once.
pytestmark = [pytest.mark.serial, pytest.mark.usefixtures("payload_image")]

WORK_DIR = "airflow-desc"  # the site's clusters.yaml work_dir, relative to the home directory
MARKER = "desc-payload test image"
BURN_CPU_S, BURN_MB = 3.0, 150  # burnJob's and burn's emulate: in the spec
MIB = 1024 * 1024


def test_a_single_job_and_a_bundles_instances_run_in_the_image(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site
) -> None:
    history = tmp_path / "history.jsonl"
    out = f"it-container/{uuid.uuid4().hex[:10]}"
    proc = airflow_env.dags_test("desc_it_container", history=history, conf={"out": out}, timeout=900)
    recs = batch_records(history)
    assert {p: len(r) for p, r in recs.items()} == {"probe": 1, "burnJob": 1, "probeVisit": 2, "burn": 2}, (
        explain(proc)
    )
    assert proc.returncode == 0, explain(proc)
    assert all(r.state == "success" for records in recs.values() for r in records), recs
    assert len({r.job_id for r in [*recs["probeVisit"], *recs["burn"]]}) == 1  # one allocation
    # The node itself is not the image: only a payload in the container could read these.
    assert site.run("perlmutter", "test ! -e /etc/desc-payload-image", check=False).returncode == 0
    home = site.run("perlmutter", "echo $HOME").stdout.strip()
    files = {
        name: site.run("perlmutter", f"cat {shlex.quote(f'{WORK_DIR}/{out}/{name}')}").stdout
        for name in ("single.txt", "v1.txt", "v2.txt")
    }
    for name, text in files.items():
        assert MARKER in text and "ID=desc-payload\n" in text, (name, text)
    # The job's working directory is mounted at its own path, and is the container's.
    assert f"pwd={home}/{WORK_DIR}\n" in files["single.txt"]
    for visit in (1, 2):
        assert f"instance=visit={visit}:probeVisit\n" in files[f"v{visit}.txt"]
    # The emulated payload ran from the bundle's payload file, passed in as DESC_PAYLOAD.
    listing = site.run("perlmutter", f"ls {shlex.quote(f'{WORK_DIR}/{out}')}").stdout.split()
    assert {"v1.fits", "v2.fits", "single.fits"} <= set(listing), listing
    # What the burners used, in their records: the container's CPU and peak memory (plus podman's
    # client's). sacct alone sees only the client (~0.1 s, ~17 MB): kept in the single job's extra.
    for rec in [*recs["burnJob"], *recs["burn"]]:
        assert rec.total_cpu_s is not None and rec.total_cpu_s >= 0.8 * BURN_CPU_S, rec
        assert rec.max_rss_bytes is not None and rec.max_rss_bytes >= BURN_MB * MIB, rec
        assert rec.elapsed_s is not None and rec.elapsed_s >= 0.8 * BURN_CPU_S, rec
    (single,) = recs["burnJob"]
    assert single.extra["timing"] == "job script and container", single.extra
    assert single.extra["sacct"]["max_rss_bytes"] < BURN_MB * MIB, single.extra  # runc's cgroup, unseen


def test_a_missing_image_fails_as_a_container_error_naming_it(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    out = f"it-container-missing/{uuid.uuid4().hex[:10]}"
    proc = airflow_env.dags_test("desc_it_container_missing", history=history, conf={"out": out}, timeout=900)
    assert proc.returncode != 0, explain(proc)
    recs = batch_records(history)
    failed = [*recs.get("probe", []), *recs.get("burnJob", []), *recs.get("probeVisit", [])]
    assert len(failed) == 4, explain(proc)
    for rec in failed:
        assert rec.state == "failed" and rec.reason == "container-error", rec
        assert "image localhost/desc-payload:missing is not on this cluster" in (rec.message or ""), rec
    assert [r.state for r in recs["burn"]] == ["skipped", "skipped"], recs["burn"]


# --- stopping: nothing of a stopped container may run on (its payload would burn a node unpaid, and
# race a rerun on the same files). Its processes are conmon's, in runc's cgroups, out of SLURM's reach.
STOP_BURN_S = 120  # how long each payload would burn if its container were left running


def _burner(tag: str) -> str:
    """A payload that ignores TERM (as one busy writing its outputs may): podman must KILL it."""
    loop = f"import time\nt = time.time()\nwhile time.time() - t < {STOP_BURN_S}: pass"
    return f"trap '' TERM; python3 -c '{loop}' {tag}"


def _wait_gone(site: Site, job_id: str) -> None:
    """Wait until the job has left the queue: sacct calls it ended at the cancel, but it stays
    COMPLETING until its processes (its container's supervisor among them) have ended."""
    wait_for(
        lambda: site.run("perlmutter", f"squeue -h -j {job_id}", check=False).stdout.strip(),
        until=lambda out: out == "", timeout=120, what=f"job {job_id} to leave the queue",
    )  # fmt: skip


def _left(site: Site, job_id: str, tag: str) -> str:
    """What still runs of a job's containers: their names (podman ps -a) and their payloads (ps)."""
    ps = f"podman ps -a --format '{{{{.Names}}}}' --filter name=^airflow-desc-{job_id}-"
    names = site.run("perlmutter", ps, check=False).stdout.split()
    payloads = site.run("perlmutter", f"pgrep -a -f {shlex.quote(f'^python3 -c .* {tag}$')}", check=False)
    return " ".join(names) + payloads.stdout.strip()


def test_a_cancelled_job_and_a_timed_out_instance_leave_no_container(site: Site, payload_image: str) -> None:
    container = ContainerSpec("podman", payload_image, options=("--pull=never",))
    tag = f"ctrstop-{uuid.uuid4().hex[:10]}"
    home = site.run("perlmutter", "echo $HOME").stdout.strip()
    remote = f"{home}/{WORK_DIR}/it-container-stop/{tag}"
    site.run("perlmutter", f"mkdir -p {shlex.quote(remote)}")
    # A single job, scancelled while its payload runs.
    single = JobSpec(
        job_name=f"{tag}-single", command=_burner(f"{tag}-single"), container=container, time_limit_s=600,
        mem_mb=500, output=f"{remote}/single-%j.out",
    )  # fmt: skip
    # A bundle whose one instance runs past its walltime (the srun launcher: its --run-one TERMs it).
    instance = {
        "id": "v=1:burn", "command": container_command(container, _burner(f"{tag}-bundled"), CONTAINER_ENV),
        "container": payload_image, "container_runtime": "podman", "cpus": 1, "memory_mb": 400,
        "walltime_s": 6,
    }  # fmt: skip
    command = bundle_job_command(
        json.dumps({"bundle": tag, "instances": [instance]}), launcher="srun",
        records_path=f"{remote}/records.jsonl", logs_dir=f"{remote}/logs", kill_grace_s=10,
    )  # fmt: skip
    bundle = JobSpec(
        job_name=f"{tag}-bundle", command=command, cpus_per_task=1, mem_mb=1000, time_limit_s=600,
        output=f"{remote}/bundle-%j.out",
    )  # fmt: skip
    single_id = site.sbatch("perlmutter", render_job_script(single))
    bundle_id = site.sbatch("perlmutter", render_job_script(bundle))
    try:
        running = f"pgrep -f {shlex.quote(f'^python3 -c .* {tag}-single$')}"
        wait_for(
            lambda: site.run("perlmutter", running, check=False),
            until=lambda p: p.returncode == 0, timeout=600, what=f"job {single_id}'s payload running",
        )  # fmt: skip
        site.run("perlmutter", f"scancel {single_id}")
        (row,) = [r for r in site.wait_done("perlmutter", single_id, "ExitCode") if r["JobID"] == single_id]
        assert row["State"].startswith("CANCELLED"), row
        # The job's script ends after its container is gone (within KillWait).
        _wait_gone(site, single_id)
        assert _left(site, single_id, f"{tag}-single") == ""
        log = site.run("perlmutter", f"cat {shlex.quote(f'{remote}/single-{single_id}.out')}").stdout
        assert re.search(r"payload exit code 1(43|37) ", log), log  # TERMed client, or KILLed container

        site.wait_done("perlmutter", bundle_id, "ExitCode", timeout=600)
        _wait_gone(site, bundle_id)
        records = parse_records(site.run("perlmutter", f"cat {shlex.quote(remote)}/records.jsonl").stdout)
        (rec,) = records
        assert (rec["state"], rec["reason"]) == ("terminated", "time-limit"), rec
        assert rec["elapsed_s"] < 30, rec  # stopped, not run to its end
        assert _left(site, bundle_id, f"{tag}-bundled") == ""
    finally:
        for job in (single_id, bundle_id):  # a failed fix must not leave burners behind
            site.run("perlmutter", f"scancel {job}", check=False)
            site.run(
                "perlmutter",
                f"podman ps -aq --filter name=^airflow-desc-{job}- | xargs -r podman rm -f -t 0",
                check=False,
            )
        site.run("perlmutter", f"rm -rf {shlex.quote(remote)}", check=False)
