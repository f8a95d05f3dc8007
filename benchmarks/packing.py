"""Packing: how much of a bundle's allocation its instances use, against Parsl's pilot and one job per task.

Run by ``make bench`` (never by ``make test``) against the local site, holding the site::

    source /var/lib/airflow-desc-site/env.sh
    flock -x /tmp/desc-site.lock .venv/bin/python benchmarks/packing.py \
        [--mixes u15,1s] [--launchers srun,direct] [--peer parsl|none] [--node pm-n1] [--order auto]

**The peer suite** (the default, ~10 min): the mixes of issue #13, each task burning CPU
(``airflow_desc/emulate/payload.py --cpu-seconds S``, 1 CPU):

* ``u15``: 60 tasks of U(1, 5) s (seed 42: 168 CPU-s, at best 84 s on a 2-core node);
* ``1s``: 60 tasks of 1 s.

Each mix runs as one bundle allocation of a whole node per launcher (``srun`` steps, ``direct``
children: :mod:`airflow_desc.pilot`, the job script ``SlurmBundleOperator`` submits) and, in the
same run, through Parsl (HighThroughputExecutor + SlurmProvider, one block of the same node:
``benchmarks/peers/parsl_packing.py`` run on the login node with the Python of ``--parsl-venv``,
which this script creates with ``pip install parsl`` when it is missing).

**Utilisation** = sum of the instances' CPU / (the allocation's CPUs x its sacct Elapsed): the
allocation's own start (prolog, the job script writing the pilot, the pilot's start-up) and end
count, not only the first start to the last end. Instance CPU is ``wait4``'s user + system time
of the payload (ours: the pilot's records; Parsl: the same measure taken in its app). Every
bundle instance is then recorded in a history store (a fresh SQLite file) as the bundle operator
records it (the pilot's CPU and wall, MaxRSS from the sacct step, else the pilot's), and the
records with CPU, wall and MaxRSS are counted: all of them must be there.

``--order`` is the pilot's ordering of instances with equal priority: ``auto`` (longest first when
the manifest carries ``estimate_s``, which the benchmark passes as if known from the history) or
``manifest`` (no estimates). Exit status 1 when the best launcher misses a target (96 % on
``u15``, 93 % on ``1s``) or an instance is not fully accounted.

**The jobs suite** (``--suite jobs``, ~22 min): 200 tasks of 2-10 s, bundled (the pilot) vs one
``sbatch`` per task, all queued at once; utilisation there is core-seconds the tasks ran (their
wall time, from markers they print) / the core-seconds of the node's busy period. ``--work burn``
burns CPU instead of sleeping. Exit status 1 when the bundle's utilisation is below 90 %.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_desc.clusters import ClusterProfile
from airflow_desc.config import configured_cluster_profiles
from airflow_desc.emulate import payload_source
from airflow_desc.history import HistoryStore, ProcessRecord
from airflow_desc.history.queries import process_instances
from airflow_desc.history.records import InstanceIdentity
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.pilot import bundle_job_command, parse_records, parse_summary, step_name
from airflow_desc.slurm import JobAccounting, JobSpec, render_job_script
from airflow_desc.slurm.quoting import quote_path

TARGET = 0.90
MARK = "DESC_TASK"
#: Peer-suite targets for the best launcher, by mix (issue #13).
PEER_TARGETS = {"u15": 0.96, "1s": 0.93}
PEER_TASKS = 60
PARSL_DRIVER = Path(__file__).resolve().parent / "peers" / "parsl_packing.py"
DEFAULT_PARSL_VENV = "/var/lib/airflow-desc-site/parsl-venv"


def mix_durations(mix: str) -> list[float]:
    """The CPU seconds of each task of a peer mix (fixed seeds: the same tasks every run)."""
    if mix == "u15":
        rng = random.Random(42)
        return [round(rng.uniform(1.0, 5.0), 2) for _ in range(PEER_TASKS)]
    if mix == "1s":
        return [1.0] * PEER_TASKS
    raise ValueError(f"unknown mix {mix!r}: use u15 or 1s")


@dataclass
class PeerResult:
    """One mix through one launcher (or Parsl): the allocation, and what its instances used."""

    mix: str
    runner: str
    job_id: str
    tasks: int
    alloc_cpus: int
    elapsed_s: float
    cpu_s: float
    failed: int
    accounted: int | None = None  # history records with CPU, wall and MaxRSS
    first_start_s: float | None = None  # allocation start -> first instance start
    last_end_s: float | None = None  # last instance end -> allocation end
    pilot_wall_s: float | None = None
    others: float | None = None  # cores busy with other work meanwhile (see MachineLoad)
    notes: list[str] = field(default_factory=list)

    @property
    def utilisation(self) -> float:
        return self.cpu_s / (self.alloc_cpus * self.elapsed_s) if self.elapsed_s else 0.0

    @property
    def of_free(self) -> float | None:
        """Utilisation of what the other work left: CPU s / ((cpus - others) x Elapsed)."""
        if self.others is None or not self.elapsed_s or self.others >= self.alloc_cpus:
            return None
        return self.cpu_s / ((self.alloc_cpus - self.others) * self.elapsed_s)


class MachineLoad:
    """Samples of this machine's busy CPU time (/proc/stat): the site's nodes run here, beside other work.

    The CPU the machine spent over an allocation's window, less its instances' CPU, is what else ran
    meanwhile (the pilot, SLURM's daemons, other users): on a shared machine it is what the
    instances could not have.
    """

    def __init__(self, period: float = 0.25) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    @staticmethod
    def busy_s() -> float:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def _run(self, period: float) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.busy_s()))
            self._stop.wait(period)

    def busy_between(self, start: float, end: float) -> float | None:
        """Busy CPU-seconds of the whole machine from ``start`` to ``end`` (epoch seconds), interpolated."""
        samples = list(self.samples)
        if not samples or samples[0][0] > start or samples[-1][0] < end:
            return None

        def at(t: float) -> float:
            for (t0, b0), (t1, b1) in zip(samples, samples[1:], strict=False):
                if t0 <= t <= t1:
                    return b0 + (b1 - b0) * (t - t0) / (t1 - t0) if t1 > t0 else b0
            return samples[-1][1]

        return at(end) - at(start)

    def stop(self) -> None:
        self._stop.set()


LOAD: MachineLoad | None = None


def _others(cpu_s: float, start: datetime | None, end: datetime | None) -> float | None:
    """Cores busy with work other than the instances over an allocation's window, on average."""
    if LOAD is None or start is None or end is None or end <= start:
        return None
    busy = LOAD.busy_between(start.timestamp(), end.timestamp())
    return None if busy is None else (busy - cpu_s) / (end.timestamp() - start.timestamp())


def _job_accounting(hook: SlurmHook, job_ids: list[str], what: str) -> dict[str, JobAccounting]:
    """Wait until the jobs ended and slurmdbd has their Elapsed (and their steps' rows)."""
    started = time.monotonic()
    shown = -1
    while True:
        accounting = hook.sacct(job_ids)
        done = [
            j for j in job_ids
            if j in accounting and accounting[j].is_terminal and accounting[j].job is not None
            and accounting[j].job.end is not None  # type: ignore[union-attr]
        ]  # fmt: skip
        if len(done) != shown:
            print(
                f"  {what}: {len(done)}/{len(job_ids)} ended after {time.monotonic() - started:.0f} s",
                flush=True,
            )
            shown = len(done)
        if len(done) == len(job_ids):
            time.sleep(2)  # the last steps' accounting reaches slurmdbd after the job's end
            return hook.sacct(job_ids)
        time.sleep(2)


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    """``b - a`` in seconds; a naive time (sacct's) is local time, as ``timestamp()`` takes it."""
    return b.timestamp() - a.timestamp() if a is not None and b is not None else None


def _iso(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _submit_bundle(
    hook: SlurmHook,
    profile: ClusterProfile,
    directory: str,
    bundle: str,
    instances: list[dict[str, Any]],
    launcher: str,
    *,
    time_limit_s: int,
    node: str | None = None,
) -> str:
    """Submit ``instances`` as one whole-node bundle job through the pilot; return its job id."""
    command = bundle_job_command(
        json.dumps({"bundle": bundle, "instances": instances}),
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
        time_limit_s=time_limit_s,
        output=f"{directory}/job-%j.out",
        extra_sbatch={"nodelist": node} if node else {},
    )
    return hook.submit(render_job_script(spec), remote_dir=directory, script_name="bundle.sh").job_id


def run_peer_bundle(
    hook: SlurmHook,
    profile: ClusterProfile,
    remote: str,
    mix: str,
    launcher: str,
    node: str | None,
    store: HistoryStore,
    estimates: bool,
) -> PeerResult:
    """One mix as one bundle allocation with ``launcher``; its instances recorded in ``store``."""
    seconds = mix_durations(mix)
    directory = f"{remote}/{mix}-{launcher}"
    payload = quote_path(remote + "/payload.py")
    instances = []
    for i, s in enumerate(seconds):
        inst: dict[str, Any] = {
            "id": f"t={i:03d}:burn",
            "command": f"python3 {payload} --name t{i:03d} --cpu-seconds {s}",
            "cpus": 1,
            "memory_mb": 200,
        }
        if estimates:
            inst["estimate_s"] = s
        instances.append(inst)
    job = _submit_bundle(
        hook, profile, directory, f"bench-packing-{mix}-{launcher}", instances, launcher,
        time_limit_s=600, node=node,
    )  # fmt: skip
    print(f"{mix} / {launcher}: job {job}, {len(seconds)} instances ({sum(seconds):.0f} CPU-s)", flush=True)
    accounting = _job_accounting(hook, [job], f"{mix} / {launcher}")[job]
    records = parse_records(hook.run(f"cat {quote_path(directory)}/records.jsonl").stdout)
    summary = parse_summary(hook.run(f"cat {quote_path(directory)}/job-{job}.out").stdout) or {}
    if accounting.job is None or accounting.job.elapsed_s is None:
        raise RuntimeError(f"sacct has no Elapsed for job {job}: {accounting}")
    steps = {row.job_name: row for row in accounting.steps if row.job_name}
    stored = _record(store, mix, launcher, job, profile.name, records, steps)
    starts = [t for t in (_iso(r.get("start")) for r in records) if t is not None]
    ends = [t for t in (_iso(r.get("end")) for r in records) if t is not None]
    cpu_s = sum(float(r.get("total_cpu_s") or 0) for r in records)
    return PeerResult(
        mix=mix,
        runner=launcher,
        job_id=job,
        tasks=len(records),
        alloc_cpus=accounting.job.alloc_cpus or profile.cores_per_node,
        elapsed_s=accounting.job.elapsed_s,
        cpu_s=cpu_s,
        failed=sum(1 for r in records if r.get("state") != "success") + len(seconds) - len(records),
        others=_others(cpu_s, accounting.job.start, accounting.job.end),
        accounted=stored,
        first_start_s=_seconds(accounting.job.start, min(starts)) if starts else None,
        last_end_s=_seconds(max(ends), accounting.job.end) if ends else None,
        pilot_wall_s=summary.get("wall_s"),
    )


def _record(
    store: HistoryStore,
    mix: str,
    launcher: str,
    job: str,
    cluster: str,
    records: list[dict[str, Any]],
    steps: dict[str, Any],
) -> int:
    """Record every instance as ``SlurmBundleOperator`` does; return how many have CPU, wall and MaxRSS."""
    run_id = f"{mix}-{launcher}-{job}"
    rows: list[ProcessRecord] = []
    for rec in records:
        step = steps.get(step_name(str(rec["id"])))
        identity = InstanceIdentity(
            workflow="bench_packing", process="burn", task="burn", dag_id="bench_packing",
            run_id=run_id, task_id="bundle", map_index=0, stream=str(rec["id"]).rpartition(":")[0],
        )  # fmt: skip
        rows.append(
            identity.attempt(
                str(rec.get("state")),
                cluster=cluster,
                job_id=job,
                step=str(rec.get("step_id") or f"{job}.{launcher}"),
                slurm_state=step.state.raw if step is not None else None,
                exit_code=rec.get("exit_code"),
                start_time=_iso(rec.get("start")),
                end_time=_iso(rec.get("end")),
                elapsed_s=rec.get("elapsed_s"),
                total_cpu_s=rec.get("total_cpu_s"),
                # As the bundle operator: memory as SLURM saw it, else the pilot's wait4 peak.
                max_rss_bytes=(step.max_rss_bytes if step is not None else None) or rec.get("max_rss_bytes"),
                req_cpus=rec.get("cpus"),
                node=rec.get("node"),
            )
        )
    store.record(rows)
    frame = process_instances(store.engine)
    frame = frame[frame["run_id"] == run_id]
    full = frame[["total_cpu_s", "elapsed_s", "max_rss_bytes"]].notna().all(axis=1)
    return int(full.sum())


def parsl_python(venv: str) -> str:
    """The peer venv's Python, created with ``pip install parsl`` (the package index) when missing."""
    python = os.path.join(venv, "bin", "python")
    probe = [python, "-c", "import parsl"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python
    print(f"creating {venv} with parsl (pip install parsl) ...", flush=True)
    # The cluster's own Python (not a per-user one) so that the site's user can run it on the node.
    subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "parsl"], check=True)
    return python


def run_parsl(
    hook: SlurmHook, profile: ClusterProfile, remote: str, mix: str, node: str | None, python: str
) -> PeerResult:
    """One mix through Parsl's HighThroughputExecutor, one block of ``node``, driven from the login node."""
    seconds = mix_durations(mix)
    directory = f"{remote}/{mix}-parsl"
    driver = f"{remote}/parsl_packing.py"
    hook.run(
        f"mkdir -p {quote_path(directory)} && cat > {quote_path(driver)}", stdin=PARSL_DRIVER.read_text()
    )
    args = ["--payload", f"{remote}/payload.py", "--durations", json.dumps(seconds)]
    args += ["--run-dir", f"{directory}/runinfo", "--partition", profile.partition or ""]
    args += ["--cores", str(profile.cores_per_node), "--mem-mb", str(profile.memory_per_node_mb)]
    if profile.account:
        args += ["--account", profile.account]
    if node:
        args += ["--node", node]
    print(f"{mix} / parsl: {len(seconds)} tasks ({sum(seconds):.0f} CPU-s)", flush=True)
    # From the home directory, as the other paths (work_dir is relative to it).
    command = f"cd && {shlex.quote(python)} {quote_path(driver)} " + " ".join(shlex.quote(a) for a in args)
    out = hook.run(command, timeout=1200)
    line = next(x for x in out.stdout.splitlines() if x.startswith("parsl-packing: "))
    result = json.loads(line.split(": ", 1)[1])
    jobs = [str(j) for j in result["job_ids"]]
    accounting = _job_accounting(hook, jobs, f"{mix} / parsl")
    rows = [accounting[j].job for j in jobs if accounting[j].job is not None]
    tasks = result["tasks"]
    first = min(t["start"] for t in tasks)
    last = max(t["end"] for t in tasks)
    start = min(r.start for r in rows if r is not None and r.start is not None)
    end = max(r.end for r in rows if r is not None and r.end is not None)
    cpu_s = sum(float(t["cpu_s"]) for t in tasks)
    return PeerResult(
        mix=mix,
        runner="parsl",
        job_id=",".join(jobs),
        tasks=len(tasks),
        alloc_cpus=sum(r.alloc_cpus or profile.cores_per_node for r in rows if r is not None),
        elapsed_s=sum(r.elapsed_s or 0 for r in rows if r is not None),
        cpu_s=cpu_s,
        failed=sum(1 for t in tasks if t["exit"] != 0),
        others=_others(cpu_s, start, end),
        first_start_s=first - start.timestamp(),
        last_end_s=end.timestamp() - last,
        notes=[f"{len(jobs)} block(s), state {','.join(accounting[j].state.raw for j in jobs)}"],
    )


def peer_suite(args: argparse.Namespace, hook: SlurmHook, profile: ClusterProfile, remote: str) -> int:
    mixes = [m for m in args.mixes.split(",") if m]
    launchers = [x for x in args.launchers.split(",") if x]
    python = parsl_python(args.parsl_venv) if args.peer == "parsl" else None
    history = Path(tempfile.mkdtemp(prefix="bench-packing-")) / "history.db"
    store = HistoryStore(f"sqlite:///{history}")
    print(
        f"peer mixes {mixes} on {profile.name} node {args.node or '(any)'} ({profile.cores_per_node} cores); "
        f"launchers {launchers}; order {args.order}; peer {args.peer}; history {history}",
        flush=True,
    )
    global LOAD
    LOAD = MachineLoad()
    results: list[PeerResult] = []
    for mix in mixes:
        for launcher in launchers:
            results.append(
                run_peer_bundle(hook, profile, remote, mix, launcher, args.node, store, args.order == "auto")
            )
            print(f"  {results[-1]}", flush=True)
        if python is not None:
            results.append(run_parsl(hook, profile, remote, mix, args.node, python))
            print(f"  {results[-1]}", flush=True)
    print()
    print(
        f"{'mix':<4} {'runner':<7} {'job':>12} {'tasks':>5} {'failed':>6} {'CPU s':>7} {'cpus':>4} "
        f"{'Elapsed':>7} {'util':>6} {'ratio':>6} {'accounted':>9} {'->first':>7} {'last->':>6}"
        f" {'others':>6} {'of free':>7}"
    )
    print(
        "util = CPU s / (cpus x sacct Elapsed); ratio = util / Parsl's; accounted = history records with "
        "CPU, wall and MaxRSS; ->first = allocation start to first instance start, last-> = last instance "
        "end to allocation end (s, against sacct's whole seconds); others = cores busy otherwise; "
        "of free = CPU s / ((cpus - others) x Elapsed)"
    )
    ok = True
    for mix in mixes:
        rows = [r for r in results if r.mix == mix]
        peer = next((r for r in rows if r.runner == "parsl"), None)
        for r in rows:
            ratio = f"{r.utilisation / peer.utilisation:6.3f}" if peer and peer.utilisation else "     -"
            accounted = f"{r.accounted}/{r.tasks}" if r.accounted is not None else "-"
            print(
                f"{mix:<4} {r.runner:<7} {r.job_id:>12} {r.tasks:>5} {r.failed:>6} {r.cpu_s:>7.1f} "
                f"{r.alloc_cpus:>4} {r.elapsed_s:>7.0f} {r.utilisation:>6.1%} {ratio} {accounted:>9} "
                f"{r.first_start_s or 0:>7.2f} {r.last_end_s or 0:>6.2f} "
                + (f"{r.others:>6.2f}" if r.others is not None else f"{'-':>6}")
                + (f" {r.of_free:>7.1%}" if r.of_free is not None else f" {'-':>7}")
            )
        ours = [r for r in rows if r.runner != "parsl"]
        if not ours:
            continue
        best = max(ours, key=lambda r: r.utilisation)
        target = PEER_TARGETS[mix]
        met = best.utilisation >= target and all(r.failed == 0 and r.accounted == r.tasks for r in ours)
        ok = ok and met
        vs = (
            f", Parsl {peer.utilisation:.1%}, ratio {best.utilisation / peer.utilisation:.3f}" if peer else ""
        )
        print(
            f"{mix}: best launcher {best.runner} {best.utilisation:.1%} (target >= {target:.0%}: "
            f"{'met' if met else 'MISSED'}){vs}; accounted in the history: "
            + ", ".join(f"{r.runner} {r.accounted}/{r.tasks}" for r in ours)
        )
    return 0 if ok else 1


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
    job = _submit_bundle(
        hook, profile, directory, "bench-packing", instances, launcher, time_limit_s=profile.max_walltime_s
    )
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


def jobs_suite(args: argparse.Namespace, hook: SlurmHook, profile: ClusterProfile, remote: str) -> int:
    seconds = durations(args.tasks, args.min_s, args.max_s, args.seed)
    print(
        f"{args.tasks} tasks of {args.min_s:g}-{args.max_s:g} s ({sum(seconds):.0f} task-s, {args.work})"
        f" on {profile.name} ({profile.cores_per_node} cores per node); remote dir {remote}",
        flush=True,
    )
    results: list[Result] = []
    if args.mode in ("both", "bundle"):
        results.append(run_bundle(hook, profile, remote, seconds, args.launcher, args.work))
        print(f"  {results[-1]}", flush=True)
    if args.mode in ("both", "jobs"):
        results.append(run_jobs(hook, profile, remote, seconds, args.work))
        print(f"  {results[-1]}", flush=True)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--suite", choices=("peer", "jobs"), default="peer")
    parser.add_argument("--cluster", default="perlmutter")
    parser.add_argument("--keep", action="store_true", help="keep the remote directory")
    peer = parser.add_argument_group("peer suite")
    peer.add_argument("--mixes", default="u15,1s", help="comma-separated: u15 (60 x U(1,5) s), 1s (60 x 1 s)")
    peer.add_argument("--launchers", default="srun,direct", help="comma-separated pilot launchers")
    peer.add_argument("--peer", choices=("parsl", "none"), default="parsl")
    peer.add_argument("--parsl-venv", default=DEFAULT_PARSL_VENV, help="a venv with parsl (made if missing)")
    peer.add_argument("--node", default="pm-n1", help="the node every allocation runs on ('' for any)")
    peer.add_argument(
        "--order",
        choices=("auto", "manifest"),
        default="auto",
        help="auto: the manifest carries estimate_s (longest first); manifest: no estimates",
    )
    jobs = parser.add_argument_group("jobs suite")
    jobs.add_argument("--tasks", type=int, default=200)
    jobs.add_argument("--min-s", type=float, default=2.0)
    jobs.add_argument("--max-s", type=float, default=10.0)
    jobs.add_argument("--seed", type=int, default=1)
    jobs.add_argument("--launcher", choices=("direct", "srun"), default="direct")
    jobs.add_argument("--work", choices=("sleep", "burn"), default="sleep")
    jobs.add_argument("--mode", choices=("both", "bundle", "jobs"), default="both")
    args = parser.parse_args()
    profile = configured_cluster_profiles().get(args.cluster)
    hook = SlurmHook(profile.ssh_conn_id, jump_conn_id=profile.jump_conn_id or "", cluster=profile.name)
    # Relative to the home directory, where ssh commands and sbatch start (#SBATCH --output takes no "~").
    remote = f"{profile.work_dir}/bench-packing/{uuid.uuid4().hex[:10]}"
    hook.run(
        f"mkdir -p {quote_path(remote)} && cat > {quote_path(remote + '/payload.py')}", stdin=payload_source()
    )
    # A SIGTERM (a timeout, a session ending) must still cancel the queued jobs and clean up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if args.suite == "peer":
            return peer_suite(args, hook, profile, remote)
        return jobs_suite(args, hook, profile, remote)
    finally:
        hook.run(
            "scancel --name=bench-packing-bundle -u $USER; squeue -h -u $USER -o '%i %j' | "
            "awk '$2 ~ /^(bench-packing-t|parsl)/ {print $1}' | xargs -r scancel",
            check=False,
        )
        if not args.keep:
            hook.run(f"rm -rf -- {quote_path(remote)}", check=False)


if __name__ == "__main__":
    sys.exit(main())
