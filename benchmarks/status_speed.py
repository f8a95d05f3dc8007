"""The status table, the CLI's start-up and the history writer at DC1 scale, each as a ratio to its target.

Run by ``make bench`` (never by ``make test``) against the local site::

    source /var/lib/airflow-desc-site/env.sh
    .venv/bin/python benchmarks/status_speed.py [--rows N] [--retried 0.03,0.15,0.40] [--skip-pg]
        [--writers 4] [--batch task-instance|N] [--repeat 3]

For each backend (a temporary SQLite file; a fresh schema of the site's PostgreSQL history,
``$DESC_SITE_HISTORY_DB_URI``, dropped at the end) and each fraction of retried instances:

1. **writer**: the DC1-shaped history of ``history_scale.py`` (its generator, that fraction of
   instances with an earlier failed or terminated attempt; generated before the clock starts) is
   written by ``--writers`` processes at once (one into SQLite, whose writers take turns at one
   lock) through :meth:`HistoryStore.record`, as workers do:
   each process takes every ``--writers``-th task instance (a bundle's try: up to 64 records) and
   records one task instance per call (``--batch N``: N records per call instead, each process
   taking whole runs, as a spool's flusher; SQLite is written so, in calls of 20,000). Reported in
   records/s and as the time a 1,000,000-attempt history takes, against the target of 120 s.
2. **status**: ``airflow-desc status --no-live --format json --db URL`` end to end (a new process,
   as an operator runs it), and the page's ``status.json`` in a warm process (``current_counts``
   + ``status_table`` + ``to_json``), median of ``--repeat``; target 1 s each. Then the same
   table merged with the live states of every run in progress (``live_status.py``'s worst
   case: a quarter of a million live rows, 10 % cleared, 5 % new); target: at most 1 s more
   than without.
3. **start-up**: the CLI's fixed cost, ``status --no-live`` on a history of one attempt (median);
   target 0.3 s. Python's own start-up (``python -c pass``) is printed beside it.

Every figure is printed as ``measured / target`` (below 1 is met) in one table at the end, and the
status table is checked against the generated counts. Exit status 1 on a wrong table; a missed
target is printed, not fatal (this machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import history_scale  # noqa: E402  # the DC1-shaped generator, beside this file
import live_status  # noqa: E402  # the live rows of the worst case, beside this file

from airflow_desc.history import HistoryStore, ProcessRecord  # noqa: E402
from airflow_desc.history.queries import status_counts  # noqa: E402
from airflow_desc.reports.status import status_table, to_json  # noqa: E402
from airflow_desc.status.current import current_counts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STATUS_TARGET_S = 1.0
LIVE_EXTRA_TARGET_S = 1.0
STARTUP_TARGET_S = 0.3
FULL_LOAD_TARGET_S = 120.0  # a 1,000,000-attempt history through the writer, on PostgreSQL
FULL_ATTEMPTS = 1_000_000

# Each writer's record() calls, made before the writers fork (they inherit them).
_SHARES: list[list[list[ProcessRecord]]] = []


@dataclass
class Figure:
    """One measured figure and its target."""

    backend: str
    retried: float
    what: str
    seconds: float
    target: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.seconds / self.target


def record_calls(
    records: Sequence[ProcessRecord], batch: int, writers: int
) -> list[list[list[ProcessRecord]]]:
    """Cut the history into each writer's ``record()`` calls.

    ``batch`` 0: one call per task instance try (what a worker writes when its task ends), dealt
    out in turn. Else ``batch`` records a call, each writer taking whole runs (a flusher writing
    out a spool: the writers of one run take turns at its lock, which a big batch holds long).
    """
    groups: dict[tuple[Any, ...], list[ProcessRecord]] = {}
    for r in records:
        key = (r.dag_id, r.run_id) if batch else (r.dag_id, r.run_id, r.task_id, r.map_index, r.try_number)
        groups.setdefault(key, []).append(r)
    shares: list[list[list[ProcessRecord]]] = [[] for _ in range(writers)]
    for i, group in enumerate(groups.values()):
        calls = [group[j : j + batch] for j in range(0, len(group), batch)] if batch else [group]
        shares[i % writers].extend(calls)
    return shares


def _write_share(url: str, options: dict[str, Any], k: int, store_kwargs: dict[str, Any]) -> None:
    store = HistoryStore(url, engine_options=options, auto_upgrade=False, **store_kwargs)
    for batch in _SHARES[k]:
        store.record(batch)
    store.dispose()


def load(store: HistoryStore, options: dict[str, Any], writers: int, **store_kwargs: Any) -> float:
    """Write ``_SHARES`` from ``writers`` processes at once (stores of ``store_kwargs``); return the time."""
    store.upgrade()
    url = store.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    procs = [
        context.Process(target=_write_share, args=(url, options, k, store_kwargs)) for k in range(writers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"a writer failed: exit codes {[p.exitcode for p in procs]}")
    with store.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("VACUUM ANALYZE" if store.dialect == "postgresql" else "ANALYZE")
    return elapsed


def median_of(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def cli(url: str, env: dict[str, str], *args: str) -> str:
    """Run ``airflow-desc status --no-live`` on ``url`` in a new process; return what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow_desc.cli", "status", "--no-live", "--db", url, *args],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def measure_status(
    store: HistoryStore, url: str, env: dict[str, str], label: str, retried: float, repeat: int
) -> list[Figure]:
    figures = []
    cli_s, cli_runs, _ = median_of(lambda: cli(url, env, "--format", "json"), repeat)
    figures.append(Figure(label, retried, "airflow-desc status --no-live", cli_s, STATUS_TARGET_S,
                          ", ".join(f"{t:.2f}" for t in cli_runs)))  # fmt: skip
    page_s, page_runs, _ = median_of(
        lambda: to_json(status_table(current_counts(store, live=False).counts)), repeat
    )
    figures.append(Figure(label, retried, "status.json (warm process)", page_s, STATUS_TARGET_S,
                          ", ".join(f"{t:.3f}" for t in page_runs)))  # fmt: skip
    live, cleared, new = live_status.make_live(store, live_status.live_processes(), 2017)

    merged_s, _, _ = median_of(lambda: live_status.merged_table(store, live), repeat)
    note = f"{len(live):,} live rows ({cleared:,} cleared, {new:,} new); merged {merged_s:.3f} s"
    extra = max(merged_s - page_s, 0.0)
    figures.append(
        Figure(label, retried, "live merge: merged - history only", extra, LIVE_EXTRA_TARGET_S, note)
    )
    return figures


