from __future__ import annotations

import pathlib

import pytest

from airflow_desc.slurm.accounting import JobAccounting, group_accounting
from airflow_desc.slurm.diagnose import Diagnosis, ReasonClass, diagnose
from airflow_desc.slurm.parse import parse_sacct

DATA = pathlib.Path(__file__).parents[2] / "data" / "slurm"
FIELDS = ("JobID", "State", "ExitCode", "Elapsed", "MaxRSS", "ReqMem", "NNodes", "NodeList", "Timelimit")


def log(name: str) -> str:
    return (DATA / "logs" / f"{name}.log").read_text()


def job(text: str) -> JobAccounting:
    """Group compact sacct lines (the FIELDS above) into the one job they describe."""
    jobs = group_accounting(parse_sacct(text, fields=FIELDS))
    assert len(jobs) == 1
    return next(iter(jobs.values()))


@pytest.fixture(scope="module")
def site_jobs() -> dict[str, JobAccounting]:
    return group_accounting(parse_sacct((DATA / "sacct_mixed.txt").read_text()))


def check_diagnosis(d: Diagnosis, reason: ReasonClass, job_id: str) -> None:
    assert d.reason is reason, d.message
    assert f"job {job_id}" in d.message
    assert "\n" not in d.message
    assert len(d.message) < 400


# --- the jobs of the site fixture, with and without their log tails ---


@pytest.mark.parametrize(
    ("job_id", "log_name", "reason", "retryable", "escalate"),
    [
        ("5000101", None, ReasonClass.SUCCESS, False, None),
        ("5000102", "plain_failure", ReasonClass.NON_ZERO_EXIT, False, None),
        ("5000102", None, ReasonClass.NON_ZERO_EXIT, False, None),
        ("5000103", "time_limit", ReasonClass.TIME_LIMIT, False, "walltime"),
        ("5000103", None, ReasonClass.TIME_LIMIT, False, "walltime"),
        ("5000104", "cgroup_oom", ReasonClass.OUT_OF_MEMORY, False, "memory"),
        ("5000104", None, ReasonClass.OUT_OF_MEMORY, False, "memory"),
        ("5000105", "overmemorykill", ReasonClass.OUT_OF_MEMORY, False, "memory"),
        ("5000105", None, ReasonClass.OUT_OF_MEMORY, False, "memory"),
        ("5000106", "user_cancel", ReasonClass.CANCELLED_BY_USER, False, None),
        ("5000106", None, ReasonClass.CANCELLED_BY_USER, False, None),
        ("5000109_0", None, ReasonClass.SUCCESS, False, None),
        ("5000109_1", None, ReasonClass.NON_ZERO_EXIT, False, None),
        ("5000111", "node_failure", ReasonClass.NODE_FAILURE, True, None),
        ("5000111", None, ReasonClass.NODE_FAILURE, True, None),
        ("5000112", "preemption", ReasonClass.PREEMPTED, True, None),
        ("5000112", None, ReasonClass.PREEMPTED, True, None),
        ("5000113", None, ReasonClass.CANCELLED_BY_USER, False, None),
        ("5000114", None, ReasonClass.SUCCESS, False, None),
    ],
)
def test_site_jobs(
    site_jobs: dict[str, JobAccounting],
    job_id: str,
    log_name: str | None,
    reason: ReasonClass,
    retryable: bool,
    escalate: str | None,
) -> None:
    d = diagnose(site_jobs[job_id], log(log_name) if log_name else "")
    check_diagnosis(d, reason, job_id)
    assert d.retryable is retryable
    assert d.escalate == escalate


@pytest.mark.parametrize("job_id", ["5000107", "5000108"])
def test_unfinished_jobs_are_not_diagnosed(site_jobs: dict[str, JobAccounting], job_id: str) -> None:
    with pytest.raises(ValueError, match="has not finished"):
        diagnose(site_jobs[job_id])


# --- the real-site memory facts ---


