"""docker/site/up's failure path: a port taken by someone else is named, and nothing is left running."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_up_refuses_a_state_dir_the_daemons_cannot_reach(tmp_path: pathlib.Path) -> None:
    # pytest's tmp_path is under a mode-700 directory: munge, mysql, slurm, postgres cannot enter it.
    env = {**os.environ, "DESC_SITE_DIR": str(tmp_path / "site"), "DESC_SITE_USER": "desctest"}
    proc = subprocess.run(
        [str(REPO / "docker/site/up")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    assert "is not reachable by user munge" in proc.stderr
    assert "mode 755" in proc.stderr


@pytest.fixture
def site_dir() -> Iterator[pathlib.Path]:
    path = pathlib.Path(tempfile.mkdtemp(prefix="desc-site-test-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path / "site"
    shutil.rmtree(path, ignore_errors=True)


def test_up_names_a_taken_port_and_rolls_back(site_dir: pathlib.Path) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    env = {
        **os.environ,
        "DESC_SITE_DIR": str(site_dir),
        "DESC_SITE_USER": "desctest",
        "DESC_SITE_PORT_MARIADB": str(port),
    }
    try:
        proc = subprocess.run(
            [str(REPO / "docker/site/up")], env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        squatter.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"mariadb: port 127.0.0.1:{port} is already in use" in proc.stderr
    assert "stopping what this run started" in proc.stderr
    assert "the site is NOT up" in proc.stderr
    # munged had started before mariadb failed: the rollback stopped it.
    assert "stopped munged" in proc.stdout
    status = subprocess.run(
        [str(REPO / "docker/site/status")], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 1
    assert re.search(r"^  munged +STOPPED$", status.stdout, re.MULTILINE), status.stdout
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(site_dir) not in ps
