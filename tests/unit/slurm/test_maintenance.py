"""Reservations, partition states and the submission hold, on outputs of the site's scontrol and sinfo."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_desc.slurm.maintenance import (
    ClusterAvailability,
    MaintenanceWindow,
    availability_command,
    parse_availability,
    parse_reservations,
    parse_sinfo_partitions,
    submission_hold,
)
from airflow_desc.slurm.parse import SlurmOutputError
from tests.unit.slurm import DATA

UTC = timezone.utc


def availability(name: str) -> ClusterAvailability:
    before, found = parse_availability((DATA / name).read_text(), "@@M")
    assert before == ""
    assert found is not None
    return found


MAINT = availability("availability_maint.txt")
NONE = availability("availability_none.txt")
IN_MAINT = datetime(2026, 12, 6, 15, 30, tzinfo=UTC)


def hold(found: ClusterAvailability | None, **kwargs: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "cluster": "perlmutter", "partition": "regular", "walltime_s": 600, "now": IN_MAINT, **kwargs,
    }  # fmt: skip
    return submission_hold(found, **args)  # type: ignore[arg-type]


def test_reservations_are_read_in_utc_with_their_nodes_and_flags() -> None:
    first, second = MAINT.reservations
    assert first.name == "desc_maint"
    assert first.start == datetime(2026, 12, 6, 15, 10, tzinfo=UTC)
    assert first.end == datetime(2026, 12, 6, 16, 10, tzinfo=UTC)
    assert first.nodes == {"pm-n1", "pm-n2"}
    assert "MAINT" in first.flags
    assert first.state == "ACTIVE"
    assert second.state == "INACTIVE"
    assert NONE.reservations == ()


def test_partitions_with_their_default_and_availability() -> None:
    assert MAINT.partition(None) is MAINT.partitions["regular"]
    assert MAINT.partitions["regular"].nodes == {"pm-n1", "pm-n2"}
    assert MAINT.partitions["regular"].up
    assert not MAINT.partitions["debug"].up
    assert MAINT.partition("nosuch") is None


def test_a_job_inside_a_maintenance_waits_for_its_end() -> None:
    found = hold(MAINT)
    assert found is not None
    assert found.until == datetime(2026, 12, 6, 16, 10, tzinfo=UTC)
    assert found.reason.startswith("waiting for maintenance to end at 2026-12-06 16:10 UTC")
    assert "maintenance reservation desc_maint" in found.reason
    assert "partition regular of perlmutter" in found.reason


def test_a_job_that_would_run_into_a_coming_window_waits_for_it_too() -> None:
    before = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)
    assert hold(MAINT, now=before, walltime_s=300) is None  # ends 15:05, before the window
    found = hold(MAINT, now=before, walltime_s=1200)
    assert found is not None and found.until == datetime(2026, 12, 6, 16, 10, tzinfo=UTC)


def test_a_reservation_of_some_nodes_blocks_only_jobs_that_need_them() -> None:
    later = datetime(2026, 12, 6, 17, 30, tzinfo=UTC)  # one_node holds pm-n2 only
    assert hold(MAINT, now=later) is None
    found = hold(MAINT, now=later, nodes=2)
    assert found is not None
    assert found.until == datetime(2026, 12, 6, 18, 0, tzinfo=UTC)
    assert "reservation one_node" in found.reason and "maintenance reservation" not in found.reason


def test_windows_one_after_another_are_waited_out_together() -> None:
    window = MaintenanceWindow(
        datetime(2026, 12, 6, 16, 10, tzinfo=UTC), datetime(2026, 12, 6, 16, 40, tzinfo=UTC), "the profile's"
    )
    found = hold(MAINT, windows=[window])
    assert found is not None
    assert found.until == datetime(2026, 12, 6, 16, 40, tzinfo=UTC)
    assert "desc_maint" in found.reason and "the profile's" in found.reason


def test_a_partition_that_is_down_holds_until_it_is_up() -> None:
    found = hold(NONE, partition="debug")
    assert found is not None and found.until is None
    assert found.reason == "waiting for partition debug of perlmutter to come up: sinfo says it is down"


def test_nothing_in_the_way() -> None:
    assert hold(NONE) is None
    assert hold(NONE, partition=None) is None


def test_profile_windows_count_without_the_clusters_answer() -> None:
    window = MaintenanceWindow(IN_MAINT - timedelta(hours=1), IN_MAINT + timedelta(hours=1), "the profile's")
    found = hold(None, windows=[window])
    assert found is not None and found.until == IN_MAINT + timedelta(hours=1)
    assert hold(None) is None


def test_availability_command_marks_each_part_and_its_end() -> None:
    command = availability_command("@@M")
    assert command == (
        "printf '%s\\n' @@M:reservations && TZ=UTC scontrol -o show reservation && "
        "printf '%s\\n' @@M:partitions && sinfo -h '--format=%P|%a|%N' && printf '%s\\n' @@M:end"
    )
    with pytest.raises(ValueError, match="invalid marker"):
        availability_command("a b")


def test_a_half_answer_is_no_answer_and_the_sacct_part_is_kept() -> None:
    text = (DATA / "availability_none.txt").read_text()
    before, found = parse_availability("1|job\n" + text.replace("@@M:end\n", ""), "@@M")
    assert before == "1|job\n" and found is None
    assert parse_availability("1|job\n", "@@M") == ("1|job\n", None)


def test_bad_lines_name_their_number() -> None:
    with pytest.raises(SlurmOutputError, match="line 1: StartTime 'soon' is not a time"):
        parse_reservations("ReservationName=x StartTime=soon EndTime=2026-12-06T16:10:00")
    with pytest.raises(SlurmOutputError, match="line 2 has 2 fields"):
        parse_sinfo_partitions("regular*|up|pm-n1\nbad|up\n")


def test_a_partition_sinfo_does_not_list_is_judged_by_every_node_of_the_cluster() -> None:
    found = hold(MAINT, partition="nosuch")
    assert found is not None and "partition nosuch of perlmutter" in found.reason
