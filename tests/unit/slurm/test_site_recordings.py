"""The real outputs recorded from the local SLURM site (tests/data/site/record.sh), read by our parsers.

Each file is parsed with the field list it was recorded with (see :mod:`tests.site_recordings`).
"""

from __future__ import annotations

import pytest

from airflow_desc.slurm import (
    SACCT_FIELDS,
    ReasonClass,
    SlurmOutputError,
    SlurmState,
    StateClass,
    SubmittedJob,
    diagnose,
    parse_sacct,
    parse_sbatch_output,
    parse_squeue,
)
from tests.site_recordings import RECORD_FIELDS, SITE, sacct_text, site_jobs

MB = 1024 * 1024
SACCT_FILES = sorted(p.name for p in SITE.glob("sacct-*.txt"))
EXPECTED_JOBS = {
    "sacct-mixed-cgroup.txt": ["5000026", "5000027", "5000028", "5000029"],
    "sacct-mixed-linuxproc.txt": ["5000021", "5000022", "5000023", "5000024"],
    "sacct-over-memory-cgroup.txt": ["5000027"],
    "sacct-over-memory-linuxproc.txt": ["5000022"],
    "sacct-pending.txt": ["5000029"],
    "sacct-placeholder-allocation.txt": ["5000031"],
}
#: perlmutter's recordings, each with its command in a comment or its file name: whose a job is and
#: who cancelled it (tests/unit/slurm/test_ownership.py), which nodes run jobs (test_nodes.py), what
#: the controller says of ended and live jobs (scontrol-*.txt: test_parse.py, tests/unit/triggers).
PERLMUTTER_FILES = {
    "scontrol-ended.txt",
    "scontrol-live.txt",
    "owners-sacct.txt",
    "cancelled-by-owner-sacct.txt",
    "sinfo-two-nodes.txt",
    "sinfo-node-down.txt",
}


def test_every_recording_is_read_here() -> None:
    # A new recording in tests/data/site must get its facts checked in this module.
    names = {p.name for p in SITE.iterdir()} - {"record.sh"}
    assert names == {*EXPECTED_JOBS, *PERLMUTTER_FILES, "squeue-held.txt", "sbatch-parsable-cluster.txt"}


def test_record_fields_are_those_of_record_sh() -> None:
    assert RECORD_FIELDS[:3] == ("JobID", "JobName", "State")
    assert len(RECORD_FIELDS) == 19 and RECORD_FIELDS[-1] == "DerivedExitCode"


@pytest.mark.parametrize("name", SACCT_FILES)
def test_each_sacct_recording_parses_into_its_jobs(name: str) -> None:
    found = site_jobs(name)
    assert list(found) == EXPECTED_JOBS[name]
    for acct in found.values():
        assert acct.job is not None, f"{name}: job {acct.job_id} has no job line"
        assert acct.cluster == "s3df"
        assert all(row.line_number is not None for row in acct.rows)


@pytest.mark.parametrize("name", ["sacct-over-memory-cgroup.txt", "sacct-over-memory-linuxproc.txt"])
def test_the_header_line_of_a_recording_without_n_is_not_data(name: str) -> None:
    # Recorded without -n: parsed as data, the header's "ExitCode" is an unreadable exit code on line 1.
    text = (SITE / name).read_text()
    fields = tuple(text.splitlines()[0].split("|"))
    with pytest.raises(SlurmOutputError, match="line 1") as caught:
        parse_sacct(text, fields)
    assert caught.value.line_number == 1


def test_placeholder_recording_names_its_fields_in_its_comment() -> None:
    fields, _ = sacct_text("sacct-placeholder-allocation.txt")
    assert fields == SACCT_FIELDS


# --- cgroup: the kernel's OOM killer ends the job as OUT_OF_MEMORY ---