def check(store: HistoryStore, rows: list[Any], retried: float, label: str) -> bool:
    want, want_attempts = history_scale.expected(rows, retried)
    got_table = status_counts(store.engine)
    got = {(t.task, t.version, t.process, t.state): int(t.count) for t in got_table.itertuples()}
    ok = got == want and int(got_table["attempts"].sum()) == want_attempts
    instances, attempts = int(got_table["count"].sum()), int(got_table["attempts"].sum())
    verdict = "OK" if ok else "MISMATCH"
    print(f"  {label} {retried:.0%}: status table {verdict} ({instances:,} instances, {attempts:,} attempts)")
    return ok


def startup(env: dict[str, str], repeat: int) -> tuple[Figure, float]:
    """Time the CLI on a history of one attempt (after a run that writes the bytecode); CPU beside it."""
    with tempfile.TemporaryDirectory(prefix="status-startup-") as tmp:
        url = f"sqlite:///{tmp}/h.db"
        first = history_scale.read_tsv(history_scale.DEFAULT_TSV)[:1]
        HistoryStore(url).record([next(history_scale.generate(first, 1))])
        cli(url, env)
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s, runs, _ = median_of(lambda: cli(url, env), repeat)
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / repeat
    bare, _, _ = median_of(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), repeat)
    runs_text = ", ".join(f"{t:.2f}" for t in runs)
    note = f"{runs_text}; CPU {cpu:.2f} s a run"
    return Figure(
        "sqlite", 0.0, "CLI start-up (status --no-live, 1 attempt)", s, STARTUP_TARGET_S, note
    ), bare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tsv", type=Path, default=history_scale.DEFAULT_TSV, help="the DC1 status table")
    parser.add_argument(
        "--rows", type=int, default=None, help="attempts at 3 %% retried (default: full size)"
    )
    parser.add_argument("--retried", default="0.03,0.15,0.40", help="fractions of instances retried")
    parser.add_argument("--skip-pg", action="store_true", help="SQLite only")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--pg-url", default=os.environ.get("DESC_SITE_HISTORY_DB_URI"),
                        help="PostgreSQL history database (default $DESC_SITE_HISTORY_DB_URI)")  # fmt: skip
    parser.add_argument("--writers", type=int, default=4, help="writer processes")
    parser.add_argument("--batch", type=int, default=0, help="records per record() call (0: a task instance)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each query")
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.retried.split(",")]

    table = history_scale.read_tsv(args.tsv)
    full_rows = history_scale.expected(table)[1]
    scale = 1.0 if args.rows is None or args.rows >= full_rows else args.rows / full_rows
    rows = history_scale.scaled(table, scale)
    # Bytecode written and read, as an installed package has it (the first run writes it).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": str(REPO)}
    figures: list[Figure] = []
    fig, bare = startup(env, args.repeat)
    figures.append(fig)
    ok = True
    backends = ([] if args.skip_sqlite else ["sqlite"]) + ([] if args.skip_pg else ["postgresql"])
    if "postgresql" in backends and not args.pg_url:
        print("no PostgreSQL: set DESC_SITE_HISTORY_DB_URI (source the site's env.sh) or pass --skip-pg")
        return 1
    for retried in fractions:
        records = list(history_scale.generate(rows, args.seed, retried))
        print(
            f"{retried:.0%} retried: {len(records):,} attempts",
            flush=True,
        )
        for backend in backends:
            with FreshHistory(backend, args.pg_url) as (store, url, options):
                # SQLite's writers take turns at one lock: its history is written by one process,
                # as a spool is flushed (its writer's throughput has no target).
                pg = backend == "postgresql"
                writers, batch = (args.writers, args.batch) if pg else (1, args.batch or 20_000)
                _SHARES[:] = record_calls(records, batch, writers)
                calls = sum(len(share) for share in _SHARES)
                load_s = load(store, options, writers)
                per_full = load_s * FULL_ATTEMPTS / len(records)
                print(
                    f"  {backend}: written in {load_s:.0f} s ({len(records) / load_s:,.0f} records/s) by "
                    f"{writers} process(es), {calls:,} record() calls",
                    flush=True,
                )
                what = f"writer: 1M attempts, {writers} process(es), {len(records) // calls} a call"
                rate = f"{len(records) / load_s:,.0f} records/s"
                figures.append(Figure(backend, retried, what, per_full, FULL_LOAD_TARGET_S, rate))
                figures.extend(measure_status(store, url, env, backend, retried, args.repeat))
                ok = check(store, rows, retried, backend) and ok
        del records
    report(figures, bare)
    return 0 if ok else 1


