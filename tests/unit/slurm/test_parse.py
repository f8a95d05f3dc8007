from __future__ import annotations

import pathlib
from datetime import datetime

import pytest

from airflow_desc.slurm.accounting import accounting_from_payload, accounting_to_payload, group_accounting
from airflow_desc.slurm.commands import SACCT_FIELDS
from airflow_desc.slurm.parse import (
    SlurmOutputError,
    SubmittedJob,
    parse_exit_code,
    parse_sacct,
    parse_sbatch_output,
    parse_squeue,
)
from airflow_desc.slurm.parse_controller import parse_scontrol_jobs
from airflow_desc.slurm.states import SlurmState, StateClass
from tests.site_recordings import SITE

DATA = pathlib.Path(__file__).parents[2] / "data" / "slurm"
K, M = 1024, 1024**2
NOTES_FIELDS = ("JobID", "State", "ExitCode", "Elapsed", "TotalCPU", "MaxRSS", "ReqMem", "NodeList")


@pytest.fixture(scope="module")
def mixed() -> str:
    return (DATA / "sacct_mixed.txt").read_text()


# --- sbatch ---


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("123\n", SubmittedJob("123", None)),
        ("5000007", SubmittedJob("5000007", None)),
        ("123;perlmutter\n", SubmittedJob("123", "perlmutter")),
        ("  42 \n\n", SubmittedJob("42", None)),
        ("Welcome to the cluster!\nquota: 80% used\n777\n", SubmittedJob("777", None)),
    ],
)
def test_parse_sbatch_output(stdout: str, expected: SubmittedJob) -> None:
    assert parse_sbatch_output(stdout) == expected


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "\n  \n",
        "sbatch: error: Batch job submission failed: Invalid partition name specified",
        "Submitted batch job 123",
        "123;",
        "123;a;b",
        "12a",
        "123\nsbatch: warning: something",
    ],
)
def test_parse_sbatch_output_rejects(stdout: str) -> None:
    with pytest.raises(SlurmOutputError, match="did not print a job id") as info:
        parse_sbatch_output(stdout)
    assert info.value.text == stdout
    assert isinstance(info.value, ValueError)


# --- exit codes ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0:0", (0, 0)), ("3:0", (3, 0)), ("0:9", (0, 9)), ("0:125", (0, 125)), ("", (None, None))],
)
def test_parse_exit_code(text: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_exit_code(text) == expected


@pytest.mark.parametrize("text", ["3", "a:b", "-1:0", "1:2:3"])
def test_parse_exit_code_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="exit code"):
        parse_exit_code(text)


# --- sacct ---


def test_parse_sacct_row_count_and_ids(mixed: str) -> None:
    rows = parse_sacct(mixed)
    assert len(rows) == len(mixed.strip().splitlines()) == 36
    assert [r.full_id for r in rows[:3]] == ["5000101", "5000101.batch", "5000101.extern"]
    assert [(r.job_id, r.step) for r in rows if r.job_id.startswith("5000109")] == [
        ("5000109_0", None),
        ("5000109_0", "batch"),
        ("5000109_1", None),
        ("5000109_1", "batch"),
    ]
    assert rows[0].line_number == 1
    assert rows[-1].line_number == 36


def test_parse_sacct_completed_job_line(mixed: str) -> None:
    job = parse_sacct(mixed)[0]
    assert job.job_id == "5000101"
    assert job.step is None
    assert job.job_name == "run42-burn"
    assert job.state.state is SlurmState.COMPLETED
    assert (job.exit_code, job.signal) == (0, 0)
    assert (job.derived_exit_code, job.derived_signal) == (0, 0)
    assert job.elapsed_s == 3.0
    assert job.total_cpu_s == pytest.approx(2.352)
    assert job.cpu_time_s == 3.0
    assert job.max_rss_bytes is None  # the job line of sacct has no MaxRSS
    assert job.req_mem_bytes == 400 * M
    assert job.req_mem_scope is None
    assert (job.req_cpus, job.alloc_cpus, job.nnodes) == (1, 1, 1)
    assert job.node_list == "lab-host"
    assert job.submit == datetime(2025, 11, 27, 10, 0, 0)
    assert job.start == datetime(2025, 11, 27, 10, 0, 1)
    assert job.end == datetime(2025, 11, 27, 10, 0, 4)
    assert job.time_limit_s == 600.0
    assert job.partition == "debug"
    assert job.cluster == "local"
    assert job.reason is None
    assert job.raw["jobname"] == "run42-burn"