def test_cgroup_oom_wins_even_with_a_tiny_maxrss(site_jobs: dict[str, JobAccounting]) -> None:
    job_104 = site_jobs["5000104"]
    assert job_104.max_rss_bytes is not None
    assert job_104.mem_limit_per_node_bytes is not None
    assert job_104.max_rss_bytes < job_104.mem_limit_per_node_bytes / 50  # the sampler missed the peak
    d = diagnose(job_104)
    assert "OUT_OF_MEMORY" in d.message
    assert "100 MB requested (recorded peak 1.2 MB, sampled before the kill)" in d.message


def test_overmemorykill_is_out_of_memory_from_accounting_alone(site_jobs: dict[str, JobAccounting]) -> None:
    d = diagnose(site_jobs["5000105"])  # FAILED 0:9, batch CANCELLED by 0, MaxRSS 424460K of 100M
    assert d.reason is ReasonClass.OUT_OF_MEMORY
    assert "peak 415 MB of 100 MB requested" in d.message
    assert "signal 9" in d.message
    assert "more memory" in d.message


@pytest.mark.parametrize(
    ("max_rss", "reason"),
    [
        ("104857600", ReasonClass.OUT_OF_MEMORY),  # exactly at the limit
        ("99614720", ReasonClass.OUT_OF_MEMORY),  # 95%
        ("98566144", ReasonClass.NON_ZERO_EXIT),  # 94%: killed by 9 for another reason
        ("1048576", ReasonClass.NON_ZERO_EXIT),
        ("", ReasonClass.NON_ZERO_EXIT),
    ],
)
def test_signal_9_is_oom_only_near_the_limit(max_rss: str, reason: ReasonClass) -> None:
    d = diagnose(job(f"8|FAILED|0:9|00:00:03||100M|1|n1|\n8.batch|FAILED|0:9|00:00:03|{max_rss}||1|n1|\n"))
    check_diagnosis(d, reason, "8")


def test_high_maxrss_without_a_kill_is_not_oom() -> None:
    # linuxproc without OverMemoryKill: over the request, but it failed for its own reason
    d = diagnose(job("8|FAILED|2:0|00:00:03||100M|1|n1|\n8.batch|FAILED|2:0|00:00:03|434647040||1|n1|\n"))
    check_diagnosis(d, ReasonClass.NON_ZERO_EXIT, "8")


def test_completed_over_its_request_is_still_success() -> None:
    d = diagnose(
        job("8|COMPLETED|0:0|00:00:03||100M|1|n1|\n8.batch|COMPLETED|0:0|00:00:03|434647040||1|n1|\n")
    )
    check_diagnosis(d, ReasonClass.SUCCESS, "8")


def test_multi_node_limit_is_per_node() -> None:
    # 22.05 prints the job's total: 800M on 2 nodes is 400M per node; MaxRSS is per task
    d = diagnose(job("8|FAILED|0:9|00:00:03||800M|2|n[1-2]|\n8.0|FAILED|0:9|00:00:03|415236096||2|n[1-2]|\n"))
    check_diagnosis(d, ReasonClass.OUT_OF_MEMORY, "8")


@pytest.mark.parametrize(
    "line",
    [
        "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=8.batch. Some of your processes"
        " may have been killed by the cgroup out-of-memory handler.",
        "slurmstepd: error: Exceeded job memory limit",
        "slurmstepd: error: Step 8.0 exceeded memory limit (424460 > 102400), being killed",
    ],
)
def test_oom_log_lines(line: str) -> None:
    d = diagnose(job("8|FAILED|1:0|00:00:03||100M|1|n1|\n"), f"working\n{line}\n")
    check_diagnosis(d, ReasonClass.OUT_OF_MEMORY, "8")
    assert d.escalate == "memory"


def test_python_memory_error_is_oom() -> None:
    d = diagnose(job("8|FAILED|1:0|00:00:03||4G|1|n1|\n"), log("python_memoryerror"))
    check_diagnosis(d, ReasonClass.OUT_OF_MEMORY, "8")
    assert "MemoryError" in d.message