@pytest.mark.parametrize("name", ["sacct-mixed-cgroup.txt", "sacct-over-memory-cgroup.txt"])
def test_cgroup_oom_is_out_of_memory_0_125(name: str) -> None:
    acct = site_jobs(name)["5000027"]
    assert acct.state.state is SlurmState.OUT_OF_MEMORY
    assert (acct.exit_code, acct.signal) == (0, 125)
    assert acct.step("batch").state.state is SlurmState.OUT_OF_MEMORY
    assert acct.req_mem_bytes == 100 * MB
    # The sampler missed the peak: MaxRSS is far below the limit, the state decides.
    assert acct.max_rss_bytes == 1253376 < acct.req_mem_bytes
    diagnosis = diagnose(acct)
    assert diagnosis.reason is ReasonClass.OUT_OF_MEMORY
    assert diagnosis.escalate == "memory"
    assert "job 5000027" in diagnosis.message


# --- linuxproc + OverMemoryKill: FAILED 0:9, the batch step CANCELLED by root ---


@pytest.mark.parametrize("name", ["sacct-mixed-linuxproc.txt", "sacct-over-memory-linuxproc.txt"])
def test_linuxproc_over_memory_kill_is_failed_0_9_and_diagnosed_out_of_memory(name: str) -> None:
    acct = site_jobs(name)["5000022"]
    assert acct.state.state is SlurmState.FAILED
    assert (acct.exit_code, acct.signal) == (0, 9)
    batch = acct.step("batch")
    assert batch.state.state is SlurmState.CANCELLED
    assert batch.state.raw == "CANCELLED by 0"
    assert batch.cancelled_by_uid == 0
    assert acct.cancelled_by_uid == 0
    assert acct.max_rss_bytes == 429588480
    assert acct.req_mem_bytes == 100 * MB
    assert acct.max_rss_bytes > acct.mem_limit_per_node_bytes
    # Never OUT_OF_MEMORY in sacct, yet out of memory it was.
    assert all(row.state.state is not SlurmState.OUT_OF_MEMORY for row in acct.rows)
    diagnosis = diagnose(acct)
    assert diagnosis.reason is ReasonClass.OUT_OF_MEMORY
    assert "signal 9" in diagnosis.message
    assert diagnosis.escalate == "memory"


@pytest.mark.parametrize("job_id", ["5000027", "5000022"])
def test_over_memory_recordings_agree_with_the_mixed_ones(job_id: str) -> None:
    mode = "cgroup" if job_id == "5000027" else "linuxproc"
    narrow = site_jobs(f"sacct-over-memory-{mode}.txt")[job_id]
    wide = site_jobs(f"sacct-mixed-{mode}.txt")[job_id]
    for get in (
        lambda a: a.state,
        lambda a: (a.exit_code, a.signal),
        lambda a: a.max_rss_bytes,
        lambda a: a.req_mem_bytes,
        lambda a: a.node_list,
        lambda a: a.elapsed_s,
        lambda a: a.total_cpu_s,
        lambda a: [row.full_id for row in a.rows],
    ):
        assert get(narrow) == get(wide)


# --- the other jobs of the mixed recordings ---


@pytest.mark.parametrize(
    ("name", "job_id"), [("sacct-mixed-cgroup.txt", "5000028"), ("sacct-mixed-linuxproc.txt", "5000023")]
)
def test_exit_3_is_failed_non_zero_exit(name: str, job_id: str) -> None:
    acct = site_jobs(name)[job_id]
    assert acct.state.state is SlurmState.FAILED
    assert acct.state_class is StateClass.FAILED
    assert (acct.exit_code, acct.signal) == (3, 0)
    assert acct.step("batch").exit_code == 3
    diagnosis = diagnose(acct)
    assert diagnosis.reason is ReasonClass.NON_ZERO_EXIT
    assert "exit code 3" in diagnosis.message
    assert diagnosis.escalate is None and not diagnosis.retryable


