"""Integration DAG: one short job on perlmutter, without retries (a spent retry would fail it).

tests/integration/test_key_expiry.py runs it with perlmutter's connection on a key whose site-CA
certificate has expired, then renews the certificate while the task waits deferred.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator

with DAG("desc_it_key_renewal", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]):
    SlurmOperator(
        task_id="burn_after_renewal",
        cluster="perlmutter",
        command=payload_command("--name", "burn", "--cpu-seconds", "1", "--output", "out/renewed.dat"),
        cpus=1,
        mem_mb=200,
        time_limit="00:05:00",
        retries=0,
    )
