"""The faults of the matrix: each injected for real on the local site while the run goes on.

Each fault is one function ``(FaultContext) -> Injected``: it waits until the run is where the fault
hurts (a job deferred, running, just submitted), injects it, and restores the site in a ``finally``
before returning; a fault that lasts until the run ends (two triggerers, an unreadable log) returns
its undo, which the harness calls after the run, also in a ``finally``. ``Injected.expectations``
are what the fault must leave behind beyond the checker's general rules (:mod:`tests.faults.check`).

Sleeps here are the faults' durations (sshd down 60 s), never waits for a state: those go through
:func:`tests.waiting.wait_for`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import time
from collections.abc import Callable
from datetime import datetime

from airflow_desc.operators.job_names import job_name_for, task_dir_for
from tests.faults.check import Expectation
from tests.faults.deployment import FaultDeployment
from tests.faults.site import SiteControl
from tests.waiting import wait_for

__all__ = ["FAULTS", "Fault", "FaultContext", "Injected"]

INGEST = "ingest"  # the top-level single job, on perlmutter
SINGLE = "processSingle.measureSingle"  # the mapped single jobs, on s3df
BUNDLE = "processVisit.bundle"  # the bundles, on perlmutter
WORK_DIR = "airflow-desc"  # the clusters' work_dir in the site's clusters.yaml (relative to home)


@dataclasses.dataclass
class Injected:
    """What a fault did: its expectations, and what to undo once the run has ended."""

    expectations: list[Expectation] = dataclasses.field(default_factory=list)
    undo: Callable[[], None] | None = None
    #: jobs (cluster, id) the fault deleted from accounting: the checker takes them from the controller
    purged: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class FaultContext:
    deployment: FaultDeployment
    site: SiteControl
    dag_id: str
    run_id: str
    started: datetime
    conf: dict[str, object] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def job_name(self, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        return job_name_for(self.dag_id, self.run_id, task_id, map_index, try_number)

    def task_dir(self, task_id: str, map_index: int = -1) -> pathlib.Path:
        """The task instance's directory on the cluster, as a local path (the site runs here)."""
        return self.site.home / task_dir_for(WORK_DIR, self.dag_id, self.run_id, task_id, map_index)

    def ti(self, task_id: str, map_index: int = -1) -> tuple[str, str | None, int] | None:
        """``(ti id, state, try_number)`` of a task instance, None before it exists."""
        rows = self.deployment.sql(
            "SELECT id, state, try_number FROM task_instance WHERE dag_id = %s AND run_id = %s"
            " AND task_id = %s AND map_index = %s",
            self.dag_id, self.run_id, task_id, map_index,
        )  # fmt: skip
        return (
            (str(rows[0][0]), None if rows[0][1] is None else str(rows[0][1]), int(rows[0][2]))
            if rows
            else None
        )  # type: ignore[call-overload]

    def wait_ti(self, task_id: str, map_index: int = -1, states: tuple[str, ...] = ("deferred",)) -> None:
        wait_for(
            lambda: (self.ti(task_id, map_index) or ("", None, 0))[1] in states,
            timeout=300,
            interval=0.5,
            what=f"{task_id}[{map_index}] of {self.run_id} {'/'.join(states)}",
        )

    def wait_job(
        self,
        cluster: str,
        task_id: str,
        map_index: int = -1,
        try_number: int = 1,
        states: tuple[str, ...] = ("RUNNING",),
    ) -> str:
        """Wait until the job of one try is in one of ``states`` (squeue); return its id."""
        name = self.job_name(task_id, map_index, try_number)
        jobs = wait_for(
            lambda: [j for j, s in self.site.queued(cluster, name) if s in states],
            timeout=300,
            interval=0.5,
            what=f"job {name} ({task_id}[{map_index}] try {try_number}) {'/'.join(states)} on {cluster}",
        )
        return str(jobs[0])

    def deferred(self) -> int:
        rows = self.deployment.sql(
            "SELECT count(*) FROM task_instance WHERE dag_id = %s AND run_id = %s AND state = 'deferred'",
            self.dag_id, self.run_id,
        )  # fmt: skip
        return int(rows[0][0])  # type: ignore[call-overload]

    def note(self, text: str) -> None:
        self.notes.append(text)


@dataclasses.dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[FaultContext], Injected]
    what: str
    conf: dict[str, object] = dataclasses.field(default_factory=dict)
    #: a reason to skip, decided before the run (None: run it)
    precondition: Callable[[SiteControl], str | None] | None = None


def hold(seconds: float) -> None:
    """Keep a fault in place for its duration (not a wait for a state)."""
    time.sleep(seconds)