@pytest.mark.parametrize(
    ("name", "job_id"), [("sacct-mixed-cgroup.txt", "5000026"), ("sacct-mixed-linuxproc.txt", "5000021")]
)
def test_completed_burn_held_its_200_mb_under_400_mb(name: str, job_id: str) -> None:
    acct = site_jobs(name)[job_id]
    assert acct.state_class is StateClass.SUCCEEDED
    assert diagnose(acct).reason is ReasonClass.SUCCESS
    assert acct.req_mem_bytes == 400 * MB
    assert 200 * MB < acct.max_rss_bytes < 400 * MB
    assert acct.total_cpu_s == pytest.approx(2.1, abs=0.05)  # the 2 s burn
    assert acct.job.time_limit_s == 300
    assert acct.job.partition == "roma"


@pytest.mark.parametrize(
    ("name", "job_id"), [("sacct-mixed-cgroup.txt", "5000029"), ("sacct-mixed-linuxproc.txt", "5000024")]
)
def test_held_job_cancelled_before_it_started(name: str, job_id: str) -> None:
    acct = site_jobs(name)[job_id]
    assert acct.job_name == "held-job"
    assert acct.state.state is SlurmState.CANCELLED
    assert acct.cancelled_by_uid == 1001
    assert acct.steps == ()
    assert acct.node_list is None  # "None assigned"
    assert acct.job.start is None  # "None"
    assert diagnose(acct).reason is ReasonClass.CANCELLED_BY_USER


# --- slurmdbd's placeholder line ---


def test_placeholder_job_line_is_recognised() -> None:
    acct = site_jobs("sacct-placeholder-allocation.txt")["5000031"]
    assert acct.job_name == "allocation"
    assert acct.is_placeholder
    assert acct.job.partition is None and acct.job.time_limit_s is None
    assert acct.req_mem_bytes >= 2**64  # 18446744073709551616.00M
    assert acct.step("batch").max_rss_bytes == 216231936


@pytest.mark.parametrize("name", ["sacct-mixed-cgroup.txt", "sacct-mixed-linuxproc.txt", "sacct-pending.txt"])
def test_real_job_lines_are_not_placeholders(name: str) -> None:
    found = site_jobs(name)
    assert found
    assert [job_id for job_id, acct in found.items() if acct.is_placeholder] == []


@pytest.mark.parametrize("name", ["sacct-over-memory-cgroup.txt", "sacct-over-memory-linuxproc.txt"])
def test_real_job_lines_without_partition_field_are_not_placeholders(name: str) -> None:
    found = site_jobs(name)
    assert found
    assert [job_id for job_id, acct in found.items() if acct.is_placeholder] == []


# --- pending and held ---


def test_pending_job_is_not_terminal() -> None:
    acct = site_jobs("sacct-pending.txt")["5000029"]
    assert acct.state.state is SlurmState.PENDING
    assert acct.state_class is StateClass.PENDING
    assert not acct.is_terminal
    assert acct.job.start is None and acct.job.end is None  # "Unknown"
    assert acct.node_list is None
    assert acct.req_mem_bytes == 1024 * MB
    with pytest.raises(ValueError, match="has not finished"):
        diagnose(acct)


def test_squeue_held_job_waits_for_its_user() -> None:
    rows = parse_squeue((SITE / "squeue-held.txt").read_text())
    assert len(rows) == 1
    row = rows[0]
    assert (row.job_id, row.name) == ("5000029", "held-job")
    assert row.state.state is SlurmState.PENDING and not row.state.is_terminal
    assert row.reason == "JobHeldUser"
    assert (row.time_used_s, row.time_limit_s) == (0, 60)
    assert row.node_list is None


def test_the_held_job_is_the_same_in_squeue_and_sacct() -> None:
    (squeued,) = parse_squeue((SITE / "squeue-held.txt").read_text())
    pending = site_jobs("sacct-pending.txt")[squeued.job_id]
    cancelled = site_jobs("sacct-mixed-cgroup.txt")[squeued.job_id]
    assert pending.job_name == cancelled.job_name == squeued.name
    assert pending.job.time_limit_s == cancelled.job.time_limit_s == squeued.time_limit_s


def test_sbatch_parsable_with_cluster() -> None:
    assert parse_sbatch_output((SITE / "sbatch-parsable-cluster.txt").read_text()) == SubmittedJob(
        "5000030", "s3df"
    )
