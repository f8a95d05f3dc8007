"""What a bundle records: its pilot's records, and its scripts' outcomes, as history records (no Airflow).

Each batch instance the pilot ran has a JSON record (state, exit code, the pilot's wait4 CPU
and wall clock, its log tail); with srun, sacct also has its step (MaxRSS). One bundle attempt
becomes one :class:`~airflow_desc.history.ProcessRecord` per process instance:
:func:`batch_record` for what the pilot ran, :func:`unfinished_record` for what the allocation
never finished (Terminated), :func:`skipped_record` for what could not run, :func:`script_record`
for the setup and wrapup scripts run on the worker. The identity of each comes from the bundle
task instance (:class:`~airflow_desc.history.records.InstanceIdentity`) with the instance's
process and stream.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from airflow_desc.history.records import InstanceIdentity, ProcessRecord
from airflow_desc.operators.output_checks import CheckRequest
from airflow_desc.pilot.launcher import PREFIX as PILOT_PREFIX
from airflow_desc.slurm import JobAccounting, diagnose, group_accounting, parse_sacct
from airflow_desc.slurm.script import CONTAINER_MARKER
from airflow_desc.workflow.bundle_plan import BundlePlan, PlannedInstance, PlannedScript
from airflow_desc.workflow.graph import ProcessNode
from airflow_desc.workflow.naming import stream_path
from airflow_desc.workflow.spec_templates import Scalar

__all__ = [
    "batch_record",
    "check_requests",
    "instance_identity",
    "job_try",
    "refine_reason",
    "script_record",
    "skipped_record",
    "unfinished_record",
]

_MIB = 1024 * 1024
#: Pilot reasons that a log tail can sharpen (a traceback, a segfault, a missing file...).
_REFINABLE = {"non-zero-exit"}


def instance_identity(
    bundle: InstanceIdentity, process: ProcessNode, stream: Mapping[str, Any], kind: str
) -> InstanceIdentity:
    """Return the identity of one process instance of a bundle: the bundle task's, with its process."""
    return dataclasses.replace(
        bundle,
        process=process.name,
        task=process.task,
        version=process.task_version,
        stream=stream_path(stream),
        process_type=kind,
    )


def refine_reason(record: Mapping[str, Any], job_id: str) -> tuple[str, str | None]:
    """Sharpen the pilot's ``non-zero-exit`` with the instance's log tail (traceback, segfault...)."""
    reason = str(record.get("reason") or "")
    message = record.get("message")
    if reason not in _REFINABLE:
        return reason, message
    exit_code = record.get("exit_code")
    sig = record.get("signal")
    text = f"{job_id}.0|FAILED|{exit_code if exit_code is not None else 0}:{sig or 0}"
    try:
        accounting = group_accounting(parse_sacct(text, ("JobID", "State", "ExitCode")))[job_id]
        # The pilot's own lines (start, end) say nothing about why the payload failed; the one naming
        # the instance's container image does, when the image is missing.
        lines = str(record.get("log_tail") or "").splitlines()
        tail = "\n".join(x for x in lines if not x.startswith(PILOT_PREFIX) or CONTAINER_MARKER in x)
        diagnosis = diagnose(accounting, tail)
    except (ValueError, KeyError):
        return reason, message
    name = str(record.get("id") or "")
    return diagnosis.reason.value, diagnosis.message.replace(f"job {job_id}", name, 1)


def batch_record(
    bundle: InstanceIdentity,
    inst: PlannedInstance,
    rec: Mapping[str, Any],
    step: Any,
    *,
    cluster: str,
    label: str,
    adopted: bool,
) -> ProcessRecord:
    """Return the record of a batch instance the pilot ran.

    :param bundle: the bundle task instance's identity.
    :param inst: the planned instance.
    :param rec: its pilot record.
    :param step: its sacct step row (srun launcher), or ``None``.
    :param cluster: the cluster.
    :param label: the bundle's label (its first stream and how many more).
    :param adopted: whether the job was adopted after a crash.
    """
    job_id = str(rec.get("job_id") or "")
    reason, message = refine_reason(rec, job_id or "0")
    memory = rec.get("memory_mb") if isinstance(rec.get("memory_mb"), int) else inst.memory_mb
    walltime = rec.get("walltime_s") if isinstance(rec.get("walltime_s"), (int, float)) else inst.walltime_s
    kept = ("total_cpu_s", "max_rss_bytes", "container_usage", "elapsed_s", "step_id", "launcher")
    pilot = {k: rec.get(k) for k in kept}
    return instance_identity(bundle, inst.process, inst.stream, "batch").attempt(
        str(rec.get("state") or "failed"),
        cluster=cluster,
        job_id=job_id or None,
        step=str(rec.get("step_id") or f"{job_id}.{rec.get('launcher') or 'direct'}"),
        slurm_state=step.state.raw if step is not None else None,
        exit_code=rec.get("exit_code"),
        signal=rec.get("signal"),
        reason=reason or None,
        message=message,
        start_time=_time(rec.get("start")),
        end_time=_time(rec.get("end")),
        # Wall clock and CPU from the pilot's wait4 (ms and us resolution, one source, so CPU /
        # wall is exact); sacct's step Elapsed counts whole seconds. Memory as SLURM saw it.
        elapsed_s=_first_number(rec.get("elapsed_s"), step.elapsed_s if step is not None else None),
        total_cpu_s=_first_number(rec.get("total_cpu_s"), step.total_cpu_s if step is not None else None),
        max_rss_bytes=_max_rss(rec, step),
        req_cpus=rec.get("cpus") or inst.cpus,
        req_mem_bytes=memory * _MIB if memory else None,
        req_walltime_s=walltime,
        node=rec.get("node"),
        log_path=rec.get("log_path"),
        extra={
            "bundle": label,
            "instance": inst.id,
            "pilot": pilot,
            **({"step": _step_usage(step)} if step is not None else {}),
            "adopted": adopted,
            **({"raised": inst.raised.to_json()} if inst.raised else {}),
        },
        # The pilot's last lines of a failure, until the worker reads the log's end (and redacts it).
        log_tail=rec.get("log_tail") if isinstance(rec.get("log_tail"), str) else None,
    )


