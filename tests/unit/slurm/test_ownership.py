"""Whose a job is (name, submit time) and who cancelled it, from sacct text recorded on the site."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_desc.slurm import group_accounting, parse_sacct
from airflow_desc.slurm.commands import owner_sacct_command
from airflow_desc.slurm.ownership import CLOCK_SKEW_S, cancelled_by_owner, foreign_job_reason, parse_owners
from tests.site_recordings import SITE, sacct_text

OWNERS = parse_owners(sacct_text("owners-sacct.txt")[1])
UTC = timezone.utc


def test_the_owner_query_reads_utc_times_of_the_allocation_lines() -> None:
    assert (
        owner_sacct_command(["2813", "2814"])
        == "TZ=UTC sacct -X -P -n -o JobID,JobName,UID,Submit -j 2813,2814"
    )
    with pytest.raises(ValueError, match="not a SLURM job id"):
        owner_sacct_command(["2813; reboot"])


def test_owners_carry_name_uid_and_an_aware_submit_time() -> None:
    owner = OWNERS["2813"]
    assert (owner.name, owner.uid) == ("bundle.80dfaac942d4.t2", 1001)
    assert owner.submit == datetime(2026, 12, 6, 5, 27, 17, tzinfo=UTC)
    assert set(OWNERS) == {"2763", "2812", "2813", "2814"}


def test_our_job_is_ours() -> None:
    submitted = datetime(2026, 12, 6, 5, 27, 16, tzinfo=UTC)
    assert (
        foreign_job_reason(
            "2813",
            name=OWNERS["2813"].name,
            submit=OWNERS["2813"].submit,
            expected_name="bundle.80dfaac942d4.t2",
            submitted_after=submitted,
        )  # fmt: skip
        is None
    )


def test_a_reused_id_names_another_tasks_job() -> None:
    # The local site's slurmctld lost its state and gave the id of a bundle's job to a single job.
    why = foreign_job_reason(
        "2814", name=OWNERS["2814"].name, submit=OWNERS["2814"].submit,
        expected_name="bundle.80dfaac942d4.t1", submitted_after=datetime(2026, 12, 6, 5, 26, 54, tzinfo=UTC),
    )  # fmt: skip
    assert why is not None
    assert "'job.d7a7edb06df0.t1', not 'bundle.80dfaac942d4.t1'" in why and "reused id" in why


def test_an_older_job_of_the_same_name_is_not_ours() -> None:
    owner = OWNERS["2812"]
    late = owner.submit + timedelta(seconds=CLOCK_SKEW_S + 1)  # type: ignore[operator]
    why = foreign_job_reason(
        "2812", name=owner.name, submit=owner.submit, expected_name=owner.name or "", submitted_after=late
    )
    assert why is not None and "before this task submitted its job" in why
    # Within the clock skew the cluster's clock may be behind ours: still ours.
    near = owner.submit + timedelta(seconds=CLOCK_SKEW_S - 1)  # type: ignore[operator]
    assert (
        foreign_job_reason(
            "2812", name=owner.name, submit=owner.submit, expected_name=owner.name or "", submitted_after=near
        )
        is None
    )


def test_a_job_without_a_name_cannot_be_shown_to_be_ours() -> None:
    why = foreign_job_reason("7", name=None, submit=None, expected_name="x.t1", submitted_after=None)
    assert why is not None and "no name" in why


def test_a_cancel_by_the_jobs_own_uid_is_the_owners() -> None:
    fields, text = sacct_text("cancelled-by-owner-sacct.txt")
    acct = group_accounting(parse_sacct(text, fields))["2763"]
    assert acct.cancelled_by_uid == 1001
    assert cancelled_by_owner(acct, OWNERS["2763"].uid)
    assert not cancelled_by_owner(acct, 0)  # the owner is someone else: root, an admin
    assert not cancelled_by_owner(acct, None)  # unknown owner: not shown to be the owner's


@pytest.mark.parametrize("state", ["CANCELLED by 0", "CANCELLED", "FAILED", "COMPLETED"])
def test_any_other_end_is_not_an_owners_cancel(state: str) -> None:
    acct = group_accounting(parse_sacct(f"5|{state}|0:15", ("JobID", "State", "ExitCode")))["5"]
    assert not cancelled_by_owner(acct, 1001)


def test_the_recordings_exist() -> None:
    assert (SITE / "owners-sacct.txt").is_file()
