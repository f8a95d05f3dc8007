"""Integration DAG: year-by-year runs scheduled by the plugin's SurveyYearTimetable.

One task records what a run of a survey year sees: its data interval, the survey year computed
from it (in Python and in a template, through the `survey_year_of` macro), to the file named by
the run's conf `out`.
"""

from __future__ import annotations

import json
import pathlib
from datetime import datetime, timezone

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from airflow_desc.timetables import SurveyYearTimetable, survey_year_of

SURVEY_START = "2022-10-01"
TIMETABLE = SurveyYearTimetable(survey_start=SURVEY_START, years=3)


def record_year(
    out: str, data_interval_start: str, data_interval_end: str, logical_date: str, templated_year: str
) -> None:
    record = {
        "data_interval_start": data_interval_start,
        "data_interval_end": data_interval_end,
        "logical_date": logical_date,
        "year": TIMETABLE.survey_year(data_interval_start),
        "templated_year": int(templated_year),
    }
    print(f"survey year record: {json.dumps(record)}")
    if out:
        pathlib.Path(out).write_text(json.dumps(record))


with DAG(
    "desc_it_twinkles",
    schedule=TIMETABLE,
    # Airflow makes no task instance for a logical date before the start date: <= the survey start.
    start_date=datetime(2022, 10, 1, tzinfo=timezone.utc),
    catchup=True,
    tags=["it", "twinkles"],
    user_defined_macros={"survey_year_of": survey_year_of, "survey_start": SURVEY_START},
):
    PythonOperator(
        task_id="record_year",
        python_callable=record_year,
        op_kwargs={
            "out": "{{ dag_run.conf.get('out') or '' }}",
            "data_interval_start": "{{ data_interval_start.isoformat() }}",
            "data_interval_end": "{{ data_interval_end.isoformat() }}",
            "logical_date": "{{ logical_date.isoformat() }}",
            "templated_year": "{{ survey_year_of(data_interval_start, survey_start) }}",
        },
        retries=0,
    )
