"""DC1 at a fraction of its size, for real: 15 DAG runs under the real scheduler and triggerer.

Not part of ``make test`` (nor of ``make bench``: it takes tens of minutes). It loads the whole
machine, so it runs alone on the site, under the exclusive site lock::

    source /var/lib/airflow-desc-site/env.sh
    flock -x /tmp/desc-site.lock .venv/bin/python benchmarks/dc1_scale.py \
        [--scale 0.01] [--runs 15] [--executor local|celery] [--payload-cpu 0.2] [--keep]

What it does:

1. Writes a DAGs folder: a copy of ``dags/workflows/dc1.yaml`` whose emulated payloads are short
   (``cpu_seconds`` at most ``--payload-cpu``, ``memory_mb`` at most ``--payload-memory``; the
   failure modes and rates are DC1's), a render overlay (``scale`` as a rendering default, so that
   bundling is decided for it; every filter ``u^g^r^i^z^y``; resources fitted to the local nodes;
   no retries; bundles in the ``direct`` launcher) and a one-line DAG file:
   ``DC1-DM12_imsim-dithered_bench``.
2. Starts a deployment of ``tests/deploy.py`` on it (``Deployment.local``: LocalExecutor, or
   ``Deployment.celery``: two Celery workers, two triggerers), the workers writing the PostgreSQL
   history through the Airflow connection, the cluster pools synced.
3. Triggers DC1's runs through the REST API. Each run is one chunk of visits (its own ``visits``,
   ``seed`` and ``root``, so that each draws its own visits and failures); level 1 runs in 6 of the
   15 (runs 1-6), level 2 in 10 (runs 6-15), as in DC1.
4. Waits until every run has ended (a progress line a minute), then prints: process instances,
   task instances, SLURM jobs (history, and sacct on both clusters by job name), wall time, the
   CPU seconds of each Airflow component (its whole process tree, from ``/proc``) per process
   instance, SLURM jobs per 1,000 process instances, where the task instances' time went (queued
   vs running), the level-1 and level-2 counts beside DC1's status table scaled to this run, and
   the status table's totals (``airflow-desc status --no-live``) checked against the history.

Exit status 1 when a run did not end within ``--timeout`` (what was done by then is reported), or
when the status table's totals disagree with the history; the level-1 / level-2 proportions are
stochastic and only printed.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import pathlib
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.deploy: the deployment the e2e tests run

from tests.deploy import Deployment, api  # noqa: E402
from tests.integration.site import Site  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

DC1_SPEC = REPO / "dags" / "workflows" / "dc1.yaml"
DC1_TABLE = REPO / "tests" / "data" / "specs" / "dc1-status-table.tsv"
VARIANT = "imsim-dithered"
DAG_ID = f"DC1-DM12_{VARIANT}_bench"
DC1_RUNS = 15
#: DC1 ran level 1 in 6 of its 15 runs and level 2 in 10 (the status table's level1 / level2 rows).
LEVEL1_RUNS = range(0, 6)
LEVEL2_RUNS = range(5, 15)
#: The history states, in the status table's order, and their column names there.
STATES = (
    "waiting", "ready", "queued", "submitted", "running", "success",
    "failed", "terminated", "cancelling", "cancelled", "skipped",
)  # fmt: skip
TICKS = os.sysconf("SC_CLK_TCK")


# --- the DAGs folder --------------------------------------------------------------------------------------


def _emulate_blocks(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "emulate" and isinstance(value, dict):
                yield value
            else:
                yield from _emulate_blocks(value)
    elif isinstance(node, list):
        for item in node:
            yield from _emulate_blocks(item)


def write_dags(folder: pathlib.Path, scale: float, cpu_s: float, memory_mb: float) -> dict[str, Any]:
    """Write the benchmark's DC1 (short payloads), its overlay and DAG file; return the spec."""
    spec = yaml.safe_load(DC1_SPEC.read_text())
    for emulate in _emulate_blocks(spec):
        if "cpu_seconds" in emulate:
            emulate["cpu_seconds"] = min(float(emulate["cpu_seconds"]), cpu_s)
        if "memory_mb" in emulate:
            emulate["memory_mb"] = min(float(emulate["memory_mb"]), memory_mb)
    workflows = folder / "workflows"
    workflows.mkdir(parents=True, exist_ok=True)
    (workflows / "dc1.yaml").write_text(
        f"# dags/workflows/dc1.yaml with payloads of at most {cpu_s} CPU s and {memory_mb} MB "
        "(benchmarks/dc1_scale.py)\n" + yaml.safe_dump(spec, sort_keys=False)
    )
    overlay = {
        "extends": "dc1.yaml",
        "dag_id_suffix": "_bench",
        "variants": [VARIANT],
        "tags": ["bench"],
        "variables": {"scale": scale, "filters": "u^g^r^i^z^y"},
        "resources_cap": "fit",
        "retries": 0,
        "retry_delay": 10,
        "launcher": "direct",
    }
    (workflows / "dc1-bench.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    (folder / "dc1_bench.py").write_text(
        '"""DC1 for benchmarks/dc1_scale.py."""\n\n'
        "from airflow_desc.workflow.render import load_workflow_dags\n\n"
        'globals().update(load_workflow_dags(__file__, "workflows/dc1-bench.yaml"))\n'
    )
    return dict(spec)


