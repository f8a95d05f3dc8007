"""Integration DAG: wait for jobs submitted outside Airflow, by id and by name (from the run conf)."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_desc.sensors.slurm import SlurmJobSensor

with DAG("desc_it_sensor", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]):
    SlurmJobSensor(task_id="by_id", cluster="s3df", job_id="{{ dag_run.conf['job_id'] }}")
    SlurmJobSensor(
        task_id="by_name", cluster="perlmutter", job_name="{{ dag_run.conf['job_name'] }}", deferrable=False
    )
    SlurmJobSensor(task_id="failing", cluster="s3df", job_id="{{ dag_run.conf['failing_id'] }}")
