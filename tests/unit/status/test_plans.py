"""A DAG's process plan as JSON: what the listener stores and the status page reads back."""

from __future__ import annotations

import json

import pytest

from airflow_desc.status.dag_plans import dag_processes_from_graph
from airflow_desc.status.plans import PLAN_FORMAT, DagProcesses, PlanError, ProcessIdentity
from airflow_desc.workflow.build import build_graph
from airflow_desc.workflow.spec import parse_spec
from tests.specs import spec_text


@pytest.fixture(scope="module")
def plan() -> DagProcesses:
    return dag_processes_from_graph(
        build_graph(parse_spec(spec_text("live"), source="live.yaml"), None), "live_local"
    )


def test_a_generated_dags_plan_survives_json(plan: DagProcesses) -> None:
    document = plan.to_json()
    assert document["format"] == PLAN_FORMAT
    again = DagProcesses.from_json(json.loads(json.dumps(document)))  # as the history gives it back
    assert again == plan
    assert again.bundles["processVisit.bundle"].processes == plan.bundles["processVisit.bundle"].processes
    assert again.order == plan.order and isinstance(again.order[0], tuple)


def test_a_hand_written_plan_survives_json() -> None:
    plan = DagProcesses(
        dag_id="desc_demo", workflow="desc_demo",
        tasks={"job": ProcessIdentity("job", "demo", "1.0", "batch", "desc_demo", mapped=True)},
        order=(("demo", "job"),),
    )  # fmt: skip
    assert DagProcesses.from_json(json.loads(json.dumps(plan.to_json()))) == plan


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, r"plan of 'live_local': format 2, this airflow-desc reads format 1"),
        ({"tasks": []}, r"tasks and bundles must be JSON objects"),
        ({"order": [["a"]]}, r"plan of 'live_local'.order: expected a list of \[task, process\] pairs"),
        ({"workflow": 3}, r"plan of 'live_local'.workflow: expected text, got int"),
        (
            {"tasks": {"ingest": {"process": "ingest"}}},
            r"plan of 'live_local'.tasks\['ingest'\].task: expected text, got NoneType",
        ),
        (
            {"bundles": {"b": {"streams_task_id": "s", "processes": "x"}}},
            r"bundles\['b'\].processes: expected a list, got str",
        ),
    ],
)
def test_a_plan_this_version_cannot_read_is_refused_by_name(
    plan: DagProcesses, change: dict[str, object], message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        DagProcesses.from_json({**plan.to_json(), **change})


def test_a_mapped_flag_of_the_wrong_type_is_refused(plan: DagProcesses) -> None:
    document = plan.to_json()
    document["tasks"]["ingest"]["mapped"] = "yes"
    with pytest.raises(PlanError, match=r"tasks\['ingest'\].mapped: expected true or false, got str"):
        DagProcesses.from_json(document)
