"""`airflow-desc clusters` against the local site."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

CLI = pathlib.Path(sys.executable).with_name("airflow-desc")


def run(*args: str, home: pathlib.Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIRFLOW_HOME": str(home)}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=120)


def test_clusters_check_logs_in_to_every_site_cluster(tmp_path: pathlib.Path) -> None:
    proc = run("clusters", "check", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("OK", "FAIL", "WARN"))]
    assert [line.split()[1].rstrip(":") for line in lines] == ["perlmutter", "s3df", "s3df-via-bastion"]
    assert all(line.startswith("OK") for line in lines), proc.stdout
    assert "partition regular" in proc.stdout and "4096 MB per node" in proc.stdout


def test_clusters_check_reports_a_wrong_profile(tmp_path: pathlib.Path) -> None:
    profile = tmp_path / "clusters.yaml"
    text = pathlib.Path(os.environ["DESC_CLUSTERS_FILE"]).read_text()
    profile.write_text(text.replace("partition: regular", "partition: debugq"))
    proc = run("clusters", "check", "perlmutter", "--file", str(profile), home=tmp_path)
    assert proc.returncode == 1
    assert "FAIL perlmutter" in proc.stdout
    assert "debugq" in proc.stdout


def test_pools_sync_creates_one_pool_per_cluster(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = str(CLI.with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
    proc = run("pools", "sync", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = subprocess.run(
        [airflow, "pools", "list", "-o", "json"], env=env, capture_output=True, text=True, check=True
    ).stdout
    pools = {p["pool"]: p for p in json.loads(listed)}
    for name in ("slurm_perlmutter", "slurm_s3df", "slurm_s3df-via-bastion"):
        assert int(pools[name]["slots"]) == 200
        assert str(pools[name]["include_deferred"]).lower() == "true"


def test_pools_sync_resizes_a_pool_when_its_profile_changes(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = str(CLI.with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
    site = pathlib.Path(os.environ["DESC_CLUSTERS_FILE"]).read_text()
    profile = tmp_path / "clusters.yaml"
    profile.write_text(site.replace("max_queued_jobs: 200", "max_queued_jobs: 5"))
    first = run("pools", "sync", "--file", str(profile), home=tmp_path)
    assert "pool slurm_perlmutter: 5 slots (deferred tasks included; created)" in first.stdout, first.stderr
    profile.write_text(site.replace("max_queued_jobs: 200", "max_queued_jobs: 7"))
    dry = run("pools", "sync", "--file", str(profile), "--dry-run", home=tmp_path)
    assert "would set pool slurm_perlmutter: 7 slots (deferred tasks included; was 5)" in dry.stdout
    again = run("pools", "sync", "--file", str(profile), home=tmp_path)
    assert "pool slurm_perlmutter: 7 slots (deferred tasks included; was 5)" in again.stdout, again.stderr
    listed = subprocess.run(
        [airflow, "pools", "list", "-o", "json"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert {p["pool"]: int(p["slots"]) for p in json.loads(listed)}["slurm_perlmutter"] == 7


MISSING_POOL_RUN = """
import types
from airflow_desc.plugins.pools import on_dag_run_running
tasks = [types.SimpleNamespace(pool=name) for name in ("slurm_perlmutter", "default_pool", "no_such_pool")]
run = types.SimpleNamespace(dag_id="d", run_id="r", dag=types.SimpleNamespace(tasks=tasks))
on_dag_run_running(run, "started")
"""


def test_a_starting_run_gets_its_missing_cluster_pool(tmp_path: pathlib.Path) -> None:
    """The plugin's listener, as the scheduler calls it when a run starts, against a real metadata DB."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = str(CLI.with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
    proc = subprocess.run(
        [sys.executable, "-c", MISSING_POOL_RUN], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "created the missing pool slurm_perlmutter (200 slots" in proc.stderr + proc.stdout
    assert "pool 'no_such_pool' does not exist, and no cluster profile names it" in proc.stderr + proc.stdout
    listed = subprocess.run(
        [airflow, "pools", "list", "-o", "json"], env=env, capture_output=True, text=True, check=True
    ).stdout
    pools = {p["pool"]: p for p in json.loads(listed)}
    assert int(pools["slurm_perlmutter"]["slots"]) == 200 and "no_such_pool" not in pools
    assert "slurm_s3df" not in pools  # only what the run needs
