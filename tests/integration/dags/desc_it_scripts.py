"""Integration DAG: script processes (Python on the worker) recorded by the plugin's listener."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from airflow_desc.operators.identity import mark_script_process


def setup_visits() -> list[int]:
    return [2201, 2202, 2203]


def broken_wrapup() -> None:
    raise ValueError("no visits were ingested for filter r")


with DAG("desc_it_scripts", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]):
    setup = mark_script_process(
        PythonOperator(task_id="setupEimageVisits", python_callable=setup_visits),
        task="DC1-DM12", version="1.16",
    )  # fmt: skip
    wrapup = mark_script_process(
        PythonOperator(task_id="wrapup", python_callable=broken_wrapup, retries=0), task="DC1-DM12"
    )
    plain = PythonOperator(task_id="not_a_desc_process", python_callable=setup_visits)
    setup >> wrapup
