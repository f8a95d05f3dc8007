"""What the renderer's operators leave for the history: workflow identity, survey year, skip reasons."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pytest
from airflow.sdk.execution_time.context import set_current_context

from airflow_desc.history import ProcessRecord
from airflow_desc.operators.identity import SKIP_ATTR
from airflow_desc.operators.workflow import VariantRecorder, WorkflowBatchOperator
from airflow_desc.timetables import run_survey_year
from airflow_desc.workflow.outcomes import Skip
from airflow_desc.workflow.render import render_dags
from tests.specs import spec_text
from tests.unit.workflow.conftest import RenderMini
from tests.unit.workflow.mini_operators import skipped_setup_filters

ROOT = pathlib.Path(__file__).parents[3]
DC1 = ROOT / "dags" / "workflows" / "dc1.yaml"
TWINKLES = ROOT / "dags" / "workflows" / "twinkles.yaml"
# Mini (version 3.1, its sub-task processPatch too) with a variant.
MINI_VARIANTS = spec_text("mini").replace("defaults:", "variants:\n  wide: {scale: 2.0}\ndefaults:", 1)


class ListRecorder:
    def __init__(self) -> None:
        self.records: list[ProcessRecord] = []

    def record(self, records: Sequence[ProcessRecord]) -> None:
        self.records.extend(records)


@pytest.fixture
def mini(render_mini: RenderMini) -> Any:
    return render_mini(MINI_VARIANTS, "Mini_wide")


def test_batch_processes_of_sub_tasks_record_the_top_level_workflow_version(clusters: Any) -> None:
    dag = render_dags(DC1, clusters=clusters)["DC1-DM12_imsim-dithered"]
    # level1 is version 1.0, DC1-DM12 1.16: the history's workflow is (DC1-DM12, variant, 1.16).
    mapped = dag.get_task("level1.level1MakeDiscreteSkyMap")
    assert (mapped.partial_kwargs["workflow_version"], mapped.partial_kwargs["top_version"]) == (
        "1.0",
        "1.16",
    )
    op = WorkflowBatchOperator(
        task_id="t", workflow_key="k", variant="imsim-dithered", process_path="p", cluster="perlmutter",
        workflow_version="1.0", top_version="1.16",
    )  # fmt: skip
    assert op.workflow_version == "1.0"  # the record's own task version
    assert op.recorder == VariantRecorder(variant="imsim-dithered", workflow_version="1.16")


def test_records_made_in_a_year_by_year_run_carry_its_survey_year(clusters: Any) -> None:
    dag = render_dags(TWINKLES, clusters=clusters)["Twinkles_all-at-once"]
    inner = ListRecorder()
    recorder = VariantRecorder(variant="all-at-once", workflow_version="1.0", inner=inner)
    record = ProcessRecord(workflow="Twinkles", process="ingestYear", state="success")
    recorder.record([record])  # outside a running task: no year
    start = datetime(2024, 2, 29, 12, tzinfo=timezone.utc)  # survey year 2 (from 2022-10-01)
    with set_current_context({"dag": dag, "data_interval_start": start}):  # type: ignore[typeddict-item]
        recorder.record([record])
    assert [r.extra for r in inner.records] == [
        {"workflow_version": "1.0"},
        {"workflow_version": "1.0", "survey_year": 2},
    ]
    assert all(r.variant == "all-at-once" for r in inner.records)


def test_records_say_which_payload_their_run_ran(clusters: Any) -> None:
    inner = ListRecorder()
    recorder = VariantRecorder(variant="v", workflow_version="1.0", inner=inner)
    record = ProcessRecord(workflow="W", process="p", state="success")
    run = type("DagRun", (), {"conf": {"desc_payload": "dm"}})()
    with set_current_context({"params": {"desc_payload": "emulate"}}):  # type: ignore[typeddict-item]
        recorder.record([record])  # the DAG param: the spec's payload
    with set_current_context({"params": {"desc_payload": "emulate"}, "dag_run": run}):  # type: ignore[typeddict-item]
        recorder.record([record])  # the run's conf wins
    with set_current_context({"params": {"desc_payload": "nonsense"}}):  # type: ignore[typeddict-item]
        recorder.record([record])  # not a payload (the task failed on it first): not stamped
    assert [r.extra.get("payload") for r in inner.records] == ["emulate", "dm", None]


def test_run_survey_year_is_none_outside_the_survey_or_a_yearly_dag(clusters: Any) -> None:
    dags = render_dags(TWINKLES, clusters=clusters)
    yearly = dags["Twinkles_all-at-once"]
    assert run_survey_year({"dag": yearly, "data_interval_start": "2022-10-01"}) == 1
    assert run_survey_year({"dag": yearly, "data_interval_start": "2032-10-01"}) is None  # after year 10
    assert run_survey_year({"dag": yearly, "data_interval_start": None}) is None
    plain = render_dags(DC1, clusters=clusters)["DC1-DM12_imsim-dithered"]
    assert run_survey_year({"dag": plain, "data_interval_start": "2022-10-01"}) is None


def test_a_script_task_is_marked_with_the_variant_and_notes_why_it_skips(mini: Any) -> None:
    workflow, dag = mini
    top = dag.get_task("setupPatches").desc_process
    assert (top.variant, top.workflow_version, top.task, top.version) == ("wide", "3.1", "Mini", "3.1")
    op = skipped_setup_filters(workflow, "wide")
    marked = op.desc_process
    assert (marked.variant, marked.workflow_version, marked.stream) == ("wide", "3.1", "patch=1,2")
    assert getattr(op, SKIP_ATTR) == Skip("upstream-failed", "upstream assemble skipped")