def scaled_tasks(spec: Mapping[str, Any]) -> set[str]:
    """The sub-tasks whose stream counts follow ``scale`` (their ``expected_streams`` or a parent's)."""
    found: set[str] = set()

    def walk(tasks: Mapping[str, Any], scaled: bool) -> None:
        for name, task in tasks.items():
            here = scaled or "scale" in str(task.get("expected_streams", ""))
            if here:
                found.add(name)
            walk(task.get("tasks") or {}, here)

    walk(spec.get("tasks") or {}, False)
    return found


# --- CPU of process trees ---------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float]]:
    """Every process: pid -> (parent pid, CPU seconds of itself and its reaped children)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid = int(fields[1])
        ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
        table[int(entry)] = (ppid, ticks / TICKS)
    return table


def tree_cpu_s(root: int, table: Mapping[int, tuple[int, float]]) -> float:
    """CPU seconds of ``root``'s tree: live processes, and the children they reaped."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _) in table.items():
        children[ppid].append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
            todo.extend(children[pid])
    return total


def component_cpu(af: Deployment) -> dict[str, float]:
    table = _proc_table()
    return {name: tree_cpu_s(c.proc.pid, table) for name, c in af.components.items() if c.proc is not None}


# --- the runs ---------------------------------------------------------------------------------------------


def run_conf(index: int, scale: float) -> dict[str, Any]:
    """The conf of DC1 run ``index`` (0-based): its chunk of visits, its seed, which levels run."""
    return {
        "scale": scale,
        "visits": f"visits-chunk{index + 1:02d}.txt",
        "seed": str(index + 1),
        "root": f"dc1-bench/run{index + 1:02d}",
        "run_level1": index in LEVEL1_RUNS,
        "run_level2": index in LEVEL2_RUNS,
    }


