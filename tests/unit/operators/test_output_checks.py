"""Output checks: the program run on the cluster, here in a shell on this machine, and its result line."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from airflow_desc.operators.output_checks import CheckRequest, output_checks_command, parse_output_checks


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
