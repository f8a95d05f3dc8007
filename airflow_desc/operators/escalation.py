"""Escalation: what the next try of a process asks for after it ran out of memory or time (no Airflow).

One rule serves single jobs (:func:`escalate_job`, for ``SlurmOperator``) and bundled instances
(:func:`escalate_request`, by bundle :func:`escalate_bundle`, for ``SlurmBundleOperator``): after
``out-of-memory`` the memory is multiplied by the process's ``memory_factor``, after ``time-limit``
the walltime by its ``walltime_factor`` (:func:`raise_value`), rounded up, compounding across
tries, and capped at what the cluster has: a node's memory, its longest walltime. A single job that
already had the cap cannot be helped by a retry (:class:`EscalationExhausted`: the operator fails
the task without spending retries); a bundled instance at the cap keeps its request and its record
says so. On nodes whose memory comes with cores (2 GB/core at NERSC), a single job's raised memory
also asks for the cores that carry it, or moves to the profile's high-memory partition; on a cluster
whose profile sets ``mem_per_cpu_mb`` (memory only with cores), it asks for more cores instead of more
``--mem``: the raised memory over ``mem_per_cpu_mb``, at most a node's cores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_desc.exceptions import DescError
from airflow_desc.slurm import JobAccounting
from airflow_desc.slurm.diagnose import Diagnosis, ReasonClass
from airflow_desc.slurm.nodes import NodeState, exclusion_after_node_failure
from airflow_desc.slurm.units import walltime_seconds
from airflow_desc.workflow.bundle_plan import PlannedInstance, RaisedRequest

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfile

__all__ = [
    "EscalationExhausted",
    "escalate_bundle",
    "escalate_job",
    "escalate_request",
    "next_resources",
    "raise_value",
    "task_walltime_s",
]


class EscalationExhausted(DescError):
    """A try ran out of memory or time with all the cluster can give: a retry would fail the same way."""


def raise_value(
    what: str, current: int | None, factor: float, factor_name: str, cap: int, unit: str, at_cap: str
) -> tuple[int | None, str]:
    """Return ``current`` x ``factor`` rounded up and capped (``None``: not raised), and a note saying so.

    :param what: ``memory`` or ``walltime``, for the note.
    :param current: what this try asked for (``None``: nothing, so nothing to raise).
    :param factor: the process's escalation factor.
    :param factor_name: its name in the spec, for the note.
    :param cap: the most the cluster has.
    :param unit: ``MB`` or ``s``.
    :param at_cap: what the note says when ``current`` is already at the cap.
    """
    if current is None:
        return None, f"{what} not raised for the next try: it asked for none"
    if factor <= 1:
        return None, f"{what} not raised for the next try: its escalation {factor_name} is {factor:g}"
    if current >= cap:
        return None, f"{what} not raised for the next try: {current} {unit} is already {at_cap}"
    wanted = int(math.ceil(current * factor))
    if wanted > cap:
        return cap, f"next try asks for {what} {cap} {unit} (x{factor:g} capped at {cap} {unit})"
    return wanted, f"next try asks for {what} {wanted} {unit} (x{factor:g} of {current} {unit})"


def escalate_request(
    inst: PlannedInstance, record: Mapping[str, Any], *, node_memory_mb: int, max_walltime_s: int
) -> tuple[RaisedRequest | None, str | None]:
    """Return a bundled instance's request for its next try after this try's pilot record, and a note.

    After ``terminated`` / ``out-of-memory`` its memory is raised, after ``terminated`` /
    ``time-limit`` its walltime. The record holds what this try ran with, so raises compound
    across tries. Memory is capped at a node's (the allocation is one whole node), walltime at
    the cluster's longest; at the cap nothing is raised and the note says so.

    :param inst: the planned instance (its process, and its request as earlier tries raised it).
    :param record: its pilot record of this try.
    :param node_memory_mb: the memory of one node of the cluster.
    :param max_walltime_s: the cluster's longest walltime.
    :return: the request of its next try (``inst.raised`` when unchanged), and a note for this
        try's record (``None`` when the record calls for no escalation).
    """
    reason = record.get("reason")
    if record.get("state") != "terminated" or reason not in ("out-of-memory", "time-limit"):
        return inst.raised, None
    raised = inst.raised or RaisedRequest()
    factors = inst.process.escalation
    if reason == "out-of-memory":
        used = record.get("memory_mb")
        current = int(used) if isinstance(used, (int, float)) and used > 0 else inst.memory_mb
        value, note = raise_value(
            "memory", current, factors.memory_factor, "memory_factor", node_memory_mb, "MB",
            "a whole node's; use less memory or a cluster with bigger nodes",
        )  # fmt: skip
        changed = RaisedRequest(value, raised.walltime_s) if value is not None else None
    else:
        used = record.get("walltime_s")
        current = int(math.ceil(used)) if isinstance(used, (int, float)) and used > 0 else inst.walltime_s
        value, note = raise_value(
            "walltime", current, factors.walltime_factor, "walltime_factor", max_walltime_s, "s",
            "the cluster's longest; checkpoint or split the work",
        )  # fmt: skip
        changed = RaisedRequest(raised.memory_mb, value) if value is not None else None
    return (changed or inst.raised), note


def escalate_bundle(
    instances: Sequence[PlannedInstance],
    records: Mapping[str, Mapping[str, Any]],
    profile: ClusterProfile,
    saved: Mapping[str, Any],
    *,
    escalate: bool,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Return a bundle's raised requests to save (by instance id) and a note for each escalated record.

    :param instances: the bundle's planned batch instances.
    :param records: this try's pilot records, by instance id.
    :param profile: the bundle's cluster.
    :param saved: the bundle's saved state (the requests earlier tries raised, under ``escalation``).
    :param escalate: the operator's ``escalate``: ``False`` keeps the saved requests, notes nothing.
    """
    raised = dict(saved.get("escalation") or {})
    notes: dict[str, str] = {}
    if not escalate:
        return raised, notes
    for inst in instances:
        rec = records.get(inst.id)
        if rec is None:
            continue
        request, note = escalate_request(
            inst, rec, node_memory_mb=profile.memory_per_node_mb, max_walltime_s=profile.max_walltime_s
        )
        if note is None:
            continue
        notes[inst.id] = note
        if request is not None:
            raised[inst.id] = request.to_json()
    return raised, notes


