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
   A ``skip_if`` on the states of siblings in the allocation goes to the pilot as the combinations
   of their end states that skip (``skip_when``): it records the instance Skipped,
   ``skip-condition``, once they have ended.
2. **Submit once, wait without a worker slot.** The manifest, the pilot and (for emulated
   payloads) the payload program travel in one job script asking for a whole node of the
   cluster; the SlurmOperator machinery names the job after the task instance, re-attaches to
   it after a crash and defers to :class:`~airflow_desc.triggers.slurm.SlurmJobTrigger`. The
   pilot runs on the node itself; an instance whose process names a ``container`` (or on a
   cluster with a default image) runs its payload in that container, with the cluster's runtime.
   The job's text is made in :mod:`~airflow_desc.operators.bundle_job`.
3. **Collect.** The pilot's records (one JSON line per instance, in the task instance's
   directory on the cluster), ``sacct`` per step when ``launcher="srun"``, the output checks of
   the spec (one SSH call for the whole bundle): each batch instance is recorded (state, exit
   code, CPU, wall, MaxRSS, node, reason) with the end of its log (one more SSH call for all of
   them, bounded, secrets redacted), and the task log gets a line per instance with its state and
   where its full log is; an instance the allocation never finished is recorded Terminated. Then
   the wrapup scripts run here (``wrapupEimageSensors`` per raft, then ``wrapupEimageRafts`` per
   visit), each recorded. The summary (state per stream, counts, utilisation) goes to XCom under
   ``bundle_summary`` (and as the return value); the task fails if any instance failed or was
   terminated. The records, states and summary are made in
   :mod:`~airflow_desc.operators.bundle_collect`, the wrapups run in
   :mod:`~airflow_desc.operators.bundle_wrapups`.
