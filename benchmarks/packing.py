"""Packing: core-seconds used / allocated for 200 tasks of 2-10 s, bundled vs one SLURM job per task.

Run by ``make bench`` (never by ``make test``) against the local site::

    source /var/lib/airflow-desc-site/env.sh
    AIRFLOW_HOME=$(mktemp -d) .venv/bin/python benchmarks/packing.py \
        [--tasks 200] [--min-s 2] [--max-s 10] [--cluster perlmutter] [--launcher direct] [--work sleep]

The same tasks (durations drawn uniformly from ``[min-s, max-s]`` with ``--seed``, 1 CPU each) run
twice on the same cluster, one after the other:

* **bundle**: one allocation of a whole node (``SlurmBundleOperator``'s job: the manifest and
  :mod:`airflow_desc.pilot` in one job script), the pilot packing the tasks onto the node's cores;
* **jobs**: one ``sbatch`` per task (what a ``SlurmOperator`` per task submits), all queued at once.

Each task's command is wrapped to print its start and end (``date +%s.%N``), so that *used* is the
same measure in both modes: the core-seconds the tasks ran (1 core x their wall time).
*Allocated* is the core-seconds the node was given to the work: cores x (last end - first start)
of the allocation (bundle) or of the node's busy period from the first job's start to the last
job's end (jobs): in the jobs mode the node idles between a job's end and the next one's start
(scheduling, prolog, epilog, the job's own start-up). sacct's per-job CPUTime sum, which leaves
those gaps out, is printed too. ``--work burn`` burns CPU instead of sleeping (this machine's 2
cores are shared by both clusters, so other load then stretches the tasks).

Exit status 1 when the bundle's utilisation is below the target (90 %).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass

from airflow_desc.clusters import ClusterProfile
from airflow_desc.config import configured_cluster_profiles
from airflow_desc.emulate import payload_source
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.pilot import bundle_job_command, parse_records, parse_summary
from airflow_desc.slurm import JobAccounting, JobSpec, render_job_script
from airflow_desc.slurm.quoting import quote_path

TARGET = 0.90
MARK = "DESC_TASK"


@dataclass
class Result:
    mode: str
    tasks: int
    used_s: float
    allocated_s: float
    wall_s: float
    cores: int
    cputime_sum_s: float | None = None
    cpu_s: float | None = None
    failed: int = 0

    @property
    def utilisation(self) -> float:
        return self.used_s / self.allocated_s if self.allocated_s else 0.0


def durations(n: int, low: float, high: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(low, high), 2) for _ in range(n)]


def task_command(remote: str, index: int, seconds: float, work: str) -> str:
    payload = f"python3 {quote_path(remote + '/payload.py')} --name t{index:03d}"
    payload += (
        f" --cpu-seconds {seconds}" if work == "burn" else f" --cpu-seconds 0 --sleep-seconds {seconds}"
    )
    # Start and end of the task itself, on the node's clock.
    return (
        f's=$(date +%s.%N); {payload} >/dev/null; rc=$?; echo "{MARK} t{index:03d} $s $(date +%s.%N) $rc"; '
        "exit $rc"
    )


def task_times(text: str) -> dict[str, tuple[float, float, int]]:
    found: dict[str, tuple[float, float, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == MARK:
            found[parts[1]] = (float(parts[2]), float(parts[3]), int(parts[4]))
    return found


def wait_for(hook: SlurmHook, job_ids: list[str], what: str) -> dict[str, JobAccounting]:
    started = time.monotonic()
    last = -1
    while True:
        accounting = hook.sacct(job_ids)
        done = [j for j in job_ids if j in accounting and accounting[j].is_terminal]
        if len(done) != last:
            print(
                f"  {what}: {len(done)}/{len(job_ids)} ended after {time.monotonic() - started:.0f} s",
                flush=True,
            )
            last = len(done)
        if len(done) == len(job_ids):
            time.sleep(2)  # let slurmdbd record the last steps' accounting
            return hook.sacct(job_ids)
        time.sleep(5)


def run_bundle(
    hook: SlurmHook, profile: ClusterProfile, remote: str, seconds: list[float], launcher: str, work: str
) -> Result:
    directory = f"{remote}/bundle"
    instances = [
        {"id": f"t{i:03d}", "command": task_command(remote, i, s, work), "cpus": 1, "memory_mb": 100}
        for i, s in enumerate(seconds)
    ]
    command = bundle_job_command(
        json.dumps({"bundle": "bench-packing", "instances": instances}),
        launcher=launcher,
        records_path=f"{directory}/records.jsonl",
        logs_dir=f"{directory}/logs",
    )
    spec = JobSpec(
        job_name="bench-packing-bundle",
        command=command,
        partition=profile.partition,
        account=profile.account,
        nodes=1,
        cpus_per_task=profile.cores_per_node,
        mem_mb=profile.memory_per_node_mb,
        time_limit_s=profile.max_walltime_s,
        output=f"{directory}/job-%j.out",
    )
    job = hook.submit(render_job_script(spec), remote_dir=directory, script_name="bundle.sh").job_id
    print(f"bundle: job {job}, {len(seconds)} tasks, {launcher} launcher", flush=True)
    accounting = wait_for(hook, [job], "bundle")[job]
    logs = hook.run(f"cat {quote_path(directory)}/logs/*.log", check=False).stdout
    times = task_times(logs)
    records = parse_records(hook.run(f"cat {quote_path(directory)}/records.jsonl").stdout)
    summary = parse_summary(hook.run(f"cat {quote_path(directory)}/job-{job}.out").stdout) or {}
    used = sum(end - start for start, end, _ in times.values())
    first = min(start for start, _, _ in times.values())
    last = max(end for _, end, _ in times.values())
    cores = int(summary.get("cores") or profile.cores_per_node)
    # The allocation: from the pilot's wall clock (SLURM's Elapsed has a 1 s resolution).
    wall = float(summary.get("wall_s") or (last - first))
    return Result(
        mode="bundle",
        tasks=len(times),
        used_s=used,
        allocated_s=cores * wall,
        wall_s=wall,
        cores=cores,
        cputime_sum_s=accounting.job.cpu_time_s if accounting.job is not None else None,
        cpu_s=sum(float(r.get("total_cpu_s") or 0) for r in records),
        failed=sum(1 for r in records if r.get("state") != "success"),
    )


def run_jobs(
    hook: SlurmHook, profile: ClusterProfile, remote: str, seconds: list[float], work: str
) -> Result:
    directory = f"{remote}/jobs"
    scripts = []
    for i, s in enumerate(seconds):
        spec = JobSpec(
            job_name=f"bench-packing-t{i:03d}",
            command=task_command(remote, i, s, work),
            partition=profile.partition,
            account=profile.account,
            cpus_per_task=1,
            mem_mb=100,
            time_limit_s=300,
            output=f"{directory}/t{i:03d}-%j.out",
        )
        scripts.append(render_job_script(spec))
    # All the scripts in one round trip, then one sbatch each: the queue holds them all at once.
    bundle_text = "\n".join(
        f"cat > t{i:03d}.sh <<'DESC_EOF'\n{text}DESC_EOF" for i, text in enumerate(scripts)
    )
    quoted = quote_path(directory)
    hook.run(f"mkdir -p {quoted} && cd {quoted} && bash -s", stdin=bundle_text + "\n")
    # From the home directory, as SlurmOperator submits: the scripts' relative paths start there.
    submit = f'for f in {quoted}/t*.sh; do sbatch --parsable "$f" || exit 1; done'
    ids = [line.split(";")[0] for line in hook.run(submit, timeout=600).stdout.split() if line.strip()]
    print(f"jobs: {len(ids)} jobs submitted ({ids[0]}..{ids[-1]})", flush=True)
    accounting = wait_for(hook, ids, "jobs")
    times = task_times(hook.run(f"cat {quoted}/t*.out", check=False).stdout)
    used = sum(end - start for start, end, _ in times.values())
    rows = [accounting[j] for j in ids if j in accounting]
    starts = [a.job.start for a in rows if a.job is not None and a.job.start]
    ends = [a.job.end for a in rows if a.job is not None and a.job.end]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    # The node's busy period on its own clock: the first task's start to the last task's end,
    # widened to SLURM's (1 s resolution) view when that is longer.
    first = min(start for start, _, _ in times.values())
    last = max(end for _, end, _ in times.values())
    wall = max(span, last - first)
    return Result(
        mode="jobs",
        tasks=len(times),
        used_s=used,
        allocated_s=profile.cores_per_node * wall,
        wall_s=wall,
        cores=profile.cores_per_node,
        cputime_sum_s=sum(a.job.cpu_time_s or 0 for a in rows if a.job is not None),
        cpu_s=sum(a.total_cpu_s or 0 for a in rows),
        failed=sum(1 for t in times.values() if t[2] != 0) + len(ids) - len(times),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--min-s", type=float, default=2.0)
    parser.add_argument("--max-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cluster", default="perlmutter")
    parser.add_argument("--launcher", choices=("direct", "srun"), default="direct")
    parser.add_argument("--work", choices=("sleep", "burn"), default="sleep")
    parser.add_argument("--mode", choices=("both", "bundle", "jobs"), default="both")
    parser.add_argument("--keep", action="store_true", help="keep the remote directory")
    args = parser.parse_args()
    profile = configured_cluster_profiles().get(args.cluster)
    hook = SlurmHook(profile.ssh_conn_id, jump_conn_id=profile.jump_conn_id or "", cluster=profile.name)
    # Relative to the home directory, where ssh commands and sbatch start (#SBATCH --output takes no "~").
    remote = f"{profile.work_dir}/bench-packing/{uuid.uuid4().hex[:10]}"
    hook.run(
        f"mkdir -p {quote_path(remote)} && cat > {quote_path(remote + '/payload.py')}", stdin=payload_source()
    )
    seconds = durations(args.tasks, args.min_s, args.max_s, args.seed)
    print(
        f"{args.tasks} tasks of {args.min_s:g}-{args.max_s:g} s ({sum(seconds):.0f} task-s, {args.work})"
        f" on {profile.name} ({profile.cores_per_node} cores per node); remote dir {remote}",
        flush=True,
    )
    results: list[Result] = []
    # A SIGTERM (a timeout, a session ending) must still cancel the queued jobs and clean up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if args.mode in ("both", "bundle"):
            results.append(run_bundle(hook, profile, remote, seconds, args.launcher, args.work))
            print(f"  {results[-1]}", flush=True)
        if args.mode in ("both", "jobs"):
            results.append(run_jobs(hook, profile, remote, seconds, args.work))
            print(f"  {results[-1]}", flush=True)
    finally:
        hook.run("scancel --name=bench-packing-bundle -u $USER; squeue -h -u $USER -o '%i %j' | "
                 "awk '$2 ~ /^bench-packing-t/ {print $1}' | xargs -r scancel", check=False)  # fmt: skip
        if not args.keep:
            hook.run(f"rm -rf -- {quote_path(remote)}", check=False)
    print()
    print(f"{'mode':<7} {'tasks':>5} {'failed':>6} {'used core-s':>12} {'allocated core-s':>17} "
          f"{'utilisation':>11} {'wall s':>8} {'sum CPUTime':>12} {'CPU s':>8}")  # fmt: skip
    for r in results:
        print(
            f"{r.mode:<7} {r.tasks:>5} {r.failed:>6} {r.used_s:>12.1f} {r.allocated_s:>17.1f} "
            f"{r.utilisation:>10.1%} {r.wall_s:>8.1f} {r.cputime_sum_s or 0:>12.0f} {r.cpu_s or 0:>8.1f}"
        )
    bundle = next((r for r in results if r.mode == "bundle"), None)
    jobs = next((r for r in results if r.mode == "jobs"), None)
    if bundle and jobs and jobs.utilisation:
        print(f"ratio bundle / jobs utilisation: {bundle.utilisation / jobs.utilisation:.2f}")
        print(f"wall: bundle {bundle.wall_s:.0f} s, jobs {jobs.wall_s:.0f} s for the same work")
    if bundle is None:
        return 0
    ok = bundle.utilisation >= TARGET and bundle.failed == 0
    print(
        f"target: bundle utilisation >= {TARGET:.0%}: {'met' if ok else 'MISSED'} ({bundle.utilisation:.1%})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
