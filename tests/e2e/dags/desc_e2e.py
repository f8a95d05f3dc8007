"""End-to-end DAGs, run by a real scheduler, triggerer and LocalExecutor."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["e2e"])


with _dag("desc_e2e_deferred"):
    SlurmOperator(
        task_id="job",
        cluster="perlmutter",
        command=payload_command("--name", "deferred", "--cpu-seconds", "1", "--sleep-seconds", "8"),
        time_limit=5,
        retries=0,
    )

# The test kills the worker's task process while the job runs: the retry must re-attach.
with _dag("desc_e2e_reattach"):
    SlurmOperator(
        task_id="job",
        cluster="s3df",
        command=payload_command("--name", "reattach", "--cpu-seconds", "1", "--sleep-seconds", "25"),
        time_limit=5,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )

# The test kills the worker's task process; the job ends during the retry delay: the retry adopts it.
with _dag("desc_e2e_adopt"):
    SlurmOperator(
        task_id="job",
        cluster="s3df",
        command=payload_command("--name", "adopt", "--cpu-seconds", "1", "--sleep-seconds", "4"),
        time_limit=5,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=30),
    )

# The test marks the deferred task failed through the REST API: the trigger's on_kill cancels the job.
with _dag("desc_e2e_markfailed"):
    SlurmOperator(
        task_id="job",
        cluster="perlmutter",
        command=payload_command("--name", "long", "--cpu-seconds", "0.5", "--sleep-seconds", "300"),
        time_limit=10,
        retries=0,
    )
