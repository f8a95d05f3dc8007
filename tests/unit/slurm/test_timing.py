"""The job script's own timing of its payload: the lines it runs (in a real bash) and their reader."""

from __future__ import annotations

import pathlib

import pytest

from airflow_desc.slurm import group_accounting, parse_sacct
from airflow_desc.slurm.script import ContainerSpec, JobSpec, render_job_script
from airflow_desc.slurm.timing import PayloadTiming, parse_payload_timing, precise_usage
from tests.unit.slurm.test_script import run_script

DATA = pathlib.Path(__file__).parents[2] / "data" / "slurm"
LINE = "airflow-desc: job 7 payload timing: wall 1733486400.120 1733486402.834 cpu {before} -> {after}"
# Burns CPU-seconds in one process: what setup lines or a payload cost.
BURN = "python3 -c 'import time; t = time.process_time(); exec(\"while time.process_time() - t < {}: pass\")'"


def accounting(job_id: str) -> object:
    return group_accounting(parse_sacct((DATA / "sacct_mixed.txt").read_text()))[job_id]


def test_the_line_gives_wall_and_cpu_to_the_millisecond() -> None:
    tail = "payload output\n" + LINE.format(before="0m0.004s 0m0.001s", after="1m2.690s 0m0.012s") + "\n"
    assert parse_payload_timing(tail) == PayloadTiming(wall_s=2.714, cpu_s=62.697)


def test_a_decimal_comma_of_the_locale_is_read() -> None:
    line = LINE.format(before="0m0,004s 0m0,000s", after="0m1,504s 0m0,500s")
    assert parse_payload_timing(line) == PayloadTiming(wall_s=2.714, cpu_s=2.0)


def test_output_without_a_final_newline_still_leaves_the_line_readable() -> None:
    line = "no newline at the end" + LINE.format(before="0m0.000s 0m0.000s", after="0m1.000s 0m0.000s")
    assert parse_payload_timing(line) == PayloadTiming(wall_s=2.714, cpu_s=1.0)


@pytest.mark.parametrize(
    "tail",
    [
        "",
        "airflow-desc: job 7 payload exit code 0 at 2026-12-06T10:00:00Z",  # a script of an older version
        "airflow-desc: job 7 payload timing: wall 1733486400.N 1733486402.N cpu  -> ",  # a date without %N
        "airflow-desc: job 7 payload timing: wall 1733486402.0 1733486400.0 cpu unmeasured",  # clock stepped
    ],
)
def test_no_readable_line_means_no_timing(tail: str) -> None:
    assert parse_payload_timing(tail) is None


def test_an_unmeasured_cpu_keeps_sacct_s() -> None:
    timing = parse_payload_timing("airflow-desc: job 7 payload timing: wall 10.5 12.0 cpu unmeasured")
    assert timing == PayloadTiming(wall_s=1.5, cpu_s=None)
    acct = accounting("5000101")
    assert precise_usage(acct, timing) == (1.5, acct.total_cpu_s)  # type: ignore[attr-defined]


def test_sacct_whole_seconds_are_replaced_and_srun_steps_added() -> None:
    single = accounting("5000101")  # Elapsed 00:00:03 (whole seconds), TotalCPU 2.352
    assert precise_usage(single, None) == (3.0, 2.352)
    assert precise_usage(single, PayloadTiming(wall_s=2.41, cpu_s=2.3)) == (2.41, 2.3)
    stepped = accounting("5000110")  # an srun step 0 of 7.949 s of CPU: not the batch shell's child
    assert precise_usage(stepped, PayloadTiming(wall_s=4.2, cpu_s=0.05)) == (4.2, 7.999)


def test_the_script_times_the_payload_and_not_its_setup(tmp_path: pathlib.Path) -> None:
    spec = JobSpec(job_name="x", command=BURN.format(0.4) + "\nsleep 0.2", setup_lines=(BURN.format(1.0),))
    result = run_script(render_job_script(spec), tmp_path, env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("airflow-desc: job 4242 payload timing: wall ")
    timing = parse_payload_timing(result.stdout)
    assert timing is not None and timing.cpu_s is not None, result.stdout
    # The payload burnt 0.4 s (and started python); the setup's 1.0 s is not counted.
    assert 0.4 <= timing.cpu_s < 1.0
    # One busy process: no more CPU than wall clock (the two clocks differ by a few ms at most).
    assert timing.wall_s >= 0.6 and timing.cpu_s <= timing.wall_s
    assert not list(tmp_path.glob("airflow-desc-times.*")), "the script leaves no file behind"


def test_a_podman_payload_is_timed_without_its_cpu() -> None:
    spec = JobSpec(job_name="x", command="true", container=ContainerSpec("podman-hpc", "desc/stack:1"))
    assert render_job_script(spec).rstrip().splitlines()[-2].endswith('cpu unmeasured"')
