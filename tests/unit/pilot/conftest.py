"""The ``run_pilot`` fixture: write a manifest, run the launcher on it to the end."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tests.unit.pilot.pilot_process import PilotRun, Runner, clean_env, pilot_argv, write_manifest


@pytest.fixture
def run_pilot(tmp_path: pathlib.Path) -> Runner:
    """Write a manifest and run the launcher on it to the end."""

    def run(
        instances: Sequence[dict[str, Any]],
        *args: str,
        cores: int = 2,
        python: str = sys.executable,
        name: str = "run",
        env: dict[str, str] | None = None,
        rerun: Sequence[str] = (),
    ) -> PilotRun:
        directory = tmp_path / name
        write_manifest(directory, instances, rerun=rerun)
        started = time.monotonic()
        proc = subprocess.run(
            pilot_argv(directory, *args, python=python, cores=cores),
            capture_output=True, text=True, timeout=60, env=env or clean_env(), cwd=directory,
        )  # fmt: skip
        return PilotRun(directory, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)

    return run
