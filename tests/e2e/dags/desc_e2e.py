"""End-to-end DAGs, run by a real scheduler, triggerer and LocalExecutor: one SLURM job each."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator


def one_job(dag_id: str, cluster: str, payload: str, cpu_seconds: str, sleep_seconds: str, **job: Any) -> DAG:
    """A DAG of one job, ``job``, whose payload burns ``cpu_seconds`` of CPU and sleeps ``sleep_seconds``."""
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["e2e"]) as dag:
        command = payload_command(
            "--name", payload, "--cpu-seconds", cpu_seconds, "--sleep-seconds", sleep_seconds
        )
        SlurmOperator(task_id="job", cluster=cluster, command=command, **job)
    return dag


deferred = one_job("desc_e2e_deferred", "perlmutter", "deferred", "1", "8", time_limit=5, retries=0)

# The test kills the worker's task process while the job runs: the retry must re-attach.
reattach = one_job(
    "desc_e2e_reattach", "s3df", "reattach", "1", "25",
    time_limit=5, deferrable=False, retries=1, retry_delay=timedelta(seconds=0),
)  # fmt: skip

# The test kills the worker's task process; the job ends during the retry delay: the retry adopts it.
adopt = one_job(
    "desc_e2e_adopt", "s3df", "adopt", "1", "4",
    time_limit=5, deferrable=False, retries=1, retry_delay=timedelta(seconds=30),
)  # fmt: skip

# The test marks the deferred task failed through the REST API: the trigger's on_kill cancels the job.
markfailed = one_job("desc_e2e_markfailed", "perlmutter", "long", "0.5", "300", time_limit=10, retries=0)

# The test clears the deferred task twice within a second (REST clearTaskInstances) while its first
# job runs: the clear's cancel is Cancelled, and the rerun starts at once. A rerun that waited as a
# retry after a failure would wait an hour (retry_delay), far past the test's wait.
with DAG(
    "desc_e2e_clear_twice", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["e2e"]
) as clear_twice:
    SlurmOperator(
        task_id="job",
        cluster="perlmutter",
        # The first job of the task instance waits; any later one (after a clear) runs at once.
        command=(
            'marker="$HOME/.desc-e2e-${SLURM_JOB_NAME%.t*}"\n'
            'if [ ! -e "$marker" ]; then touch "$marker"; sleep 600; fi\n'
            + payload_command("--name", "cleared", "--cpu-seconds", "0.5")
        ),
        time_limit=15,
        retries=1,
        retry_delay=timedelta(hours=1),
    )
