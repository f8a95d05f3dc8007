"""The demo DAG of `make demo`: a DC1-shaped slice on the two clusters of the local site.

serialingest (s3df) -> processEimage for four sensors (perlmutter; one over its memory, escalated
on retry) -> diaObjectMaker (fails the way DM tasks fail) and level1MakeTempExpCoadd -> wrapup.
The payloads burn real CPU, hold real memory and write real files (airflow_desc.emulate); the real DM
command lines go where the payload arguments are.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator

SENSORS = ["R22_S11", "R22_S12", "R23_S11", "R23_S12"]
# The DC1 tasks (name, version) the processes belong to.
DC1_DM12 = ("DC1-DM12", "1.16")
PROCESS_SENSOR = ("processSensor", "1.0")
LEVEL1 = ("level1", "1.0")
LEVEL1_PATCH = ("level1ProcessPatch", "1.0")


def process(task_id: str, cluster: str, task: tuple[str, str], *payload: str, **job: Any) -> SlurmOperator:
    """A DC1 process of ``task`` (name, version) run as one job; ``payload``: its emulated command line."""
    workflow_task, workflow_version = task
    return SlurmOperator(
        task_id=task_id, cluster=cluster, workflow_task=workflow_task, workflow_version=workflow_version,
        command=payload_command(*payload), **job,
    )  # fmt: skip


with DAG(
    "desc_demo",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["desc", "demo"],
    default_args={"retry_delay": timedelta(seconds=0), "time_limit": "00:05:00"},
):
    ingest = process(
        "serialingest", "s3df", DC1_DM12,
        "--name", "serialingest", "--cpu-seconds", "2", "--memory-mb", "100",
        "--output", "repo/raw/ingested.fits", "--output-mb", "2",
        mem_mb=400,
    )  # fmt: skip
    # One sensor needs more memory than the first try asks for: OUT_OF_MEMORY, then a retry with
    # twice the memory succeeds (escalation by cause).
    sensors = [
        process(
            f"processEimage_{sensor}",
            "perlmutter",
            PROCESS_SENSOR,
            "--name",
            f"processEimage-{sensor}",
            "--cpu-seconds",
            "3",
            "--memory-mb",
            "300" if sensor == "R23_S12" else "150",
            "--output",
            f"repo/calexp/{sensor}.fits",
            mem_mb=250,
            process="processEimage",
            stream=f"visit=2201/sensor={sensor}",
            retries=1,
        )  # fmt: skip
        for sensor in SENSORS
    ]
    dia = process(
        "diaObjectMaker", "s3df", LEVEL1,
        "--name", "diaObjectMaker", "--cpu-seconds", "1", "--fail", "traceback",
        retries=0,
    )  # fmt: skip
    coadd = process(
        "level1MakeTempExpCoadd", "perlmutter", LEVEL1_PATCH,
        "--name", "coadd", "--cpu-seconds", "4", "--memory-mb", "300",
        "--output", "repo/coadd/patch-1,1.fits", "--output-mb", "4",
        cpus=2, mem_mb=800,
    )  # fmt: skip
    wrapup = process(
        "wrapup", "s3df", DC1_DM12, "--name", "wrapup", "--cpu-seconds", "0.5",
        time_limit="00:02:00", trigger_rule="all_done",
    )  # fmt: skip
    ingest >> sensors
    sensors >> dia
    sensors >> coadd
    [dia, coadd] >> wrapup
