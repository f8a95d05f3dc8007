"""`airflow-desc clusters` against the local site."""

from __future__ import annotations

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
