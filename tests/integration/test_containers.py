"""Payloads in containers on the local site: rootless podman, the site's payload image, no registry.

tests/integration/dags/desc_it_container.py renders tests/data/specs/desc-it-container.yaml: a single
job, and a bundle of two visits whose instances each run in their own container. What the payloads
wrote says they ran in the image (its /etc/desc-payload-image and /etc/os-release, which the nodes
lack) in the job's working directory, with the pilot's variables passed in. burnJob (a single job) and
burn (bundled) burn 3 CPU-s and hold 150 MB in their containers, whose processes SLURM does not see
(runc gives them a cgroup of their own): their records still have that CPU and memory, which the
containers measured themselves (airflow_desc.slurm.script.measured_payload). The same spec naming an
image the site does not have fails every payload as container-error, the message naming the image.
"""

from __future__ import annotations

import pathlib
import shlex
import uuid

import pytest

from tests.integration.airflow_env import AirflowEnv, batch_records, explain
from tests.integration.site import Site

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