def test_parse_sacct_steps(mixed: str) -> None:
    batch, extern = parse_sacct(mixed)[1:3]
    assert batch.step == "batch"
    assert batch.job_name == "batch"
    assert batch.max_rss_bytes == 225030144
    assert batch.derived_exit_code is None
    assert batch.req_mem_bytes is None
    assert batch.time_limit_s is None
    assert batch.partition is None
    assert extern.step == "extern"
    assert extern.total_cpu_s == pytest.approx(0.003)


def test_parse_sacct_states_and_signals(mixed: str) -> None:
    rows = {r.full_id: r for r in parse_sacct(mixed)}
    assert rows["5000102"].state.state is SlurmState.FAILED
    assert (rows["5000102"].exit_code, rows["5000102"].signal) == (3, 0)
    assert rows["5000103"].state.state is SlurmState.TIMEOUT
    assert rows["5000103.batch"].signal == 15
    assert rows["5000104"].state.state is SlurmState.OUT_OF_MEMORY
    assert rows["5000104"].signal == 125
    assert rows["5000105"].signal == 9
    assert rows["5000105.batch"].state.state is SlurmState.CANCELLED
    assert rows["5000105.batch"].cancelled_by_uid == 0
    assert rows["5000106"].cancelled_by_uid == 1000
    assert rows["5000111"].state.state_class is StateClass.RETRYABLE
    assert rows["5000112"].state.state is SlurmState.PREEMPTED


def test_parse_sacct_pending_job(mixed: str) -> None:
    pending = next(r for r in parse_sacct(mixed) if r.job_id == "5000107")
    assert pending.state.state is SlurmState.PENDING
    assert pending.req_mem_bytes is None  # "16?": garbage while pending
    assert pending.node_list is None  # "None assigned"
    assert pending.start is None  # "Unknown"
    assert pending.end is None
    assert pending.alloc_cpus == 0


def test_parse_sacct_running_and_cancelled_while_pending(mixed: str) -> None:
    rows = {r.full_id: r for r in parse_sacct(mixed)}
    assert rows["5000108"].end is None
    assert rows["5000108.batch"].max_rss_bytes is None
    assert rows["5000113"].start is None  # "None": cancelled before it started
    assert rows["5000113"].reason == "Priority"


def test_parse_sacct_days(mixed: str) -> None:
    coadd = next(r for r in parse_sacct(mixed) if r.full_id == "5000114")
    assert coadd.elapsed_s == 93784.0
    assert coadd.total_cpu_s == 187568.0
    assert coadd.time_limit_s == 172800.0
    assert coadd.req_mem_bytes == 21000 * M


def test_parse_sacct_notes_format_without_noconvert() -> None:
    rows = parse_sacct((DATA / "sacct_notes_format.txt").read_text(), fields=NOTES_FIELDS)
    assert [r.full_id for r in rows] == [
        "5000007",
        "5000007.batch",
        "5000007.extern",
        "5000008",
        "5000008.batch",
    ]
    assert rows[1].max_rss_bytes == 219756 * K
    assert rows[4].max_rss_bytes == round(214.5 * M)
    assert rows[0].req_mem_bytes == 400 * M
    assert rows[0].job_name is None  # not requested
    assert rows[0].submit is None


def test_parse_sacct_tolerates_blank_lines_whitespace_and_trailing_pipe() -> None:
    text = (
        "\n  5000007|COMPLETED|0:0|00:00:03|00:02.352||400M|lab-host|  \n"
        "\n"
        "5000007.batch|COMPLETED|0:0|00:00:03|00:02.352|225030144||lab-host\r\n"
    )
    rows = parse_sacct(text, fields=NOTES_FIELDS)
    assert [r.full_id for r in rows] == ["5000007", "5000007.batch"]
    assert [r.line_number for r in rows] == [2, 4]
    assert rows[1].max_rss_bytes == 225030144


