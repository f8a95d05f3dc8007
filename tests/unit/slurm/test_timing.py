"""The job script's own timing of its payload: the lines it runs (in a real bash) and their reader."""

from __future__ import annotations

import pathlib

import pytest

from airflow_desc.slurm import group_accounting, parse_sacct
from airflow_desc.slurm.script import ContainerSpec, JobSpec, render_job_script
from airflow_desc.slurm.timing import (
    PayloadTiming,
    parse_payload_timing,
    parse_times_children,
    precise_max_rss,
    precise_usage,
)
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


def test_a_podman_payload_is_timed_with_its_containers_usage() -> None:
    spec = JobSpec(job_name="x", command="true", container=ContainerSpec("podman-hpc", "desc/stack:1"))
    last = render_job_script(spec).rstrip().splitlines()[-2]
    assert last.endswith(
        "cpu $desc_c0 -> $desc_c1 container ${desc_kc:-unmeasured} maxrss ${desc_km:-unmeasured} "
        'oomkill ${desc_ko:-unmeasured}"'
    )


CONTAINER_LINE = (
    LINE.format(before="0m0.004s 0m0.001s", after="0m0.090s 0m0.046s") + " container {} maxrss {}"
)


def test_a_containers_cpu_adds_to_the_clients_and_its_peak_to_sacct_s() -> None:
    timing = parse_payload_timing(CONTAINER_LINE.format("0m0.893s 0m3,168s", "109895680 oomkill 0"))
    assert timing == PayloadTiming(
        wall_s=2.714, cpu_s=round(0.131 + 4.061, 3), container_max_rss_bytes=109895680, container_oom_kills=0
    )
    killed = parse_payload_timing(CONTAINER_LINE.format("0m0.893s 0m3.168s", "209715200 oomkill 1"))
    assert killed is not None and killed.container_oom_kills == 1
    acct = accounting("5000101")  # MaxRSS of the batch step: the podman client's
    assert precise_max_rss(acct, timing) == 109895680 + acct.max_rss_bytes  # type: ignore[attr-defined]
    assert precise_max_rss(acct, None) == acct.max_rss_bytes  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("container", "maxrss", "cpu_s", "peak"),
    [
        ("unmeasured", "unmeasured", None, None),  # the container never ran (a missing image)
        ("0m1.000s 0m0.500s", "unmeasured", 1.631, None),  # no memory cgroup to read
        ("unmeasured", "2048", None, 2048),
    ],
)
def test_what_a_container_did_not_measure_keeps_sacct_s(
    container: str, maxrss: str, cpu_s: float | None, peak: int | None
) -> None:
    timing = parse_payload_timing(CONTAINER_LINE.format(container, maxrss))
    assert timing == PayloadTiming(wall_s=2.714, cpu_s=cpu_s, container_max_rss_bytes=peak)
    acct = accounting("5000101")
    assert precise_max_rss(acct, timing) == (acct.max_rss_bytes or 0) + (peak or 0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("line", "expected"),
    [("0m2.690s 0m0.012s", 2.702), ("1m0,5s 0m0.000s", 60.5), ("", None), ("0m1s", None), ("x 0m1.0s", None)],
)
def test_a_times_line_is_read(line: str, expected: float | None) -> None:
    assert parse_times_children(line) == expected
