"""The fault matrix's checker (tests/faults/check.py), fed recorded rows."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.faults.check import (
    Expectation,
    FaultRow,
    HistoryAttempt,
    SlurmJob,
    TaskInstance,
    check_run,
    expected_history_states,
    format_table,
)

OWNER = 1001
T0 = datetime(2026, 12, 6, 5, 0, 0)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(
    job_id: str,
    state: str,
    start: int | None,
    end: int | None,
    *,
    task: str = "ingest",
    map_index: int = -1,
    try_number: int = 1,
    cluster: str = "perlmutter",
) -> SlurmJob:
    return SlurmJob(
        cluster,
        job_id,
        task,
        map_index,
        try_number,
        state,
        at(start or 0) if start is not None else None,
        at(start) if start is not None else None,
        at(end) if end is not None else None,
    )


def attempt(
    state: str,
    job_id: str | None,
    *,
    task: str = "ingest",
    map_index: int = -1,
    try_number: int = 1,
    stream: str = "",
    process: str = "ingest",
    reason: str | None = None,
) -> HistoryAttempt:
    return HistoryAttempt(task, map_index, stream, process, try_number, state, job_id, "perlmutter", reason)


INGEST_OK = TaskInstance("ingest", -1, "success", 1, slurm=True)


def test_a_clean_run_meets_the_target() -> None:
    row = check_run(
        "clean",
        tis=[INGEST_OK, TaskInstance("setupVisits", -1, "success", 1, slurm=False)],
        history=[attempt("success", "10")],
        jobs=[job("10", "COMPLETED", 0, 20)],
        owner_uid=OWNER,
        recover_s=12.0,
    )
    assert (row.submitted, row.duplicates, row.lost, row.wrong, row.ok) == (1, 0, 0, 0, True), row.evidence


def test_two_jobs_of_one_task_instance_running_at_once_are_a_duplicate() -> None:
    # The retry submitted a second job while the first (never recorded) still ran.
    row = check_run(
        "worker-kill",
        tis=[TaskInstance("ingest", -1, "success", 2, slurm=True)],
        history=[attempt("success", "11", try_number=2)],
        jobs=[job("10", "COMPLETED", 0, 20), job("11", "COMPLETED", 5, 25, try_number=2)],
        owner_uid=OWNER,
    )
    assert row.duplicates == 1
    assert "job 11 ran while 10 ran" in "\n".join(row.evidence)
    # ...and the first job ran but is not recorded.
    assert row.lost == 1
    assert not row.ok


def test_two_completed_single_jobs_one_after_the_other_are_a_duplicate() -> None:
    row = check_run(
        "slurmctld",
        tis=[TaskInstance("ingest", -1, "success", 2, slurm=True)],
        history=[attempt("terminated", "10"), attempt("success", "11", try_number=2)],
        jobs=[job("10", "COMPLETED", 0, 20), job("11", "COMPLETED", 30, 50, try_number=2)],
        owner_uid=OWNER,
    )
    assert row.duplicates == 1
    # try 1 recorded terminated although its job COMPLETED
    assert row.wrong == 1
    assert "history terminated, sacct COMPLETED" in "\n".join(row.evidence)


def test_a_bundle_rerun_that_completes_only_what_failed_is_no_duplicate() -> None:
    bundle = TaskInstance("processVisit.bundle", 0, "success", 2, slurm=True, bundle=True)
    b = {"task": "processVisit.bundle", "map_index": 0}
    history = [
        attempt("success", "20", stream="visit=1", process="calibrateVisit", **b),
        attempt("failed", "20", stream="visit=2", process="calibrateVisit", **b),
        attempt("success", "21", stream="visit=2", process="calibrateVisit", try_number=2, **b),
    ]
    jobs = [job("20", "FAILED", 0, 20, **b), job("21", "COMPLETED", 30, 40, try_number=2, **b)]
    row = check_run("b", tis=[bundle], history=history, jobs=jobs, owner_uid=OWNER)
    assert (row.duplicates, row.lost, row.wrong) == (0, 0, 0), row.evidence
    # Completing visit=1 again in the second job is one.
    history.append(attempt("success", "21", stream="visit=1", process="calibrateVisit", try_number=2, **b))
    row = check_run("b", tis=[bundle], history=history, jobs=jobs, owner_uid=OWNER)
    assert row.duplicates == 1
    assert "both completed visit=1:calibrateVisit" in "\n".join(row.evidence)


def test_an_instance_left_running_and_a_task_without_history_are_lost() -> None:
    row = check_run(
        "pg-down",
        tis=[INGEST_OK, TaskInstance("processSingle.measureSingle", 0, "success", 1, slurm=True)],
        history=[attempt("running", "10")],
        jobs=[
            job("10", "COMPLETED", 0, 20),
            job("12", "COMPLETED", 0, 20, task="processSingle.measureSingle", map_index=0, cluster="s3df"),
        ],
        owner_uid=OWNER,
    )
    text = "\n".join(row.evidence)
    assert "latest attempt (try 1) is still running" in text
    assert "processSingle.measureSingle[0]: task instance success, no attempt in the history" in text
    assert "job 12 on s3df (try 1, COMPLETED) ran but is not recorded" in text
    assert row.lost == 3
    # The running attempt of a COMPLETED job, and a success task instance whose attempt is not success.
    assert row.wrong == 2


def test_an_unfinished_task_instance_is_lost_and_the_row_unfinished() -> None:
    row = check_run(
        "sshd",
        tis=[TaskInstance("ingest", -1, "up_for_retry", 1, slurm=True)],
        history=[],
        jobs=[],
        owner_uid=OWNER,
        finished=False,
    )
    assert row.lost == 1
    assert not row.ok
    assert row.evidence[0] == "the run did not finish in time"


def test_a_cancel_is_cancelled_only_when_the_job_owner_cancelled() -> None:
    assert expected_history_states(job("1", f"CANCELLED by {OWNER}", 0, 5), OWNER) == {"cancelled"}
    assert expected_history_states(job("1", "CANCELLED by 0", 0, 5), OWNER) == {"terminated"}
    assert expected_history_states(job("1", "NODE_FAIL", 0, 5), OWNER) == {"terminated"}
    assert expected_history_states(job("1", "RUNNING", 0, None), OWNER) is None


def test_a_users_scancel_recorded_terminated_and_resubmitted_breaks_its_expectation() -> None:
    # As found on main: the user's cancel was recorded Terminated and the retry ran .t2.
    single = {"task": "processSingle.measureSingle", "map_index": 0}
    row = check_run(
        "scancel",
        tis=[TaskInstance("processSingle.measureSingle", 0, "success", 2, slurm=True)],
        history=[attempt("terminated", "30", **single), attempt("success", "31", try_number=2, **single)],
        jobs=[
            job("30", f"CANCELLED by {OWNER}", 0, 5, **single),
            job("31", "COMPLETED", 300, 320, try_number=2, **single),
        ],
        owner_uid=OWNER,
        expectations=[
            Expectation(
                "processSingle.measureSingle",
                0,
                ti_state="failed",
                history_state="cancelled",
                no_later_jobs=True,
            )
        ],
    )
    text = "\n".join(row.evidence)
    assert f"history terminated, sacct CANCELLED by {OWNER}" in text
    assert "task instance success, expected failed" in text
    assert "try 1's job recorded terminated, expected cancelled" in text
    assert "resubmitted after try 1: job(s) 31" in text
    assert row.wrong == 4


def test_an_attempt_recording_another_task_instances_job_is_wrong() -> None:
    # The slurmctld finding on main: a bundle's try 2 re-attached to job 2573, the single job's.
    b = {"task": "processVisit.bundle", "map_index": 0}
    row = check_run(
        "slurmctld",
        tis=[INGEST_OK, TaskInstance("processVisit.bundle", 0, "success", 2, slurm=True, bundle=True)],
        history=[
            attempt("success", "2573"),
            attempt("success", "2573", try_number=2, stream="visit=1", process="calibrateVisit", **b),
        ],
        jobs=[job("2573", "COMPLETED", 0, 20)],
        owner_uid=OWNER,
    )
    assert row.wrong == 1
    assert "records job 2573 on perlmutter, ingest[-1]'s job" in "\n".join(row.evidence)


def test_the_table_has_one_line_per_fault_and_the_evidence_of_misses() -> None:
    rows = [
        FaultRow("sshd-down", submitted=5, recover_s=41.6),
        FaultRow("scancel", submitted=3, wrong=1, evidence=["wrong: x"]),
        FaultRow("node-down", skipped="perlmutter has one node"),
    ]
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[2].split() == ["sshd-down", "5", "0", "0", "0", "42", "ok"]
    assert lines[3].split()[-1] == "MISSED"
    assert "SKIPPED: perlmutter has one node" in lines[4]
    assert text.endswith("scancel:\n  wrong: x")
    assert [r.ok for r in rows] == [True, False, True]


def test_a_retry_that_re_attached_to_the_first_tries_job_is_no_duplicate_and_noted() -> None:
    # worker-kill: try 1's worker died after sbatch; try 2 found job 10 by its name and waited for it.
    row = check_run(
        "worker-kill",
        tis=[TaskInstance("ingest", -1, "success", 2, slurm=True)],
        history=[attempt("success", "10", try_number=2)],
        jobs=[job("10", "COMPLETED", 0, 20)],
        owner_uid=OWNER,
        expectations=[Expectation("ingest", ti_state="success", history_state="success", no_later_jobs=True)],
    )
    assert (row.duplicates, row.lost, row.wrong, row.ok) == (0, 0, 0, True), row.evidence
    assert row.evidence == ["note: ingest[-1] :ingest: job 10 of try 1 recorded as try 2"]