class FreshHistory:
    """A fresh history on ``backend``: a temporary SQLite file, or a new PostgreSQL schema (dropped)."""

    def __init__(self, backend: str, pg_url: str | None) -> None:
        self.backend, self.pg_url = backend, pg_url
        self.tmp: tempfile.TemporaryDirectory[str] | None = None
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> tuple[HistoryStore, str, dict[str, Any]]:
        if self.backend == "sqlite":
            self.tmp = tempfile.TemporaryDirectory(prefix="status-speed-")
            self.url, self.options = f"sqlite:///{self.tmp.name}/history.db", {}
        else:
            assert self.pg_url
            with sa.create_engine(self.pg_url).begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{self.schema}"')
            self.options = {"connect_args": {"options": f"-csearch_path={self.schema}"}}
            # The CLI's --db: the schema goes in the URL's libpq options.
            self.url = (
                sa.make_url(self.pg_url)
                .update_query_dict({"options": f"-csearch_path={self.schema}"})
                .render_as_string(hide_password=False)
            )
        self.store = HistoryStore(self.url if self.backend == "sqlite" else self.pg_url,
                                  engine_options=self.options)  # fmt: skip
        return self.store, self.url, self.options

    def __exit__(self, *exc: object) -> None:
        self.store.dispose()
        if self.tmp is not None:
            self.tmp.cleanup()
        else:
            assert self.pg_url
            engine = sa.create_engine(self.pg_url)
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{self.schema}" CASCADE')
            engine.dispose()


def report(figures: list[Figure], bare: float) -> None:
    print()
    head = f"{'backend':<11} {'retried':>7}  {'figure':<48} {'measured':>9} {'target':>7} {'ratio':>6}  notes"
    print(head)
    print("-" * len(head))
    for f in figures:
        met = "" if f.ratio <= 1 else " MISSED"
        print(f"{f.backend:<11} {f.retried:>7.0%}  {f.what:<48} {f.seconds:>8.3f}s {f.target:>6.1f}s "
              f"{f.ratio:>6.2f}  {f.note}{met}")  # fmt: skip
    print(f"(python -c pass: {bare:.3f} s)")


if __name__ == "__main__":
    sys.exit(main())