def test_parse_sacct_old_reqmem_suffix() -> None:
    rows = parse_sacct("12|FAILED|0:9|00:00:03|00:01.000||4000Mc|n1\n", fields=NOTES_FIELDS)
    assert rows[0].req_mem_bytes == 4000 * M
    assert rows[0].req_mem_scope == "cpu"


def test_parse_sacct_empty_output() -> None:
    assert parse_sacct("") == []
    assert parse_sacct("\n\n") == []


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("5000007|COMPLETED|0:0", "has 3 fields, expected 8"),
        ("5000007|COMPLETED|0:0|00:00:03|00:02.352||400M|lab-host|x|", "has 10 fields"),
        ("5000007|COMPLETED|zero|00:00:03|00:02.352||400M|lab-host", "exit code"),
        ("5000007|COMPLETED|0:0|3 secs|00:02.352||400M|lab-host", "duration"),
        ("5000007|COMPLETED|0:0|00:00:03|00:02.352|lots|400M|lab-host", "memory"),
        ("|COMPLETED|0:0|00:00:03|00:02.352||400M|lab-host", "JobID"),
    ],
)
def test_parse_sacct_malformed_line_names_number_and_content(line: str, match: str) -> None:
    good = "5000006|COMPLETED|0:0|00:00:03|00:02.352||400M|lab-host"
    with pytest.raises(SlurmOutputError, match=match) as info:
        parse_sacct(f"{good}\n\n{line}\n", fields=NOTES_FIELDS)
    assert info.value.line_number == 3
    assert "line 3" in str(info.value)
    assert line.strip() in str(info.value)
    assert info.value.text.strip() == line.strip()


def test_parse_sacct_bad_timestamp() -> None:
    fields = ("JobID", "Start")
    with pytest.raises(SlurmOutputError, match="timestamp"):
        parse_sacct("1|yesterday\n", fields=fields)
    assert parse_sacct("1|Unknown\n2|None\n3|\n", fields=fields)[0].start is None


def test_parse_sacct_needs_jobid_field() -> None:
    with pytest.raises(ValueError, match="JobID"):
        parse_sacct("x|y", fields=("State", "ExitCode"))


def test_parse_sacct_field_names_are_case_insensitive() -> None:
    rows = parse_sacct("1|FAILED|2:0\n", fields=("jobid", "STATE", "exitcode"))
    assert rows[0].state.state is SlurmState.FAILED
    assert rows[0].exit_code == 2


def test_parse_sacct_unknown_state_is_not_an_error() -> None:
    row = parse_sacct("1|LAUNCH_WEIRD|0:0\n", fields=("JobID", "State", "ExitCode"))[0]
    assert row.state.state is SlurmState.UNKNOWN
    assert row.state.raw == "LAUNCH_WEIRD"
    assert row.state.state_class is not StateClass.SUCCEEDED


def test_default_fields_match_the_fixture(mixed: str) -> None:
    first = mixed.splitlines()[0]
    assert first.count("|") == len(SACCT_FIELDS) - 1


# --- grouping ---


def test_group_accounting(mixed: str) -> None:
    jobs = group_accounting(parse_sacct(mixed))
    assert list(jobs)[:4] == ["5000101", "5000102", "5000103", "5000104"]
    assert "5000109_0" in jobs
    assert "5000109_1" in jobs
    assert len(jobs) == 15
    job = jobs["5000101"]
    assert job.job is not None
    assert job.job.step is None
    assert [s.step for s in job.steps] == ["batch", "extern"]
    assert job.state.state is SlurmState.COMPLETED
    assert job.max_rss_bytes == 225030144  # from the batch step
    assert job.req_mem_bytes == 400 * M
    assert job.mem_limit_per_node_bytes == 400 * M
    assert job.total_cpu_s == pytest.approx(2.352)  # the job line's sum, not job + steps
    assert job.node_list == "lab-host"
    assert job.step("batch") is job.steps[0]
    assert job.step("0") is None


