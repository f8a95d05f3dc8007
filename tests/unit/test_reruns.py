"""Bulk reruns, the pure part: process instances -> task instances -> what to clear per DAG run."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_desc.cli import main
from airflow_desc.reruns import plan_reruns, rerun_targets


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
         "instances": 1, "processes": "level1MakeTempExpCoadd"},
        {"dag_id": "dc1", "run_id": "r1", "task_id": "processVisit.bundle", "map_index": 0, "instances": 2,
         "processes": "processEimage"},
        {"dag_id": "dc1", "run_id": "r1", "task_id": "processVisit.bundle", "map_index": 2, "instances": 1,
         "processes": "setupEimageRafts"},
        {"dag_id": "dc1", "run_id": "r2", "task_id": "serialingest", "map_index": -1, "instances": 1,
         "processes": "serialingest"},
    ]  # fmt: skip
    assert rerun_targets(instances().iloc[0:0]).empty


def test_plans_group_by_run_and_add_what_is_downstream_once() -> None:
    below = {
        "processVisit.bundle": {"wrapup", "report"},
        "level1.level1MakeTempExpCoadd": {"level1.level1AssembleCoadd", "wrapup"},
        "serialingest": {"ingestRefCat", "serialingest"},
    }
    plans = plan_reruns(rerun_targets(instances()), lambda dag_id, task_id: below[task_id])
    by_run = {p.run_id: p for p in plans}
    assert by_run["r1"].targets == [
        ("level1.level1MakeTempExpCoadd", 4), ("processVisit.bundle", 0), ("processVisit.bundle", 2),
    ]  # fmt: skip
    assert by_run["r1"].downstream == ["level1.level1AssembleCoadd", "report", "wrapup"]
    assert by_run["r1"].instances == 4
    assert by_run["r2"].downstream == ["ingestRefCat"]  # never the target itself twice
    assert by_run["r2"].task_ids() == [("serialingest", -1), "ingestRefCat"]
    alone = plan_reruns(rerun_targets(instances()), None)
    assert all(not p.downstream for p in alone)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rerun", "--reason", "  ", "--state", "failed"], "--reason is empty"),
        (["rerun", "--reason", "fixed", "--run", "r1"], "at least one of --process, --stream, --state"),
    ],
)
def test_a_rerun_must_say_why_and_select_something(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
