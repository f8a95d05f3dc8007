"""Which process instances a live task instance stands for (pure: graph + task-instance rows)."""

from __future__ import annotations

import pytest

from airflow_desc.status.dag_plans import dag_processes_from_graph
from airflow_desc.status.live import (
    DagProcesses,
    ProcessIdentity,
    TaskInstanceRow,
    instances_of,
)
from airflow_desc.workflow.build import build_graph
from airflow_desc.workflow.graph import WorkflowGraph
from airflow_desc.workflow.spec import parse_spec
from tests.specs import spec_text

SPEC = spec_text("live")


@pytest.fixture(scope="module")
def graph() -> WorkflowGraph:
    return build_graph(parse_spec(SPEC, source="live.yaml"), None)


@pytest.fixture(scope="module")
def processes(graph: WorkflowGraph) -> DagProcesses:
    return dag_processes_from_graph(graph, "live_local")


def ti(task_id: str, map_index: int = -1, state: str | None = None, try_number: int = 1) -> TaskInstanceRow:
    return TaskInstanceRow("live_local", "r1", task_id, map_index, state, try_number)


def test_tasks_and_bundles_of_a_generated_dag(processes: DagProcesses) -> None:
    assert processes.dag_id == "live_local"
    assert processes.workflow == "live"
    assert set(processes.tasks) == {"setupVisits", "ingest", "checkVisit.validate"}
    assert processes.tasks["setupVisits"] == ProcessIdentity("setupVisits", "live", "3.1", "script", "live")
    assert processes.tasks["checkVisit.validate"].mapped
    assert not processes.tasks["ingest"].mapped
    [bundle] = processes.bundles.values()
    assert list(processes.bundles) == ["processVisit.bundle"]
    assert bundle.streams_task_id == "processVisit.streams"
    # Only the bundled task's own processes: the sensors' streams are made inside the bundle.
    assert [(p.process, p.task, p.version, p.process_type) for p in bundle.processes] == [
        ("calibrateVisit", "processVisit", "3.2", "batch"),
        ("setupSensors", "processVisit", "3.2", "script"),
    ]


def test_a_task_stands_for_one_instance(processes: DagProcesses) -> None:
    [row] = instances_of(processes, ti("ingest", state="deferred", try_number=2), {})
    assert row["process"] == "ingest"
    assert row["process_type"] == "batch"
    assert row["stream"] is None
    assert (row["ti_state"], row["try_number"], row["bundled"]) == ("deferred", 2, False)


def test_a_mapped_task_counts_once_expanded(processes: DagProcesses) -> None:
    assert instances_of(processes, ti("checkVisit.validate"), {}) == []  # streams not made yet
    [row] = instances_of(processes, ti("checkVisit.validate", 2, "scheduled"), {})
    assert (row["task"], row["process"], row["map_index"]) == ("checkVisit", "validate", 2)


def test_a_bundle_stands_for_its_streams_times_its_processes(processes: DagProcesses) -> None:
    made = {("r1", "processVisit.streams"): [[{"visit": "1"}, {"visit": "2"}], [{"visit": "3"}]]}
    rows = instances_of(processes, ti("processVisit.bundle", 0, "queued"), made)
    assert [(r["stream"], r["process"]) for r in rows] == [
        ("visit=1", "calibrateVisit"),
        ("visit=1", "setupSensors"),
        ("visit=2", "calibrateVisit"),
        ("visit=2", "setupSensors"),
    ]
    assert all(r["bundled"] and r["ti_state"] == "queued" for r in rows)
    assert len(instances_of(processes, ti("processVisit.bundle", 1), made)) == 2
    # Bundles not known (streams task not run), an index past them, the unexpanded task: none.
    assert instances_of(processes, ti("processVisit.bundle", 0), {}) == []
    assert instances_of(processes, ti("processVisit.bundle", 5), made) == []
    assert instances_of(processes, ti("processVisit.bundle", -1), made) == []


def test_internal_tasks_are_no_processes(processes: DagProcesses) -> None:
    assert instances_of(processes, ti("processVisit.streams", state="success"), {}) == []
    assert instances_of(processes, ti("no_such_task"), {}) == []


def test_the_order_is_the_specs_depth_first_as_the_dc1_table(processes: DagProcesses) -> None:
    assert processes.order == (
        ("live", "setupVisits"),
        ("live", "ingest"),  # spec order, not alphabetical
        ("processVisit", "calibrateVisit"),
        ("processVisit", "setupSensors"),
        ("processSensor", "processEimage"),  # nested inside the bundle: still a row of the table
        ("checkVisit", "validate"),
    )
