"""Proof that the local site is real: jobs on both clusters, through sshd with host-key checking."""

from __future__ import annotations

import pathlib
import subprocess

import psycopg2
import pytest

from airflow_desc.emulate import payload_command
from tests.integration.site import CLUSTERS, NODES, Site

ACCT = "ExitCode,Elapsed,TotalCPU,MaxRSS,ReqMem,NodeList,Cluster"
PARTITIONS = {"perlmutter": "regular", "s3df": "roma"}


def job(body: str) -> str:
    return f"#!/bin/bash\n{body}\n"


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_login_sees_only_its_own_cluster(site: Site, cluster: str) -> None:
    out = site.run(cluster, "scontrol show config | grep -i '^ClusterName'; sinfo -h -o '%P %a %T'").stdout
    assert f"= {cluster}" in out
    assert PARTITIONS[cluster] in out
    other = next(p for c, p in PARTITIONS.items() if c != cluster)
    assert other not in out


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_cpu_and_memory_are_accounted(site: Site, cluster: str) -> None:
    script = job(payload_command("--name", "burn", "--cpu-seconds", "2", "--memory-mb", "200"))
    job_id = site.sbatch(cluster, script, "--mem=400M", "--time=00:05:00", "-o", "burn-%j.out")
    rows = site.wait_done(cluster, job_id, ACCT)
    main = next(r for r in rows if r["JobID"] == job_id)
    batch = next(r for r in rows if r["JobID"] == f"{job_id}.batch")
    assert main["State"] == "COMPLETED", rows
    assert main["ExitCode"] == "0:0"
    assert main["Cluster"] == cluster
    minutes, seconds = batch["TotalCPU"].split(":")[-2:]
    assert int(minutes) * 60 + float(seconds) >= 1.0, rows
    assert int(batch["MaxRSS"]) >= 150 * 1024 * 1024, rows
    assert batch["NodeList"] in NODES[cluster]


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_nonzero_exit_is_failed_with_its_code(site: Site, cluster: str) -> None:
    job_id = site.sbatch(cluster, job("echo about to fail; exit 3"), "--time=00:01:00", "-o", "/dev/null")
    main = next(r for r in site.wait_done(cluster, job_id, ACCT) if r["JobID"] == job_id)
    assert (main["State"], main["ExitCode"]) == ("FAILED", "3:0")


def test_job_past_its_time_limit_is_timeout(site: Site) -> None:
    job_id = site.sbatch(
        "perlmutter", job("sleep 300"), "--time=00:01:00", "--cpus-per-task=1", "-o", "/dev/null"
    )
    main = next(r for r in site.wait_done("perlmutter", job_id, ACCT, timeout=200) if r["JobID"] == job_id)
    assert main["State"] == "TIMEOUT", main


def test_job_over_its_memory_is_killed_as_recorded(site: Site, data_dir: pathlib.Path) -> None:
    """The site enforces --mem; tests/data/site/ holds what it reported when recorded."""
    script = job(payload_command("--name", "hog", "--cpu-seconds", "3", "--memory-mb", "400"))
    job_id = site.sbatch("s3df", script, "--mem=100M", "--time=00:02:00", "-o", "/dev/null")
    rows = site.wait_done("s3df", job_id, ACCT)
    main = next(r for r in rows if r["JobID"] == job_id)
    recorded = (data_dir / "site" / f"sacct-over-memory-{site.proctrack}.txt").read_text().splitlines()
    recorded_state = recorded[1].split("|")[1]  # line 0 is the header
    assert main["State"].split()[0] == recorded_state, (rows, recorded)
    if site.proctrack == "cgroup":
        assert (main["State"], main["ExitCode"]) == ("OUT_OF_MEMORY", "0:125")


def test_a_wrong_host_key_is_refused(site: Site, tmp_path: pathlib.Path) -> None:
    # Give the perlmutter port the s3df login's key: ssh must refuse, as production would.
    lines = pathlib.Path(site.known_hosts).read_text().splitlines()
    s3df_key = next(line for line in lines if line.startswith(f"[127.0.0.1]:{site.ports['s3df']} "))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(s3df_key.replace(f":{site.ports['s3df']} ", f":{site.ports['perlmutter']} ") + "\n")
    proc = site.run("perlmutter", "true", check=False, known_hosts=str(wrong))
    assert proc.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr or "verification failed" in proc.stderr


def test_an_unknown_host_is_refused(site: Site, tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = site.run("s3df", "true", check=False, known_hosts=str(empty))
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_both_clusters_account_to_one_slurmdbd(site: Site) -> None:
    out = site.run("perlmutter", "sacctmgr -n -P show cluster format=cluster").stdout.split()
    assert set(CLUSTERS) <= set(out)


@pytest.mark.parametrize("uri_var", ["DESC_SITE_AIRFLOW_DB_URI", "DESC_SITE_HISTORY_DB_URI"])
def test_postgres_clusters_answer(uri_var: str) -> None:
    import os

    uri = os.environ[uri_var].replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(uri, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), inet_server_port()")
        db, port = cur.fetchone()
    assert db in ("airflow", "desc_history")
    assert str(port) in uri


def test_provider_is_listed_by_airflow(tmp_path: pathlib.Path) -> None:
    import os
    import sys

    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = pathlib.Path(sys.executable).with_name("airflow")
    out = subprocess.run(
        [str(airflow), "providers", "list"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "airflow-desc" in out.stdout