@pytest.mark.parametrize("exit_code", ["0:0", "0:15"])
def test_timeout(exit_code: str) -> None:
    d = diagnose(
        job(f"8|TIMEOUT|{exit_code}|00:01:12||100M|1|n1|00:01:00\n8.batch|CANCELLED|0:15|00:01:13||||n1|\n")
    )
    check_diagnosis(d, ReasonClass.TIME_LIMIT, "8")
    assert d.escalate == "walltime"
    assert "0:01:00" in d.message
    assert "0:01:12" in d.message


# --- log tails of failed jobs ---


@pytest.mark.parametrize(
    ("log_name", "exit_code", "reason", "in_message"),
    [
        ("missing_input", "1:0", ReasonClass.MISSING_INPUT, "FileNotFoundError: [Errno 2] No such file"),
        (
            "python_exception",
            "1:0",
            ReasonClass.PYTHON_EXCEPTION,
            "RuntimeError: no usable exposures for patch 3,4",
        ),
        ("disk_full", "1:0", ReasonClass.DISK_FULL, "No space left on device"),
        ("quota", "1:0", ReasonClass.DISK_FULL, "Disk quota exceeded"),
        ("segfault", "139:0", ReasonClass.SEGFAULT, "exit code 139"),
        ("shifter_error", "1:0", ReasonClass.CONTAINER_ERROR, "Failed to lookup Image"),
        ("apptainer_error", "255:0", ReasonClass.CONTAINER_ERROR, "could not open image"),
        ("podman_error", "125:0", ReasonClass.CONTAINER_ERROR, "reading manifest"),
        ("plain_failure", "3:0", ReasonClass.NON_ZERO_EXIT, "ERROR: 3 of 189 sensors have no calibration"),
        ("time_limit", "0:15", ReasonClass.TIME_LIMIT, "time limit"),
        ("preemption", "0:15", ReasonClass.PREEMPTED, "preempted"),
        ("node_failure", "0:15", ReasonClass.NODE_FAILURE, "node failure"),
    ],
)
def test_failed_job_log_tails(log_name: str, exit_code: str, reason: ReasonClass, in_message: str) -> None:
    d = diagnose(job(f"8|FAILED|{exit_code}|00:00:03||2G|1|nid001234|\n"), log(log_name))
    check_diagnosis(d, reason, "8")
    assert in_message in d.message


def test_python_exception_uses_the_last_traceback() -> None:
    d = diagnose(job("8|FAILED|1:0|00:00:03||2G|1|n1|\n"), log("python_exception"))
    assert "KeyError" not in d.message
    assert "RuntimeError" in d.message


@pytest.mark.parametrize(
    ("where", "last_line", "in_message"),
    [
        # An exception that mentions an image is not a container error.
        ("line 1", "KeyError: 'calexp image for visit 5 not found'", "KeyError"),
        # A qualified exception name.
        (
            "line 3, in <module>",
            "lsst.daf.butler.registry.MissingCollectionError: No collection 'dc1/raw' found",
            "MissingCollectionError",
        ),
    ],
    ids=["mentions-an-image", "qualified-name"],
)
def test_python_exceptions_in_a_traceback(where: str, last_line: str, in_message: str) -> None:
    tail = f'Traceback (most recent call last):\n  File "x.py", {where}\n{last_line}\n'
    d = diagnose(job("8|FAILED|1:0|00:00:03||2G|1|n1|\n"), tail)
    check_diagnosis(d, ReasonClass.PYTHON_EXCEPTION, "8")
    assert in_message in d.message


@pytest.mark.parametrize(
    ("exit_code", "reason"), [("0:11", ReasonClass.SEGFAULT), ("139:0", ReasonClass.SEGFAULT)]
)
def test_segfault_from_accounting_alone(exit_code: str, reason: ReasonClass) -> None:
    check_diagnosis(diagnose(job(f"8|FAILED|{exit_code}|00:00:03||2G|1|n1|\n")), reason, "8")


