"""Integration DAGs for the state rules: a cancel by the job's owner or by root, a node failure.

Each job's first run on a task instance waits (so that the test can cancel it or fail its node);
any later job of the same task instance (a retry, a resubmission) runs the payload at once. The
marker lives in the login's home, named after the task instance's job name (without ``.t<try>``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator

FIRST_RUN_WAITS = (
    'marker="$HOME/.desc-it-${SLURM_JOB_NAME%.t*}"\n'
    'if [ ! -e "$marker" ]; then touch "$marker"; sleep 600; fi\n'
)


def waiting_job(dag_id: str, task_id: str, cluster: str, retries: int) -> DAG:
    """A DAG of one job whose first run waits 10 minutes and whose later runs burn 0.5 s of CPU."""
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["it"]) as dag:
        SlurmOperator(
            task_id=task_id,
            cluster=cluster,
            command=FIRST_RUN_WAITS + payload_command("--name", task_id, "--cpu-seconds", "0.5"),
            time_limit="00:15:00",
            retries=retries,
            retry_delay=timedelta(seconds=0),
        )
    return dag


# The login user scancels its own job: Cancelled, and the retry it has is not used.
cancel_by_owner = waiting_job("desc_it_cancel_by_owner", "cancel_by_owner", "perlmutter", retries=1)
# root scancels it: Terminated, retried.
cancel_by_root = waiting_job("desc_it_cancel_by_root", "cancel_by_root", "perlmutter", retries=1)
# Its node goes DOWN: resubmitted within the try (no retries to spend), on the other node.
node_fail = waiting_job("desc_it_node_fail", "node_fail", "perlmutter", retries=0)
# The partition's only node goes DOWN: resubmitted without --exclude; it runs once the node is back.
node_fail_single = waiting_job("desc_it_node_fail_single", "node_fail_single", "s3df", retries=0)
