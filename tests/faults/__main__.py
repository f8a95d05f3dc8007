"""``make test-faults``: inject each fault for real on the local site while the workflow runs, then check.

Usage (root, the site up, ``source /var/lib/airflow-desc-site/env.sh``; hold ``flock -x
/tmp/desc-site.lock``: the faults stop services other tests use)::

    python -m tests.faults                      # the whole matrix
    python -m tests.faults --fault sshd-down    # one fault (repeat --fault for more)
    python -m tests.faults --list               # the faults

For each fault: a run of ``desc_faults`` (tests/data/specs/desc-faults.yaml; its own run id
``faults__<fault>__<ns>``) is triggered on the deployment (``--deployment local`` or ``celery``: see
:mod:`tests.faults.deployment`), the fault is injected and the site restored
(:mod:`tests.faults.faults`), the harness waits for the run to end, then reads the run's task
instances (Airflow's metadata DB), its history attempts (the deployment's schema of the history
PostgreSQL, which the task processes wrote) and its jobs (``sacct`` on each cluster, by the jobs'
deterministic names) and compares them (:mod:`tests.faults.check`, whose docstring defines the
columns). It prints one row per fault and
exits 1 when a row misses the target (0 duplicates, 0 lost, 0 wrong states).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from airflow_desc.operators.job_names import job_name_for
from tests.faults.check import FaultRow, HistoryAttempt, SlurmJob, TaskInstance, check_run, format_table
from tests.faults.deployment import DEPLOYMENTS, FaultDeployment
from tests.faults.faults import FAULTS, Fault, FaultContext, Injected
from tests.faults.site import SiteControl
from tests.waiting import wait_for

DAG_ID = "desc_faults"
CLUSTERS = ("perlmutter", "s3df")


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # Unknown, None
        return None


def task_instances(dep: FaultDeployment, run_id: str) -> list[TaskInstance]:
    rows = dep.sql(
        "SELECT task_id, map_index, state, try_number,"
        " coalesce(nullif(custom_operator_name, ''), operator, '')"
        " FROM task_instance WHERE dag_id = %s AND run_id = %s",
        DAG_ID, run_id,
    )  # fmt: skip
    return [
        TaskInstance(
            str(t),
            int(m),
            None if s is None else str(s),
            int(n),  # type: ignore[call-overload]
            slurm=any(w in str(op) for w in ("Batch", "Bundle", "Slurm")),
            bundle="Bundle" in str(op),
        )  # fmt: skip
        for t, m, s, n, op in rows
    ]


def history_attempts(dep: FaultDeployment, run_id: str) -> list[HistoryAttempt]:
    rows = dep.history_sql(
        "SELECT p.task_id, p.map_index, s.path, p.process, p.try_number, p.state, p.job_id, p.cluster,"
        " p.reason FROM process_instances p JOIN runs r ON r.id = p.run_ref"
        " JOIN streams s ON s.id = p.stream_ref WHERE r.dag_id = %s AND r.run_id = %s",
        DAG_ID, run_id,
    )  # fmt: skip
    return [
        HistoryAttempt(
            str(t),
            int(m),
            str(path),
            str(proc),
            int(n),
            str(st),
            None if j is None else str(j).split(".")[0],
            None if c is None else str(c),
            r,
        )  # fmt: skip
        for t, m, path, proc, n, st, j, c, r in rows
    ]


def slurm_jobs(
    site: SiteControl,
    run_id: str,
    tis: Sequence[TaskInstance],
    since: datetime,
    purged: Sequence[tuple[str, str]] = (),
) -> list[SlurmJob]:
    """The run's jobs in sacct; and the ``purged`` ones (cluster, id) that sacct no longer has, as the
    controller still shows them (``scontrol show job``), else as started and never ended."""
    names = {}
    for ti in tis:
        if ti.slurm:
            for t in range(1, ti.try_number + 3):
                names[job_name_for(DAG_ID, run_id, ti.task_id, ti.map_index, t)] = (
                    ti.task_id,
                    ti.map_index,
                    t,
                )
    jobs = []
    for cluster in CLUSTERS:
        for row in site.jobs_named(cluster, sorted(names), since):
            task_id, map_index, try_number = names[row["JobName"]]
            jobs.append(
                SlurmJob(
                    cluster,
                    row["JobID"],
                    task_id,
                    map_index,
                    try_number,
                    row["State"],
                    _time(row["Submit"]),
                    _time(row["Start"]),
                    _time(row["End"]),
                )  # fmt: skip
            )
    for cluster, job_id in purged:
        if any(j.cluster == cluster and j.job_id == job_id for j in jobs):
            continue
        out = site.slurm(cluster, "scontrol", "-o", "show", "job", job_id, check=False).split()
        fields = dict(f.split("=", 1) for f in out if "=" in f)
        if fields.get("JobName") in names:
            task_id, map_index, try_number = names[fields["JobName"]]
            state = fields.get("JobState", "")
            start, end = _time(fields.get("StartTime", "")), _time(fields.get("EndTime", ""))
            submit = _time(fields.get("SubmitTime", ""))
            end = end if state not in ("RUNNING", "PENDING") else None
            jobs.append(SlurmJob(cluster, job_id, task_id, map_index, try_number, state, submit, start, end))
    return jobs


def run_fault(dep: FaultDeployment, site: SiteControl, fault: Fault, timeout: float) -> FaultRow:
    """Run the workflow once with ``fault`` injected; return its checked row."""
    reason = fault.precondition(site) if fault.precondition else None
    if reason:
        return FaultRow(fault.name, skipped=reason)
    run_id = f"faults__{fault.name}__{time.time_ns()}"
    since = datetime.now() - timedelta(minutes=1)
    ctx = FaultContext(dep, site, DAG_ID, run_id, since, conf=dict(fault.conf))
    injected, problems = Injected(), []
    print(f"== {fault.name}: {fault.what} (run {run_id})", flush=True)
    dep.trigger(DAG_ID, run_id, dict(fault.conf))
    restored = None
    try:
        injected = fault.inject(ctx)
        restored = time.monotonic()
    except Exception as exc:  # the row says what failed; the next fault still runs
        problems.append(f"the fault was not injected: {type(exc).__name__}: {exc}")
    finally:
        try:
            state = wait_for(
                lambda: dep.run_state(DAG_ID, run_id),
                until=lambda s: s in ("success", "failed"),
                timeout=timeout,
                interval=2,
                what=f"run {run_id} ends",
            )
        except AssertionError:
            state = None
        ended = time.monotonic()
        if injected.undo is not None:
            injected.undo()
    spooled = dep.flush_history()
    tis = task_instances(dep, run_id)
    row = check_run(
        fault.name,
        tis=tis,
        history=history_attempts(dep, run_id),
        jobs=slurm_jobs(site, run_id, tis, since, injected.purged),
        owner_uid=site.owner_uid(),
        expectations=injected.expectations,
        recover_s=None if state is None or restored is None else max(0.0, ended - restored),
        finished=state is not None,
    )
    row.evidence[:0] = [f"note: run {run_id} {state or 'unfinished'}", *(f"note: {n}" for n in ctx.notes)]
    if state == "failed":  # every fault's work recovers: a failed run's colour lies (its verdict gave up)
        row.wrong += 1
        row.evidence.append(f"error: run {run_id} ended failed; every fault of the matrix is recovered from")
    row.evidence.extend(f"error: {p}" for p in problems)
    if spooled:
        row.evidence.append(
            f"note: {spooled} record(s) still in the spool when the run ended; flushed before the check"
        )
    if problems:
        row.finished = False
    if state is None:
        _stop_run(dep, site, run_id, tis)
    return row


def _stop_run(dep: FaultDeployment, site: SiteControl, run_id: str, tis: Sequence[TaskInstance]) -> None:
    """Fail an unfinished run and cancel its jobs, so that the next fault starts on an idle site."""
    try:
        dep.fail_run(DAG_ID, run_id)
    except OSError as exc:
        print(f"could not fail run {run_id}: {exc}", file=sys.stderr)
    for cluster in CLUSTERS:
        for ti in tis:
            for t in range(1, ti.try_number + 3):
                name = job_name_for(DAG_ID, run_id, ti.task_id, ti.map_index, t)
                site.slurm(cluster, "scancel", "-n", name, check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", action="append", choices=sorted(FAULTS), help="run only this fault")
    parser.add_argument("--deployment", default="local", choices=sorted(DEPLOYMENTS))
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take (default 600)")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    args = parser.parse_args(argv)
    if args.list:
        for fault in FAULTS.values():
            print(f"{fault.name:<20} {fault.what}")
        return 0
    faults = [FAULTS[name] for name in (args.fault or FAULTS)]
    site = SiteControl.from_env()
    home = pathlib.Path(tempfile.mkdtemp(prefix="desc-faults-"))
    dep = DEPLOYMENTS[args.deployment](home)
    start = time.monotonic()
    rows: list[FaultRow] = []
    dep.start()
    try:
        for fault in faults:
            rows.append(run_fault(dep, site, fault, args.timeout))
            print(format_table(rows[-1:]), flush=True)
    finally:
        dep.stop()
    print()
    print(format_table(rows))
    print(
        f"\n{len(rows)} fault(s) in {time.monotonic() - start:.0f} s ({args.deployment});"
        f" Airflow logs in {home}"
    )
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