def test_command_not_found() -> None:
    d = diagnose(
        job("8|FAILED|127:0|00:00:03||2G|1|n1|\n"), "bash: line 1: processEimage.py: command not found\n"
    )
    check_diagnosis(d, ReasonClass.NON_ZERO_EXIT, "8")
    assert "command was not found" in d.message


def test_non_zero_exit_names_the_last_payload_line_not_our_marker() -> None:
    d = diagnose(job("8|FAILED|3:0|00:00:03||2G|1|n1|\n"), log("plain_failure"))
    assert "payload exit code" not in d.message
    assert "exit code 3" in d.message


@pytest.mark.parametrize(
    "srun_lines",
    [
        "srun: error: pm-n1: task 0: Exited with exit code 2\n",
        "srun: error: pm-n1: tasks 0-3: Exited with exit code 2\nsrun: Job step aborted: Waiting 32 s\n",
        "srun: launch/slurm: _step_signal: Terminating StepId=12.0\nsrun: error: n1: task 0: Killed\n",
    ],
)
def test_non_zero_exit_names_the_payloads_last_line_not_sruns_report(srun_lines: str) -> None:
    # srun reports a step's end after the task's output (seen on a loaded site: the DM stand-in's
    # argparse error was followed by srun's line, which became the "last log line").
    payload = "usage: processEimage.py [-h] ...\nerror: argument --id: unknown data ID key 'bogus'\n"
    d = diagnose(job("8|FAILED|2:0|00:00:03||2G|1|n1|\n"), payload + srun_lines)
    check_diagnosis(d, ReasonClass.NON_ZERO_EXIT, "8")
    assert "last log line: error: argument --id: unknown data ID key 'bogus';" in d.message, d.message


def test_a_payload_line_that_starts_with_srun_is_kept() -> None:
    d = diagnose(job("8|FAILED|1:0|00:00:03||2G|1|n1|\n"), "srun: a wrapper of the payload's own gave up\n")
    assert "last log line: srun: a wrapper of the payload's own gave up;" in d.message, d.message


def test_user_error_lines_are_not_container_errors() -> None:
    d = diagnose(job("8|FAILED|1:0|00:00:03||2G|1|n1|\n"), "Error: 3 sensors failed astrometry\n")
    check_diagnosis(d, ReasonClass.NON_ZERO_EXIT, "8")


# --- states ---


@pytest.mark.parametrize(
    ("state", "reason", "retryable"),
    [
        ("NODE_FAIL", ReasonClass.NODE_FAILURE, True),
        ("BOOT_FAIL", ReasonClass.BOOT_FAILURE, True),
        ("PREEMPTED", ReasonClass.PREEMPTED, True),
        ("DEADLINE", ReasonClass.DEADLINE, False),
        ("REVOKED", ReasonClass.UNKNOWN_STATE, False),
        ("SOMETHING_NEW", ReasonClass.UNKNOWN_STATE, False),
        ("", ReasonClass.UNKNOWN_STATE, False),
        ("CANCELLED by 1000", ReasonClass.CANCELLED_BY_USER, False),
        ("CANCELLED", ReasonClass.CANCELLED_BY_USER, False),
        ("OUT_OF_MEMORY", ReasonClass.OUT_OF_MEMORY, False),
        ("TIMEOUT", ReasonClass.TIME_LIMIT, False),
        ("FAILED", ReasonClass.NON_ZERO_EXIT, False),
    ],
)
def test_states(state: str, reason: ReasonClass, retryable: bool) -> None:
    d = diagnose(job(f"8|{state}|0:0|00:00:03||2G|1|nid000042|\n"))
    check_diagnosis(d, reason, "8")
    assert d.retryable is retryable


def test_unknown_state_is_never_success() -> None:
    d = diagnose(job("8|SOMETHING_NEW|0:0|00:00:03||2G|1|n1|\n"))
    assert d.reason is not ReasonClass.SUCCESS
    assert "SOMETHING_NEW" in d.message


