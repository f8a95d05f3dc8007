"""The Airflow plugin of airflow-desc: script-process listener and survey-year timetable (UI pages later)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_desc.plugins import listener
from airflow_desc.timetables import SurveyYearTimetable


class DescPlugin(AirflowPlugin):
    """Registers airflow-desc with Airflow: the script-process listener and the survey-year timetable."""

    name = "airflow_desc"
    listeners = [listener]
    # DAGs scheduled by a custom timetable only serialize if a plugin registers its class.
    timetables = [SurveyYearTimetable]
