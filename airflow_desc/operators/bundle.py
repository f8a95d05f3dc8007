"""SlurmBundleOperator: many streams of a sub-task in one whole-node SLURM allocation.

A bundled sub-task (``bundle: always``, or ``auto`` with many streams; see
:mod:`airflow_desc.workflow.graph`) is one mapped task; each of its instances is one bundle of
streams, run as one allocation of a whole node by :mod:`airflow_desc.pilot`. The life of one
bundle task instance:

1. **Plan, on the worker.** Starting from its streams (``visit=2201``...), the bundle walks the
   sub-task and every sub-task below it. Script processes whose results the allocation needs
   (``setupEimageRafts``, ``setupEimageSensors``: they make the streams below; or anything a batch
   process depends on) run here, now, each recorded as a process instance; a script that depends
   on a batch process still runs now, and the streams it makes then wait for that batch instance
   inside the allocation. Every batch process instance becomes a manifest entry
   ``visit=2201/raft=R22/sensor=S11:processEimage`` with its command, cpus, memory, walltime and
   dependencies (on its stream's upstream batch instances, and on those its stream's setup
   script waited for): visit -> its rafts -> their sensors. An instance that cannot run (its
   setup script failed, or ``skip_if`` holds on variables and stream values) is recorded Skipped.
   The manifest keeps the spec's two kinds of upstream: ``depends_on`` (the pilot runs the instance
   only if its upstream succeeded, else records it Skipped, ``upstream-failed``) and ``after`` (the
   pilot waits for the upstream whatever its end state). Through a setup script the kinds compose:
   an instance waits for what the script waited for, as ``depends_on`` only if both links are.
   A ``skip_if`` on upstream states is decided by the pilot's dependencies.
2. **Submit once, wait without a worker slot.** The manifest, the pilot and (for emulated
   payloads) the payload program travel in one job script asking for a whole node of the
   cluster; the SlurmOperator machinery names the job after the task instance, re-attaches to
   it after a crash and defers to :class:`~airflow_desc.triggers.slurm.SlurmJobTrigger`.
3. **Collect.** The pilot's records (one JSON line per instance, in the task instance's
   directory on the cluster), ``sacct`` per step when ``launcher="srun"``, the output checks of
   the spec (one SSH call for the whole bundle): each batch instance is recorded (state, exit
   code, CPU, wall, MaxRSS, node, reason); an instance the allocation never finished is
   recorded Terminated. Then the wrapup scripts run here (``wrapupEimageSensors`` per raft, then
   ``wrapupEimageRafts`` per visit), each recorded. The summary (state per stream, counts,
   utilisation) goes to XCom under ``bundle_summary`` (and as the return value); the task fails
   if any instance failed or was terminated.
4. **Rerun.** Clearing the task instance (or a retry) reruns only what did not succeed: the
   pilot gets the records file as ``--skip-done``, and scripts that succeeded are not run again
   (their streams come from the task state store). ``rerun="all"`` (or ``{"desc_rerun": "all"}``
   in the run's conf) reruns everything.
5. **Escalate per instance.** An instance the pilot terminated for ``out-of-memory`` asks for
   memory x its ``escalation.memory_factor`` on the next try, one terminated for ``time-limit`` for
   walltime x ``walltime_factor`` (``escalate_request``): compounding across tries, capped at a
   node's memory and the cluster's longest walltime (at the cap it is not raised, and its record's
   message says so). The raised requests are saved with the bundle's state (so a worker crash
   loses none), go into the manifest and the allocation's time limit, and each record holds the
   memory and walltime that try asked for. ``escalate=False`` turns this off.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_desc.clusters import ClusterProfile
from airflow_desc.emulate import payload_source
from airflow_desc.exceptions import SlurmJobFailed
from airflow_desc.history import ProcessRecord, default_recorder
from airflow_desc.operators.escalation import escalate_request
from airflow_desc.operators.output_checks import CheckRequest, run_output_checks
from airflow_desc.operators.slurm import SlurmOperator, task_dir_for
from airflow_desc.operators.workflow import VariantRecorder, workdir_lines
from airflow_desc.pilot import bundle_job_command, parse_records, parse_summary, step_name
from airflow_desc.pilot.launcher import PREFIX as PILOT_PREFIX
from airflow_desc.slurm import JobAccounting, StateClass, diagnose, group_accounting, parse_sacct
from airflow_desc.slurm.quoting import quote_path
from airflow_desc.workflow.bundle_plan import (
    BundlePlan,
    PlannedInstance,
    PlannedScript,
    RaisedRequest,
    allocation_time_limit_s,
    plan_bundle,
)
from airflow_desc.workflow.graph import ProcessNode, TaskNode
from airflow_desc.workflow.naming import instance_id, stream_path
from airflow_desc.workflow.outcomes import combine_states
from airflow_desc.workflow.overlays import LAUNCHERS
from airflow_desc.workflow.registry import LoadedWorkflow, workflow_for
from airflow_desc.workflow.scripts import ScriptOutcome, call_script
from airflow_desc.workflow.spec_templates import Scalar

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_desc.hooks.slurm import SlurmHook

__all__ = ["SlurmBundleOperator"]

_STATE_KEY = "bundle"
_MIB = 1024 * 1024
_PAYLOAD_EOF = "DESC_PAYLOAD_EOF"
#: Pilot reasons that a log tail can sharpen (a traceback, a segfault, a missing file...).
_REFINABLE = {"non-zero-exit"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _refine_reason(record: Mapping[str, Any], job_id: str) -> tuple[str, str | None]:
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
        # The pilot's own lines (start, end) say nothing about why the payload failed.
        lines = str(record.get("log_tail") or "").splitlines()
        tail = "\n".join(line for line in lines if not line.startswith(PILOT_PREFIX))
        diagnosis = diagnose(accounting, tail)
    except (ValueError, KeyError):
        return reason, message
    name = str(record.get("id") or "")
    return diagnosis.reason.value, diagnosis.message.replace(f"job {job_id}", name, 1)


# --- the operator -------------------------------------------------------------------------------------


class SlurmBundleOperator(SlurmOperator):
    """Run one bundle of streams of a bundled sub-task in one whole-node SLURM allocation.

    See the module docstring. A mapped task: ``SlurmBundleOperator.partial(...).expand(streams=...)``,
    one instance per bundle (the renderer does this for every bundled sub-task).

    :param workflow_key: the loaded workflow (:func:`~airflow_desc.workflow.registry.workflow_for`).
    :param variant: the variant.
    :param bundle_task: the bundled sub-task's path.
    :param streams: this bundle's streams of it (values by stream variable, parents' included).
    :param launcher: the pilot's launcher: ``srun`` (a step per instance, accounted by sacct) or
        ``direct`` (children of the pilot).
    :param rerun: ``failed`` (default: a cleared or retried bundle reruns what did not succeed) or
        ``all``; a run's conf ``desc_rerun`` overrides it.
    :param python: the cluster's Python 3 for the pilot and the payloads.
    :param kill_grace_s: seconds from SIGTERM to SIGKILL when an instance must stop.
    :param kwargs: :class:`~airflow_desc.operators.slurm.SlurmOperator` arguments (``cluster``,
        ``retries``, ``deferrable``, ``escalate``...); the resources are a whole node of the
        cluster, and the escalation factors are each process's own (its spec's ``escalation``).
    """

    template_fields: Sequence[str] = ()
    ui_color = "#b9d9eb"

    def __init__(
        self,
        *,
        workflow_key: str,
        variant: str | None,
        bundle_task: str,
        streams: Sequence[Mapping[str, Any]] = (),
        launcher: str = "srun",
        rerun: str = "failed",
        python: str = "python3",
        kill_grace_s: float = 10.0,
        **kwargs: Any,
    ) -> None:
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
        if rerun not in ("failed", "all"):
            raise ValueError(f"rerun must be 'failed' or 'all', got {rerun!r}")
        kwargs.setdefault("command", "")
        kwargs.setdefault("retries", 0)
        kwargs.setdefault(
            "recorder",
            VariantRecorder(variant=variant or "", workflow_version=kwargs.get("workflow_version", "")),
        )
        super().__init__(**kwargs)
        self.workflow_key = workflow_key
        self.variant = variant
        self.bundle_task = bundle_task
        self.streams_values = [dict(s) for s in streams]
        self.launcher = launcher
        self.rerun = rerun
        self.python = python
        self.kill_grace_s = kill_grace_s
        self._plan_for_submit: BundlePlan | None = None

    # --- helpers ---
    def _workflow(self) -> tuple[LoadedWorkflow, TaskNode]:
        workflow = workflow_for(self.workflow_key)
        return workflow, workflow.task(self.variant, self.bundle_task)

    def _label(self) -> str:
        if not self.streams_values:
            return "(empty)"
        first = stream_path(self.streams_values[0])
        more = len(self.streams_values) - 1
        return f"{first} +{more}" if more else first

    def _rerun_mode(self, context: Context) -> str:
        conf = getattr(context.get("dag_run"), "conf", None) or {}
        mode = conf.get("desc_rerun", self.rerun)
        return mode if mode in ("failed", "all") else self.rerun

    def _bundle_state(self, context: Context) -> dict[str, Any]:
        store = self._store(context)
        value = store.get(_STATE_KEY) if store is not None else None
        if isinstance(value, dict):
            return dict(value)
        pushed = context["ti"].xcom_pull(task_ids=context["ti"].task_id, key="bundle_state")
        return dict(pushed) if isinstance(pushed, dict) else {}

    def _save_bundle_state(self, context: Context, value: dict[str, Any]) -> None:
        store = self._store(context)
        if store is not None:
            from airflow.sdk.execution_time.context import NEVER_EXPIRE

            store.set(_STATE_KEY, value, retention=NEVER_EXPIRE)
        else:  # no state store: keep it for the rest of this try at least
            context["ti"].xcom_push(key="bundle_state", value=value)

    def _paths(self, context: Context, profile: ClusterProfile) -> dict[str, str]:
        ti: Any = context["ti"]
        map_index = -1 if ti.map_index is None else int(ti.map_index)
        task_dir = task_dir_for(profile.work_dir, ti.dag_id, ti.run_id, ti.task_id, map_index)
        home = task_dir if task_dir.startswith(("/", "~")) else f"~/{task_dir}"
        return {
            "dir": home,
            "records": f"{home}/records.jsonl",
            "logs": f"{home}/logs",
            "payload": f"{home}/payload.py",
        }

    def _known_outcomes(self, saved: Mapping[str, Any], rerun: str) -> dict[str, ScriptOutcome]:
        outcomes = {k: ScriptOutcome.from_json(v) for k, v in (saved.get("scripts") or {}).items()}
        if rerun == "all":
            return {}
        return outcomes

    # --- execute ---
    def execute(self, context: Context) -> Any:
        """Re-attach to this bundle's allocation, or plan it (running its setup scripts) and submit it."""
        context["desc_bundle"] = self._label()  # type: ignore[typeddict-unknown-key]
        profile = self._profile()
        hook = self._hook(profile)
        state = self._state(context)
        found = self._resume(context, hook, profile, state)
        if isinstance(found, dict):
            return found
        if found is None:
            workflow, task = self._workflow()
            variables = workflow.run_variables(self.variant, context)
            rerun = self._rerun_mode(context)
            saved = self._bundle_state(context)
            plan = plan_bundle(
                workflow,
                task,
                self.streams_values,
                variables,
                known=self._known_outcomes(saved, rerun),
                raised=_raised_requests(saved),
            )
            self._record_scripts(context, workflow, [s for s in plan.scripts if s.ran_now], profile)
            saved = {
                **saved,
                "scripts": {
                    **(saved.get("scripts") or {}),
                    **{s.id: s.outcome.to_json() for s in plan.scripts if s.outcome is not None},
                },
                "rerun": rerun,
            }
            self._save_bundle_state(context, saved)
            if not plan.instances or self._all_done(hook, profile, context, plan, rerun):
                self.log.info(
                    "nothing to run in an allocation: %d batch instances, all done or none; %d scripts",
                    len(plan.instances), len(plan.scripts),
                )  # fmt: skip
                return self._conclude(context, hook, profile, None, plan)
            self._plan_for_submit = plan
        return super().execute(context)

    def _all_done(
        self, hook: SlurmHook, profile: ClusterProfile, context: Context, plan: BundlePlan, rerun: str
    ) -> bool:
        if rerun != "failed":
            return False
        latest, _ = self._read_records(hook, self._paths(context, profile)["records"], None, rerun)
        return all(latest.get(i.id, {}).get("state") == "success" for i in plan.instances)

    def _submit(
        self, context: Context, hook: SlurmHook, profile: ClusterProfile, state: dict[str, Any]
    ) -> str:
        plan = self._plan_for_submit
        if plan is None:
            raise RuntimeError("SlurmBundleOperator._submit without a plan")
        ti: Any = context["ti"]
        paths = self._paths(context, profile)
        rerun = self._rerun_mode(context)
        manifest = json.dumps(plan.manifest(f"{ti.task_id}[{ti.map_index}]@{ti.run_id}"))
        pilot = bundle_job_command(
            manifest,
            launcher=self.launcher,
            records_path=paths["records"],
            logs_dir=paths["logs"],
            python=self.python,
            skip_done=paths["records"] if rerun == "failed" else None,
            kill_grace_s=self.kill_grace_s,
        )
        self.command = self._payload_lines(plan, paths["payload"]) + pilot
        self.cpus = profile.cores_per_node
        self.mem_mb = profile.memory_per_node_mb
        limit_s = allocation_time_limit_s(plan.instances, profile.cores_per_node, profile.max_walltime_s)
        self.time_limit = max(1, limit_s // 60)
        self.signal = f"B:TERM@{max(10, min(60, limit_s // 4))}"
        self.setup_lines = (*self.setup_lines, *workdir_lines(profile.work_dir))
        self.log.info(
            "bundle %s: %d batch instances (%d skipped before the allocation), %d scripts; launcher %s, "
            "rerun %s", self._label(), len(plan.instances), len(plan.skipped), len(plan.scripts),
            self.launcher, rerun,
        )  # fmt: skip
        return super()._submit(context, hook, profile, state)

    @staticmethod
    def _payload_lines(plan: BundlePlan, path: str) -> str:
        if not any(i.process.emulated for i in plan.instances):
            return ""
        source = payload_source()
        if _PAYLOAD_EOF in source:
            raise ValueError(f"the payload source contains {_PAYLOAD_EOF}")
        quoted = quote_path(path)
        return (
            "# airflow-desc: the emulated payload, written once for every instance of the bundle.\n"
            f"mkdir -p -- {quote_path(posixpath.dirname(path))} || exit 2\n"
            f"cat > {quoted} <<'{_PAYLOAD_EOF}' || exit 2\n{source.rstrip()}\n{_PAYLOAD_EOF}\n"
            f"export DESC_PAYLOAD={quoted}\n"
        )

    # --- finish ---
    def _finish(
        self,
        context: Context,
        hook: SlurmHook,
        profile: ClusterProfile,
        accounting: JobAccounting,
        *,
        adopted: bool = False,
    ) -> dict[str, Any]:
        workflow, task = self._workflow()
        variables = workflow.run_variables(self.variant, context)
        saved = self._bundle_state(context)
        known = {k: ScriptOutcome.from_json(v) for k, v in (saved.get("scripts") or {}).items()}
        plan = plan_bundle(
            workflow,
            task,
            self.streams_values,
            variables,
            known=known,
            run_scripts=False,
            raised=_raised_requests(saved),
        )
        # The job counts as recorded (never adopted again) once its instances are: when collection
        # itself fails (the cluster went away), the next try adopts the job and collects it then.
        try:
            summary = self._conclude(context, hook, profile, accounting, plan, adopted=adopted)
        except SlurmJobFailed:
            self._mark_recorded(context, accounting.job_id)
            raise
        self._mark_recorded(context, accounting.job_id)
        return summary

    def _mark_recorded(self, context: Context, job_id: str) -> None:
        state = self._state(context)
        state.update(recorded=[*(state.get("recorded") or []), job_id][-50:])
        self._save_state(context, state)

    def _conclude(
        self,
        context: Context,
        hook: SlurmHook,
        profile: ClusterProfile,
        accounting: JobAccounting | None,
        plan: BundlePlan,
        *,
        adopted: bool = False,
    ) -> dict[str, Any]:
        """Record the batch instances, run the wrapups, push the summary; fail if any did not succeed."""
        workflow, _task = self._workflow()
        variables = workflow.run_variables(self.variant, context)
        paths = self._paths(context, profile)
        rerun = self._rerun_mode(context)
        job_id = accounting.job_id if accounting is not None else None
        latest, mine = self._read_records(hook, paths["records"], job_id, rerun)
        saved = self._bundle_state(context)
        # Derived from this job's records only (what each instance ran with), so collecting the same
        # job again after a crash raises nothing twice.
        raised, notes = self._next_requests(plan, mine, profile, saved)
        states = self._record_batch(
            context, workflow, plan, hook, profile, accounting, latest, mine, adopted, notes
        )
        outcomes = dict(saved.get("scripts") or {})
        for script in plan.scripts:
            if script.outcome is not None:
                states[script.id] = script.outcome.state
        self._run_after_scripts(context, workflow, plan, states, variables, outcomes, rerun)
        self._save_bundle_state(context, {**saved, "scripts": outcomes, "escalation": raised})
        summary = self._summary(context, hook, profile, plan, states, accounting, rerun)
        ti: Any = context["ti"]
        ti.xcom_push(key="bundle_summary", value=summary)
        bad = {k: v for k, v in summary["counts"].items() if k in ("failed", "terminated") and v}
        if bad:
            words = ", ".join(f"{v} {k}" for k, v in bad.items())
            raise SlurmJobFailed(
                f"bundle {self._label()}: {words} of {summary['process_instances']} process instances; "
                "clear the task to rerun only those (conf desc_rerun=all reruns everything)",
                job_id=job_id or "",
                state=accounting.state.raw if accounting is not None else "NONE",
                exit_code=accounting.exit_code if accounting is not None else None,
                reason="bundle-incomplete",
            )
        return summary

    def _next_requests(
        self,
        plan: BundlePlan,
        mine: Mapping[str, Mapping[str, Any]],
        profile: ClusterProfile,
        saved: Mapping[str, Any],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Return the raised requests to save (by instance id) and a note for each escalated record."""
        raised = dict(saved.get("escalation") or {})
        notes: dict[str, str] = {}
        if not self.escalate:
            return raised, notes
        for inst in plan.instances:
            rec = mine.get(inst.id)
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

    def _read_records(
        self, hook: SlurmHook, path: str, job_id: str | None, rerun: str
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Return the latest record of each instance, and this job's records, from the records file."""
        result = hook.run(f"cat -- {quote_path(path)} 2>/dev/null", check=False)
        latest: dict[str, dict[str, Any]] = {}
        mine: dict[str, dict[str, Any]] = {}
        for record in parse_records(result.stdout):
            iid = record.get("id")
            if not isinstance(iid, str):
                continue
            if job_id is not None and str(record.get("job_id")) == job_id:
                mine[iid] = record
                latest[iid] = record
            elif rerun == "failed":
                latest[iid] = record
        return latest, mine

    def _step_rows(self, hook: SlurmHook, job_id: str | None) -> dict[str, Any]:
        if job_id is None or self.launcher != "srun":
            return {}
        accounting = hook.sacct([job_id]).get(job_id)
        if accounting is None:
            return {}
        return {row.job_name: row for row in accounting.steps if row.job_name}

    def _record_batch(
        self,
        context: Context,
        workflow: LoadedWorkflow,
        plan: BundlePlan,
        hook: SlurmHook,
        profile: ClusterProfile,
        accounting: JobAccounting | None,
        latest: Mapping[str, Mapping[str, Any]],
        mine: Mapping[str, Mapping[str, Any]],
        adopted: bool,
        notes: Mapping[str, str],
    ) -> dict[str, str]:
        """Record every batch instance this try ran (or should have); return the latest state of each.

        ``notes`` (by instance id) say how the next try's request was raised, in the record's message.
        """
        job_id = accounting.job_id if accounting is not None else None
        steps = self._step_rows(hook, job_id)
        checks = self._checks(plan, workflow, context, mine)
        failures = run_output_checks(hook, profile.work_dir, checks) if checks else {}
        diagnosis = None
        if accounting is not None and accounting.state_class is not StateClass.SUCCEEDED:
            diagnosis = diagnose(
                accounting, hook.read_tail(str(self._state(context).get("log_path") or ""), lines=40)
            )
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
                why = (
                    diagnosis.message if diagnosis is not None else "the allocation ended before it finished"
                )
                reason = diagnosis.reason.value if diagnosis is not None else "allocation-ended"
                states[inst.id] = "terminated"
                records.append(
                    self._unfinished_record(context, workflow, inst, profile, job_id, reason, why, adopted)
                )
                continue
            record = self._batch_record(
                context, workflow, inst, rec, steps.get(step_name(inst.id)), profile, adopted
            )
            if record.state == "success" and inst.id in failures:
                record = _replace(record, state="failed", reason="output-check", message=failures[inst.id])
            if inst.id in notes:
                record = _replace(record, message="; ".join(filter(None, (record.message, notes[inst.id]))))
            states[inst.id] = record.state
            records.append(record)
        for iid, (inst, kind, message) in plan.skipped.items():
            states[iid] = "skipped"
            records.append(self._skipped_record(context, workflow, inst, profile, kind, message))
        if records:
            job_try = _job_try(accounting, context)
            records = [_replace(r, try_number=job_try) for r in records]
            (self.recorder or default_recorder()).record(records)
        return states

    def _checks(
        self,
        plan: BundlePlan,
        workflow: LoadedWorkflow,
        context: Context,
        mine: Mapping[str, Mapping[str, Any]],
    ) -> list[CheckRequest]:
        variables = workflow.run_variables(self.variant, context)
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

    def _base(
        self, context: Context, process: ProcessNode, stream: Mapping[str, Any], kind: str
    ) -> dict[str, Any]:
        ti: Any = context["ti"]
        workflow, _ = self._workflow()
        graph = workflow.graph(self.variant)
        return {
            "workflow": graph.name,
            "process": process.name,
            "task": process.task,
            "version": process.task_version,
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": -1 if ti.map_index is None else int(ti.map_index),
            "try_number": int(ti.try_number or 1),
            "stream": stream_path(stream),
            "process_type": kind,
        }

    def _batch_record(
        self,
        context: Context,
        workflow: LoadedWorkflow,
        inst: PlannedInstance,
        rec: Mapping[str, Any],
        step: Any,
        profile: ClusterProfile,
        adopted: bool,
    ) -> ProcessRecord:
        job_id = str(rec.get("job_id") or "")
        reason, message = _refine_reason(rec, job_id or "0")
        memory = rec.get("memory_mb") if isinstance(rec.get("memory_mb"), int) else inst.memory_mb
        walltime = (
            rec.get("walltime_s") if isinstance(rec.get("walltime_s"), (int, float)) else inst.walltime_s
        )
        pilot = {k: rec.get(k) for k in ("total_cpu_s", "max_rss_bytes", "elapsed_s", "step_id", "launcher")}
        return ProcessRecord(
            **self._base(context, inst.process, inst.stream, "batch"),
            state=str(rec.get("state") or "failed"),
            cluster=profile.name,
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
            max_rss_bytes=_first_number(
                step.max_rss_bytes if step is not None else None, rec.get("max_rss_bytes")
            ),
            req_cpus=rec.get("cpus") or inst.cpus,
            req_mem_bytes=memory * _MIB if memory else None,
            req_walltime_s=walltime,
            node=rec.get("node"),
            log_path=rec.get("log_path"),
            extra={
                "bundle": self._label(),
                "instance": inst.id,
                "pilot": pilot,
                **({"step": _step_usage(step)} if step is not None else {}),
                "adopted": adopted,
                **({"raised": inst.raised.to_json()} if inst.raised else {}),
                **({"log_tail": rec.get("log_tail")} if rec.get("log_tail") else {}),
            },
        )

    def _unfinished_record(
        self,
        context: Context,
        workflow: LoadedWorkflow,
        inst: PlannedInstance,
        profile: ClusterProfile,
        job_id: str,
        reason: str,
        message: str,
        adopted: bool,
    ) -> ProcessRecord:
        return ProcessRecord(
            **self._base(context, inst.process, inst.stream, "batch"),
            state="terminated",
            cluster=profile.name,
            job_id=job_id,
            reason=reason,
            message=f"not finished by the allocation: {message}",
            req_cpus=inst.cpus,
            req_mem_bytes=inst.memory_mb * _MIB if inst.memory_mb else None,
            req_walltime_s=inst.walltime_s,
            extra={"bundle": self._label(), "instance": inst.id, "adopted": adopted},
        )

    def _skipped_record(
        self,
        context: Context,
        workflow: LoadedWorkflow,
        inst: PlannedInstance,
        profile: ClusterProfile,
        kind: str,
        message: str,
    ) -> ProcessRecord:
        now = datetime.now(timezone.utc)
        return ProcessRecord(
            **self._base(context, inst.process, inst.stream, "batch"),
            state="skipped",
            cluster=profile.name,
            reason=kind,
            message=message,
            start_time=now,
            end_time=now,
            extra={"bundle": self._label(), "instance": inst.id},
        )

    def _record_scripts(
        self,
        context: Context,
        workflow: LoadedWorkflow,
        scripts: Sequence[PlannedScript],
        profile: ClusterProfile | None,
    ) -> None:
        records = []
        for script in scripts:
            outcome = script.outcome
            if outcome is None:
                continue
            reason = script.reason if outcome.state == "skipped" else (
                "python-exception" if outcome.state == "failed" else None
            )  # fmt: skip
            records.append(
                ProcessRecord(
                    **self._base(context, script.process, script.stream, "script"),
                    state=outcome.state,
                    reason=reason,
                    message=outcome.message,
                    start_time=_time(outcome.start),
                    end_time=_time(outcome.end),
                    elapsed_s=outcome.elapsed_s,
                    node=socket.gethostname(),
                    extra={
                        "bundle": self._label(),
                        "instance": script.id,
                        "phase": script.phase,
                        **(
                            {"streams_made": {k: len(v) for k, v in outcome.feeds.items()}}
                            if outcome.feeds
                            else {}
                        ),
                    },
                )
            )
        if records:
            (self.recorder or default_recorder()).record(records)

    def _run_after_scripts(
        self,
        context: Context,
        workflow: LoadedWorkflow,
        plan: BundlePlan,
        states: dict[str, str],
        variables: Mapping[str, Scalar],
        outcomes: dict[str, Any],
        rerun: str,
    ) -> None:
        """Run the wrapup scripts, deepest streams first (the plan's order), each after what it follows."""
        ran: list[PlannedScript] = []
        for script in plan.scripts:
            if script.phase != "after":
                continue
            earlier = outcomes.get(script.id)
            if rerun == "failed" and isinstance(earlier, dict) and earlier.get("state") == "success":
                states[script.id] = "success"
                continue
            upstream = self._upstream_states(plan, script, states)
            skip = script.process.skip_reason(upstream, script.stream, variables)
            if skip is not None:
                script.outcome = ScriptOutcome(
                    "skipped", message=skip.message, start=_now(), end=_now(), elapsed_s=0.0
                )
                script.reason = skip.kind
            else:
                script.outcome, _ = call_script(workflow, script.process, script.stream, variables)
            script.ran_now = True
            states[script.id] = script.outcome.state
            outcomes[script.id] = script.outcome.to_json()
            ran.append(script)
        self._record_scripts(context, workflow, ran, None)

    @staticmethod
    def _upstream_states(
        plan: BundlePlan, script: PlannedScript, states: Mapping[str, str]
    ) -> dict[str, str]:
        task, process, stream = script.task, script.process, script.stream
        children = {c.name for c in task.children}
        names = [*process.depends_on, *process.after]
        if process.skip_if is not None:
            names += [
                n for n in process.skip_if.names if n in children or any(p.name == n for p in task.processes)
            ]
        found: dict[str, str] = {}
        for name in dict.fromkeys(names):
            if name in children:
                members = plan.members.get((task.path, stream_path(stream), name))
                if members is None:
                    found[name] = "skipped"  # its streams were never made
                else:
                    found[name] = combine_states(states.get(m, "skipped") for m in members)
            else:
                found[name] = states.get(instance_id(stream, name), "skipped")
        return found

    def _summary(
        self,
        context: Context,
        hook: SlurmHook,
        profile: ClusterProfile,
        plan: BundlePlan,
        states: Mapping[str, str],
        accounting: JobAccounting | None,
        rerun: str,
    ) -> dict[str, Any]:
        _, task = self._workflow()
        streams = {
            stream_path(s): combine_states(
                states.get(m, "skipped") for m in plan.members.get((task.path, stream_path(s)), [])
            )
            for s in plan.top
        }
        counts: dict[str, int] = {}
        for value in states.values():
            counts[value] = counts.get(value, 0) + 1
        pilot = None
        log_path = self._state(context).get("log_path") if accounting is not None else None
        if log_path:
            pilot = parse_summary(hook.read_tail(str(log_path), lines=20))
        summary = {
            "bundle": self._label(),
            "cluster": profile.name,
            "job_id": accounting.job_id if accounting is not None else None,
            "slurm_state": accounting.state.raw if accounting is not None else None,
            "launcher": self.launcher,
            "rerun": rerun,
            "streams": streams,
            "counts": counts,
            "process_instances": len(states),
            "batch_instances": len(plan.instances) + len(plan.skipped),
            "scripts": len(plan.scripts),
            "log_path": log_path,
            "utilisation": pilot,
        }
        if pilot:
            self.log.info(
                "bundle %s: %s core-s held of %s allocated on %s cores in %s s; states %s",
                self._label(), pilot.get("core_s_held"), pilot.get("core_s_allocated"), pilot.get("cores"),
                pilot.get("wall_s"), counts,
            )  # fmt: skip
        return summary


def _raised_requests(saved: Mapping[str, Any]) -> dict[str, RaisedRequest]:
    """Return the requests earlier tries raised, from the bundle's saved state."""
    found: dict[str, RaisedRequest] = {}
    for iid, value in (saved.get("escalation") or {}).items():
        request = RaisedRequest.from_json(value)
        if request is not None:
            found[str(iid)] = request
    return found


def _job_try(accounting: JobAccounting | None, context: Context) -> int:
    """Return the Airflow try that submitted a job: its name ends ``.t<try>`` (:func:`job_name_for`)."""
    name = accounting.job.job_name if accounting is not None and accounting.job is not None else None
    match = re.search(r"\.t(\d+)$", name or "")
    return int(match.group(1)) if match else int(context["ti"].try_number or 1)


def _first_number(*values: Any) -> Any:
    """Return the first value that is a number (not a bool), else ``None``."""
    return next((v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)), None)


def _step_usage(step: Any) -> dict[str, Any]:
    """Return what sacct said of a pilot instance's step, kept beside the pilot's own measures."""
    return {k: getattr(step, k, None) for k in ("elapsed_s", "total_cpu_s", "max_rss_bytes")}


def _replace(record: ProcessRecord, **changes: Any) -> ProcessRecord:
    return dataclasses.replace(record, **changes)
