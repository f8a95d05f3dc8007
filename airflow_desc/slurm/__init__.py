"""Pure SLURM knowledge: strings in, frozen dataclasses out, no I/O, no Airflow.

- :mod:`~airflow_desc.slurm.states`: every job state, its class, terminal and escalatable sets.
- :mod:`~airflow_desc.slurm.units`: durations and memory sizes as SLURM prints and reads them.
- :mod:`~airflow_desc.slurm.script`: :class:`JobSpec` and :func:`render_job_script`.
- :mod:`~airflow_desc.slurm.commands`: sbatch / sacct / squeue / scancel command lines, quoted.
- :mod:`~airflow_desc.slurm.parse`: what sbatch, sacct and squeue print, read into dataclasses.
- :mod:`~airflow_desc.slurm.accounting`: :class:`JobAccounting`, a job's sacct rows gathered.
- :mod:`~airflow_desc.slurm.parse_controller`: what ``scontrol show job`` prints.
- :mod:`~airflow_desc.slurm.diagnose`: why a finished job ended, in one line.
- :mod:`~airflow_desc.slurm.timing`: a job script's own timing of its payload (sacct's Elapsed is
  whole seconds).
"""

from __future__ import annotations

from airflow_desc.slurm.accounting import (
    JobAccounting,
    accounting_from_payload,
    accounting_to_payload,
    group_accounting,
)
from airflow_desc.slurm.commands import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    chunked_sacct_commands,
    controller_jobs_command,
    sacct_command,
    sbatch_command,
    scancel_command,
    squeue_command,
    submit_script_command,
    validate_job_id,
    write_file_command,
)
from airflow_desc.slurm.diagnose import Diagnosis, ReasonClass, diagnose
from airflow_desc.slurm.parse import (
    SacctRow,
    SlurmOutputError,
    SqueueRow,
    SubmittedJob,
    parse_sacct,
    parse_sbatch_output,
    parse_squeue,
)
from airflow_desc.slurm.parse_controller import CONTROLLER_NOTE, ControllerJob, parse_scontrol_jobs
from airflow_desc.slurm.script import ContainerSpec, JobSpec, render_job_script
from airflow_desc.slurm.states import (
    ESCALATABLE_STATES,
    TERMINAL_STATES,
    ParsedState,
    SlurmState,
    StateClass,
    parse_state,
)
from airflow_desc.slurm.timing import PayloadTiming, parse_payload_timing, precise_max_rss, precise_usage
from airflow_desc.slurm.units import (
    format_memory_mb,
    format_walltime,
    parse_duration,
    parse_memory,
)

__all__ = [
    "CONTROLLER_NOTE",
    "ESCALATABLE_STATES",
    "SACCT_FIELDS",
    "SQUEUE_FORMAT",
    "TERMINAL_STATES",
    "ContainerSpec",
    "ControllerJob",
    "Diagnosis",
    "JobAccounting",
    "JobSpec",
    "ParsedState",
    "PayloadTiming",
    "ReasonClass",
    "SacctRow",
    "SlurmOutputError",
    "SlurmState",
    "SqueueRow",
    "StateClass",
    "SubmittedJob",
    "accounting_from_payload",
    "accounting_to_payload",
    "chunked_sacct_commands",
    "controller_jobs_command",
    "diagnose",
    "format_memory_mb",
    "format_walltime",
    "group_accounting",
    "parse_duration",
    "parse_memory",
    "parse_payload_timing",
    "parse_sacct",
    "parse_scontrol_jobs",
    "parse_sbatch_output",
    "parse_squeue",
    "parse_state",
    "precise_max_rss",
    "precise_usage",
    "render_job_script",
    "sacct_command",
    "sbatch_command",
    "scancel_command",
    "squeue_command",
    "submit_script_command",
    "validate_job_id",
    "write_file_command",
]
