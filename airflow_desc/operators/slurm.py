"""SlurmOperator: run one SLURM job on a named cluster, never twice, never lost.

The life of one task instance:

1. **Find before submitting.** The job of each try is named deterministically from
   (dag_id, run_id, task_id, map_index) and the try number (:mod:`airflow_desc.operators.job_names`),
   and its id is written to the task state store (Airflow 3.3) as soon as sbatch returns. A try
   first looks there, and after a crash also asks the cluster for the jobs named after this task
   instance's earlier tries: a job still queued or running is re-attached; a job that finished but
   whose result was never recorded (the worker died) is adopted; only otherwise is a new job submitted. An id
   is never trusted alone: the job must carry the name the task submitted it with and have been
   submitted after the task's record of submitting it (:mod:`airflow_desc.slurm.ownership`); a
   reused id (slurmctld lost its state) is another task's job, and the try submits afresh.
   The rules deciding which job to re-attach to are in :mod:`airflow_desc.operators.resume`, the
   questions they ask SLURM in :mod:`airflow_desc.operators.job_checks`; the job's script is
   :func:`~airflow_desc.operators.job_script.job_spec_for`'s.
2. **Wait out maintenance, then submit.** Before sbatch the try asks the cluster for its
   reservations and partition states (:mod:`airflow_desc.operators.submission_hold`): a job whose
   walltime would run into a maintenance window (SLURM's, or the profile's ``maintenance`` list), or
   whose partition is down, drained or inactive, is not submitted; the task defers to a
   :class:`~airflow_desc.triggers.hold.SubmissionHoldTrigger` (no worker slot, no retry spent), its log
   saying ``waiting for maintenance to end at ...``, and submits when the trigger fires. A task with
   ``fallback_clusters`` goes to the first of them that can take the job instead (room in its queue,
   no maintenance), and its last tries go to them when its retries on its cluster are spent
   (:mod:`airflow_desc.operators.fallback`); the move is in the task log and the record.
3. **Wait without a worker slot.** Deferred to :class:`~airflow_desc.triggers.slurm.SlurmJobTrigger`,
   whose per-cluster poller batches every watched job into one sacct call per interval.
   ``deferrable=False`` polls from the worker instead.
4. **Diagnose and record.** The job's accounting and the end of its log (bounded, secrets
   redacted: :mod:`airflow_desc.operators.job_logs`) are diagnosed (:func:`airflow_desc.slurm.diagnose`),
   recorded as a process instance with that log tail, and returned as the XCom summary; the task
   log shows the tail, on success too. A failure raises :class:`~airflow_desc.exceptions.SlurmJobFailed`
   with the classified reason. A job cancelled by its own uid (a user's ``scancel``, or a clear /
   mark-failed in Airflow) is recorded Cancelled and fails the task without a retry; a cancel by
   anyone else (root, an admin, SLURM) is Terminated and retried. When the job's node is left
   DOWN / DRAIN, the task log and the record's message say so, with SLURM's reason.
5. **Escalate by cause.** After ``TIMEOUT`` the next try asks for ``walltime x timeout_factor``
   (up to the cluster's maximum), after ``OUT_OF_MEMORY`` for ``memory x memory_factor`` (up to a
   node; more cores when memory per core is the limit, then the high-memory partition; on a profile
   with ``mem_per_cpu_mb``, only more cores: ``--mem-per-cpu`` stays). A node
   failure or preemption retries with the same resources, excluding the node only when another
   usable node of the partition can run the job (:mod:`airflow_desc.slurm.nodes`). A node failure
   is not the payload's fault and does not spend the task's retries: the try resubmits the job
   itself, at most :data:`~airflow_desc.operators.resume.NODE_FAILURE_RESUBMITS` times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_desc.clusters import ClusterProfile
from airflow_desc.config import configured_cluster_profiles
from airflow_desc.exceptions import SlurmJobFailed, UntrustedState
from airflow_desc.history import ProcessRecord, Recorder, default_recorder
from airflow_desc.history.records import InstanceIdentity
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.operators.escalation import EscalationExhausted, escalate_job, next_resources
from airflow_desc.operators.job_checks import (
    candidate_jobs,
    own_jobs,
    owner_uid_of,
    partition_nodes_of,
    partition_notice,
    with_node_notice,
)
from airflow_desc.operators.job_logs import guess_log_path, job_log_path, read_job_log_tail, secret_values
from airflow_desc.operators.job_names import job_name_for, task_dir_for, try_of_name
from airflow_desc.operators.job_records import FinishedJob, job_record, job_summary
from airflow_desc.operators.job_script import job_spec_for
from airflow_desc.operators.key_renewal import ResumesAfterKeyRenewal, waits_for_key_renewal
from airflow_desc.operators.placement import PlacesTries
from airflow_desc.operators.resume import (
    DEFERRED_TRY,
    AfterFailure,
    after_failure,
    claim_task_instance,
    counts_node_failure,
    ended_while_deferred,
    live_job,
    try_of_job,
)
from airflow_desc.operators.trusted import trusted_event_accounting, trusted_event_job_id, trusted_slurm_state
from airflow_desc.operators.worker_poll import poll_in_worker
from airflow_desc.slurm import (
    CONTROLLER_NOTE,
    StateClass,
    diagnose,
    parse_payload_timing,
    render_job_script,
)
from airflow_desc.slurm.diagnose import Diagnosis
from airflow_desc.triggers.slurm import SlurmJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["FinishedJob", "SlurmOperator", "untrusted_fails_the_task"]

_STATE_KEY = "slurm"


def _map_index(ti: Any) -> int:
    return -1 if ti.map_index is None else int(ti.map_index)


@contextmanager
def untrusted_fails_the_task() -> Iterator[None]:
    """Turn :class:`~airflow_desc.exceptions.UntrustedState` into a failure that is not retried.

    The value stays where it was read for every later try, so a retry would only fail again.
    """
    try:
        yield
    except UntrustedState as exc:
        raise AirflowFailException(str(exc)) from None


class SlurmOperator(ResumesAfterKeyRenewal, PlacesTries, BaseOperator):
    """Run a command as one SLURM job on a named cluster reached over SSH.

    :param command: the shell text the job runs (templated).
    :param cluster: the cluster profile name (see :mod:`airflow_desc.clusters`); ``None`` = the default.
    :param fallback_clusters: cluster profile names to run on, in order, when ``cluster`` is in
        maintenance or the retries there are spent (:mod:`airflow_desc.operators.fallback`).
    :param cpus: CPUs per task (templated).
    :param mem_mb: memory per node in MB (templated); ``None`` = the cluster's default per CPU.
    :param time_limit: walltime: ``"HH:MM:SS"``, ``"D-HH:MM:SS"`` or minutes (templated).
    :param nodes: nodes.
    :param partition: overrides the profile's partition.
    :param qos: overrides the profile's QOS.
    :param account: overrides the profile's account.
    :param constraint: overrides the profile's constraint.
    :param env: environment variables of the job (templated); values are shell-quoted.
    :param setup_lines: shell lines run before the command (after the profile's own).
    :param container_image: run the command in this image with the cluster's container runtime.
    :param signal: ``--signal`` for checkpointing, e.g. ``"B:USR1@120"``.
    :param sbatch_args: further sbatch options, e.g. ``{"licenses": "scratch"}``.
    :param deferrable: wait in the triggerer (default) rather than in a worker slot.
    :param poll_interval: seconds between polls; default from the cluster profile.
    :param timeout_factor: walltime multiplier after a TIMEOUT.
    :param memory_factor: memory multiplier after an OUT_OF_MEMORY.
    :param escalate: raise walltime / memory on retries after TIMEOUT / OUT_OF_MEMORY.
    :param workflow: the workflow name recorded in the history (default: the DAG id).
    :param workflow_task: the Pipeline II task (sub-task) recorded in the history (default: the workflow).
    :param workflow_version: that task's version recorded in the history.
    :param process: the process name recorded in the history (default: the task id).
    :param stream: the stream path recorded in the history.
    :param recorder: where process records go; default :func:`airflow_desc.history.default_recorder`.
    :param log_tail_lines: how many of the last lines of the job's log the diagnosis reads. The end of
        the log (200 lines, at most 64 KiB, secrets redacted) is read whenever the job ends: shown in
        the task log (on success too) and kept in the history.
    :param cluster_pool: run in the cluster's Airflow pool (``slurm_<cluster>``, created by
        ``airflow-desc pools sync``) so that at most ``max_queued_jobs`` jobs wait in its queue.
    """

    template_fields: Sequence[str] = ("command", "env", "cpus", "mem_mb", "time_limit", "stream")
    template_ext: Sequence[str] = (".sh",)
    ui_color = "#c7e9f1"
    #: Whether the command runs in the container (``container_image``, else the cluster's default).
    payload_in_container: ClassVar[bool] = True
    #: Whether the job starts in its cluster's ``work_dir`` (a workflow's paths are relative to it).
    in_work_dir: ClassVar[bool] = False

    def __init__(
        self,
        *,
        command: str,
        cluster: str | None = None,
        fallback_clusters: Sequence[str] = (),
        cpus: int | str = 1,
        mem_mb: int | str | None = None,
        time_limit: str | int | None = None,
        nodes: int = 1,
        partition: str | None = None,
        qos: str | None = None,
        account: str | None = None,
        constraint: str | None = None,
        env: Mapping[str, str] | None = None,
        setup_lines: Sequence[str] = (),
        container_image: str | None = None,
        signal: str | None = None,
        sbatch_args: Mapping[str, str | None] | None = None,
        deferrable: bool = True,
        poll_interval: float | None = None,
        timeout_factor: float = 2.0,
        memory_factor: float = 2.0,
        escalate: bool = True,
        workflow: str | None = None,
        workflow_task: str | None = None,
        workflow_version: str = "",
        process: str | None = None,
        stream: str = "",
        recorder: Recorder | None = None,
        log_tail_lines: int = 60,
        cluster_pool: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retries", 2)
        if cluster_pool and not kwargs.get("pool"):
            kwargs["pool"] = configured_cluster_profiles().get(cluster).pool_name
        super().__init__(**kwargs)
        self.command = command
        self.cluster = cluster
        self.fallback_clusters = tuple(fallback_clusters)
        # The cluster this try's job is on when it is a fallback (read from the saved state).
        self._on_cluster: str | None = None
        self.cpus = cpus
        self.mem_mb = mem_mb
        self.time_limit = time_limit
        self.nodes = nodes
        self.partition = partition
        self.qos = qos
        self.account = account
        self.constraint = constraint
        self.env = dict(env or {})
        self.setup_lines = tuple(setup_lines)
        self.container_image = container_image
        self.signal = signal
        self.sbatch_args = dict(sbatch_args or {})
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout_factor = timeout_factor
        self.memory_factor = memory_factor
        self.escalate = escalate
        self.workflow = workflow
        self.workflow_task = workflow_task
        self.workflow_version = workflow_version
        self.process = process
        self.stream = stream
        self.recorder = recorder
        self.log_tail_lines = log_tail_lines
        self._job_id: str | None = None

    # --- helpers ------------------------------------------------------------------------------
    def _profile(self) -> ClusterProfile:
        """Return the profile of the cluster the try's job is on: its own, or a fallback it moved to."""
        return configured_cluster_profiles().get(self._on_cluster or self.cluster)

    def _read_cluster(self, value: Mapping[str, Any]) -> None:
        """Note which cluster the saved state's job is on; a name not among the task's fallbacks is refused.

        The name picks where commands run: only the task's own fallbacks may be named.
        """
        name = value.get("cluster")
        if name is not None and name not in self.fallback_clusters:
            raise UntrustedState(
                f"task state store {_STATE_KEY!r}: cluster = {name!r} is none of this task's fallback "
                f"clusters ({', '.join(self.fallback_clusters) or 'it has none'}): its fallback_clusters "
                "changed while a job ran there, or someone wrote the value through Airflow's REST API; "
                "nothing was run. Cancel that job if it still runs, delete the value, then clear the task"
            )
        self._on_cluster = name

    def _hook(self, profile: ClusterProfile) -> SlurmHook:
        # An expired key raises SshKeyExpired at the first command: execute and execute_complete
        # then wait deferred for its renewal (waits_for_key_renewal).
        return SlurmHook(profile.ssh_conn_id, jump_conn_id=profile.jump_conn_id or "", cluster=profile.name)

    @staticmethod
    def _store(context: Context) -> Any:
        return context.get("task_state_store")

    def _task_dir(self, context: Context, profile: ClusterProfile | None = None) -> str:
        """Return this task instance's directory on the cluster: its scripts, logs and records."""
        ti = context["ti"]
        work_dir = (profile or self._profile()).work_dir
        return task_dir_for(work_dir, ti.dag_id, ti.run_id, ti.task_id, _map_index(ti))

    def _state(self, context: Context) -> dict[str, Any]:
        store = self._store(context)
        value = store.get(_STATE_KEY) if store is not None else None
        if value is None:
            return {}
        # The store can be written through the REST API: its job id picks the job to re-attach to
        # or cancel, its log path the file read into the task log. Checked at every read.
        with untrusted_fails_the_task():
            if isinstance(value, Mapping):
                self._read_cluster(value)
            return trusted_slurm_state(
                value, self._task_dir(context), source=f"task state store {_STATE_KEY!r}"
            )

    def _save_state(self, context: Context, state: dict[str, Any]) -> None:
        store = self._store(context)
        if store is not None:
            from airflow.sdk.execution_time.context import NEVER_EXPIRE

            store.set(_STATE_KEY, state, retention=NEVER_EXPIRE)

    def _claimed_state(self, context: Context) -> dict[str, Any]:
        """Return the saved state, first noting when this Airflow first ran the task instance.

        Saved before any job is submitted: jobs named after the task instance's tries but submitted
        earlier are another Airflow's run of the same run id, never re-attached to nor adopted.
        """
        state = self._state(context)
        if claim_task_instance(state, datetime.now(timezone.utc)):
            self._save_state(context, state)
        return state

    def _resources(self, profile: ClusterProfile, state: Mapping[str, Any]) -> dict[str, Any]:
        """Return the next job's resources: what the task asks for, raised by earlier escalations.

        On a fallback cluster: capped to its node and walltime, on its profile's partition.
        """
        cpus, mem_mb, time_limit = self._asked(profile)
        own = profile.name not in self.fallback_clusters
        return next_resources(
            profile, state, cpus=cpus, mem_mb=mem_mb, time_limit=time_limit,
            partition=self.partition if own else None, nodes=self.nodes, fit=not own,
        )  # fmt: skip

    def _asked(self, profile: ClusterProfile) -> tuple[int | str, int | str | None, str | int | None]:
        """Return what the task asks for on ``profile``'s cluster: CPUs, memory, walltime."""
        return self.cpus, self.mem_mb, self.time_limit

    # --- execute ------------------------------------------------------------------------------
    @waits_for_key_renewal
    def execute(self, context: Context) -> Any:
        """Re-attach to, adopt, or submit this task instance's job; then wait for it."""
        state = self._claimed_state(context)  # first: it says which cluster the job is on
        profile = self._profile()
        hook = self._hook(profile)
        job_id = self._resume(context, hook, profile, state)
        if isinstance(job_id, dict):  # an adopted, already finished job: its summary
            return job_id
        if job_id is None:
            hook, profile = self._placed(context, hook, profile, state)
            job_id = self._submit(context, hook, profile, state)
        return self._wait(context, hook, profile, job_id)

    def _wait(
        self, context: Context, hook: SlurmHook, profile: ClusterProfile, job_id: str, *, own: bool = True
    ) -> Any:
        """Wait for ``job_id``: defer to the trigger, or poll from the worker; then finish.

        ``own=False``: another task's job (one that took this task's work over): never cancelled
        when this task is killed, cleared or marked failed.
        """
        self._job_id = job_id if own else None
        self.log.info(
            "waiting for SLURM job %s on %s (try %s)", job_id, profile.name, context["ti"].try_number
        )
        if self.deferrable:
            self.defer(
                trigger=SlurmJobTrigger(
                    job_id=job_id,
                    ssh_conn_id=profile.ssh_conn_id,
                    jump_conn_id=profile.jump_conn_id,
                    poll_interval=self.poll_interval or profile.poll_interval,
                    vanish_grace=profile.vanish_grace,
                    cancel_on_kill=own,
                ),
                method_name="execute_complete",
            )
        interval = self.poll_interval or profile.poll_interval
        accounting, note = poll_in_worker(hook, profile, job_id, interval, self.log)
        return self._finish(context, FinishedJob(hook, profile, accounting, note=note))

    def _resume(
        self, context: Context, hook: SlurmHook, profile: ClusterProfile, state: dict[str, Any]
    ) -> str | dict[str, Any] | None:
        """Find this task instance's unrecorded job, if any: its id to wait for, or an adopted summary."""
        this_try = int(context["ti"].try_number)
        expected = candidate_jobs(hook, state, this_try, lambda t: self._name_of_try(context, t))
        candidates = own_jobs(hook, expected, self.log)
        if not candidates:
            return None
        accounting = hook.sacct(candidates)
        queued = (
            {row.job_id for row in hook.squeue(candidates)} if set(candidates) - set(accounting) else set()
        )
        job_id = live_job(candidates, accounting, queued)
        if job_id is not None:
            acct = accounting.get(job_id)
            job_try = try_of_name(expected[job_id][0])
            if ended_while_deferred(state, job_try, this_try):
                # That try's trigger cancels its job when the try is cleared or marked, but only a
                # trigger already running in a triggerer can: a clear right after the deferral came
                # first. Cancelled here, as it would have been; recorded Cancelled for that try.
                self.log.warning(
                    "SLURM job %s of try %s is still %s, but try %s ended while it waited deferred (a clear "
                    "or mark-failed before its trigger ran): cancelling it, as its trigger would have",
                    job_id, job_try, acct.state.raw if acct else "queued", job_try,
                )  # fmt: skip
                hook.scancel([job_id])
            else:
                self.log.info(
                    "re-attaching to SLURM job %s, still %s", job_id, acct.state.raw if acct else "queued"
                )
            if job_id != state.get("job_id"):
                state.update(log_path=f"{self._task_dir(context)}/t{job_try}-{job_id}.out")
            state.update(job_id=job_id, try_number=job_try)
            self._note_deferral(state, this_try)
            self._save_state(context, state)
            return job_id
        for job_id in candidates:
            acct = accounting.get(job_id)
            if acct is None:
                continue
            if acct.state_class is StateClass.SUCCEEDED:
                self.log.info("adopting SLURM job %s: it succeeded but its result was never recorded", job_id)
                state.update(
                    job_id=job_id, try_number=try_of_name(expected[job_id][0]),
                    log_path=state.get("log_path") or guess_log_path(job_id, state),
                )  # fmt: skip
                self._save_state(context, state)
                return self._finish(context, FinishedJob(hook, profile, acct, adopted=True))
            # A failure nobody recorded: record it now (for the try that ran it), then run anew.
            self.log.warning(
                "SLURM job %s ended %s unrecorded; recording it, then submitting anew", job_id, acct.state.raw
            )
            # Recorded for the try that submitted it (e.g. a try cleared while its job ran), never
            # under this try's number, where this try's own record would replace it.
            job_try = try_of_name(expected[job_id][0])
            if job_id != state.get("job_id"):
                state.update(job_id=job_id, log_path=f"{self._task_dir(context)}/t{job_try}-{job_id}.out")
            state.update(try_number=job_try)
            try:
                self._finish(context, FinishedJob(hook, profile, acct, adopted=True))
            except (SlurmJobFailed, AirflowFailException):
                pass
            state.clear()
            state.update(self._state(context))
        return None

    def _note_deferral(self, state: dict[str, Any], this_try: int) -> None:
        """Note in ``state`` (saved by the caller) that this try hands its job to a trigger, if it does."""
        if self.deferrable:
            state[DEFERRED_TRY] = this_try
        else:
            state.pop(DEFERRED_TRY, None)

    def _name_of_try(self, context: Context, try_number: int) -> str:
        ti = context["ti"]
        return job_name_for(ti.dag_id, ti.run_id, ti.task_id, _map_index(ti), try_number)

    def _submit(
        self, context: Context, hook: SlurmHook, profile: ClusterProfile, state: dict[str, Any]
    ) -> str:
        ti = context["ti"]
        res = self._resources(profile, state)
        name = job_name_for(ti.dag_id, ti.run_id, ti.task_id, _map_index(ti), ti.try_number)
        task_dir = self._task_dir(context, profile)
        log_pattern = f"{task_dir}/t{ti.try_number}-%j.out"
        spec = job_spec_for(self, profile, res, name=name, log_pattern=log_pattern)
        script = render_job_script(spec)
        # Before sbatch: the job's Submit time must not be older than this (a reused id's would be).
        submit_after = datetime.now(timezone.utc).replace(microsecond=0)
        submitted = hook.submit(
            script, remote_dir=task_dir, script_name=f"t{ti.try_number}.sh", job_name=name
        )
        state.update(
            job_id=submitted.job_id,
            job_name=name,
            try_number=int(ti.try_number),
            log_pattern=log_pattern,
            log_path=log_pattern.replace("%j", submitted.job_id),
            submit_after=submit_after.isoformat(),
            submitted_at=datetime.now(timezone.utc).isoformat(),
            resources={k: v for k, v in res.items() if v is not None},
        )
        self._note_deferral(state, int(ti.try_number))
        self._save_state(context, state)
        self.log.info(
            "submitted SLURM job %s (%s) to %s: %s", submitted.job_id, name, profile.name,
            ", ".join(f"{k}={v}" for k, v in res.items() if v is not None),
        )  # fmt: skip
        return submitted.job_id

    @waits_for_key_renewal
    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger fired: diagnose, record, return the summary or fail."""
        with untrusted_fails_the_task():
            job_id = trusted_event_job_id(event)
            accounting = trusted_event_accounting(event) if event.get("status") == "done" else None
            # Our own words, never the event's: the event only says where its state came from.
            note = CONTROLLER_NOTE if accounting is not None and event.get("source") == "controller" else None
        # Before any command: a bad saved state fails here, not halfway through collecting the job.
        self._state(context)
        profile = self._profile()
        hook = self._hook(profile)
        if accounting is None:
            message = str(event.get("message") or event)
            # A controller that lost its state also drains the nodes its lost jobs ran on.
            notice = partition_notice(hook, profile.name, self._state(context), self.log)
            raise SlurmJobFailed(
                f"{message} {notice}" if notice else message,
                job_id=job_id, state="UNKNOWN", exit_code=None, reason="unknown-state",
            )  # fmt: skip
        return self._finish(context, FinishedJob(hook, profile, accounting, note=note))

    # --- finish -------------------------------------------------------------------------------
    def _read_log(self, context: Context, job: FinishedJob) -> FinishedJob:
        """Return the job with the end of its log read (once), and the payload's own timing from it.

        One read serves the diagnosis, the task log, the history's log tail and the job script's
        timing line (the last line it prints).
        """
        if job.log_tail is not None:
            return job
        log_path = job_log_path(job.accounting.job_id, self._state(context))
        succeeded = job.accounting.state_class is StateClass.SUCCEEDED
        tail = ""
        if log_path:
            tail = read_job_log_tail(
                job.hook, log_path, lines=self.log_tail_lines, secrets=self._secret_values(job.profile),
                needed=not succeeded, log=self.log,
            )  # fmt: skip
        return dataclasses.replace(job, log_tail=tail, timing=parse_payload_timing(tail))

    def _finish(self, context: Context, job: FinishedJob) -> dict[str, Any]:
        job = self._read_log(context, job)
        hook, profile, accounting, adopted = job.hook, job.profile, job.accounting, job.adopted
        state = self._state(context)
        job_id = accounting.job_id
        log_path = job_log_path(job_id, state)
        succeeded = accounting.state_class is StateClass.SUCCEEDED
        # The tail is read on success too: the task log shows the job's output, the history keeps it.
        tail = job.log_tail or ""
        diagnosis = diagnose(accounting, "".join(tail.splitlines(keepends=True)[-self.log_tail_lines :]))
        if not succeeded:
            diagnosis = with_node_notice(hook, profile.name, accounting, diagnosis, self.log)
        if job.note:
            self.log.warning("job %s: %s", job_id, job.note)
            diagnosis = dataclasses.replace(diagnosis, message=f"{diagnosis.message}; {job.note}")
        job_try = try_of_job(state, job_id, int(context["ti"].try_number))
        state.pop(DEFERRED_TRY, None)  # the try resumed: it did not end while deferred
        owner_uid = owner_uid_of(hook, accounting, self.log)
        record = self._record(
            context, job, diagnosis, log_path, job_try, owner_uid=owner_uid, state=state, log_tail=tail
        )
        summary = job_summary(
            accounting, diagnosis, record, cluster=profile.name, log_path=log_path, adopted=adopted
        )
        recorded = [*(state.get("recorded") or []), job_id]
        state.update(recorded=recorded[-50:], last_summary=summary)
        cancelled = record.state == "cancelled"
        if not succeeded and not cancelled:
            partition_nodes = partition_nodes_of(hook, state, self.log) if diagnosis.retryable else None
            try:
                state["escalation"] = escalate_job(
                    profile, accounting, diagnosis, state, escalate=self.escalate,
                    timeout_factor=self.timeout_factor, memory_factor=self.memory_factor,
                    partition_nodes=partition_nodes,
                )  # fmt: skip
            except EscalationExhausted as exc:
                raise AirflowFailException(str(exc)) from None
        this_try = int(context["ti"].try_number)
        resubmit = (
            not adopted and job_try == this_try and counts_node_failure(state, diagnosis, job_id, job_try)
        )
        self._save_state(context, state)
        if succeeded:
            if tail:
                self.log.info("output of SLURM job %s, the end of %s:\n%s", job_id, log_path, tail)
            return summary
        context["ti"].xcom_push(key="slurm_summary", value=summary)
        if tail:
            self.log.error("last lines of %s:\n%s", log_path, tail)
        then = after_failure(
            cancelled=cancelled, adopted=adopted, job_try=job_try, this_try=this_try, resubmit=resubmit
        )
        if then is AfterFailure.RUN_OWN_JOB:
            # An earlier try's job this try re-attached to, cancelled by the clear that started this
            # try (its trigger's scancel): Cancelled for that try; this try runs its own job now.
            self.log.warning(
                "%s: cancelled when try %s was cleared; recorded Cancelled for it, submitting try %s's job",
                diagnosis.message, job_try, context["ti"].try_number,
            )  # fmt: skip
            return self._run_again(context, hook, profile, state)
        if then is AfterFailure.FAIL_CANCELLED:
            raise AirflowFailException(
                f"{diagnosis.message}. It was cancelled by its own user (a scancel, or a clear / mark-failed "
                "in Airflow): recorded Cancelled and not retried; clear the task to run it again."
            )
        if then is AfterFailure.RESUBMIT:
            excluded = ",".join((state.get("escalation") or {}).get("exclude") or [])
            self.log.warning(
                "%s; a node failure is not the payload's fault: resubmitting within try %s (%s)",
                diagnosis.message, job_try, f"excluding {excluded}" if excluded else "no node excluded",
            )  # fmt: skip
            return self._run_again(context, hook, profile, state)
        raise SlurmJobFailed(
            diagnosis.message,
            job_id=job_id,
            state=accounting.state.raw,
            exit_code=accounting.exit_code,
            reason=str(diagnosis.reason),
            log_tail=tail,
        )

    def _secret_values(self, profile: ClusterProfile) -> list[str]:
        """Return the values of the job's environment variables whose names sound secret."""
        return secret_values({**profile.env, **self.env})

    def _run_again(
        self, context: Context, hook: SlurmHook, profile: ClusterProfile, state: dict[str, Any]
    ) -> dict[str, Any]:
        """Submit this try's job anew within the try (no retry spent) and wait for it."""
        hook, profile = self._placed(context, hook, profile, state)
        summary: dict[str, Any] = self._wait(
            context, hook, profile, self._submit(context, hook, profile, state)
        )
        return summary

    def _identity(self, context: Context, try_number: int | None = None) -> InstanceIdentity:
        """Return who this task instance's process instance is, for its records."""
        ti = context["ti"]
        return InstanceIdentity(
            workflow=self.workflow or ti.dag_id,
            process=self.process or ti.task_id.rsplit(".", 1)[-1],
            task=self.workflow_task or "",
            version=self.workflow_version,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=_map_index(ti),
            try_number=int(try_number if try_number is not None else ti.try_number or 1),
            stream=self.stream,
            process_type="batch",
        )

    def _record(
        self,
        context: Context,
        job: FinishedJob,
        diagnosis: Diagnosis,
        log_path: str | None,
        job_try: int,
        *,
        owner_uid: int | None = None,
        state: Mapping[str, Any] | None = None,
        log_tail: str = "",
    ) -> ProcessRecord:
        record = job_record(
            self._identity(context, job_try), job.accounting, diagnosis, cluster=job.profile.name,
            log_path=log_path, job_try=job_try, adopted=job.adopted, owner_uid=owner_uid, state=state,
            timing=job.timing,
        )  # fmt: skip
        if log_tail:
            record = dataclasses.replace(record, log_tail=log_tail)
        (self.recorder or default_recorder()).record([record])
        return record

    def on_kill(self) -> None:
        """Cancel the job when the task is killed while polling from the worker."""
        if self._job_id:
            profile = self._profile()
            self._hook(profile).scancel([self._job_id])
