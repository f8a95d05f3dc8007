"""What a single job's try records and returns (no Airflow): its history record and its XCom summary.

:func:`job_record` is the job's :class:`~airflow_desc.history.ProcessRecord`, with the sacct rows
it was read from and the jobs the same try lost to node failures before it (each of those an
attempt of its own: the record's ``resubmit`` is how many); :func:`job_summary`
is what the task returns (and pushes as ``slurm_summary`` when it fails).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_desc.slurm import accounting_to_payload, precise_max_rss, precise_usage

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfile
    from airflow_desc.history import ProcessRecord
    from airflow_desc.history.records import InstanceIdentity
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.slurm import JobAccounting, PayloadTiming
    from airflow_desc.slurm.diagnose import Diagnosis

__all__ = ["FinishedJob", "fallback_of", "job_record", "job_summary"]


@dataclass(frozen=True)
class FinishedJob:
    """A job that ended, as a try collects it: the cluster it ran on and what SLURM says of it.

    :param hook: the cluster's hook.
    :param profile: the cluster's profile.
    :param accounting: the job's accounting.
    :param adopted: whether this try adopted it (an earlier try's job, finished but never recorded).
    :param note: what the record's message adds, e.g. :data:`~airflow_desc.slurm.CONTROLLER_NOTE`
        for a job whose accounting sacct lost, settled from the controller's answer.
    :param log_tail: the end of its log, once read (:meth:`SlurmOperator._read_log`).
    :param timing: the job script's own timing of the payload, read from ``log_tail``.
    """

    hook: SlurmHook
    profile: ClusterProfile
    accounting: JobAccounting
    adopted: bool = False
    note: str | None = None
    log_tail: str | None = None
    timing: PayloadTiming | None = None


def fallback_of(state: Mapping[str, Any] | None, cluster: str) -> dict[str, str] | None:
    """Return what a record keeps (``extra["fallback"]``) of a job that went to ``cluster`` as a fallback.

    :param state: the task's saved state; its ``fallback`` names the move
        (:meth:`~airflow_desc.operators.fallback.Placement.record`).
    :param cluster: where the job ran; a move to another cluster is not this job's.
    """
    moved = (state or {}).get("fallback")
    if not isinstance(moved, Mapping) or moved.get("to") != cluster:
        return None
    return {k: str(moved.get(k, "")) for k in ("from", "to", "why", "reason")}


def job_record(
    identity: InstanceIdentity,
    accounting: JobAccounting,
    diagnosis: Diagnosis,
    *,
    cluster: str,
    log_path: str | None,
    job_try: int,
    adopted: bool,
    owner_uid: int | None = None,
    state: Mapping[str, Any] | None = None,
    timing: PayloadTiming | None = None,
) -> ProcessRecord:
    """Return the history record of a finished job.

    Its wall-clock and CPU times are the job script's own timing of the payload when it printed
    one (:mod:`airflow_desc.slurm.timing`), sacct's otherwise; sacct's are then kept in
    ``extra["sacct"]``. A payload in a podman container adds its container's own CPU and peak
    memory to sacct's (which sees only the podman client): :func:`~airflow_desc.slurm.precise_max_rss`.

    :param identity: the process instance of the try that submitted the job.
    :param accounting: the job's accounting.
    :param diagnosis: why it ended.
    :param cluster: the cluster it ran on.
    :param log_path: its log on the cluster.
    :param job_try: the try that submitted it.
    :param adopted: whether a later try adopted it.
    :param owner_uid: the uid it ran as, for a cancelled job (a cancel by its owner is Cancelled).
    :param state: the task's saved state (its ``node_failures``, and ``fallback``: the move of a job
        that went to a fallback cluster, kept as ``extra["fallback"]``).
    :param timing: what the job script measured of its payload, if it printed it.
    """
    extra: dict[str, Any] = {
        "accounting": accounting_to_payload(accounting)["rows"],
        "adopted": adopted,
    }
    elapsed_s, total_cpu_s = precise_usage(accounting, timing)
    max_rss_bytes = precise_max_rss(accounting, timing)
    if timing is not None:
        extra["timing"] = "job script"
        extra["sacct"] = {"elapsed_s": accounting.elapsed_s, "total_cpu_s": accounting.total_cpu_s}
        if timing.container_max_rss_bytes is not None:
            extra["timing"] = "job script and container"
            extra["sacct"]["max_rss_bytes"] = accounting.max_rss_bytes
    # Jobs of this try lost to node failures before this one: each has its own attempt row (this
    # job's ``resubmit`` counts them), and this one names them.
    earlier = [
        f for f in (state or {}).get("node_failures") or []
        if isinstance(f, Mapping) and f.get("try") == job_try and f.get("job_id") != accounting.job_id
    ]  # fmt: skip
    if earlier:
        extra["node_failures"] = earlier
    moved = fallback_of(state, cluster)
    if moved is not None:
        extra["fallback"] = moved
    record = identity.of_job(
        accounting,
        diagnosis,
        cluster=cluster,
        log_path=log_path,
        job_uid=owner_uid,
        extra=extra,
    )
    return dataclasses.replace(
        record,
        resubmit=len(earlier),
        elapsed_s=elapsed_s,
        total_cpu_s=total_cpu_s,
        max_rss_bytes=max_rss_bytes,
    )


def job_summary(
    accounting: JobAccounting,
    diagnosis: Diagnosis,
    record: ProcessRecord,
    *,
    cluster: str,
    log_path: str | None,
    adopted: bool,
) -> dict[str, Any]:
    """Return the XCom summary of a finished job: what it was, how it ended, what it used."""
    return {
        "job_id": accounting.job_id,
        "cluster": cluster,
        "state": record.state,
        "slurm_state": accounting.state.raw,
        "exit_code": accounting.exit_code,
        "signal": accounting.signal,
        "reason": str(diagnosis.reason),
        "message": diagnosis.message,
        "elapsed_s": record.elapsed_s,
        "total_cpu_s": record.total_cpu_s,
        "max_rss_bytes": record.max_rss_bytes,
        "node": accounting.node_list,
        "log_path": log_path,
        "adopted": adopted,
    }
