"""History at DC1 scale: ~1,000,000 process instances in SQLite and in PostgreSQL, queried side by side.

Run by ``make bench`` (never by ``make test``) against the local site::

    source /var/lib/airflow-desc-site/env.sh
    .venv/bin/python benchmarks/history_scale.py [--rows 1024000] [--skip-pg] [--keep]

What it does:

1. Generates a DC1-shaped history from ``dc1-status-table.tsv`` (``--tsv``, default
   ``../shared/dc1-status-table.tsv`` next to the repository): every task / version / process /
   type of the table, with exactly its per-state counts of process instances (the latest attempt
   of each), plus ~3% extra earlier attempts that failed or were terminated (time limit, out of
   memory), as reruns leave them. Streams nest as DC1's did (``visit=/raft=/sensor=`` for
   processVisit > processRaft > processSensor ...), spread over 15 top-level runs (DAG runs);
   batch processes run as steps of bundle jobs on two clusters, with realistic times, CPU,
   memory, requests, nodes, log paths and diagnoses. Deterministic (``--seed``).
2. Writes it through the real writer (:meth:`HistoryStore.record`, upserts in batches of
   ``--batch``) into a fresh SQLite file (a temporary directory) and into a fresh schema of the
   site's PostgreSQL history database (``$DESC_SITE_HISTORY_DB_URI``), both migrated by Alembic;
   then ``ANALYZE`` (and ``VACUUM`` on PostgreSQL, as autovacuum would), as a live database has.
3. Times, on each, the status table (:func:`status_counts`, median of 3) and the per-process
   figure query (:func:`process_usage` of ``processEimage``, ~330k rows into a DataFrame), prints
   a table and ``status table: sqlite X s, postgresql Y s (target <= 1 s)``.
4. Checks that the status table equals the per-state counts generated (at full size: the TSV's),
   and the attempts the rows generated; prints OK or MISMATCH. Exit status 1 on a mismatch or a
   missed target.

The PostgreSQL schema is dropped at the end (``--keep`` keeps it, and the SQLite file).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas  # noqa: F401  # imported before timing: the queries import it lazily
import sqlalchemy as sa

from airflow_desc.history import HistoryStore, ProcessRecord
from airflow_desc.history.queries import process_usage, status_counts

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TSV = REPO.parent / "shared" / "dc1-status-table.tsv"
STATES = ("waiting", "ready", "queued", "submitted", "running", "success", "failed", "terminated",
          "cancelling", "cancelled", "skipped")  # fmt: skip
RUNS = 15  # DC1's top-level runs
RETRY_FRACTION = 0.03
BUNDLE_SIZE = 64  # streams per bundle task instance (one SLURM allocation)
STATUS_TARGET_S = 1.0
DAG_ID = "dc1_dm12"
WORKFLOW = "DC1-DM12"
START = datetime(2018, 1, 8, 8, 0, 0)

# The DC1 sub-task hierarchy: a sub-task's streams nest inside its parent's.
PARENT = {
    "level1ProcessFilter": "level1",
    "level1ProcessPatch": "level1ProcessFilter",
    "processimageDifferenceRaft": "processimageDifferenceVisit",
    "processimageDifferenceSensor": "processimageDifferenceRaft",
    "level2ProcessPatch": "level2",
    "level2ProcessFilter": "level2ProcessPatch",
    "level2MeasureFilter": "level2ProcessPatch",
    "processForcedPhotometryRaft": "processForcedPhotometryVisit",
    "processForcedPhotometrySensor": "processForcedPhotometryRaft",
    "processRaft": "processVisit",
    "processSensor": "processRaft",
}
STREAM_KEY = {
    "level1": "level1", "level1ProcessFilter": "filter", "level1ProcessPatch": "patch",
    "processimageDifferenceVisit": "diffvisit", "processimageDifferenceRaft": "raft",
    "processimageDifferenceSensor": "sensor",
    "level2": "level2", "level2ProcessPatch": "patch", "level2ProcessFilter": "filter",
    "level2MeasureFilter": "measure",
    "processForcedPhotometryVisit": "fpvisit", "processForcedPhotometryRaft": "raft",
    "processForcedPhotometrySensor": "sensor",
    "processVisit": "visit", "processRaft": "raft", "processSensor": "sensor",
}  # fmt: skip
# Per process: median elapsed (s), median MaxRSS (MB), requested memory (MB), walltime (s).
BATCH_PROFILE = {
    "processEimage": (900, 1400, 2000, 7200),
    "imageDifference": (1500, 1800, 4000, 7200),
    "level1MakeTempExpCoadd": (5400, 9000, 12000, 36000),
    "level1AssembleCoadd": (7200, 18000, 24000, 36000),
    "level2MakeTempExpCoadd": (5400, 9000, 12000, 36000),
    "level2AssembleCoadd": (7200, 18000, 24000, 36000),
    "measureCoadd": (3600, 6000, 8000, 18000),
}
DEFAULT_BATCH_PROFILE = (1200, 2500, 4000, 14400)
FAILED_REASONS = (("non-zero-exit", 1), ("python-exception", 1), ("missing-input", 2), ("segfault", 139))
TERMINATED_REASONS = (
    ("time-limit", "TIMEOUT"),
    ("out-of-memory", "OUT_OF_MEMORY"),
    ("node-failure", "NODE_FAIL"),
)


@dataclass(frozen=True)
class Row:
    """One line of the status table."""

    task: str
    version: str
    process: str
    type: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def read_tsv(path: Path) -> list[Row]:
    with open(path, encoding="utf-8") as f:
        return [
            Row(r["task"], r["version"], r["process"], r["type"], {s: int(r[s]) for s in STATES})
            for r in csv.DictReader(f, delimiter="\t")
        ]


def scaled(rows: list[Row], scale: float) -> list[Row]:
    if scale == 1.0:
        return rows
    out = []
    for r in rows:
        counts = {s: round(n * scale) for s, n in r.counts.items()}
        if not any(counts.values()):  # keep every process of the table, at least one instance
            counts[max(r.counts, key=lambda s: r.counts[s])] = 1
        out.append(Row(r.task, r.version, r.process, r.type, counts))
    return out


class Layout:
    """Where instance ``i`` of a task runs: its stream path and its top-level run."""

    def __init__(self, rows: list[Row]) -> None:
        self.size: dict[str, int] = {}
        for r in rows:
            self.size[r.task] = max(self.size.get(r.task, 0), r.total)
        self.top = rows[0].task  # the workflow's own task: one instance per run, stream ""
        self._path: dict[tuple[str, int], str] = {}

    def path(self, task: str, i: int) -> str:
        if task == self.top:
            return ""
        key = (task, i)
        cached = self._path.get(key)
        if cached is None:
            parent = PARENT.get(task)
            own = f"{STREAM_KEY.get(task, task)}={i}"
            if parent is None:
                cached = own
            else:
                j = i * self.size[parent] // self.size[task]
                cached = f"{self.path(parent, j)}/{own}"
            self._path[key] = cached
        return cached

    def run(self, task: str, i: int) -> int:
        parent = PARENT.get(task)
        while parent is not None:
            i = i * self.size[parent] // self.size[task]
            task, parent = parent, PARENT.get(parent)
        return i % RUNS


def generate(rows: list[Row], seed: int, retried: float = RETRY_FRACTION) -> Iterator[ProcessRecord]:
    """Yield every attempt of the history: per table row, its instances and their earlier attempts.

    ``retried``: the fraction of instances with an earlier attempt.
    """
    rng = random.Random(seed)
    layout = Layout(rows)
    job_ids = iter(range(5_000_000, 100_000_000))
    for row in rows:
        states = [s for s in STATES for _ in range(row.counts[s])]
        rng.shuffle(states)
        again = _pick_retried(rng, states, retried)
        bundle_job: dict[tuple[int, int], int] = {}
        for i, state in enumerate(states):
            run = layout.run(row.task, i) if row.task != layout.top else i % RUNS
            stream = layout.path(row.task, i)
            top = row.task == layout.top
            task_id = row.process if top else f"{row.task}.bundle"
            map_index = -1 if top else i // BUNDLE_SIZE
            common = {
                "workflow": WORKFLOW,
                "process": row.process,
                "task": row.task,
                "version": row.version,
                "dag_id": DAG_ID,
                "run_id": f"dc1__run{run:02d}",
                "task_id": task_id,
                "map_index": map_index,
                "stream": stream,
                "process_type": row.type.lower(),
            }
            tries = 2 if i in again else 1
            for attempt in range(1, tries + 1):
                latest = attempt == tries
                attempt_state = state if latest else rng.choice(("failed", "terminated", "terminated"))
                job = bundle_job.setdefault((map_index, attempt), next(job_ids))
                yield _attempt(rng, row, common, run, attempt, attempt_state, job, i)


def _pick_retried(rng: random.Random, states: list[str], fraction: float = RETRY_FRACTION) -> set[int]:
    """A ``fraction`` of the instances had an earlier failed or terminated attempt: half failed again."""
    want = round(fraction * len(states))
    bad = [i for i, s in enumerate(states) if s in ("failed", "terminated")]
    good = [i for i, s in enumerate(states) if s == "success"]
    chosen = rng.sample(bad, min(len(bad), want // 2 + want % 2))
    chosen += rng.sample(good, min(len(good), want - len(chosen)))
    return set(chosen)


def _attempt(
    rng: random.Random, row: Row, common: dict[str, Any], run: int, attempt: int, state: str, job: int, i: int
) -> ProcessRecord:
    base = START + timedelta(days=14 * run / RUNS, seconds=rng.uniform(0, 80_000) + 90_000 * (attempt - 1))
    log_path = (
        f"/pscratch/sd/d/desc/DC1/run{run:02d}/{row.task}/{common['stream'] or 'top'}/"
        f"{row.process}.try{attempt}.log"
    )
    if state == "skipped":
        return ProcessRecord(**common, try_number=attempt, state=state, reason=None,
                             message="not run: an upstream process failed", log_path=None)  # fmt: skip
    if row.type.lower() == "script":
        elapsed = rng.lognormvariate(math.log(2.0), 0.8)
        failed = state != "success"
        return ProcessRecord(
            **common, try_number=attempt, state=state, cluster=None, node="airflow-worker-1",
            exit_code=1 if failed else 0, reason="python-exception" if failed else "success",
            message=f"{row.process} raised RuntimeError" if failed else None,
            start_time=base, end_time=base + timedelta(seconds=elapsed), elapsed_s=round(elapsed, 3),
            total_cpu_s=round(elapsed * rng.uniform(0.5, 0.95), 3),
            max_rss_bytes=int(rng.lognormvariate(math.log(80e6), 0.3)), log_path=log_path,
        )  # fmt: skip
    med_elapsed, med_rss_mb, req_mb, walltime = BATCH_PROFILE.get(row.process, DEFAULT_BATCH_PROFILE)
    elapsed = min(rng.lognormvariate(math.log(med_elapsed), 0.45), walltime * 0.98)
    rss = min(rng.lognormvariate(math.log(med_rss_mb * 2**20), 0.25), req_mb * 2**20 * 0.93)
    exit_code, signal, slurm_state = 0, None, "COMPLETED"
    reason, message = "success", None
    if state == "failed":
        reason, exit_code = rng.choice(FAILED_REASONS)
        slurm_state = "FAILED"
        elapsed *= rng.uniform(0.05, 0.9)
        message = f"{row.process} exited {exit_code}: {reason.replace('-', ' ')} (see the log tail)"
    elif state == "terminated":
        reason, slurm_state = rng.choice(TERMINATED_REASONS)
        if reason == "time-limit":
            elapsed, exit_code = float(walltime), 0
        elif reason == "out-of-memory":
            rss, exit_code, signal = req_mb * 2**20 * rng.uniform(0.97, 1.0), 0, 9
            elapsed *= rng.uniform(0.1, 0.9)
        else:
            elapsed *= rng.uniform(0.05, 0.9)
            exit_code = 0
        message = f"SLURM ended {row.process}: {reason.replace('-', ' ')}; rerun with more resources"
    elif state != "success":
        reason = None
    cpus = 1
    queued = rng.expovariate(1 / 1800)
    start = base + timedelta(seconds=queued)
    return ProcessRecord(
        **common, try_number=attempt, state=state,
        cluster="perlmutter" if rng.random() < 0.7 else "s3df", job_id=str(job),
        step=str(i % BUNDLE_SIZE), slurm_state=slurm_state, exit_code=exit_code, signal=signal,
        reason=reason, message=message, submit_time=base, start_time=start,
        end_time=start + timedelta(seconds=elapsed), elapsed_s=round(elapsed, 1),
        total_cpu_s=round(elapsed * cpus * rng.uniform(0.75, 0.99), 1), max_rss_bytes=int(rss),
        req_cpus=cpus, req_mem_bytes=req_mb * 2**20, req_walltime_s=float(walltime),
        node=f"nid{rng.randrange(1, 3000):06d}", log_path=log_path,
    )  # fmt: skip


def expected(
    rows: list[Row], retried: float = RETRY_FRACTION
) -> tuple[dict[tuple[str, str, str, str], int], int]:
    """The status table the history must give back, and the number of attempts generated."""
    counts = {(r.task, r.version, r.process, s): n for r in rows for s, n in r.counts.items() if n}
    attempts = sum(
        r.total
        + len(_pick_retried(random.Random(0), [s for s in STATES for _ in range(r.counts[s])], retried))
        for r in rows
    )
    return counts, attempts


# --- loading and timing --------------------------------------------------------------------------------


def load(store: HistoryStore, rows: list[Row], seed: int, batch: int, label: str) -> tuple[int, float]:
    store.upgrade()
    started = time.perf_counter()
    n = 0
    chunk: list[ProcessRecord] = []
    last_report = started
    for record in generate(rows, seed):
        chunk.append(record)
        if len(chunk) >= batch:
            store.record(chunk)
            n += len(chunk)
            chunk = []
            if time.perf_counter() - last_report > 30:
                last_report = time.perf_counter()
                rate = n / (last_report - started)
                print(f"  {label}: {n:,} rows, {rate:,.0f} rows/s", flush=True)
    if chunk:
        store.record(chunk)
        n += len(chunk)
    elapsed = time.perf_counter() - started
    with store.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        if store.dialect == "postgresql":
            conn.exec_driver_sql("VACUUM ANALYZE")
        else:
            conn.exec_driver_sql("ANALYZE")
    return n, elapsed


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], Any]:
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


@dataclass
class Measured:
    backend: str
    rows: int
    load_s: float
    size_mb: float
    status_s: list[float]
    usage_s: list[float]
    usage_rows: int
    status_ok: bool
    attempts_ok: bool


def measure(store: HistoryStore, label: str, rows: list[Row], args: argparse.Namespace) -> Measured:
    print(f"{label}: loading ...", flush=True)
    n, load_s = load(store, rows, args.seed, args.batch, label)
    print(f"{label}: {n:,} rows in {load_s:.0f} s ({n / load_s:,.0f} rows/s)", flush=True)
    status_s, table = timed(lambda: status_counts(store.engine), args.repeat)
    usage_s, usage = timed(lambda: process_usage(store.engine, "processEimage"), args.repeat)
    want, want_attempts = expected(rows)
    got = {(t.task, t.version, t.process, t.state): int(t.count) for t in table.itertuples()}
    status_ok = got == want
    attempts_ok = int(table["attempts"].sum()) == want_attempts == n
    if not status_ok:
        for key in sorted(set(got) | set(want)):
            if got.get(key) != want.get(key):
                print(f"  MISMATCH {label} {key}: got {got.get(key)}, want {want.get(key)}")
    with store.engine.connect() as conn:
        if store.dialect == "postgresql":
            size = conn.execute(
                sa.text(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                )
            ).scalar_one()
        else:
            size = Path(str(store.url.database)).stat().st_size
    size_mb = float(size) / 2**20
    return Measured(label, n, load_s, size_mb, status_s, usage_s, len(usage), status_ok, attempts_ok)


def report(results: list[Measured], want_rows: list[Row], scale: float) -> bool:
    print()
    head = (f"{'backend':<11} {'rows':>10} {'load s':>7} {'size MB':>8} | {'status s (median, runs)':<30} | "
            f"{'processEimage usage s (median, runs)':<38} {'rows':>8} | counts")  # fmt: skip
    print(head)
    print("-" * len(head))
    ok = True
    for m in results:
        status = f"{statistics.median(m.status_s):.3f} ({', '.join(f'{t:.3f}' for t in m.status_s)})"
        usage = f"{statistics.median(m.usage_s):.3f} ({', '.join(f'{t:.3f}' for t in m.usage_s)})"
        check = "OK" if m.status_ok and m.attempts_ok else "MISMATCH"
        ok = ok and check == "OK"
        print(f"{m.backend:<11} {m.rows:>10,} {m.load_s:>7.0f} {m.size_mb:>8.0f} | {status:<30} | "
              f"{usage:<38} {m.usage_rows:>8,} | {check}")  # fmt: skip
    print()
    instances = sum(r.total for r in want_rows)
    print(f"process instances (latest attempts): {instances:,} in {len(want_rows)} processes"
          + ("" if scale == 1.0 else f" (the TSV scaled by {scale:.4f})"))  # fmt: skip
    medians = {m.backend: statistics.median(m.status_s) for m in results}
    line = ", ".join(f"{b} {s:.3f} s" for b, s in medians.items())
    met = all(s <= STATUS_TARGET_S for s in medians.values())
    print(f"status table: {line} (target <= {STATUS_TARGET_S:g} s){'' if met else ' MISSED'}")
    return ok and met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tsv", type=Path, default=DEFAULT_TSV, help="the DC1 status table")
    parser.add_argument("--rows", type=int, default=None, help="rows to generate (default: full size)")
    parser.add_argument("--skip-pg", action="store_true", help="SQLite only")
    parser.add_argument("--pg-url", default=os.environ.get("DESC_SITE_HISTORY_DB_URI"),
                        help="PostgreSQL history database (default $DESC_SITE_HISTORY_DB_URI)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=20_000, help="records per HistoryStore.record call")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each query")
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--keep", action="store_true", help="keep the SQLite file and the PostgreSQL schema")
    args = parser.parse_args(argv)

    table = read_tsv(args.tsv)
    full_instances = sum(r.total for r in table)
    full_rows = expected(table)[1]
    scale = 1.0 if args.rows is None or args.rows >= full_rows else args.rows / full_rows
    rows = scaled(table, scale)
    print(f"DC1 status table {args.tsv}: {len(table)} processes, {full_instances:,} instances, "
          f"{full_rows:,} attempts at full size; generating {expected(rows)[1]:,}")  # fmt: skip

    results: list[Measured] = []
    tmp = Path(tempfile.mkdtemp(prefix="history-scale-"))
    sqlite_store = HistoryStore(f"sqlite:///{tmp / 'history.db'}")
    try:
        results.append(measure(sqlite_store, "sqlite", rows, args))
    finally:
        sqlite_store.dispose()
        if not args.keep:
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()
        else:
            print(f"kept {tmp / 'history.db'}")

    if not args.skip_pg:
        if not args.pg_url:
            print("no PostgreSQL: set DESC_SITE_HISTORY_DB_URI (source the site's env.sh) or pass --skip-pg")
            return 1
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(args.pg_url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        pg_store = HistoryStore(
            args.pg_url, engine_options={"connect_args": {"options": f"-csearch_path={schema}"}}
        )
        try:
            results.append(measure(pg_store, "postgresql", rows, args))
        finally:
            pg_store.dispose()
            if args.keep:
                print(f"kept schema {schema}")
            else:
                with admin.begin() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()

    return 0 if report(results, rows, scale) else 1


if __name__ == "__main__":
    sys.exit(main())