def test_cancelled_message_names_the_uid() -> None:
    assert "uid 1000" in diagnose(job("8|CANCELLED by 1000|0:0|00:00:03||2G|1|n1|\n")).message
    assert "uid 0" in diagnose(job("8|CANCELLED by 0|0:0|00:00:03||2G|1|n1|\n")).message


def test_node_failure_names_the_node() -> None:
    assert "nid000042" in diagnose(job("8|NODE_FAIL|0:0|00:00:03||2G|1|nid000042|\n")).message


def test_a_failed_step_state_counts() -> None:
    d = diagnose(job("8|FAILED|1:0|00:00:03||2G|1|n1|\n8.0|OUT_OF_MEMORY|0:125|00:00:02|1000||1|n1|\n"))
    check_diagnosis(d, ReasonClass.OUT_OF_MEMORY, "8")


def test_output_check_is_reserved() -> None:
    assert ReasonClass.OUTPUT_CHECK.value == "output-check"
    assert {r.value for r in ReasonClass} == {
        "out-of-memory",
        "time-limit",
        "node-failure",
        "cancelled-by-user",
        "preempted",
        "container-error",
        "missing-input",
        "disk-full",
        "python-exception",
        "segfault",
        "non-zero-exit",
        "boot-failure",
        "deadline",
        "unknown-state",
        "output-check",
        "success",
    }


# --- a missing container image, named ---


@pytest.mark.parametrize(
    ("tail", "image"),
    [
        # The job script's line before the payload, then podman's own (--pull=never).
        (
            "airflow-desc: job 8 payload runs in container image localhost/desc-payload:nope\n"
            "Error: localhost/desc-payload:nope: image not known\n",
            "localhost/desc-payload:nope",
        ),
        # The pilot's line in a bundled instance's log.
        (
            "airflow-desc-pilot: v=1:p starting at 2026-12-06T19:00:00Z on pm-n1 (srun, cpus=1)\n"
            "airflow-desc-pilot: v=1:p runs in container image localhost/x:1\n"
            "Error: localhost/x:1: image not known\n",
            "localhost/x:1",
        ),
        # No line of ours: the runtime's error names it.
        ("Error: registry.example/a/b:2: image not known\n", "registry.example/a/b:2"),
        (log("shifter_error"), "docker:lsstdesc/dc1-nope:latest"),
        (log("apptainer_error"), "/sdf/group/desc/images/dc1.sif"),
        (log("podman_error"), "lsstdesc/dc1-nope:latest"),
    ],
)
def test_a_missing_image_is_a_container_error_naming_it(tail: str, image: str) -> None:
    d = diagnose(job("8|FAILED|125:0|00:00:03||2G|1|n1|\n"), tail)
    check_diagnosis(d, ReasonClass.CONTAINER_ERROR, "8")
    assert f"image {image} is not on this cluster" in d.message
    assert "pull or build it there" in d.message


def test_a_payload_that_cannot_open_its_own_image_file_is_not_a_container_error() -> None:
    d = diagnose(job("8|FAILED|1:0|00:00:03||2G|1|n1|\n"), "ERROR: could not open image calexp-v1.fits\n")
    check_diagnosis(d, ReasonClass.NON_ZERO_EXIT, "8")


def test_an_oom_kill_in_a_podman_container_is_out_of_memory() -> None:
    # Job 1104 on the site: 200 MB asked, 800 MB allocated in a podman container. The kernel killed it
    # in the container's memory cgroup, below the job's; sacct saw only the podman client (1228K).
    sacct = "1104|FAILED|9:0|00:00:01||200M|1|pm-n1|\n1104.batch|FAILED|9:0|00:00:01|1228K||1|pm-n1|\n"
    d = diagnose(job(sacct), log("podman_oom"))
    check_diagnosis(d, ReasonClass.OUT_OF_MEMORY, "1104")
    assert "the kernel's OOM killer killed its container's payload, its container at 182" in d.message, (
        d.message
    )
    no_kill = log("podman_oom").replace("oomkill 1", "oomkill 0")
    check_diagnosis(diagnose(job(sacct), no_kill), ReasonClass.NON_ZERO_EXIT, "1104")
