"""Integration DAG: one burn job on each cluster (s3df also through the bastion), deferrable."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator

BURN = payload_command(
    "--name", "burn", "--cpu-seconds", "2", "--memory-mb", "200", "--output", "out/burn.dat"
)

with DAG("desc_it_routing", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]):
    for cluster in ("perlmutter", "s3df", "s3df-via-bastion"):
        SlurmOperator(
            task_id=f"burn_{cluster.replace('-', '_')}",
            cluster=cluster,
            command=BURN,
            cpus=1,
            mem_mb=400,
            time_limit="00:05:00",
            retries=0,
        )
