"""The ``srun`` launcher against a stand-in ``srun`` that runs the step on this machine.

The stand-in logs its arguments, honours ``--output``, sets ``SLURM_STEP_ID`` and then ``exec``-s
the step's command, so a signal to "srun" reaches the step's ``--run-one`` as srun's forwarding
would. What real srun and sacct do is checked in tests/integration/test_pilot.py.
"""

from __future__ import annotations

import os
import pathlib
import signal
import stat
import subprocess
import sys

import pytest

from airflow_desc.pilot import parse_records
from tests.unit.pilot import pilot_process
from tests.unit.pilot.pilot_process import Runner, children_of, instance
from tests.waiting import wait_for

FAKE_SRUN = """#!/bin/bash
step=0
while ! mkdir "$FAKE_SRUN_CALLS/$step" 2>/dev/null; do step=$((step + 1)); done
printf '%s\\0' "$@" > "$FAKE_SRUN_CALLS/$step/argv"
out=/dev/null
while [ $# -gt 0 ]; do
  case "$1" in
    --output=*) out="${1#--output=}"; shift ;;
    --job-name=refuse*) echo "srun: error: Unable to create step for job 77: Memory required by task is not available" >&2; exit 1 ;;
    --*) shift ;;
    *) break ;;
  esac
done
export SLURM_STEP_ID=$step
exec "$@" >> "$out" 2>&1
"""  # noqa: E501


def is_run_one(pid: int) -> bool:
    try:
        return b"--run-one" in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


HOG = "python3 -c 'x = \"x\" * (300 << 20)\nimport time\ntime.sleep(10)'"


@pytest.fixture
def srun_env(tmp_path: pathlib.Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN)
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "srun-calls"
    calls.mkdir()
    return pilot_process.clean_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        FAKE_SRUN_CALLS=str(calls),
        SLURM_JOB_ID="77",
        SLURMD_NODENAME="nid001234",
    )


def srun_calls(env: dict[str, str]) -> list[list[str]]:
    calls = sorted(pathlib.Path(env["FAKE_SRUN_CALLS"]).iterdir(), key=lambda p: int(p.name))
    return [(call / "argv").read_text().split("\0")[:-1] for call in calls]


@pytest.mark.parametrize("python", ["current", "3.8"])
def test_each_instance_is_one_exact_step_measured_by_run_one(
    run_pilot: Runner, srun_env: dict[str, str], python: str
) -> None:
    interpreter = sys.executable if python == "current" else pilot_process.python_3_8()
    if interpreter is None:
        pytest.skip("no Python 3.8 here")
    burn = "python3 -c 'import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass'"
    run = run_pilot(
        [
            instance("visit=1:processVisit", burn, cpus=2, memory_mb=700),
            instance("visit=1/sensor=S11:processEimage", "exit 5", depends_on=["visit=1:processVisit"]),
        ],
        "--launcher",
        "srun",
        env=srun_env,
        python=interpreter,
    )
    assert run.returncode == 1, run.explain()
    visit, sensor = run.records
    assert visit["state"] == "success" and visit["launcher"] == "srun" and visit["job_id"] == "77"
    assert visit["step_name"] == "visit=1:processVisit" and visit["step_id"] == "77.0"
    assert visit["total_cpu_s"] >= 0.25 and visit["node"] == "nid001234"
    assert sensor["state"] == "failed" and sensor["exit_code"] == 5 and sensor["step_id"] == "77.1"
    first = srun_calls(srun_env)[0]
    options = first[: first.index("--run-one") - 2]
    assert options[:4] == ["--exact", "--nodes=1", "--ntasks=1", "--cpus-per-task=2"]
    assert "--mem=700M" in options and "--job-name=visit=1:processVisit" in options
    assert f"--output={visit['log_path']}" in options and "--open-mode=append" in options
    assert first[-2:] == ["--", burn]  # the command is one argument, no shell in between


def test_a_step_that_cannot_start_is_a_launch_error(run_pilot: Runner, srun_env: dict[str, str]) -> None:
    run = run_pilot([instance("refuse-me", "true")], "--launcher", "srun", env=srun_env)
    [rec] = run.records
    assert rec["state"] == "failed" and rec["reason"] == "launch-error", run.explain()
    assert "Unable to create step" in rec["log_tail"]


def test_walltime_stops_the_step_through_its_run_one(run_pilot: Runner, srun_env: dict[str, str]) -> None:
    run = run_pilot(
        [
            # 3 s, not less: the step's --run-one must have its SIGUSR1 handler in place when the
            # walltime strikes (a Python start took over 0.5 s on the loaded machine; SIGUSR1's
            # default action then killed it: signal 10, not the SIGTERM it forwards).
            instance("slow", "sleep 30", walltime_s=3),
            instance("hog", HOG, memory_mb=100),
        ],
        "--launcher",
        "srun",
        env=srun_env,
    )
    recs = run.by_id
    slow, hog = recs["slow"], recs["hog"]
    assert (slow["state"], slow["reason"]) == ("terminated", "time-limit"), run.explain()
    # srun got SIGUSR1 (it forwards that; SIGTERM would make it SIGKILL the step), so --run-one
    # sent the command SIGTERM and still wrote the accounting.
    assert slow["signal"] == signal.SIGTERM and slow["step_id"] is not None and slow["elapsed_s"] < 25
    assert (hog["state"], hog["reason"]) == ("terminated", "out-of-memory")
    assert hog["max_rss_bytes"] > 100 * 2**20


def test_a_step_signalled_by_slurm_is_terminated_and_the_pilot_goes_on(
    tmp_path: pathlib.Path, srun_env: dict[str, str]
) -> None:
    """Preemption or scancel of a step: SLURM signals the step's tasks, not the pilot."""
    directory = tmp_path / "run"
    pilot_process.write_manifest(
        directory,
        [instance("a", "sleep 30"), instance("after-a", "true", depends_on=["a"]), instance("b", "true")],
    )
    argv = pilot_process.pilot_argv(directory, "--launcher", "srun", cores=1)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=srun_env)
    try:

        def running_step() -> list[int]:
            # The stand-in srun exec-ed the step's --run-one, which has started the command (before
            # the exec the stand-in's own children, mkdir, would look like a step).
            return [pid for pid in children_of(proc.pid) if children_of(pid) and is_run_one(pid)]

        [step] = wait_for(
            running_step,
            until=lambda steps: len(steps) == 1,
            timeout=30,
            interval=0.05,
            what="one running step",
        )
        os.kill(step, signal.SIGTERM)
        # A bound, not a timing: b still has to start (bash, then a Python --run-one) on a loaded machine.
        assert proc.wait(timeout=120) == 1  # not every instance succeeded
    finally:
        proc.kill()
    recs = {r["id"]: r for r in parse_records((directory / "records.jsonl").read_text())}
    assert (recs["a"]["state"], recs["a"]["reason"]) == ("terminated", "time-limit"), recs["a"]
    assert "from SLURM" in recs["a"]["message"] and recs["a"]["signal"] == signal.SIGTERM
    assert recs["after-a"]["reason"] == "upstream-failed" and recs["b"]["state"] == "success"


def test_skip_when_holds_in_the_srun_launcher_too(run_pilot: Runner, srun_env: dict[str, str]) -> None:
    run = run_pilot(pilot_process.make_then_assemble("after", fail=True), "--launcher", "srun", env=srun_env)
    states = {k: (v["state"], v["reason"]) for k, v in run.by_id.items()}
    assert states == {
        "make": ("failed", "non-zero-exit"),
        "assemble": ("skipped", "skip-condition"),
        "after-assemble": ("success", None),
        "needs-assemble": ("skipped", "upstream-failed"),
    }, run.explain()
    # Only what ran was a step: make and after-assemble.
    assert len(srun_calls(srun_env)) == 2