def escalate_job(
    profile: ClusterProfile,
    accounting: JobAccounting,
    diagnosis: Diagnosis,
    state: Mapping[str, Any],
    *,
    escalate: bool,
    timeout_factor: float,
    memory_factor: float,
    partition_nodes: Sequence[NodeState] | None = None,
) -> dict[str, Any]:
    """Return what a single job's next try should ask for, given how this one failed.

    :param profile: the job's cluster.
    :param accounting: this try's accounting.
    :param diagnosis: why it ended.
    :param state: the task's saved state: ``escalation`` (what earlier tries raised) and
        ``resources`` (what this try asked for).
    :param escalate: whether to raise memory / walltime at all (node exclusion happens anyway).
    :param timeout_factor: walltime factor after ``time-limit``.
    :param memory_factor: memory factor after ``out-of-memory``.
    :param partition_nodes: the partition's nodes as sinfo reports them now; after a node failure
        or preemption the node is excluded only when another usable one can run the job
        (:func:`~airflow_desc.slurm.nodes.exclusion_after_node_failure`); ``None`` (unknown): not excluded.
    :return: the new ``escalation`` state (``cpus``, ``mem_mb``, ``time_limit_s``, ``partition``,
        ``exclude``, and ``cluster``: the cluster whose partition and nodes these are).
    :raises EscalationExhausted: when the try already had the cluster's most.
    """
    esc = dict(state.get("escalation") or {})
    if esc.get("cluster", profile.name) != profile.name:
        # Raised on another cluster (a fallback's move): its partition and node names are not this one's.
        esc.pop("partition", None)
        esc.pop("exclude", None)
    esc.pop("cluster", None)
    used = dict(state.get("resources") or {})
    if diagnosis.retryable and accounting.node_list:
        # Node failure, preemption: same resources, and not on that node again if another can run it.
        needed = (accounting.job.nnodes if accounting.job else None) or 1
        esc["exclude"], _ = exclusion_after_node_failure(
            accounting.node_list, partition_nodes or (), esc.get("exclude") or (), nodes_needed=needed
        )
    if escalate and diagnosis.escalate is not None:
        _raise(profile, accounting, diagnosis, used, esc, timeout_factor, memory_factor)
    if esc.get("partition") or esc.get("exclude"):
        esc["cluster"] = profile.name
    return esc


def _raise(
    profile: ClusterProfile,
    accounting: JobAccounting,
    diagnosis: Diagnosis,
    used: Mapping[str, Any],
    esc: dict[str, Any],
    timeout_factor: float,
    memory_factor: float,
) -> None:
    """Raise ``esc``'s walltime after a time limit, its memory after running out of memory."""
    if diagnosis.reason is ReasonClass.TIME_LIMIT:
        current = int(used.get("time_limit_s") or accounting.job.time_limit_s or 0) if accounting.job else 0
        if current >= profile.max_walltime_s:
            raise EscalationExhausted(
                f"{diagnosis.message} It already had the {profile.name} maximum walltime "
                f"({current} s): checkpoint the work, split it, or run it on another cluster."
            )
        value, _ = raise_value(
            "walltime", current, timeout_factor, "timeout_factor", profile.max_walltime_s, "s", ""
        )
        if value is not None:
            esc["time_limit_s"] = value
    elif diagnosis.reason is ReasonClass.OUT_OF_MEMORY:
        esc.update(_more_memory(profile, accounting, diagnosis, used, esc, memory_factor))


