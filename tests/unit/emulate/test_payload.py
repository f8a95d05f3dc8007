"""The DM-like payload, run as a job runs it: ``bash -c`` on the text of :func:`payload_command`.

The program travels in a here-document to ``python3 -``, so each test runs the real shell
text with the system ``python3`` (the payload must need nothing but the standard library).
"""

from __future__ import annotations

import pathlib
import resource
import signal
import subprocess

import pytest

from airflow_desc.emulate import payload_command, payload_source
from airflow_desc.emulate.payload import FAILURES, parse_args, should_fail


def run(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", payload_command(*args)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_program_travels_whole_in_a_quoted_here_document() -> None:
    command = payload_command("--name", "x")
    source = payload_source()
    assert source.endswith("\n") and "DESC_PAYLOAD_EOF" not in source
    assert command.startswith("python3 - --name x <<'DESC_PAYLOAD_EOF'\n")
    assert command.endswith("\nDESC_PAYLOAD_EOF\n")
    assert source in command


def test_success_burns_the_cpu_asked_for_and_writes_its_outputs(tmp_path: pathlib.Path) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run(
        "--name", "visit=2201/R22", "--cpu-seconds", "0.2",
        "--output", "out/calexp.fits", "--output", "src.parq", "--output-mb", "0.25",
        cwd=tmp_path,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu >= 0.2
    assert (tmp_path / "out" / "calexp.fits").stat().st_size == 262144
    assert (tmp_path / "src.parq").stat().st_size == 262144
    assert result.stdout.splitlines()[0].startswith("[visit=2201/R22] start on ")
    assert "cpu=0.2s" in result.stdout
    assert result.stdout.splitlines()[-1] == "[visit=2201/R22] done"


def test_exit_fails_with_the_exit_code(tmp_path: pathlib.Path) -> None:
    result = run("--cpu-seconds", "0", "--fail", "exit", "--exit-code", "7", "--name", "e", cwd=tmp_path)
    assert result.returncode == 7
    assert "[e] FATAL: task failed, exiting 7" in result.stderr
    assert "done" not in result.stdout


def test_traceback_fails_like_a_dm_task(tmp_path: pathlib.Path) -> None:
    result = run("--cpu-seconds", "0", "--fail", "traceback", "--name", "t", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == (
        "RuntimeError: t: PSF determination failed: too few stars (3 < 10)"
    )


def test_missing_input_raises_file_not_found(tmp_path: pathlib.Path) -> None:
    result = run("--cpu-seconds", "0", "--fail", "missing", "--name", "m", cwd=tmp_path)
    assert result.returncode == 1
    assert "FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent/m/calexp.fits'" in (
        result.stderr
    )


def test_a_declared_input_that_does_not_exist_raises_file_not_found(tmp_path: pathlib.Path) -> None:
    result = run("--cpu-seconds", "0", "--input", "raw.fits", cwd=tmp_path)
    assert result.returncode == 1
    assert "input raw.fits is missing" in result.stderr
    assert "FileNotFoundError" in result.stderr


def test_disk_full_reports_no_space_left_on_device(tmp_path: pathlib.Path) -> None:
    result = run("--cpu-seconds", "0", "--fail", "disk-full", "--output", "out.fits", cwd=tmp_path)
    assert result.returncode == 1
    assert "OSError: [Errno 28] No space left on device: " in result.stderr
    assert not (tmp_path / "out.fits").exists()


def test_disk_full_fails_without_outputs_too(tmp_path: pathlib.Path) -> None:
    result = run("--cpu-seconds", "0", "--fail", "disk-full", cwd=tmp_path)
    assert result.returncode != 0
    assert "No space left on device" in result.stderr


def test_segfault_dies_of_sigsegv(tmp_path: pathlib.Path) -> None:
    result = run("--cpu-seconds", "0", "--fail", "segfault", cwd=tmp_path)
    # bash reports a child killed by signal N as 128 + N; if it exec'd python3, we see -N.
    assert result.returncode in (128 + signal.SIGSEGV, -signal.SIGSEGV)


def test_arguments_arrive_literally(tmp_path: pathlib.Path) -> None:
    name = """a b 'single' "double" $(touch pwned) `touch pwned2` $HOME ; * \\n"""
    result = run("--cpu-seconds", "0", "--name", name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"[{name}] start on ")
    assert f"[{name}] done" in result.stdout
    assert list(tmp_path.iterdir()) == []  # nothing was run by a shell


def test_python_interpreter_is_quoted() -> None:
    command = payload_command("--name", "x", python="/opt/my python/bin/python3")
    assert command.startswith("'/opt/my python/bin/python3' - --name x <<")


# --- the failure draw ---


def test_failure_draw_is_deterministic_per_seed_and_name() -> None:
    names = [f"visit={v}/sensor=S{s}" for v in range(20) for s in range(10)]
    draws = [should_fail(parse_args(["--fail", "exit", "--fail-rate", "0.5", "--name", n])) for n in names]
    again = [should_fail(parse_args(["--fail", "exit", "--fail-rate", "0.5", "--name", n])) for n in names]
    assert draws == again
    assert 70 <= sum(draws) <= 130  # 200 fair draws: 100 +- 30 is beyond 4 sigma
    other_seed = [
        should_fail(parse_args(["--fail", "exit", "--fail-rate", "0.5", "--seed", "7", "--name", n]))
        for n in names
    ]
    assert other_seed != draws  # a new seed "fixes" some streams and breaks others


@pytest.mark.parametrize(("rate", "expected"), [(0.0, False), (1.0, True)])
def test_failure_rate_bounds(rate: float, expected: bool) -> None:
    for n in range(50):
        args = parse_args(["--fail", "traceback", "--fail-rate", str(rate), "--name", f"s{n}"])
        assert should_fail(args) is expected


def test_no_failure_mode_never_fails() -> None:
    assert not should_fail(parse_args(["--fail-rate", "1.0"]))
    assert FAILURES[0] == "none"


def test_the_draw_of_a_real_run_is_the_same_as_in_process(tmp_path: pathlib.Path) -> None:
    names = [f"s{n}" for n in range(40)]
    drawn = {n: should_fail(parse_args(["--fail", "exit", "--fail-rate", "0.5", "--name", n])) for n in names}
    failing = next(n for n in names if drawn[n])
    passing = next(n for n in names if not drawn[n])
    for name, rc in ((failing, 7), (passing, 0)):
        result = run(
            "--cpu-seconds", "0", "--fail", "exit", "--exit-code", "7", "--fail-rate", "0.5", "--name", name,
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == rc, (name, result.stderr)
