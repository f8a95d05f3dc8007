"""Integration DAGs: a payload that raises, one that outlives its walltime, one over its memory.

desc_it_oom_per_core runs on perlmutter as test_slurm_operator's own profile file describes it: memory
only with cores (mem_per_cpu_mb), so that its retry asks for a second core, not more --mem.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator


def one_job(dag_id: str, task_id: str, cluster: str, *payload: str, **job: Any) -> DAG:
    """A DAG of one job, ``task_id``, whose payload (named after it) is run with the arguments ``payload``."""
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]) as dag:
        command = payload_command("--name", task_id, *payload)
        SlurmOperator(task_id=task_id, cluster=cluster, command=command, **job)
    return dag


raises = one_job(
    "desc_it_traceback", "psf", "s3df", "--cpu-seconds", "0.5", "--fail", "traceback", time_limit=2, retries=0
)

# The first job gets 1 minute and needs ~75 s: TIMEOUT (SLURM checks limits every ~30 s).
# The retry asks for 2 minutes and completes.
outlives = one_job(
    "desc_it_timeout", "slow", "perlmutter", "--cpu-seconds", "0.5", "--sleep-seconds", "75",
    time_limit="00:01:00", retries=1, retry_delay=timedelta(seconds=0),
)  # fmt: skip

# 100 MB for a payload that holds 150 MB: OUT_OF_MEMORY; the retry asks for 200 MB and completes.
over_memory = one_job(
    "desc_it_oom", "hog", "perlmutter", "--cpu-seconds", "3", "--memory-mb", "150",
    mem_mb=100, time_limit=3, retries=1, retry_delay=timedelta(seconds=0),
)  # fmt: skip

# 1 CPU carrying 200 MB (--mem-per-cpu=200M, the test's profile) for a payload that holds 300 MB:
# OUT_OF_MEMORY; the retry asks for 2 CPUs, 400 MB, and completes.
over_memory_per_core = one_job(
    "desc_it_oom_per_core", "hog_per_core", "perlmutter", "--cpu-seconds", "3", "--memory-mb", "300",
    time_limit=3, retries=1, retry_delay=timedelta(seconds=0),
)  # fmt: skip
