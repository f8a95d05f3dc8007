"""Integration DAG: a job that succeeds after printing 400 lines and two secrets (test_logs.py).

Its output, as a real program's would, names a database URL with the password it was given and an
API key: the log's end is shown in the task log and kept in the history, bounded and redacted.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator

BURN = payload_command("--name", "chatty", "--cpu-seconds", "1", "--memory-mb", "50")
CHATTY = (
    'for i in $(seq 1 400); do echo "chatty progress $i"; done\n'
    'echo "connecting to postgresql://desc:$DB_PASSWORD@db.example.org/repo"\n'
    'echo "butler api_key=AbCd1234EfGh5678"\n'
    f"{BURN}\n"
    'echo "chatty done"'
)

with DAG("desc_it_logs", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]):
    SlurmOperator(
        task_id="chatty",
        cluster="perlmutter",
        command=CHATTY,
        env={"DB_PASSWORD": "hunter2-pw-9"},
        cpus=1,
        mem_mb=200,
        time_limit="00:05:00",
        retries=0,
    )