def _max_rss(rec: Mapping[str, Any], step: Any) -> Any:
    """Return an instance's peak memory: as SLURM saw its step, plus its podman container's own peak.

    SLURM samples the step's processes, which for a payload in a podman container are only the
    client's: the container's processes sit in a cgroup runc made, and measured themselves (the
    pilot's ``container_usage``; its ``max_rss_bytes`` already holds the sum, with the client's peak).
    """
    sacct = step.max_rss_bytes if step is not None else None
    container = rec.get("container_usage")
    peak = container.get("max_rss_bytes") if isinstance(container, Mapping) else None
    if isinstance(peak, int) and not isinstance(peak, bool):
        return rec.get("max_rss_bytes") if sacct is None else sacct + peak
    return _first_number(sacct, rec.get("max_rss_bytes"))


def unfinished_record(
    bundle: InstanceIdentity,
    inst: PlannedInstance,
    *,
    cluster: str,
    job_id: str,
    reason: str,
    message: str,
    label: str,
    adopted: bool,
) -> ProcessRecord:
    """Return the record of a batch instance the allocation ended before it finished (Terminated)."""
    return instance_identity(bundle, inst.process, inst.stream, "batch").attempt(
        "terminated",
        cluster=cluster,
        job_id=job_id,
        reason=reason,
        message=f"not finished by the allocation: {message}",
        req_cpus=inst.cpus,
        req_mem_bytes=inst.memory_mb * _MIB if inst.memory_mb else None,
        req_walltime_s=inst.walltime_s,
        extra={"bundle": label, "instance": inst.id, "adopted": adopted},
    )


def skipped_record(
    bundle: InstanceIdentity, inst: PlannedInstance, *, cluster: str, kind: str, message: str, label: str
) -> ProcessRecord:
    """Return the record of a batch instance that could not run (its skip's kind and message)."""
    return instance_identity(bundle, inst.process, inst.stream, "batch").skipped(
        kind, message, cluster=cluster, extra={"bundle": label, "instance": inst.id}
    )


def script_record(bundle: InstanceIdentity, script: PlannedScript, *, label: str) -> ProcessRecord | None:
    """Return the record of a script instance run on this worker (``None`` if it has not run)."""
    outcome = script.outcome
    if outcome is None:
        return None
    reason = script.reason if outcome.state == "skipped" else (
        "python-exception" if outcome.state == "failed" else None
    )  # fmt: skip
    made = {"streams_made": {k: len(v) for k, v in outcome.feeds.items()}} if outcome.feeds else {}
    return instance_identity(bundle, script.process, script.stream, "script").attempt(
        outcome.state,
        reason=reason,
        message=outcome.message,
        start_time=_time(outcome.start),
        end_time=_time(outcome.end),
        elapsed_s=outcome.elapsed_s,
        node=socket.gethostname(),
        extra={"bundle": label, "instance": script.id, "phase": script.phase, **made},
    )


def check_requests(
    plan: BundlePlan, variables: Mapping[str, Scalar], mine: Mapping[str, Mapping[str, Any]]
) -> list[CheckRequest]:
    """Return the output checks of the batch instances this try ran to success (one SSH call runs them).

    :param plan: the bundle's plan.
    :param variables: the run's variables.
    :param mine: this try's pilot records, by instance id.
    """
    requests: list[CheckRequest] = []
    for inst in plan.instances:
        rec = mine.get(inst.id)
        if rec is None or rec.get("state") != "success":
            continue
        values = {**variables, **inst.stream}
        for check in inst.process.checks:
            requests.append(
                CheckRequest(
                    inst.id,
                    check.kind,
                    check.target(values),
                    check.min_count,
                    check.failure_message(values),
                    log=rec.get("log_path"),
                )
            )
    return requests


def job_try(accounting: JobAccounting | None, default: int) -> int:
    """Return the Airflow try that submitted a job: its name ends ``.t<try>`` (else ``default``)."""
    name = accounting.job.job_name if accounting is not None and accounting.job is not None else None
    match = re.search(r"\.t(\d+)$", name or "")
    return int(match.group(1)) if match else default


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _first_number(*values: Any) -> Any:
    """Return the first value that is a number (not a bool), else ``None``."""
    return next((v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)), None)


def _step_usage(step: Any) -> dict[str, Any]:
    """Return what sacct said of a pilot instance's step, kept beside the pilot's own measures."""
    return {k: getattr(step, k, None) for k in ("elapsed_s", "total_cpu_s", "max_rss_bytes")}
