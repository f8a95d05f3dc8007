"""The demo DAG of `make demo`: a DC1-shaped slice on the two clusters of the local site.

serialingest (s3df) -> processEimage for four sensors (perlmutter; one over its memory, escalated
on retry) -> diaObjectMaker (fails the way DM tasks fail) and level1MakeTempExpCoadd -> wrapup.
The payloads burn real CPU, hold real memory and write real files (airflow_desc.emulate); the real DM
command lines go where the payload_command(...) calls are.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_desc.emulate import payload_command
from airflow_desc.operators.slurm import SlurmOperator

SENSORS = ["R22_S11", "R22_S12", "R23_S11", "R23_S12"]

with DAG(
    "desc_demo",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["desc", "demo"],
    default_args={"retry_delay": timedelta(seconds=0)},
):
    ingest = SlurmOperator(
        task_id="serialingest",
        cluster="s3df",
        workflow_task="DC1-DM12",
        workflow_version="1.16",
        command=payload_command("--name", "serialingest", "--cpu-seconds", "2", "--memory-mb", "100",
                                "--output", "repo/raw/ingested.fits", "--output-mb", "2"),
        mem_mb=400,
        time_limit="00:05:00",
    )  # fmt: skip
    sensors = []
    for sensor in SENSORS:
        # One sensor needs more memory than the first try asks for: OUT_OF_MEMORY, then a retry
        # with twice the memory succeeds (escalation by cause).
        needs = "300" if sensor == "R23_S12" else "150"
        sensors.append(
            SlurmOperator(
                task_id=f"processEimage_{sensor}",
                cluster="perlmutter",
                workflow_task="processSensor",
                workflow_version="1.0",
                command=payload_command(
                    "--name",
                    f"processEimage-{sensor}",
                    "--cpu-seconds",
                    "3",
                    "--memory-mb",
                    needs,
                    "--output",
                    f"repo/calexp/{sensor}.fits",
                ),
                mem_mb=250,
                time_limit="00:05:00",
                process="processEimage",
                stream=f"visit=2201/sensor={sensor}",
                retries=1,
            )  # fmt: skip
        )
    dia = SlurmOperator(
        task_id="diaObjectMaker",
        cluster="s3df",
        workflow_task="level1",
        workflow_version="1.0",
        command=payload_command("--name", "diaObjectMaker", "--cpu-seconds", "1", "--fail", "traceback"),
        time_limit="00:05:00",
        retries=0,
    )
    coadd = SlurmOperator(
        task_id="level1MakeTempExpCoadd",
        cluster="perlmutter",
        workflow_task="level1ProcessPatch",
        workflow_version="1.0",
        command=payload_command("--name", "coadd", "--cpu-seconds", "4", "--memory-mb", "300",
                                "--output", "repo/coadd/patch-1,1.fits", "--output-mb", "4"),
        cpus=2,
        mem_mb=800,
        time_limit="00:05:00",
    )  # fmt: skip
    wrapup = SlurmOperator(
        task_id="wrapup",
        cluster="s3df",
        workflow_task="DC1-DM12",
        workflow_version="1.16",
        command=payload_command("--name", "wrapup", "--cpu-seconds", "0.5"),
        time_limit="00:02:00",
        trigger_rule="all_done",
    )
    ingest >> sensors
    sensors >> dia
    sensors >> coadd
    [dia, coadd] >> wrapup
