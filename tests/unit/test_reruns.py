"""Bulk reruns, the pure part: process instances -> task instances -> what to clear per DAG run."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from airflow_desc.cli import main
from airflow_desc.reruns import check_reason, plan_reruns, requests_from_clear, rerun_targets, same_clear


def instances() -> pd.DataFrame:
    rows = [
        ("dc1", "r1", "processVisit.bundle", 0, "processEimage", "visit=1/raft=R22/sensor=S00"),
        ("dc1", "r1", "processVisit.bundle", 0, "processEimage", "visit=1/raft=R22/sensor=S01"),
        ("dc1", "r1", "processVisit.bundle", 2, "setupEimageRafts", "visit=3"),
        ("dc1", "r1", "level1.level1MakeTempExpCoadd", 4, "level1MakeTempExpCoadd", "filter=r/patch=1,2"),
        ("dc1", "r2", "serialingest", -1, "serialingest", ""),
    ]
    return pd.DataFrame(rows, columns=["dag_id", "run_id", "task_id", "map_index", "process", "stream"])


def test_targets_are_task_instances_with_the_instances_they_hold() -> None:
    targets = rerun_targets(instances())
    assert targets.to_dict("records") == [
        {"dag_id": "dc1", "run_id": "r1", "task_id": "level1.level1MakeTempExpCoadd", "map_index": 4,
         "instances": 1, "processes": "level1MakeTempExpCoadd",
         "ids": ("filter=r/patch=1,2:level1MakeTempExpCoadd",)},
        {"dag_id": "dc1", "run_id": "r1", "task_id": "processVisit.bundle", "map_index": 0, "instances": 2,
         "processes": "processEimage", "ids": ("visit=1/raft=R22/sensor=S00:processEimage",
                                               "visit=1/raft=R22/sensor=S01:processEimage")},
        {"dag_id": "dc1", "run_id": "r1", "task_id": "processVisit.bundle", "map_index": 2, "instances": 1,
         "processes": "setupEimageRafts", "ids": ("visit=3:setupEimageRafts",)},
        {"dag_id": "dc1", "run_id": "r2", "task_id": "serialingest", "map_index": -1, "instances": 1,
         "processes": "serialingest", "ids": (":serialingest",)},
    ]  # fmt: skip
    assert rerun_targets(instances().iloc[0:0]).empty


def test_plans_group_by_run_and_keep_each_task_instance_s_selection() -> None:
    plans = plan_reruns(rerun_targets(instances()))
    by_run = {p.run_id: p for p in plans}
    assert by_run["r1"].targets == [
        ("level1.level1MakeTempExpCoadd", 4), ("processVisit.bundle", 0), ("processVisit.bundle", 2),
    ]  # fmt: skip
    assert by_run["r1"].instances == 4
    assert by_run["r1"].selected[("processVisit.bundle", 2)] == ("visit=3:setupEimageRafts",)
    # Airflow's clearTaskInstances: a mapped task instance as [task_id, map_index], else its task id.
    assert by_run["r1"].task_ids()[0] == ["level1.level1MakeTempExpCoadd", 4]
    assert by_run["r2"].task_ids() == ["serialingest"]


def test_a_clear_made_through_the_api_is_recorded_with_its_user_and_note() -> None:
    at = datetime(2026, 12, 6, tzinfo=timezone.utc)
    body = {"dag_run_id": "r1", "task_ids": [["processVisit.bundle", 0], "summary"], "note": "bad PSF model",
            "include_downstream": True, "dry_run": False}  # fmt: skip
    cleared = [
        {"task_id": "processVisit.bundle", "map_index": 0, "dag_run_id": "r1", "try_number": 2},
        {"task_id": "processVisit.bundle", "map_index": 1, "dag_run_id": "r1", "try_number": 1},
        {"task_id": "summary", "map_index": -1, "dag_run_id": "r1", "try_number": 1},
        {"task_id": "verdict", "map_index": -1, "dag_run_id": "r1", "try_number": 1},
    ]
    asked = requests_from_clear("dc1", body, cleared, who="ops", at=at)
    assert [(q.task_id, q.map_index, q.after_try, q.requested_by, q.reason) for q in asked] == [
        ("processVisit.bundle", 0, 2, "ops", "bad PSF model"),
        ("processVisit.bundle", 1, 1, "ops", "bad PSF model (downstream of the rerun)"),
        ("summary", -1, 1, "ops", "bad PSF model"),
        ("verdict", -1, 1, "ops", "bad PSF model (downstream of the rerun)"),
    ]
    # No note: who, and no why.
    assert {
        q.reason for q in requests_from_clear("dc1", {"task_ids": ["summary"]}, cleared, who="ops", at=at)
    } == {""}
    # The audit-log row of that very clear: same targets, note and downstream flag.
    assert same_clear(json.dumps({**body, "method": "POST"}), body)
    assert not same_clear(json.dumps({**body, "note": "another"}), body)
    assert not same_clear("not json", body)


def test_a_reason_travels_as_airflow_s_note_and_must_fit_it() -> None:
    assert check_reason("  bad PSF model ") == "bad PSF model"
    with pytest.raises(ValueError, match="at most 1000"):
        check_reason("x" * 1001)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rerun", "--reason", "  ", "--state", "failed"], "the reason is empty"),
        (["rerun", "--reason", "fixed", "--run", "r1"], "at least one of --process, --stream, --state"),
    ],
)
def test_a_rerun_must_say_why_and_select_something(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