def test_group_accounting_max_rss_over_srun_steps(mixed: str) -> None:
    job = group_accounting(parse_sacct(mixed))["5000110"]
    assert [s.step for s in job.steps] == ["batch", "extern", "0"]
    assert job.max_rss_bytes == 524288000
    assert job.total_cpu_s == 8.0


def test_group_accounting_pending_job(mixed: str) -> None:
    job = group_accounting(parse_sacct(mixed))["5000107"]
    assert job.steps == ()
    assert job.max_rss_bytes is None
    assert job.req_mem_bytes is None
    assert job.mem_limit_per_node_bytes is None
    assert not job.is_terminal


def test_group_accounting_cancelled_by_from_a_step(mixed: str) -> None:
    jobs = group_accounting(parse_sacct(mixed))
    assert jobs["5000105"].state.state is SlurmState.FAILED
    assert jobs["5000105"].cancelled_by_uid == 0
    assert jobs["5000105"].signal == 9


def test_group_accounting_without_job_line_sums_steps() -> None:
    text = "7.batch|COMPLETED|0:0|00:00:05|00:00:02|1000||n1\n7.0|FAILED|1:0|00:00:04|00:00:03|5000||n1\n"
    job = group_accounting(parse_sacct(text, fields=NOTES_FIELDS))["7"]
    assert job.job is None
    assert job.state.state is SlurmState.COMPLETED  # the batch step stands in for the job
    assert job.total_cpu_s == 5.0
    assert job.max_rss_bytes == 5000


@pytest.mark.parametrize(
    ("req_mem", "nnodes", "alloc_cpus", "limit"),
    [
        ("800M", "2", "8", 400 * M),  # >= 21.08: the job total, spread over the nodes
        ("2Gn", "2", "8", 2 * 1024 * M),  # old: per node
        ("1000Mc", "2", "8", 4000 * M),  # old: per CPU, 4 CPUs per node
        ("1000Mc", "1", "", None),  # per CPU without the CPU count: unknown
    ],
)
def test_mem_limit_per_node(req_mem: str, nnodes: str, alloc_cpus: str, limit: int | None) -> None:
    fields = ("JobID", "State", "ReqMem", "NNodes", "AllocCPUS")
    job = group_accounting(parse_sacct(f"9|FAILED|{req_mem}|{nnodes}|{alloc_cpus}\n", fields=fields))["9"]
    assert job.mem_limit_per_node_bytes == limit


# --- squeue ---


def test_parse_squeue() -> None:
    rows = parse_squeue((DATA / "squeue.txt").read_text())
    assert [r.job_id for r in rows] == [
        "5000201",
        "5000202",
        "5000203_[3-9%2]",
        "5000203_1",
        "5000204",
        "5000205",
        "5000206",
    ]
    pending, running = rows[0], rows[1]
    assert pending.state.state is SlurmState.PENDING
    assert pending.reason == "Priority"
    assert pending.node_list is None
    assert pending.time_used_s == 0.0
    assert pending.time_limit_s == 600.0
    assert running.state.state is SlurmState.RUNNING
    assert running.reason is None
    assert running.time_used_s == 65.0
    assert running.node_list == "lab-host"
    assert running.name == "run42-burn"
    assert rows[4].time_used_s == 93784.0
    assert rows[4].time_limit_s is None  # UNLIMITED
    assert rows[4].node_list == "nid[001-004]"
    assert rows[5].state.state_class is StateClass.RUNNING  # COMPLETING
    assert rows[6].reason == "JobHeldUser"
    assert all(r.cluster is None for r in rows)


def test_parse_squeue_with_cluster_headers() -> None:
    rows = parse_squeue((DATA / "squeue_clusters.txt").read_text())
    assert [(r.job_id, r.cluster) for r in rows] == [
        ("5000301", "alpha"),
        ("1000001", "beta"),
        ("1000002", "beta"),
    ]
    assert rows[2].line_number == 5


