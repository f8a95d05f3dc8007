"""The pure rules a try decides by: which job to re-attach to, which try a job is recorded for,
whether a node failure is resubmitted within the try, and what follows a failed job.

SLURM's answers are the site's recorded sacct output (tests/data/site).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_desc.operators.resume import (
    DEFERRED_TRY,
    NODE_FAILURE_RESUBMITS,
    AfterFailure,
    after_failure,
    claim_task_instance,
    counts_node_failure,
    ended_while_deferred,
    live_job,
    saved_time,
    stale_task_dir,
    try_of_job,
)
from airflow_desc.slurm.diagnose import Diagnosis, ReasonClass
from tests.site_recordings import site_jobs

ENDED = site_jobs("sacct-mixed-cgroup.txt")  # 5000026 completed, 5000027 out of memory, 5000028 failed
PENDING = site_jobs("sacct-pending.txt")  # 5000029 pending
STAND_IN = site_jobs("sacct-placeholder-allocation.txt")  # 5000031: slurmdbd's stand-in job line


def test_a_finished_job_is_not_live_but_a_pending_one_is() -> None:
    accounting = {**ENDED, **PENDING}
    assert live_job(["5000026", "5000029"], accounting, queued=()) == "5000029"
    assert live_job(["5000026", "5000028"], accounting, queued=()) is None


def test_a_job_only_squeue_knows_is_live() -> None:
    assert live_job(["5000026", "7"], ENDED, queued={"7"}) == "7"


def test_slurmdbds_stand_in_is_live_until_the_real_line_comes() -> None:
    assert live_job(["5000031"], STAND_IN, queued=()) == "5000031"


def test_the_first_live_candidate_wins() -> None:
    assert live_job(["8", "7"], {}, queued={"7", "8"}) == "8"


def test_a_job_is_recorded_for_the_try_that_saved_it_else_for_this_try() -> None:
    state = {"job_id": "5", "try_number": 1}
    assert try_of_job(state, "5", this_try=3) == 1
    assert try_of_job(state, "6", this_try=3) == 3
    assert try_of_job({}, "5", this_try=2) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28T01:44:16+00:00", "2026-11-28T01:44:16+00:00"),
        ("2026-11-28T01:44:16", "2026-11-28T01:44:16+00:00"),
    ],
)
def test_saved_times_are_utc(text: str, expected: str) -> None:
    value = saved_time(text)
    assert value is not None and value.isoformat() == expected


@pytest.mark.parametrize("text", [None, 5, "yesterday"])
def test_anything_but_an_iso_time_is_no_record(text: Any) -> None:
    assert saved_time(text) is None


def node_failure(message: str = "node s3df-n1 failed") -> Diagnosis:
    return Diagnosis(ReasonClass.NODE_FAILURE, message)


def test_a_node_failure_is_resubmitted_a_bounded_number_of_times_per_try() -> None:
    state: dict[str, Any] = {}
    for n in range(NODE_FAILURE_RESUBMITS):
        assert counts_node_failure(state, node_failure(), f"{n}", job_try=1)
    assert not counts_node_failure(state, node_failure(), "last", job_try=1)
    assert [f["job_id"] for f in state["node_failures"]] == [f"{n}" for n in range(NODE_FAILURE_RESUBMITS)]
    assert counts_node_failure(state, node_failure(), "next", job_try=2)


def test_another_failure_is_not_resubmitted_nor_noted() -> None:
    state: dict[str, Any] = {}
    assert not counts_node_failure(state, Diagnosis(ReasonClass.OUT_OF_MEMORY, "oom"), "5", job_try=1)
    assert state == {}


@pytest.mark.parametrize(
    ("cancelled", "adopted", "job_try", "resubmit", "expected"),
    [
        (True, False, 1, False, AfterFailure.RUN_OWN_JOB),  # an earlier try's job, cancelled by the clear
        (True, True, 1, False, AfterFailure.FAIL_CANCELLED),
        (True, False, 2, False, AfterFailure.FAIL_CANCELLED),
        (False, False, 2, True, AfterFailure.RESUBMIT),
        (False, False, 2, False, AfterFailure.FAIL),
    ],
)
def test_what_follows_a_failed_job(
    cancelled: bool, adopted: bool, job_try: int, resubmit: bool, expected: AfterFailure
) -> None:
    then = after_failure(cancelled=cancelled, adopted=adopted, job_try=job_try, this_try=2, resubmit=resubmit)
    assert then is expected


# --- another Airflow's run of the same run id ---

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=timezone.utc)
MINE, THEIRS = "a" * 32, "b" * 32


def test_a_task_instance_this_airflow_never_ran_is_claimed_now() -> None:
    state: dict[str, Any] = {}
    assert claim_task_instance(state, NOW)
    assert saved_time(state["claimed_at"]) == NOW
    assert not claim_task_instance(state, datetime(2027, 1, 1, tzinfo=timezone.utc))  # claimed once
    assert saved_time(state["claimed_at"]) == NOW


def test_a_state_saved_before_claims_existed_is_left_unclaimed() -> None:
    state: dict[str, Any] = {"job_id": "900", "try_number": 1}
    assert not claim_task_instance(state, NOW)
    assert "claimed_at" not in state


@pytest.mark.parametrize(
    ("saved_token", "dir_token", "dir_in_use", "saved_state"),
    [
        (None, None, False, False),  # a new task instance, no directory yet
        (None, None, False, True),  # state saved before tokens existed, nothing in the directory
        (MINE, MINE, True, True),  # a clear in this Airflow: the directory and its records are ours
        (MINE, None, True, True),  # the try saved its token, then died before writing it
        (None, None, True, True),  # a directory written before tokens existed, with this Airflow's state
    ],
)
def test_this_airflows_own_directory_is_kept(
    saved_token: str | None, dir_token: str | None, dir_in_use: bool, saved_state: bool
) -> None:
    assert (
        stale_task_dir(
            saved_token=saved_token, dir_token=dir_token, dir_in_use=dir_in_use, saved_state=saved_state
        )
        is None
    )


def test_records_left_by_another_airflows_run_of_the_same_id_are_set_aside() -> None:
    # A reset metadata DB, or a deleted and re-created run: this Airflow saved nothing, the folder is full.
    why = stale_task_dir(saved_token=None, dir_token=None, dir_in_use=True, saved_state=False)
    assert why is not None and "saved no state" in why
    # The other Airflow wrote its token: not ours, whatever this Airflow saved.
    for saved_token, saved_state in ((None, False), (None, True), (MINE, True)):
        why = stale_task_dir(
            saved_token=saved_token, dir_token=THEIRS, dir_in_use=True, saved_state=saved_state
        )
        assert why is not None and THEIRS in why


def test_a_try_that_ended_while_deferred_left_its_job_to_be_cancelled() -> None:
    # Try 1 deferred and never resumed (a clear before its trigger ran): try 2 cancels its job.
    assert ended_while_deferred({DEFERRED_TRY: 1, "job_id": "7"}, job_try=1, this_try=2)
    # Try 1 resumed (its record dropped the key), or never deferred (deferrable=False), or a worker
    # died before the deferral: the job is re-attached to, not cancelled.
    assert not ended_while_deferred({"job_id": "7"}, job_try=1, this_try=2)
    # The running try's own job (it deferred, its worker came back): never cancelled.
    assert not ended_while_deferred({DEFERRED_TRY: 2}, job_try=2, this_try=2)
    # A try that deferred later than the job's: the job's try resumed or never deferred.
    assert not ended_while_deferred({DEFERRED_TRY: 2}, job_try=1, this_try=3)
