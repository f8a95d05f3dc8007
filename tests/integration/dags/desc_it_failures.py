"""Integration DAGs: a payload that raises, one that outlives its walltime, one over its memory."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator

with DAG("desc_it_traceback", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]):
    SlurmOperator(
        task_id="psf",
        cluster="s3df",
        command=payload_command("--name", "psf", "--cpu-seconds", "0.5", "--fail", "traceback"),
        time_limit=2,
        retries=0,
    )

# The first job gets 1 minute and needs ~75 s: TIMEOUT (SLURM checks limits every ~30 s).
# The retry asks for 2 minutes and completes.
with DAG("desc_it_timeout", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]):
    SlurmOperator(
        task_id="slow",
        cluster="perlmutter",
        command=payload_command("--name", "slow", "--cpu-seconds", "0.5", "--sleep-seconds", "75"),
        time_limit="00:01:00",
        retries=1,
        retry_delay=timedelta(seconds=0),
    )

# 100 MB for a payload that holds 150 MB: OUT_OF_MEMORY; the retry asks for 200 MB and completes.
with DAG("desc_it_oom", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]):
    SlurmOperator(
        task_id="hog",
        cluster="perlmutter",
        command=payload_command("--name", "hog", "--cpu-seconds", "3", "--memory-mb", "150"),
        mem_mb=100,
        time_limit=3,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )
