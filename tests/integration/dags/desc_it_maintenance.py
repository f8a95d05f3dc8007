"""Integration DAGs: one small burn job each, submitted while its cluster cannot take it.

desc_it_maint_job: on perlmutter, submitted into a MAINT reservation (test_maintenance.py makes it).
desc_it_partition_down: on s3df, whose partition roma the test sets down.
desc_it_fallback_job: on perlmutter in maintenance, with s3df as its fallback cluster: it runs there.
None has a retry: each succeeds only if the wait (or the move) spends none.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator

BURN = payload_command(
    "--name", "burn", "--cpu-seconds", "1", "--memory-mb", "50", "--output", "out/maint.dat"
)

for dag_id, task_id, cluster, fallback in (
    ("desc_it_maint_job", "burn_in_maint", "perlmutter", ()),
    ("desc_it_partition_down", "burn_partition_down", "s3df", ()),
    ("desc_it_fallback_job", "burn_fallback", "perlmutter", ("s3df",)),
):
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]) as dag:
        SlurmOperator(
            task_id=task_id,
            cluster=cluster,
            fallback_clusters=fallback,
            command=BURN,
            cpus=1,
            mem_mb=200,
            time_limit="00:05:00",
            retries=0,
        )
    globals()[dag_id] = dag
