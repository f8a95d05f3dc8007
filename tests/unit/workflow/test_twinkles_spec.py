"""The Twinkles workflow spec (dags/workflows/twinkles.yaml): year-by-year processing."""

from __future__ import annotations

import pathlib
from datetime import timedelta

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowTimetableInvalid

from airflow_desc.timetables import SurveyYearTimetable
from airflow_desc.workflow import WorkflowGraph, WorkflowSpec, build_graph, estimate_task_instances

ROOT = pathlib.Path(__file__).parents[3]
# The workflow of the spec and graph fixtures (tests/unit/workflow/conftest.py).
WORKFLOW = TWINKLES = ROOT / "dags" / "workflows" / "twinkles.yaml"
VARIANT = "all-at-once"
SCHEDULE_VARIABLES = ("survey_start", "survey_years", "cadence_days", "real_start")

HIERARCHY = [
    "Twinkles",
    "Twinkles/processVisit",
    "Twinkles/processVisit/processSensor",
    "Twinkles/processImageDifferenceVisit",
    "Twinkles/processImageDifferenceVisit/processImageDifferenceSensor",
    "Twinkles/processForcedPhotometryVisit",
]


def test_the_spec_loads_and_builds(spec: WorkflowSpec, graph: WorkflowGraph) -> None:
    assert (spec.name, spec.version) == ("Twinkles", "1.0")
    assert spec.variant_names == ("all-at-once", "weekly")
    assert [build_graph(spec, v).dag_id for v in spec.variant_names] == [
        "Twinkles_all-at-once",
        "Twinkles_weekly",
    ]
    assert [t.path for t in graph.iter_tasks()] == HIERARCHY
    # e-images and image differencing run visit > sensor inside pilot-style bundles
    assert graph.task("processVisit").bundling.state == "bundle"
    assert graph.task("processSensor").bundling.state == "in-bundle"
    assert graph.task("processImageDifferenceVisit").bundling.state == "bundle"
    assert graph.root.process("report").after == ("wrapupYear",)
    estimate = estimate_task_instances(graph, runs=10)
    assert estimate.busy_run <= spec.bundling.max_task_instances


def test_the_chain_of_a_survey_year(graph: WorkflowGraph) -> None:
    root = graph.root
    assert [p.name for p in root.processes] == [
        "ingestYear",
        "setupEimageVisits",
        "makeCoaddTempExp",
        "assembleCoadd",
        "setupImageDifferenceVisits",
        "diaObjectMaker",
        "setupForcedPhotometryVisits",
        "wrapupYear",
        "report",
    ]
    assert root.process("setupEimageVisits").depends_on == ("ingestYear",)
    assert root.process("makeCoaddTempExp").depends_on == ("processVisit",)
    assert root.process("setupImageDifferenceVisits").depends_on == ("assembleCoadd",)
    assert root.process("wrapupYear").depends_on == ("processForcedPhotometryVisit",)
    assert root.process("setupEimageVisits").feeds == ("processVisit",)


def test_year_is_a_variable_of_every_process(spec: WorkflowSpec, graph: WorkflowGraph) -> None:
    assert spec.variables["year"] == 1
    stream = {"visit": 230, "sensor": "R22_S11"}
    year3 = spec.variables_for("all-at-once", {"year": 3})
    year4 = spec.variables_for("all-at-once", {"year": 4})
    assert year3["output"] == "twinkles/phosim/repo/rerun/year3"
    for process in graph.iter_processes():
        if process.type == "batch":
            for dm in (True, False):
                rendered = {process.render_command(stream, v, dm=dm) for v in (year3, year4)}
                assert len(rendered) == 2, f"{process.path} (dm={dm}) does not depend on the year"
            assert process.dm_command and "year" in process.dm_command, process.path
        elif process.callable == "airflow_desc.emulate.scripts:make_streams":
            # every setup script lists the streams of this year: it gets the year, as a number
            assert process.render_kwargs(stream, year3)["year"] == 3, process.path
    ingest = graph.root.process("ingestYear")
    assert "--id year=3" in ingest.render_command(variables=year3, dm=True)
    assert "/raw/year3/lsst_e_" in ingest.render_command(variables=year3, dm=True)
    eimage = graph.task("processSensor").process("processEimage")
    assert eimage.render_command(stream, year3, dm=True).startswith(
        "processEimage.py twinkles/phosim/repo --rerun year3 --id visit=230 sensor=R22_S11 year=3 "
    )
    assert "--seed 1-3" in eimage.render_command(stream, year3)  # emulated failures differ per year


def test_the_schedule_variables_make_the_timetable(spec: WorkflowSpec) -> None:
    all_at_once = spec.variables_for("all-at-once")
    weekly = spec.variables_for("weekly")
    assert all(name in all_at_once for name in SCHEDULE_VARIABLES)
    timetable = SurveyYearTimetable.from_variables(all_at_once)
    timetable.validate()
    assert timetable.summary == "Survey years 1–10 from 2022-10-01, all at once"
    assert timetable.cadence is None and timetable.real_start == timetable.survey_start
    timetable = SurveyYearTimetable.from_variables(weekly)
    assert timetable.summary == "Survey years 1–10 from 2022-10-01, one per 7 days from 2027-01-04"
    assert timetable.cadence == timedelta(days=7)
    assert timetable.due_at(2) == pendulum.datetime(2027, 1, 11)
    # The renderer's year of a run: its data interval start against the survey start.
    interval = timetable.year_interval(4)
    year = timetable.survey_year(interval.start)
    assert year == 4
    assert spec.variables_for("weekly", {"year": year})["rerun"] == "year4"


def test_from_variables_reports_bad_schedules() -> None:
    with pytest.raises(ValueError, match="no survey_start or survey_years among the variables"):
        SurveyYearTimetable.from_variables({"year": 1})
    bad = SurveyYearTimetable.from_variables(
        {"survey_start": "2022-10-01", "survey_years": 0, "cadence_days": -7}
    )
    with pytest.raises(AirflowTimetableInvalid, match="years must be at least 1") as caught:
        bad.validate()
    assert "not positive" in str(caught.value)
    text = SurveyYearTimetable.from_variables(
        {"survey_start": "2022-10-01", "survey_years": 2, "cadence_days": "7"}
    )
    assert text.cadence == timedelta(days=7)


def test_the_visit_lists_of_a_year_agree(spec: WorkflowSpec, graph: WorkflowGraph) -> None:
    # Differencing and forced photometry of a year work on the visits whose calexps the year made.
    from airflow_desc.emulate.scripts import make_streams

    names = ("setupEimageVisits", "setupImageDifferenceVisits", "setupForcedPhotometryVisits")
    by_year = {}
    for year in (1, 2):
        variables = spec.variables_for("all-at-once", {"year": year})
        lists = [
            make_streams(**graph.root.process(n).render_kwargs({}, variables), expected_streams=3)
            for n in names
        ]
        assert lists[0] == lists[1] == lists[2], (year, lists)
        by_year[year] = lists[0]
    assert by_year[1] != by_year[2]