# --- the faults ---------------------------------------------------------------------------------
def worker_kill(ctx: FaultContext) -> Injected:
    """kill -9 the worker of ``ingest`` after sbatch, before the job id reaches the task state store.

    The window is a few milliseconds wide; it is held open. The job script (``t1.sh`` in the task
    directory) is written by the same SSH command that runs sbatch, just before it: as soon as it
    exists here, the api-server (through which the worker writes the task state store) and the task
    processes are stopped (SIGSTOP). sbatch goes on on the cluster side; once the job is in squeue,
    the task state store is read: without the job id the window is hit, and the task processes are
    killed with SIGKILL. Then the api-server continues. The scheduler finds the task dead (heartbeat
    timeout), the retry must find the job by its name and re-attach to it, not submit another.
    """
    dep = ctx.deployment
    script = ctx.task_dir(INGEST) / "t1.sh"
    wait_for(script.exists, timeout=300, interval=0.005, what=f"{script} written")
    dep.signal_component("api-server", signal.SIGSTOP)
    try:
        ti = ctx.ti(INGEST)
        workers = dep.worker_pids(ti[0]) if ti else []
        for pid in workers:
            _signal(pid, signal.SIGSTOP)
        job = ctx.wait_job("perlmutter", INGEST, states=("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"))
        stored = dep.sql(
            "SELECT value FROM task_state_store"
            " WHERE dag_id = %s AND run_id = %s AND task_id = %s AND key = 'slurm'",
            ctx.dag_id, ctx.run_id, INGEST,
        )  # fmt: skip
        recorded = bool(stored) and json.loads(str(stored[0][0])).get("job_id") == job
        ctx.note(
            f"job {job} submitted; task state store"
            f" {'HAD the id: window missed' if recorded else 'without it'};"
            f" SIGKILL to {len(workers)} worker process(es) {workers}"
        )
        for pid in workers:
            _signal(pid, signal.SIGKILL)
    finally:
        dep.signal_component("api-server", signal.SIGCONT)
    return Injected([Expectation(INGEST, ti_state="success", history_state="success", no_later_jobs=True)])


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def triggerer_kill(ctx: FaultContext) -> Injected:
    """kill -9 the triggerer (its process group) while many single jobs are deferred; start a new one.

    The run's conf makes 100 single jobs of 1 s on s3df (one core): half of them deferred at once is
    the moment.
    """
    many = str(ctx.conf.get("singles", "")).count("^") + 1
    try:
        wait_for(ctx.deferred, until=lambda n: n >= many // 2, timeout=300, interval=1, what="tasks deferred")
    except AssertionError:  # a faster cluster than expected: kill with what is watched now
        ctx.note(f"{many // 2} never deferred at once within 300 s")
    watched = ctx.deferred()
    ctx.deployment.restart_component("triggerer", sig=signal.SIGKILL)
    ctx.note(f"triggerer killed with {watched} task instances deferred (of {many} single jobs)")
    return Injected()


def triggerer_ha(ctx: FaultContext) -> Injected:
    """One more triggerer (two on the local deployment, three on Celery), from the first deferral to
    the run's end."""
    ctx.wait_ti(INGEST)
    ctx.deployment.add_component("triggerer-2", ["triggerer"])
    return Injected(undo=lambda: ctx.deployment.stop_component("triggerer-2"))


def _service_down(service: str, seconds: float) -> Callable[[FaultContext], Injected]:
    def inject(ctx: FaultContext) -> Injected:
        ctx.wait_job("perlmutter", INGEST)
        try:
            cut = ctx.site.stop(service, sessions=True)
            ctx.note(f"{service} stopped, {cut} open session(s) cut")
            hold(seconds)
        finally:
            ctx.site.restore()
        return Injected([Expectation(INGEST, ti_state="success")])

    inject.__doc__ = f"Stop {service} for {seconds:.0f} s while ingest's job runs."
    return inject


def slurmctld_restart(ctx: FaultContext) -> Injected:
    """Stop perlmutter's slurmctld (TERM: it saves its state) while ingest's job runs; start it again."""
    ctx.wait_job("perlmutter", INGEST)
    try:
        ctx.site.stop("slurmctld-perlmutter")
    finally:
        ctx.site.restore()
    return Injected([Expectation(INGEST, ti_state="success", history_state="success")])


def job_purged(ctx: FaultContext) -> Injected:
    """Delete ingest's running job from the accounting database (MariaDB, ``perlmutter_job_table`` and
    ``perlmutter_step_table``), as a purge of old records would; sacct no longer knows it."""
    job = ctx.wait_job("perlmutter", INGEST)
    inx = wait_for(
        lambda: ctx.site.mariadb(
            f"SELECT job_db_inx FROM perlmutter_job_table WHERE id_job = {int(job)}"
        ).split(),
        timeout=60,
        what=f"job {job} in the accounting DB",
    )
    for i in inx:
        ctx.site.mariadb(f"DELETE FROM perlmutter_step_table WHERE job_db_inx = {int(i)}")
        ctx.site.mariadb(f"DELETE FROM perlmutter_job_table WHERE job_db_inx = {int(i)}")
    ctx.note(
        f"job {job} deleted from the accounting DB (job_db_inx {', '.join(inx) or 'none: not yet recorded'})"
    )
    return Injected([Expectation(INGEST, ti_state="success")], purged=[("perlmutter", job)])


def scancel_by_owner(ctx: FaultContext) -> Injected:
    """``scancel`` of measureSingle[0]'s running job by its owner (the site's user): Cancelled, not
    retried, not resubmitted."""
    job = ctx.wait_job("s3df", SINGLE, 0)
    ctx.site.slurm("s3df", "scancel", job, user=ctx.site.owner)
    ctx.note(f"job {job} cancelled by {ctx.site.owner}")
    return Injected(
        [Expectation(SINGLE, 0, ti_state="failed", history_state="cancelled", no_later_jobs=True)]
    )


def _two_nodes(site: SiteControl) -> str | None:
    nodes = site.nodes("perlmutter")
    if len(nodes) < 2:
        return (
            f"perlmutter has one node ({', '.join(nodes)}); the retry needs another "
            "(the second node comes with branch s-states)"
        )
    return None


def node_down(ctx: FaultContext) -> Injected:
    """Set the node under ingest's running job DOWN (NODE_FAIL), resume it 30 s later. The retry must
    run on the other node and not spend the task's retries."""
    job = ctx.wait_job("perlmutter", INGEST)
    node = ctx.site.slurm("perlmutter", "squeue", "-h", "-j", job, "-o", "%N").strip()
    try:
        ctx.site.slurm(
            "perlmutter", "scontrol", "update", f"nodename={node}", "state=DOWN", "reason=fault-matrix"
        )
        hold(30)
    finally:
        ctx.site.slurm("perlmutter", "scontrol", "update", f"nodename={node}", "state=RESUME", check=False)
        ctx.site.restore()
    ctx.note(f"node {node} DOWN under job {job} for 30 s")
    return Injected([Expectation(INGEST, ti_state="success", history_state="terminated")])


def history_pg_down(ctx: FaultContext) -> Injected:
    """Stop the history PostgreSQL for 60 s while ingest's job runs and ends."""
    ctx.wait_job("perlmutter", INGEST)
    try:
        ctx.site.stop("pg-history")
        hold(60)
    finally:
        ctx.site.restore()
    return Injected([Expectation(INGEST, ti_state="success", history_state="success")])


def scheduler_restart(ctx: FaultContext) -> Injected:
    """Restart the scheduler (SIGTERM to its process group, LocalExecutor's workers included) while
    a bundle is deferred."""
    ctx.wait_ti(BUNDLE, 0, ("deferred",))
    ctx.deployment.restart_component("scheduler")
    return Injected()


def double_clear(ctx: FaultContext) -> Injected:
    """Clear measureSingle[0] twice within a second (REST ``clearTaskInstances``) while its job runs:
    no job cancelled by the first clear may be adopted by the second; the cleared attempt is
    Cancelled."""
    job = ctx.wait_job("s3df", SINGLE, 0)
    first = time.monotonic()
    ctx.deployment.clear(ctx.dag_id, ctx.run_id, SINGLE, 0)
    ctx.deployment.clear(ctx.dag_id, ctx.run_id, SINGLE, 0)
    ctx.note(f"job {job} running; two clears {time.monotonic() - first:.2f} s apart")
    return Injected([Expectation(SINGLE, 0, ti_state="success", history_state="cancelled")])


def log_unreadable(ctx: FaultContext) -> Injected:
    """chmod 000 measureSingle[0]'s job log on the cluster side, then kill its batch script (SIGKILL:
    the job fails, so the operator reads the log's tail); the retry must run and the failure be
    recorded. The mode is restored after the run."""
    job = ctx.wait_job("s3df", SINGLE, 0)
    log = ctx.task_dir(SINGLE, 0) / f"t1-{job}.out"
    wait_for(log.exists, timeout=60, what=f"{log} written")
    log.chmod(0)
    ctx.site.slurm("s3df", "scancel", "--batch", "--signal=KILL", job)
    ctx.note(f"{log} mode 000, job {job}'s batch script killed")
    return Injected(
        [Expectation(SINGLE, 0, ti_state="success", history_state="failed")],
        undo=lambda: log.chmod(0o600),
    )


WIDE = {"singles": "^".join(str(i) for i in range(1, 101)), "pause": 1, "visits": "1^2"}

FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault("worker-kill", worker_kill, "kill -9 the worker between sbatch and recording the job id"),
        Fault("triggerer-kill", triggerer_kill, "kill -9 the triggerer with many jobs watched", conf=WIDE),
        Fault("triggerer-ha", triggerer_ha, "one more triggerer from the first deferral"),
        Fault("sshd-down", _service_down("sshd-perlmutter", 60), "sshd of perlmutter down 60 s"),
        Fault("slurmdbd-down", _service_down("slurmdbd", 60), "slurmdbd down 60 s"),
        Fault("slurmctld-restart", slurmctld_restart, "slurmctld of perlmutter restarted"),
        Fault("job-purged", job_purged, "a running job purged from accounting"),
        Fault("scancel", scancel_by_owner, "scancel by the job's owner"),
        Fault("node-down", node_down, "node DOWN mid-job", precondition=_two_nodes),
        Fault("history-pg-down", history_pg_down, "the history PostgreSQL stopped 60 s mid-run"),
        Fault("scheduler-restart", scheduler_restart, "the scheduler restarted"),
        Fault("double-clear", double_clear, "two clears of one task instance within a second"),
        Fault("log-unreadable", log_unreadable, "the job's log unreadable (chmod 000)"),
    )
}
