"""What the collection of a bundle's finished allocation makes of it: records, states, summary (no Airflow).

Step 3 of :mod:`~airflow_desc.operators.bundle`. From the pilot's records (this try's and the latest
of each instance), the srun steps' sacct rows (:func:`step_rows`), the output checks that failed and
the allocation's diagnosis, :func:`batch_records` makes the history record of every batch instance
this try ran or should have (with :mod:`~airflow_desc.operators.bundle_records`) and says the latest
state of each; :func:`bundle_summary` is what the task returns and pushes to XCom as
``bundle_summary``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc.history.records import InstanceIdentity, ProcessRecord
from airflow_desc.operators.bundle_records import batch_record, skipped_record, unfinished_record
from airflow_desc.pilot import step_name
from airflow_desc.slurm import Diagnosis, JobAccounting
from airflow_desc.workflow.bundle_plan import BundlePlan
from airflow_desc.workflow.graph import TaskNode

if TYPE_CHECKING:
    from airflow_desc.hooks.slurm import SlurmHook

__all__ = ["batch_records", "bundle_summary", "step_rows"]


def step_rows(
    hook: SlurmHook, accounting: JobAccounting | None, mine: Mapping[str, Mapping[str, Any]], *, launcher: str
) -> dict[str, Any]:
    """Return the srun steps' sacct rows by step name (:func:`~airflow_desc.pilot.step_name`).

    From the allocation's accounting at hand when it has the step of every instance that started
    (the trigger's event carries every row sacct had when the allocation ended: one SSH round
    trip less between the job's end and the task's success); else sacct is asked again.
    """
    if accounting is None or launcher != "srun":
        return {}
    steps = {row.job_name: row for row in accounting.steps if row.job_name}
    started = {step_name(iid) for iid, rec in mine.items() if rec.get("state") != "skipped"}
    if started <= set(steps):
        return steps
    fresh = hook.sacct([accounting.job_id]).get(accounting.job_id)
    return {row.job_name: row for row in fresh.steps if row.job_name} if fresh is not None else steps


def batch_records(
    bundle: InstanceIdentity,
    plan: BundlePlan,
    latest: Mapping[str, Mapping[str, Any]],
    mine: Mapping[str, Mapping[str, Any]],
    *,
    steps: Mapping[str, Any],
    failures: Mapping[str, str],
    diagnosis: Diagnosis | None,
    notes: Mapping[str, str],
    cluster: str,
    job_id: str | None,
    label: str,
    adopted: bool,
) -> tuple[dict[str, str], list[ProcessRecord]]:
    """Return the latest state of every batch instance, and the records of what this try ran (or should have).

    :param bundle: the bundle task instance's identity.
    :param latest: the pilot's latest record of each instance, by id, earlier tries' included.
    :param mine: the pilot's records of this try's allocation, by id.
    :param steps: the srun steps' sacct rows by step name (:func:`step_rows`).
    :param failures: the output checks that failed, by instance id: an instance that succeeded fails.
    :param diagnosis: why the allocation did not succeed, if it did not: the reason of the instances
        it never finished.
    :param notes: how the next try's request was raised, by instance id, in the record's message.
    :param job_id: the allocation's job, ``None`` if none ran (nothing to record but the skipped).
    """
    states: dict[str, str] = {}
    records: list[ProcessRecord] = []
    for inst in plan.instances:
        rec = mine.get(inst.id)
        if rec is None and inst.id in latest:
            states[inst.id] = str(latest[inst.id].get("state"))  # done in an earlier try
            continue
        if rec is None:
            if job_id is None:
                continue
            why = diagnosis.message if diagnosis is not None else "the allocation ended before it finished"
            reason = diagnosis.reason.value if diagnosis is not None else "allocation-ended"
            states[inst.id] = "terminated"
            records.append(
                unfinished_record(
                    bundle,
                    inst,
                    cluster=cluster,
                    job_id=job_id,
                    reason=reason,
                    message=why,
                    label=label,
                    adopted=adopted,
                )  # fmt: skip
            )
            continue
        step = steps.get(step_name(inst.id))
        record = batch_record(bundle, inst, rec, step, cluster=cluster, label=label, adopted=adopted)
        if record.state == "success" and inst.id in failures:
            record = dataclasses.replace(
                record, state="failed", reason="output-check", message=failures[inst.id]
            )
        if inst.id in notes:
            message = "; ".join(filter(None, (record.message, notes[inst.id])))
            record = dataclasses.replace(record, message=message)
        states[inst.id] = record.state
        records.append(record)
    for iid, (inst, kind, message) in plan.skipped.items():
        states[iid] = "skipped"
        records.append(skipped_record(bundle, inst, cluster=cluster, kind=kind, message=message, label=label))
    return states, records


def bundle_summary(
    plan: BundlePlan,
    task: TaskNode,
    states: Mapping[str, str],
    *,
    label: str,
    cluster: str,
    accounting: JobAccounting | None,
    launcher: str,
    rerun: str,
    log_path: Any,
    pilot: Any,
) -> dict[str, Any]:
    """Return the bundle's summary: the state of each of its streams, counts by state, the utilisation.

    :param task: the bundled sub-task.
    :param states: the latest state of every process instance, by id.
    :param log_path: the allocation's log, if it ran.
    :param pilot: the pilot's utilisation summary from the end of that log
        (:func:`~airflow_desc.pilot.parse_summary`), if any.
    """
    counts: dict[str, int] = {}
    for value in states.values():
        counts[value] = counts.get(value, 0) + 1
    return {
        "bundle": label,
        "cluster": cluster,
        "job_id": accounting.job_id if accounting is not None else None,
        "slurm_state": accounting.state.raw if accounting is not None else None,
        "launcher": launcher,
        "rerun": rerun,
        "streams": plan.stream_states(task, states),
        "counts": counts,
        "process_instances": len(states),
        "batch_instances": len(plan.instances) + len(plan.skipped),
        "scripts": len(plan.scripts),
        "log_path": log_path,
        "utilisation": pilot,
    }
