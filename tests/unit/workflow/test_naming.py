"""Stream paths and the state of a stream: the vocabulary the renderer, operators and planner share."""

from __future__ import annotations

import pytest

from airflow_desc.workflow.naming import instance_id, stream_extends, stream_path, task_id_for
from airflow_desc.workflow.outcomes import combine_states


def test_streams_have_paths_and_parents() -> None:
    stream = {"visit": 2201, "raft": "R22", "sensor": "S11"}
    assert stream_path(stream) == "visit=2201/raft=R22/sensor=S11"
    assert stream_path({}) == ""
    assert stream_extends(stream, {"visit": 2201}) and stream_extends(stream, {})
    assert not stream_extends(stream, {"visit": 2202})


@pytest.mark.parametrize(
    ("states", "combined"),
    [
        ([], "success"),
        (["success", "skipped"], "success"),
        (["success", "failed", "terminated"], "failed"),
        (["terminated", "success"], "terminated"),
        (["skipped", "skipped"], "skipped"),
    ],
)
def test_the_state_of_a_stream_combines_its_instances(states: list[str], combined: str) -> None:
    assert combine_states(states) == combined


def test_task_ids_and_instance_ids() -> None:
    assert task_id_for("DC1-DM12/level1/level1SetupFilters") == "level1.level1SetupFilters"
    assert task_id_for("DC1-DM12/setupVisits") == "setupVisits"
    assert (
        instance_id({"visit": 2201, "raft": "R22"}, "setupEimageSensors")
        == "visit=2201/raft=R22:setupEimageSensors"
    )