def _more_memory(
    profile: ClusterProfile,
    accounting: JobAccounting,
    diagnosis: Diagnosis,
    used: Mapping[str, Any],
    esc: Mapping[str, Any],
    factor: float,
) -> dict[str, Any]:
    """Return the memory (and cores, or partition) a single job that ran out of memory asks for next."""
    req = accounting.mem_limit_per_node_bytes or accounting.req_mem_bytes or 0
    current_mb = int(used.get("mem_mb") or req // (1024 * 1024))
    cpus = int(used.get("cpus") or 1)
    high = profile.high_memory_partition
    if profile.mem_per_cpu_mb and not esc.get("partition"):
        # Memory comes only with cores: the job had what its cores carry; ask for more cores.
        current_mb = cpus * profile.mem_per_cpu_mb
        wanted_mb = int(math.ceil(current_mb * factor))
        if cpus < profile.cores_per_node:
            return {"cpus": profile.cpus_for_memory(wanted_mb), "mem_mb": wanted_mb}
        if high:
            return {"partition": high, "mem_mb": wanted_mb}
        raise EscalationExhausted(
            f"{diagnosis.message} It already had every core of a {profile.name} node ({cpus} cores carrying "
            f"{current_mb} MB at mem_per_cpu_mb {profile.mem_per_cpu_mb}): use a high-memory partition "
            "or another cluster."
        )
    wanted_mb = int(math.ceil(current_mb * factor))
    if high and esc.get("partition") == high:
        # Already on the high-memory partition: its node size is SLURM's to enforce there.
        return {"mem_mb": wanted_mb}
    node_mb = profile.memory_per_node_mb
    if current_mb >= node_mb:
        if high:
            return {"partition": high, "mem_mb": wanted_mb}
        raise EscalationExhausted(
            f"{diagnosis.message} It already had a whole {profile.name} node's memory "
            f"({node_mb} MB): use a high-memory partition or another cluster."
        )
    mem_mb, _ = raise_value("memory", current_mb, factor, "memory_factor", node_mb, "MB", "")
    mem_mb = mem_mb or current_mb
    # On 2 GB/core nodes memory comes with cores: ask for enough of them.
    return {"mem_mb": mem_mb, "cpus": max(cpus, profile.cores_for_memory(mem_mb))}


def task_walltime_s(value: str | int | float | None) -> int | None:
    """Read the operator's ``time_limit`` (as sbatch's ``--time``; a bare number is minutes)."""
    if value is None or value == "":
        return None
    if isinstance(value, float):  # the operator has always taken fractional minutes
        return int(value * 60)
    return walltime_seconds(value)


def next_resources(
    profile: ClusterProfile,
    state: Mapping[str, Any],
    *,
    cpus: int | str,
    mem_mb: int | str | None,
    time_limit: str | int | float | None,
    partition: str | None,
    nodes: int,
    fit: bool = False,
) -> dict[str, Any]:
    """Return a single job's next resources: what the task asks for, raised by earlier escalations.

    On a cluster with ``mem_per_cpu_mb`` the memory is asked as ``mem_per_cpu_mb`` (``--mem-per-cpu``)
    and enough CPUs to carry it.

    :param profile: the cluster's profile, which checks the request against its limits.
    :param state: the task's saved state (its ``escalation`` from :func:`escalate_job`).
    :param cpus: the task's CPUs per task.
    :param mem_mb: the task's memory per node in MB.
    :param time_limit: the task's walltime (:func:`task_walltime_s`).
    :param partition: the task's partition, over the profile's.
    :param nodes: the task's nodes.
    :param fit: cap CPUs, memory and walltime to the cluster's (a job moved to a fallback cluster).
    :raises ResourceLimitError: for a request above the cluster's limits.
    """
    esc = state.get("escalation") or {}
    # The partition and the nodes excluded are one cluster's; memory and walltime are the payload's.
    here = esc.get("cluster", profile.name) == profile.name
    res: dict[str, Any] = {
        "cpus": int(esc.get("cpus") or cpus),
        "mem_mb": int(esc["mem_mb"]) if esc.get("mem_mb") else (int(mem_mb) if mem_mb else None),
        "time_limit_s": int(esc.get("time_limit_s") or 0) or task_walltime_s(time_limit),
        "partition": (esc.get("partition") if here else None) or partition or profile.partition,
        "exclude": (",".join(sorted(set(esc.get("exclude") or []))) if here else None) or None,
    }
    if fit:
        res["cpus"], res["mem_mb"], res["time_limit_s"] = profile.fit(
            cpus=res["cpus"], mem_mb=res["mem_mb"], time_limit_s=res["time_limit_s"]
        )
    on_high_memory = bool(profile.high_memory_partition) and res["partition"] == profile.high_memory_partition
    profile.check_request(
        cpus=int(res["cpus"] or 1),
        # The profile describes standard nodes; the high-memory partition's limits are SLURM's.
        mem_mb=int(res["mem_mb"]) if res["mem_mb"] and not on_high_memory else None,
        time_limit_s=int(res["time_limit_s"]) if res["time_limit_s"] else None,
        nodes=nodes,
    )
    if profile.mem_per_cpu_mb and not on_high_memory:
        if res["mem_mb"]:
            res["cpus"] = max(res["cpus"], profile.cpus_for_memory(res["mem_mb"]))
        res["mem_mb"], res["mem_per_cpu_mb"] = None, profile.mem_per_cpu_mb
    return res
