"""Integration DAG: script processes of a workflow variant that skip themselves, recorded by the listener."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, get_current_context
from airflow.sdk.exceptions import AirflowSkipException

from airflow_desc.operators.identity import mark_script_process, note_skip

IDENTITY = {"workflow": "DC1-DM12", "task": "DC1-DM12", "version": "1.16", "variant": "imsim-dithered"}


def no_visits_tonight() -> None:
    raise AirflowSkipException("no visits were taken tonight")


def level1_not_asked() -> None:
    message = "skip_if holds: not run_level1"
    note_skip(get_current_context()["task"], "skip-condition", message)
    raise AirflowSkipException(message)


with DAG("desc_it_script_skips", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]):
    mark_script_process(
        PythonOperator(task_id="setupEimageVisits", python_callable=no_visits_tonight),
        workflow_version="1.16", **IDENTITY,
    )  # fmt: skip
    mark_script_process(
        PythonOperator(task_id="launchL1L2", python_callable=level1_not_asked),
        workflow_version="1.16", **IDENTITY,
    )  # fmt: skip