4. **Rerun.** Clearing the task instance (or a retry) reruns only what did not succeed: the
   pilot gets the records file as ``--skip-done``, and scripts that succeeded are not run again
   (their streams come from the task state store). A clear by ``airflow-desc rerun`` or the status
   page's Rerun leaves in the history which process instances it selected
   (:class:`~airflow_desc.history.records.RerunSelection`): the next try reruns those even if they
   succeeded, with what waits for them inside the bundle (``BundlePlan.rerun_closure``: listed
   as the manifest's ``rerun``), and not the other successes. ``rerun="all"`` (or
   ``{"desc_rerun": "all"}`` in the run's conf) reruns everything. Records in the directory that
   this Airflow did not write (another Airflow's run of the same run id: a reset metadata DB, a
   deleted and re-created run) are no earlier try's: the directory is set aside and every stream
   runs (:mod:`~airflow_desc.operators.bundle_claim`). What a try reruns is worked out in
   :mod:`~airflow_desc.operators.bundle_rerun`.
5. **Escalate per instance.** An instance the pilot terminated for ``out-of-memory`` asks for
   memory x its ``escalation.memory_factor`` on the next try, one terminated for ``time-limit`` for
   walltime x ``walltime_factor`` (:func:`~airflow_desc.operators.escalation.escalate_bundle`):
   compounding across tries, capped at a node's memory and the cluster's longest walltime (at the
   cap it is not raised, and its record's message says so). The raised requests are saved with the
   bundle's state (so a worker crash loses none), go into the manifest and the allocation's time
   limit, and each record holds the memory and walltime that try asked for. ``escalate=False``
   turns this off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_desc.clusters import ClusterProfile
from airflow_desc.exceptions import SlurmJobFailed
from airflow_desc.history import default_recorder, typical_elapsed_of
from airflow_desc.history.records import InstanceIdentity
from airflow_desc.operators.bundle_claim import claim_task_dir
from airflow_desc.operators.bundle_collect import batch_records, bundle_summary, step_rows
from airflow_desc.operators.bundle_job import allocation_command, bundle_manifest
from airflow_desc.operators.bundle_logs import with_log_tails
from airflow_desc.operators.bundle_records import check_requests, job_try, script_record
from airflow_desc.operators.bundle_rerun import (
    RERUN_MODES,
    known_outcomes,
    read_records,
    rerun_ids,
    rerun_mode,
    rerun_selection,
)
from airflow_desc.operators.bundle_take_over import taken_by, write_offer
from airflow_desc.operators.bundle_wrapups import run_wrapups
from airflow_desc.operators.escalation import escalate_bundle
from airflow_desc.operators.job_checks import owner_uid_of
from airflow_desc.operators.job_records import fallback_of
from airflow_desc.operators.key_renewal import waits_for_key_renewal
from airflow_desc.operators.output_checks import run_output_checks
from airflow_desc.operators.slurm import FinishedJob, SlurmOperator, untrusted_fails_the_task
from airflow_desc.operators.trusted import trusted_bundle_state, trusted_streams
from airflow_desc.operators.workflow import VariantRecorder
from airflow_desc.pilot import TakeOver, parse_summary
from airflow_desc.slurm import JobAccounting, StateClass, diagnose
from airflow_desc.slurm.ownership import cancelled_by_owner
from airflow_desc.workflow.bundle_plan import (
    BundlePlan,
    PlannedScript,
    allocation_time_limit_s,
    raised_requests,
)
from airflow_desc.workflow.bundle_planner import plan_bundle
from airflow_desc.workflow.graph import TaskNode
from airflow_desc.workflow.naming import stream_path
from airflow_desc.workflow.overlays import LAUNCHERS
from airflow_desc.workflow.registry import LoadedWorkflow, workflow_for
from airflow_desc.workflow.scripts import ScriptOutcome

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_desc.hooks.slurm import SlurmHook

__all__ = ["SlurmBundleOperator"]

_STATE_KEY = "bundle"


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
    :param spec_digest: what rendered the DAG, kept on the run in the history.
    :param take_over: the bundles of this mapped task take each other over: a pilot out of work
        runs a sibling bundle whose job is still pending (the spec's ``bundling.take_over``; see
        :mod:`airflow_desc.pilot.launcher`). The sibling's task then waits for that allocation and
        collects its instances from it.
    :param kwargs: :class:`~airflow_desc.operators.slurm.SlurmOperator` arguments (``cluster``,
        ``retries``, ``deferrable``, ``escalate``...); the resources are a whole node of the
        cluster, and the escalation factors are each process's own (its spec's ``escalation``).
    """

    template_fields: Sequence[str] = ()
    ui_color = "#b9d9eb"
    # The pilot runs on the node, each instance in its own process's container.
    payload_in_container = False
    in_work_dir = True

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
        spec_digest: str = "",
        take_over: bool = False,
        **kwargs: Any,
    ) -> None:
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
        if rerun not in RERUN_MODES:
            raise ValueError(f"rerun must be 'failed' or 'all', got {rerun!r}")
        kwargs.setdefault("command", "")
        kwargs.setdefault("retries", 0)
        recorder = VariantRecorder(
            variant=variant or "",
            workflow_version=kwargs.get("workflow_version", ""),
            spec_digest=spec_digest,
        )
        kwargs.setdefault("recorder", recorder)
        super().__init__(**kwargs)
        self.workflow_key = workflow_key
        self.variant = variant
        self.bundle_task = bundle_task
        # Mapped from the streams task's XCom, which the REST API can write: checked, not trusted.
        with untrusted_fails_the_task():
            self.streams_values = trusted_streams("streams", streams)
        self.launcher = launcher
        self.rerun = rerun
        self.python = python
        self.kill_grace_s = kill_grace_s
        self.take_over = bool(take_over)
        self._plan_for_submit: BundlePlan | None = None

    # --- helpers ---
    def _workflow(self) -> tuple[LoadedWorkflow, TaskNode]:
        workflow = workflow_for(self.workflow_key)
        return workflow, workflow.task(self.variant, self.bundle_task)

    def _runs_dm(self, workflow: LoadedWorkflow, context: Context) -> bool:
        """Whether this run's instances run their ``dm_command`` (``LoadedWorkflow.run_payload``)."""
        return workflow.run_payload(self.variant, context) == "dm"

    def _label(self) -> str:
        if not self.streams_values:
            return "(empty)"
        first = stream_path(self.streams_values[0])
        more = len(self.streams_values) - 1
        return f"{first} +{more}" if more else first

    def _rerun_mode(self, context: Context) -> str:
        return rerun_mode(getattr(context.get("dag_run"), "conf", None), self.rerun)

    def _bundle_state(self, context: Context) -> dict[str, Any]:
        store = self._store(context)
        value = store.get(_STATE_KEY) if store is not None else None
        source = f"task state store {_STATE_KEY!r}"
        if value is None:
            value = context["ti"].xcom_pull(task_ids=context["ti"].task_id, key="bundle_state")
            source = "XCom 'bundle_state'"
        if value is None:
            return {}
        # Its outcomes decide which scripts run again, its requests what the allocation asks for.
        with untrusted_fails_the_task():
            return trusted_bundle_state(value, source=source)

    def _save_bundle_state(self, context: Context, value: dict[str, Any]) -> None:
        store = self._store(context)
        if store is not None:
            from airflow.sdk.execution_time.context import NEVER_EXPIRE

            store.set(_STATE_KEY, value, retention=NEVER_EXPIRE)
        else:  # no state store: keep it for the rest of this try at least
            context["ti"].xcom_push(key="bundle_state", value=value)

    def _paths(self, context: Context, profile: ClusterProfile) -> dict[str, str]:
        task_dir = self._task_dir(context, profile)
        home = task_dir if task_dir.startswith(("/", "~")) else f"~/{task_dir}"
        return {
            "dir": home,
            "records": f"{home}/records.jsonl",
            "logs": f"{home}/logs",
            "payload": f"{home}/payload.py",
        }

    # --- execute ---
    @waits_for_key_renewal
    def execute(self, context: Context) -> Any:
        """Re-attach to this bundle's allocation, or plan it (running its setup scripts) and submit it."""
        context["desc_bundle"] = self._label()  # type: ignore[typeddict-unknown-key]
        state = self._claimed_state(context)  # first: it says which cluster the allocation is on
        profile = self._profile()
        hook = self._hook(profile)
        self._bundle_state(context)  # checked now, so that a bad saved state fails before any command
        found = self._resume(context, hook, profile, state)
        if isinstance(found, dict):
            return found
        if found is None:
            self._claim_dir(context, hook, profile)
            workflow, task = self._workflow()
            variables = workflow.run_variables(self.variant, context)
            rerun = self._rerun_mode(context)
            saved = self._bundle_state(context)
            selected = (
                rerun_selection(context["ti"], label=self._label(), log=self.log)
                if rerun == "failed"
                else frozenset()
            )
            plan = plan_bundle(
                workflow,
                task,
                self.streams_values,
                variables,
                known=known_outcomes(saved, rerun, selected),
                raised=raised_requests(saved),
                dm=self._runs_dm(workflow, context),
            )
            closure = sorted(plan.rerun_closure(selected))
            if selected:
                self.log.info(
                    "bundle %s: a rerun selected %d of its process instances; %d run again with what "
                    "waits for them, whatever their earlier state", self._label(),
                    len(selected & {*(i.id for i in plan.instances), *(s.id for s in plan.scripts)}),
                    len(closure),
                )  # fmt: skip
            self._record_scripts(context, [s for s in plan.scripts if s.ran_now])
            saved = {
                **saved,
                "scripts": {
                    **(saved.get("scripts") or {}),
                    **{s.id: s.outcome.to_json() for s in plan.scripts if s.outcome is not None},
                },
                "rerun": rerun,
                # This try's: every fresh start writes it, a re-attach or the collection reads it.
                "rerun_ids": closure,
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

    def _claim_dir(self, context: Context, hook: SlurmHook, profile: ClusterProfile) -> None:
        """Make the bundle's directory on the cluster this Airflow's (:mod:`~.bundle_claim`)."""
        if self._store(context) is None:
            return  # no state store: nothing of this Airflow's outlives a try to tell the two apart
        claim_task_dir(
            hook,
            self._paths(context, profile)["dir"],
            self._bundle_state(context),
            lambda state: self._save_bundle_state(context, state),
            label=self._label(),
            log=self.log,
        )

    def _all_done(
        self, hook: SlurmHook, profile: ClusterProfile, context: Context, plan: BundlePlan, rerun: str
    ) -> bool:
        if rerun != "failed":
            return False
        again = rerun_ids(self._bundle_state(context))
        latest, _ = read_records(hook, self._paths(context, profile)["records"], None, rerun)
        return all(
            latest.get(i.id, {}).get("state") == "success" and i.id not in again for i in plan.instances
        )

    def _submit(
        self, context: Context, hook: SlurmHook, profile: ClusterProfile, state: dict[str, Any]
    ) -> str:
        plan = self._plan_for_submit
        if plan is None:
            raise RuntimeError("SlurmBundleOperator._submit without a plan")
        ti: Any = context["ti"]
        rerun = self._rerun_mode(context)
        self._estimate(plan)
        self.cpus, self.mem_mb, limit_s = self._whole_node(profile)
        self.time_limit = max(1, limit_s // 60)
        paths = self._paths(context, profile)
        bundle = f"{ti.task_id}[{ti.map_index}]@{ti.run_id}"
        again = rerun_ids(self._bundle_state(context)) & {i.id for i in plan.instances}
        take_over = TakeOver(profile.name, self.time_limit * 60) if self.take_over else None
        self.command = allocation_command(
            plan,
            bundle=bundle,
            profile=profile,
            env=self.env,
            paths=paths,
            launcher=self.launcher,
            python=self.python,
            rerun=rerun,
            again=again,
            kill_grace_s=self.kill_grace_s,
            take_over=take_over,
        )
        self.signal = f"B:TERM@{max(10, min(60, limit_s // 4))}"
        self.log.info(
            "bundle %s: %d batch instances (%d skipped before the allocation), %d scripts; launcher %s, "
            "rerun %s", self._label(), len(plan.instances), len(plan.skipped), len(plan.scripts),
            self.launcher, rerun,
        )  # fmt: skip
        job_id = super()._submit(context, hook, profile, state)
        if take_over is not None:
            manifest = bundle_manifest(
                plan, bundle=bundle, profile=profile, env=self.env, rerun=rerun, again=again
            )
            write_offer(
                hook, paths, job_id=job_id, manifest=manifest, cluster=profile.name,
                skip_done=rerun == "failed", label=self._label(), log=self.log,
            )  # fmt: skip
        return job_id

    def _foreign(self, context: Context, accounting: JobAccounting) -> bool:
        """Whether ``accounting`` is of a job that took this bundle over, not of its own."""
        return self.take_over and accounting.job_id != str(self._state(context).get("job_id") or "")

    def _taken_by(self, context: Context, job: FinishedJob) -> str | None:
        """Return the job that took this bundle over while its own was pending, if any (:func:`taken_by`)."""
        if not self.take_over or self._foreign(context, job.accounting):
            return None  # not a bundle that can be taken (or already the job that took it over)
        return taken_by(job.hook, self._paths(context, job.profile)["dir"], job.accounting.job_id)

    def _whole_node(self, profile: ClusterProfile) -> tuple[int, int, int]:
        """Return what the allocation asks of ``profile``'s cluster: a node's cores and memory, a walltime."""
        plan = self._plan_for_submit
        if plan is None:
            raise RuntimeError("SlurmBundleOperator: no plan to size an allocation for")
        limit_s = allocation_time_limit_s(plan.instances, profile.cores_per_node, profile.max_walltime_s)
        return profile.cores_per_node, profile.memory_per_node_mb, limit_s

    def _asked(self, profile: ClusterProfile) -> tuple[int | str, int | str | None, str | int | None]:
        """Return what the allocation asks of ``profile``'s cluster (its own, or a fallback): a whole node."""
        cpus, mem_mb, limit_s = self._whole_node(profile)
        return cpus, mem_mb, max(1, limit_s // 60)

    def _estimate(self, plan: BundlePlan) -> None:
        """Give the manifest each process's median run time from the history, for longest-first.

        The pilot then starts the longest first, so that no long instance is left for the end
        with the other cores idle. Only an ordering hint: a history that cannot be read leaves
        the manifest order.
        """
        workflow, _ = self._workflow()
        processes = {inst.process.name for inst in plan.instances}
        try:
            by_process = typical_elapsed_of(processes, workflow=workflow.graph(self.variant).name)
        except Exception as exc:  # the history is down or unreadable: the bundle runs all the same
            self.log.warning(
                "no run-time estimates from the history (%s): the pilot keeps the spec's order", exc
            )
            return
        count = plan.set_estimates(by_process)
        self.log.info(
            "run-time estimates from the history for %d of %d batch instances (%s)",
            count, len(plan.instances),
            ", ".join(f"{p} {s:.1f} s" for p, s in sorted(by_process.items())) or "none recorded yet",
        )  # fmt: skip

    # --- finish ---
    def _finish(self, context: Context, job: FinishedJob) -> dict[str, Any]:
        taker = self._taken_by(context, job)
        if taker is not None:
            self.log.info(
                "bundle %s: taken over by SLURM job %s (a sibling bundle's allocation out of work) while "
                "job %s was pending; waiting for it to run this bundle's instances", self._label(), taker,
                job.accounting.job_id,
            )  # fmt: skip
            # Its own job is marked recorded with the one that took it over, once that is collected:
            # until then a new try finds it unrecorded and follows the claim again.
            followed: dict[str, Any] = self._wait(context, job.hook, job.profile, taker, own=False)
            return followed
        if job.note:
            # The allocation's state came from the controller; each instance's from its own markers.
            self.log.warning("allocation %s: %s", job.accounting.job_id, job.note)
        saved = self._bundle_state(context)
        workflow, task = self._workflow()
        variables = workflow.run_variables(self.variant, context)
        known = {k: ScriptOutcome.from_json(v) for k, v in (saved.get("scripts") or {}).items()}
        plan = plan_bundle(
            workflow,
            task,
            self.streams_values,
            variables,
            known=known,
            run_scripts=False,
            raised=raised_requests(saved),
            dm=self._runs_dm(workflow, context),
        )
        # The job counts as recorded (never adopted again) once its instances are: when collection
        # itself fails (the cluster went away), the next try adopts the job and collects it then.
        # A job that took this bundle over is recorded with this bundle's own (cancelled) job.
        own = str(self._state(context).get("job_id") or "")
        recorded = [job.accounting.job_id, *([own] if own and own != job.accounting.job_id else [])]
        try:
            summary = self._conclude(
                context, job.hook, job.profile, job.accounting, plan, adopted=job.adopted
            )
        except SlurmJobFailed as exc:
            self._mark_recorded(context, *recorded)
            if self._foreign(context, job.accounting):
                # Cancelled or not, that job was another task's: its user did not cancel this one.
                self.log.warning(
                    "bundle %s: its instances ran in SLURM job %s, which took it over: %s",
                    self._label(), job.accounting.job_id, job.accounting.state.raw,
                )  # fmt: skip
                raise
            if not job.adopted and cancelled_by_owner(
                job.accounting, owner_uid_of(job.hook, job.accounting, self.log)
            ):
                # Its own user's scancel (or a clear / mark-failed): Cancelled, never retried on its own.
                raise AirflowFailException(
                    f"{exc} The allocation (job {job.accounting.job_id}) was cancelled by its own user: "
                    "not retried; clear the task to run it again."
                ) from None
            raise
        self._mark_recorded(context, *recorded)
        return summary

    def _mark_recorded(self, context: Context, *job_ids: str) -> None:
        state = self._state(context)
        state.update(recorded=[*(state.get("recorded") or []), *job_ids][-50:])
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
        latest, mine = read_records(hook, paths["records"], job_id, rerun)
        saved = self._bundle_state(context)
        # Derived from this job's records only (what each instance ran with), so collecting the same
        # job again after a crash raises nothing twice.
        raised, notes = escalate_bundle(plan.instances, mine, profile, saved, escalate=self.escalate)
        again = rerun_ids(saved)
        latest = {k: v for k, v in latest.items() if k not in again or k in mine}
        states = self._record_batch(
            context, workflow, plan, hook, profile, accounting, latest, mine, adopted, notes
        )
        outcomes = dict(saved.get("scripts") or {})
        for script in plan.scripts:
            if script.outcome is not None:
                states[script.id] = script.outcome.state
        self._record_scripts(context, run_wrapups(workflow, plan, states, variables, outcomes, rerun, again))
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
        steps = step_rows(hook, accounting, mine, launcher=self.launcher)
        checks = check_requests(plan, workflow.run_variables(self.variant, context), mine)
        failures = run_output_checks(hook, profile.work_dir, checks) if checks else {}
        # The job that took this bundle over is another task's: named after its try, its log there.
        own = accounting is None or not self._foreign(context, accounting)
        diagnosis = None
        if accounting is not None and accounting.state_class is not StateClass.SUCCEEDED:
            log_path = str(self._state(context).get("log_path") or "") if own else ""
            diagnosis = diagnose(accounting, hook.read_tail(log_path, lines=40) if log_path else "")
        states, records = batch_records(
            self._bundle_identity(context),
            plan,
            latest,
            mine,
            steps=steps,
            failures=failures,
            diagnosis=diagnosis,
            notes=notes,
            cluster=profile.name,
            job_id=job_id,
            label=self._label(),
            adopted=adopted,
        )
        if records:
            this_try = int(context["ti"].try_number or 1)
            submitted_by = (
                job_try(accounting, this_try)
                if own
                else int(self._state(context).get("try_number") or this_try)
            )
            records = [dataclasses.replace(r, try_number=submitted_by) for r in records]
            moved = fallback_of(self._state(context), profile.name)
            if moved is not None:  # the allocation went to a fallback cluster: from where, and why
                records = [dataclasses.replace(r, extra={**r.extra, "fallback": moved}) for r in records]
            task_dir = self._paths(context, profile)["dir"]
            records = with_log_tails(hook, task_dir, records, self._secret_values(profile), self.log)
            (self.recorder or default_recorder()).record(records)
            for r in records:
                where = f"{profile.name}:{r.log_path}" if r.log_path else "no log"
                self.log.info("%s %s: %s (%s); log %s", r.stream, r.process, r.state, r.reason or "-", where)
        return states

    def _bundle_identity(self, context: Context) -> InstanceIdentity:
        """Return the bundle task instance's identity; each record names its own process and stream."""
        workflow, _ = self._workflow()
        return dataclasses.replace(self._identity(context), workflow=workflow.graph(self.variant).name)

    def _record_scripts(self, context: Context, scripts: Sequence[PlannedScript]) -> None:
        bundle = self._bundle_identity(context)
        records = [script_record(bundle, script, label=self._label()) for script in scripts]
        done = [r for r in records if r is not None]
        if done:
            (self.recorder or default_recorder()).record(done)

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
        pilot = None
        log_path = self._state(context).get("log_path") if accounting is not None else None
        if log_path:
            pilot = parse_summary(hook.read_tail(str(log_path), lines=20))
        summary = bundle_summary(
            plan,
            task,
            states,
            label=self._label(),
            cluster=profile.name,
            accounting=accounting,
            launcher=self.launcher,
            rerun=rerun,
            log_path=log_path,
            pilot=pilot,
        )
        if pilot:
            self.log.info(
                "bundle %s: %s core-s held of %s allocated on %s cores in %s s; states %s",
                self._label(), pilot.get("core_s_held"), pilot.get("core_s_allocated"), pilot.get("cores"),
                pilot.get("wall_s"), summary["counts"],
            )  # fmt: skip
        return summary