def trigger_runs(af: Deployment, confs: list[dict[str, Any]], tag: str) -> list[str]:
    wait_for(
        lambda: af.sql("SELECT 1 FROM dag WHERE dag_id = %s", DAG_ID),
        timeout=300,
        what=f"{DAG_ID} parsed; logs in {af.root}",
        interval=2,
    )
    api("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    run_ids = []
    for index, conf in enumerate(confs):
        run_id = f"dc1scale__{tag}__run{index + 1:02d}"
        api("POST", f"/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf})
        run_ids.append(run_id)
    return run_ids


class Progress:
    """The predicate of the wait: True once every run ended; prints a line a minute meanwhile.

    Each call samples the task instances' states; :attr:`state_seconds` adds up, per state, task
    instances x seconds between samples: where the task instances' time went (waiting for the
    scheduler and an executor slot in ``scheduled`` / ``queued``, in a worker in ``running``, in
    the triggerer in ``deferred``).
    """

    def __init__(self, af: Deployment, run_ids: list[str], t0: float) -> None:
        self.af, self.run_ids, self.t0 = af, run_ids, t0
        self.next_line = t0
        self.last_sample: float | None = None
        self.state_seconds: collections.Counter[str] = collections.Counter()

    def __call__(self) -> bool:
        states = dict(self.af.sql("SELECT run_id, state FROM dag_run WHERE dag_id = %s", DAG_ID))
        ended = sum(states.get(r) in ("success", "failed") for r in self.run_ids)
        now = time.monotonic()
        tis = self.af.sql(
            "SELECT coalesce(state, 'none'), count(*) FROM task_instance WHERE dag_id = %s GROUP BY 1", DAG_ID
        )
        if self.last_sample is not None:
            for state, count in tis:
                if state in ("scheduled", "queued", "running", "deferred", "up_for_retry"):
                    self.state_seconds[state] += count * (now - self.last_sample)
        self.last_sample = now
        if now >= self.next_line or ended == len(self.run_ids):
            self.next_line = now + 60
            recorded = self.af.history.sql("SELECT count(*) FROM process_instances WHERE latest")[0][0]
            counts = ", ".join(f"{s} {n}" for s, n in sorted(tis))
            print(
                f"[dc1] {now - self.t0:6.0f}s  runs ended {ended}/{len(self.run_ids)}  "
                f"process instances recorded {recorded:,}  task instances: {counts}",
                flush=True,
            )
        return ended == len(self.run_ids)


# --- what it prints ---------------------------------------------------------------------------------------


def history_counts(af: Deployment) -> tuple[dict[str, int], int, int]:
    """Latest attempts per state, all attempts, SLURM jobs the history names."""
    by_state = {str(s): int(n) for s, n in af.history.sql(
        "SELECT state, count(*) FROM process_instances WHERE latest GROUP BY state"
    )}  # fmt: skip
    attempts = int(af.history.sql("SELECT count(*) FROM process_instances")[0][0])
    jobs = int(af.history.sql(
        "SELECT count(*) FROM (SELECT DISTINCT cluster, job_id FROM process_instances "
        "WHERE job_id IS NOT NULL) AS j"
    )[0][0])  # fmt: skip
    return by_state, attempts, jobs


def sacct_jobs(af: Deployment, since: datetime) -> int:
    """Our SLURM jobs as both clusters' accounting knows them: the names our task instances give."""
    from airflow_desc.operators.job_names import job_name_for

    names = set()
    for task_id, run_id, map_index, tries in af.sql(
        "SELECT task_id, run_id, map_index, try_number FROM task_instance WHERE dag_id = %s", DAG_ID
    ):
        for try_number in range(1, int(tries) + 1):
            names.add(job_name_for(DAG_ID, run_id, task_id, int(map_index), try_number))
    site = Site.from_env()
    count = 0
    start = since.strftime("%Y-%m-%dT%H:%M:%S")
    for login in ("perlmutter", "s3df"):
        out = site.run(login, f"sacct -X -n -P -S {shlex.quote(start)} -E now -o JobID,JobName").stdout
        count += sum(line.split("|")[1] in names for line in out.splitlines() if "|" in line)
    return count


def time_profile(af: Deployment) -> list[tuple[str, int, float]]:
    """Per kind of task: task instances, and their seconds from first start to end (deferral included)."""
    rows = af.sql(
        "SELECT task_id, operator, extract(epoch FROM (end_date - start_date)) "
        "FROM task_instance WHERE dag_id = %s AND start_date IS NOT NULL AND end_date IS NOT NULL",
        DAG_ID,
    )
    kinds: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for task_id, operator, seconds in rows:
        kind = str(operator or "?") + (" (bundle)" if task_id.endswith(".bundle") else "")
        kinds[kind][0] += 1
        kinds[kind][1] += float(seconds or 0)
    return sorted(((k, int(v[0]), v[1]) for k, v in kinds.items()), key=lambda r: -r[2])


def status_totals(af: Deployment) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The status table's Totals row and its rows, as ``airflow-desc status --no-live`` prints them."""
    out = af.desc("status", "--db", af.history_db, "--no-live", "--format", "json").stdout
    rows = json.loads(out[out.index("[") :])
    totals = next(r for r in rows if (r.get("Process") or r.get("Type")) == "Totals")
    return {k: int(v) for k, v in totals.items() if isinstance(v, int | float)}, rows


def dc1_table() -> dict[str, dict[str, str]]:
    with open(DC1_TABLE, newline="") as f:
        return {row["process"]: row for row in csv.DictReader(f, delimiter="\t")}


def level_proportions(
    rows: list[dict[str, Any]], spec: Mapping[str, Any], scale: float, runs: int
) -> list[tuple[str, str, int, float, float, float]]:
    """Level-1 / level-2 processes: (task, process, measured, DC1 scaled, measured success %, DC1's)."""
    dc1 = dc1_table()
    scaled = scaled_tasks(spec)
    level_tasks = {"level1", "level2"}

    def under(tasks: Mapping[str, Any], inside: bool) -> None:
        for name, task in tasks.items():
            here = inside or name in ("level1", "level2")
            if here:
                level_tasks.add(name)
            under(task.get("tasks") or {}, here)

    under(spec.get("tasks") or {}, False)
    measured = {r.get("Process"): r for r in rows if r.get("Process")}
    out = []
    for process, row in dc1.items():
        if row["task"] not in level_tasks:
            continue
        factor = runs / DC1_RUNS * (scale if row["task"] in scaled else 1.0)
        ours = measured.get(process, {})
        total = int(ours.get("Total", 0) or 0)
        dc1_total = int(row["total"])
        out.append((
            row["task"], process, total, dc1_total * factor,
            100.0 * int(ours.get("Success", 0) or 0) / total if total else 0.0,
            100.0 * int(row["success"]) / dc1_total if dc1_total else 0.0,
        ))  # fmt: skip
    return out


def report(
    af: Deployment,
    args: argparse.Namespace,
    spec: Mapping[str, Any],
    wall_s: float,
    cpu: Mapping[str, float],
    since: datetime,
    state_seconds: Mapping[str, float],
) -> int:
    by_state, attempts, jobs = history_counts(af)
    totals, rows = status_totals(af)  # right after: a live history changes meanwhile
    instances = sum(by_state.values())
    task_instances = int(af.sql("SELECT count(*) FROM task_instance WHERE dag_id = %s", DAG_ID)[0][0])
    run_states = collections.Counter(
        s for (s,) in af.sql("SELECT state FROM dag_run WHERE dag_id = %s", DAG_ID)
    )
    sacct = sacct_jobs(af, since)
    print()
    print(
        f"DC1 at scale {args.scale}: {args.runs} run(s), {af.executor}, payloads <= {args.payload_cpu} CPU s"
    )
    print(f"  runs                    {dict(run_states)}")
    print(f"  process instances       {instances:,} ({attempts:,} attempts)")
    print(f"    by state              {', '.join(f'{s} {n:,}' for s, n in sorted(by_state.items()))}")
    print(f"  task instances          {task_instances:,}")
    print(f"  SLURM jobs              {jobs:,} in the history, {sacct:,} in sacct (by job name)")
    print(f"  SLURM jobs / 1000 inst. {1000 * jobs / instances if instances else 0:.1f} (goal <= 100)")
    print(f"  wall time               {wall_s:,.0f} s ({wall_s / 60:.1f} min; goal for scale 0.1: <= 60 min)")
    print("  CPU seconds (process trees, from trigger to the last run's end):")
    for name, seconds in cpu.items():
        per = 1000 * seconds / instances if instances else 0
        print(f"    {name:<14} {seconds:10.1f} s   {per:8.1f} ms / inst.")
    overhead = sum(s for n, s in cpu.items() if n == "scheduler" or n.startswith("worker"))
    everything = sum(cpu.values())
    print(
        f"  Airflow overhead        {overhead:,.1f} s scheduler + workers = "
        f"{1000 * overhead / instances if instances else 0:.1f} ms / process instance "
        f"(all components: {1000 * everything / instances if instances else 0:.1f} ms)"
    )
    print("  where the task instances' time went: TI-seconds per state, sampled every 5 s")
    busy = sum(state_seconds.values())
    for state, seconds in sorted(state_seconds.items(), key=lambda item: -item[1]):
        print(f"    {state:<14} {seconds:10.0f} TI-s  {100 * seconds / busy if busy else 0:5.1f} %")
    print(f"    {'operator':<32} {'TIs':>6} {'start->end s':>12} {'mean s':>7}")
    for kind, count, seconds in time_profile(af):
        print(f"    {kind:<32} {count:>6} {seconds:>12.0f} {seconds / count:>7.1f}")
    if wall_s > 3600:
        print("  (over an hour: see the profile above, and the components' logs, kept after the run: "
              f"{LOGS_KEPT.format(root=af.root)})")  # fmt: skip

    print("  level 1 / level 2 beside DC1's status table (scaled to these runs; stochastic):")
    print(f"    {'task':<28} {'process':<30} {'ours':>7} {'DC1 x f':>8} {'ours ok%':>8} {'DC1 ok%':>8}")
    for task, process, ours, theirs, ok, dc1_ok in level_proportions(rows, spec, args.scale, args.runs):
        print(f"    {task:<28} {process:<30} {ours:>7} {theirs:>8.1f} {ok:>8.1f} {dc1_ok:>8.1f}")

    mismatches = []
    for state in STATES:
        column = state.capitalize()
        if totals.get(column, 0) != by_state.get(state, 0):
            mismatches.append(f"{column}: table {totals.get(column, 0)}, history {by_state.get(state, 0)}")
    if totals.get("Total", 0) != instances:
        mismatches.append(f"Total: table {totals.get('Total', 0)}, history {instances}")
    if mismatches:
        print("  status table totals vs history: MISMATCH: " + "; ".join(mismatches))
        return 1
    print(f"  status table totals vs history: OK (Total {instances:,})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.01, help="DC1's scale (default 0.01; the goal: 0.1)")
    parser.add_argument("--runs", type=int, default=DC1_RUNS, help="DC1 runs to trigger (default 15)")
    parser.add_argument("--executor", choices=("local", "celery"), default="local")
    parser.add_argument("--payload-cpu", type=float, default=0.2, help="CPU seconds per payload, at most")
    parser.add_argument("--payload-memory", type=float, default=50, help="MB a payload holds, at most")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for the runs")
    parser.add_argument("--root", help="where the deployment lives (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the deployment's files and history schema")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= DC1_RUNS:
        parser.error(f"--runs must be 1..{DC1_RUNS}")
    if "DESC_SITE_AIRFLOW_DB_URI" not in os.environ:
        print("the site's environment is missing: source /var/lib/airflow-desc-site/env.sh first")
        return 2
    # Stopped (TERM, or INT from a background shell, which ignores it): stop the deployment all the same.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    root = pathlib.Path(args.root or tempfile.mkdtemp(prefix="dc1scale-")).resolve()
    dags = root / "dags"
    spec = write_dags(dags, args.scale, args.payload_cpu, args.payload_memory)
    make = Deployment.local if args.executor == "local" else Deployment.celery
    kwargs: dict[str, Any] = {"dags": dags, "history_prefix": "dc1scale"}
    if args.executor == "celery":
        kwargs.update(worker_concurrency=4, triggerer_capacity=1000)
    af = make(root, **kwargs)
    t_start = time.monotonic()
    print(f"[dc1] deployment {af.executor} in {root}; history schema {af.history.name}", flush=True)
    rc = 1
    try:
        af.start()
        since = datetime.now(timezone.utc).astimezone().replace(tzinfo=None)
        cpu0 = component_cpu(af)
        t0 = time.monotonic()
        tag = uuid.uuid4().hex[:8]
        run_ids = trigger_runs(af, [run_conf(i, args.scale) for i in range(args.runs)], tag)
        print(f"[dc1] triggered {len(run_ids)} run(s) of {DAG_ID} through the REST API", flush=True)
        ended = True
        progress = Progress(af, run_ids, t0)
        try:
            wait_for(progress, timeout=args.timeout, what="every run ends", interval=5)
        except AssertionError as e:
            print(f"[dc1] {e}: what was done so far follows")
            ended = False
        wall = time.monotonic() - t0
        cpu1 = component_cpu(af)
        cpu = {n: cpu1[n] - cpu0.get(n, 0.0) for n in cpu1}
        rc = report(af, args, spec, wall, cpu, since, progress.state_seconds)
        if not ended:
            print(f"[dc1] NOT FINISHED: the runs had not all ended after --timeout {args.timeout:g} s")
            rc = 1
    finally:
        for component in af.components.values():
            component.signal(signal.SIGTERM)
        for component in af.components.values():
            component.stop()
        if args.keep:
            print(f"[dc1] kept {root} and the history schema {af.history.name}")
        else:
            if rc != 0 or time.monotonic() - t_start > 3600:
                kept = keep_logs(pathlib.Path(root))
                print(f"[dc1] the components' logs are kept in {kept}")
            af.history.drop()
            shutil.rmtree(root, ignore_errors=True)
    return rc


#: Where a slow or failed run's component logs go: the deployment's directory itself is removed.
LOGS_KEPT = "{root}-logs"


def keep_logs(root: pathlib.Path) -> pathlib.Path:
    """Copy each component's own log (not the task logs) beside the deployment, to read after it is gone."""
    kept = pathlib.Path(LOGS_KEPT.format(root=root))
    kept.mkdir(exist_ok=True)
    for log in root.glob("*/*.log"):
        shutil.copy2(log, kept / log.name)
    return kept


if __name__ == "__main__":
    sys.exit(main())
