"""Parse ``scontrol -o show job``: what the controller knows of a job, slurmdbd aside.

The controller answers for a job whose accounting rows were purged from slurmdbd (for
``MinJobAge`` seconds after it ends); :meth:`ControllerJob.to_accounting` turns its answer into
sacct's fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from airflow_desc.exceptions import SlurmOutputError
from airflow_desc.slurm.accounting import JobAccounting
from airflow_desc.slurm.commands import SACCT_FIELDS, validate_job_id
from airflow_desc.slurm.parse import _row_from_fields
from airflow_desc.slurm.states import ParsedState, parse_state

__all__ = ["CONTROLLER_NOTE", "ControllerJob", "parse_scontrol_jobs", "scontrol_fields"]

# The start of each ``Key=value`` of ``scontrol -o``: keys such as ``AllocNode:Sid``, ``CPUs/Task``.
_SCONTROL_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9:/_]*)=")
_TRES_MEM_RE = re.compile(r"(?:^|,)mem=([^,]+)")


#: What a record of a job settled from the controller says: sacct had no line of it.
CONTROLLER_NOTE = (
    "accounting purged: state from the controller (scontrol), sacct had no record of the job; "
    "CPU time and peak memory unknown"
)


@dataclass(frozen=True)
class ControllerJob:
    """One job as ``scontrol -o show job`` reports it: what the controller knows, slurmdbd aside.

    The controller keeps a job for ``MinJobAge`` seconds after it ends, so it still answers for a
    job whose accounting rows were purged from slurmdbd. It knows no CPU time and no peak memory.

    :param job_id: JobId, or ``<ArrayJobId>_<ArrayTaskId>`` for an array task.
    :param job_name: JobName.
    :param state: JobState, parsed.
    :param fields: every ``Key=value`` of the line, as printed.
    """

    job_id: str
    job_name: str
    state: ParsedState
    fields: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def is_terminal(self) -> bool:
        """Whether SLURM is done with this job."""
        return self.state.is_terminal

    def to_accounting(self) -> JobAccounting:
        """Return the job as a :class:`JobAccounting` of one job line, in sacct's fields.

        The controller knows the state, exit code, run time, nodes, times and limits; TotalCPU,
        CPUTime, MaxRSS and DerivedExitCode stay empty.

        Its :func:`~airflow_desc.slurm.accounting.accounting_to_payload` reads back through
        :func:`~airflow_desc.slurm.accounting.accounting_from_payload`.
        """
        get = self.fields.get
        mem = _TRES_MEM_RE.search(get("TRES", ""))
        raw = {
            "JobID": self.job_id,
            "JobName": self.job_name,
            "State": self.state.raw,
            "ExitCode": get("ExitCode", ""),
            "DerivedExitCode": "",
            "Elapsed": get("RunTime", ""),
            "TotalCPU": "",
            "CPUTime": "",
            "MaxRSS": "",
            "ReqMem": mem.group(1) if mem else "",
            "ReqCPUS": get("NumCPUs", ""),
            "AllocCPUS": get("NumCPUs", ""),
            "NNodes": get("NumNodes", ""),
            "NodeList": get("NodeList", ""),
            "Submit": get("SubmitTime", ""),
            "Start": get("StartTime", ""),
            "End": get("EndTime", ""),
            "Timelimit": get("TimeLimit", ""),
            "Partition": get("Partition", ""),
            "Cluster": get("ClusterName", ""),
            "Reason": get("Reason", ""),
        }
        values = {name.lower(): raw.get(name, "") for name in SACCT_FIELDS}
        return JobAccounting(self.job_id, _row_from_fields(values, 1))


def scontrol_fields(line: str) -> dict[str, str]:
    """Split one ``scontrol -o`` line into its ``Key=value`` pairs (a value may hold spaces)."""
    keys = list(_SCONTROL_KEY_RE.finditer(line))
    fields = {}
    for here, after in zip(keys, [*keys[1:], None], strict=True):
        end = after.start() if after is not None else len(line)
        fields[here.group(1)] = line[here.end() : end].strip()
    return fields


def parse_scontrol_jobs(stdout: str) -> dict[str, ControllerJob]:
    """Parse ``scontrol -o show job`` output: one ``Key=value Key=value ...`` line per job.

    Lines not starting with ``JobId=`` (an error scontrol printed for an id it does not know, a
    login banner) are skipped: such a job is simply absent.

    :param stdout: what :func:`~airflow_desc.slurm.commands.controller_jobs_command` printed.
    :return: by job id; an array task under ``<ArrayJobId>_<ArrayTaskId>`` as well as its own JobId.
    :raises SlurmOutputError: for a job line without a valid JobId or JobState, naming its number.
    """
    jobs: dict[str, ControllerJob] = {}
    for number, raw_line in enumerate(stdout.splitlines(), start=1):
        line = raw_line.strip()
        if not line.startswith("JobId="):
            continue
        fields = scontrol_fields(line)
        try:
            job_id = validate_job_id(fields.get("JobId", ""))
            if "JobState" not in fields:
                raise ValueError("no JobState")
            state = parse_state(fields["JobState"])
            ids = [job_id]
            array_job, array_task = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
            if array_job and array_task and array_task.isdigit():
                ids.insert(0, validate_job_id(f"{array_job}_{array_task}"))
        except ValueError as exc:
            raise SlurmOutputError(
                f"scontrol output line {number}: {exc}: {line[:300]!r}", text=line, line_number=number
            ) from exc
        for key in ids:
            jobs[key] = ControllerJob(key, fields.get("JobName", ""), state, fields)
    return jobs