def test_parse_squeue_empty() -> None:
    assert parse_squeue("") == []


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("5000201|run42|PENDING|Priority|0:00", "has 5 fields, expected 7"),
        ("5000201|run42|PENDING|Priority|soon|10:00|", "duration"),
        ("|run42|PENDING|Priority|0:00|10:00|", "empty job id"),
    ],
)
def test_parse_squeue_malformed(line: str, match: str) -> None:
    with pytest.raises(SlurmOutputError, match=match) as info:
        parse_squeue(f"5000202|run42|RUNNING|None|1:05|10:00|lab-host\n{line}\n")
    assert info.value.line_number == 2
    assert line in str(info.value)


def test_a_job_name_with_pipes_keeps_the_other_fields_in_place() -> None:
    # SLURM accepts '|' in names (sbatch -J 'a|b|c'); the name alone absorbs the extra separators.
    fields = ("JobID", "JobName", "State", "ExitCode")
    [row] = parse_sacct("42|a|b|c|COMPLETED|0:0\n", fields)
    assert (row.job_name, row.state.raw, row.exit_code) == ("a|b|c", "COMPLETED", 0)
    [queued] = parse_squeue("43|x|y|PENDING|Priority|0:00|1:00|\n")
    assert (queued.name, queued.state.raw, queued.reason) == ("x|y", "PENDING", "Priority")


# --- scontrol -o show job: what the controller knows of a job sacct lost ---


def test_scontrol_jobs_recorded_from_the_site() -> None:
    ended = parse_scontrol_jobs((SITE / "scontrol-ended.txt").read_text())
    live = parse_scontrol_jobs((SITE / "scontrol-live.txt").read_text())
    assert {k: j.state.raw for k, j in {**ended, **live}.items()} == {
        "3268": "COMPLETED", "3269": "FAILED", "3270": "RUNNING", "3271": "PENDING",
    }  # fmt: skip
    assert ended["3269"].job_name == "probe fail"  # a name with a space stays whole
    assert [j.is_terminal for j in (ended["3268"], ended["3269"], live["3270"], live["3271"])] == [
        True, True, False, False,
    ]  # fmt: skip
    done = ended["3268"].to_accounting()
    assert done.state_class is StateClass.SUCCEEDED and done.exit_code == 0 and done.signal == 0
    assert done.node_list == "pm-n1" and done.elapsed_s == 3.0
    assert done.req_mem_bytes == 512 * 1024**2  # TRES mem=512M
    assert done.job is not None and done.job.partition == "regular" and done.job.time_limit_s == 60
    assert done.job.start is not None and done.job.end is not None and done.job.end >= done.job.start
    assert done.total_cpu_s is None and done.max_rss_bytes is None and not done.is_placeholder
    failed = ended["3269"].to_accounting()
    assert failed.state_class is StateClass.FAILED and failed.exit_code == 3
    pending = live["3271"].to_accounting()
    assert pending.node_list is None and pending.job is not None and pending.job.start is None


def test_scontrol_round_trips_through_the_trigger_payload() -> None:
    for job in parse_scontrol_jobs((SITE / "scontrol-ended.txt").read_text()).values():
        acct = job.to_accounting()
        assert accounting_from_payload(accounting_to_payload(acct)) == acct


def test_scontrol_errors_and_array_tasks() -> None:
    text = (
        "slurm_load_jobs error: Invalid job id specified\n\n"
        "JobId=41 ArrayJobId=40 ArrayTaskId=1 JobName=arr UserId=desc(1001) JobState=COMPLETED "
        "ExitCode=0:0 RunTime=00:00:01 NodeList=pm-n1 Power= \n"
    )
    jobs = parse_scontrol_jobs(text)
    assert set(jobs) == {"40_1", "41"}
    assert jobs["40_1"].to_accounting().job_id == "40_1"
    assert jobs["40_1"].fields["Power"] == ""
    assert parse_scontrol_jobs("") == {}


@pytest.mark.parametrize("line", ["JobId=abc JobState=COMPLETED", "JobId=12 JobName=x"])
def test_scontrol_bad_job_line_names_its_line(line: str) -> None:
    with pytest.raises(SlurmOutputError, match="scontrol output line 2"):
        parse_scontrol_jobs("banner\n" + line)
