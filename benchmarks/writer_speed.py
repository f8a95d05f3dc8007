"""The history writer into PostgreSQL: the multi-row upsert and COPY side by side, 4 processes at once.

Run by ``make bench`` (never by ``make test``) as root on the local site's machine::

    source /var/lib/airflow-desc-site/env.sh
    .venv/bin/python benchmarks/writer_speed.py [--rows 200000] [--retried 0.15] [--writers 4]
        [--batch 20000] [--pairs 1] [--pg-url URL]

The DC1-shaped history of ``history_scale.py`` (its generator, that fraction of instances retried;
``--rows`` attempts at 3 %, default 200,000, i.e. a fifth of DC1; generated before the clock
starts) is written through :meth:`HistoryStore.record` by ``--writers`` processes at once, each
taking whole runs in calls of ``--batch`` records, as flushers and loads do (``--batch 0``: one
call per task instance try, as workers do), into a fresh schema, once per path:

* ``upsert``: ``copy_threshold=None``, the multi-row ``INSERT ... VALUES ... ON CONFLICT`` (the
  writer before COPY);
* ``copy``: the writer's default (:data:`~airflow_desc.history.writer.COPY_THRESHOLD`): a batch of
  that many attempts or more goes through ``COPY`` (:mod:`airflow_desc.history.copy_rows`).

The two paths alternate (``--pairs`` times), each in its own schema, so that a loaded machine
weighs on both alike. For each it prints the wall time, records/s, the time a 1,000,000-attempt
history would take at that rate (against the target of 120 s: issue #13, item 4) and copy's
speed-up over the upsert, with the CPU each path cost the writers and (a private cluster) the
server, and checks that the status table equals the generated counts. Exit status 1 when the
table is wrong or ``copy`` misses the target.

Where: ``--pg-url`` (e.g. ``$DESC_SITE_HISTORY_DB_URI``, under ``flock -s /tmp/desc-site.lock``), else
a PostgreSQL cluster of its own (``$DESC_SITE_PG_BIN``'s ``initdb`` in a temporary directory, a free
port, ``fsync=off`` like the site's; removed at the end), which needs no lock.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))  # tests.integration.private_postgres

import history_scale  # noqa: E402  # the DC1-shaped generator, beside this file
import status_speed  # noqa: E402  # the writers' processes and fresh schemas, beside this file

from airflow_desc.history.writer import COPY_THRESHOLD  # noqa: E402
from tests.integration.private_postgres import PrivatePostgres  # noqa: E402

FULL_ATTEMPTS = status_speed.FULL_ATTEMPTS
TARGET_S = status_speed.FULL_LOAD_TARGET_S
PATHS: dict[str, dict[str, Any]] = {"upsert": {"copy_threshold": None}, "copy": {}}


@dataclass
class Run:
    """One load: its wall time and the CPU it cost the writers and (a private cluster) the server."""

    seconds: float
    client_cpu: float
    server_cpu: float | None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write(
    path: str,
    pg_url: str,
    cluster: PrivatePostgres | None,
    records: list[Any],
    rows: list[Any],
    args: argparse.Namespace,
) -> Run:
    """Write ``records`` along ``path`` into a fresh schema (checked, or exit 1)."""
    with status_speed.FreshHistory("postgresql", pg_url) as (store, _url, options):
        status_speed._SHARES[:] = status_speed.record_calls(records, args.batch, args.writers)
        store.upgrade()
        client, server = _children_cpu(), cluster and cluster.backends_cpu()
        seconds = status_speed.load(store, options, args.writers, **PATHS[path])
        # The writers' backends ended with their connections: the postmaster reaped them.
        server_cpu = None if cluster is None else cluster.backends_cpu() - server
        run = Run(seconds, _children_cpu() - client, server_cpu)
        if not status_speed.check(store, rows, args.retried, path):
            sys.exit(1)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tsv", type=Path, default=history_scale.DEFAULT_TSV, help="the DC1 status table")
    parser.add_argument("--rows", type=int, default=200_000, help="attempts at 3 %% retried (0: full size)")
    parser.add_argument("--retried", type=float, default=0.15, help="fraction of instances retried")
    parser.add_argument("--writers", type=int, default=4, help="writer processes")
    parser.add_argument("--batch", type=int, default=20_000, help="records a call (0: a task instance)")
    parser.add_argument("--pairs", type=int, default=1, help="upsert, copy runs, alternating")
    parser.add_argument("--pg-url", default=None, help="a PostgreSQL database (default: a private cluster)")
    parser.add_argument("--paths", default="upsert,copy", help="which paths (the ratio needs both)")
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args(argv)
    # Throughput, not the history's deadlines: on a loaded machine a 1,000-row upsert may take longer
    # than the default 5 s statement timeout (and then 6 s reply deadline), which would fail the run.
    for name, seconds in (("STATEMENT", "120"), ("REPLY", "180")):
        os.environ.setdefault(f"AIRFLOW__DESC__HISTORY_{name}_TIMEOUT", seconds)

    table = history_scale.read_tsv(args.tsv)
    full_rows = history_scale.expected(table)[1]
    scale = 1.0 if not args.rows or args.rows >= full_rows else args.rows / full_rows
    rows = history_scale.scaled(table, scale)
    records = list(history_scale.generate(rows, args.seed, args.retried))
    calls = sum(len(c) for c in status_speed.record_calls(records, args.batch, args.writers))
    print(f"{len(records):,} attempts ({args.retried:.0%} retried), {args.writers} writers, "
          f"{calls:,} record() calls; COPY from {COPY_THRESHOLD} attempts a batch", flush=True)  # fmt: skip
    cluster = None
    if args.pg_url is None:
        cluster = PrivatePostgres.create(os.environ["DESC_SITE_PG_BIN"])
    try:
        pg_url = args.pg_url or cluster.url()  # type: ignore[union-attr]
        runs: dict[str, list[Run]] = {path: [] for path in args.paths.split(",")}
        for _ in range(args.pairs):
            for path in runs:
                run = write(path, pg_url, cluster, records, rows, args)
                runs[path].append(run)
                print(
                    f"  {path}: {run.seconds:.1f} s, {len(records) / run.seconds:,.0f} records/s", flush=True
                )
    finally:
        if cluster is not None:
            cluster.destroy()
    met = report(runs, len(records), args.writers, len(records) // calls)
    return 0 if met else 1


def report(runs: dict[str, list[Run]], attempts: int, writers: int, per_call: int) -> bool:
    """Print each path's runs, its median projected to 1M attempts against the target, and the ratio.

    Return whether the writer's default path (``copy``) met the target.
    """
    print()
    head = (f"{'path':<7} {'runs (s)':<18} {'records/s':>10} {'1M attempts':>12} {'target':>7} {'ratio':>6}"
            f"  CPU s per 1M attempts: writers + server")  # fmt: skip
    print(head)
    print("-" * len(head))
    scale = FULL_ATTEMPTS / attempts
    median = {path: statistics.median(r.seconds for r in done) for path, done in runs.items()}
    for path, done in runs.items():
        full = median[path] * scale
        met = "" if full <= TARGET_S else " MISSED"
        client = statistics.median(r.client_cpu for r in done) * scale
        servers = [r.server_cpu for r in done if r.server_cpu is not None]
        cpu = f"{client:.0f} + {statistics.median(servers) * scale:.0f}" if servers else f"{client:.0f} + ?"
        times = ", ".join(f"{r.seconds:.1f}" for r in done)
        print(f"{path:<7} {times:<18} {attempts / median[path]:>10,.0f} "
              f"{full:>11.1f}s {TARGET_S:>6.0f}s {full / TARGET_S:>6.2f}  {cpu}{met}")  # fmt: skip
    if len(median) == 2:
        print(f"copy / upsert: {median['upsert'] / median['copy']:.2f}x as fast ({writers} writers, "
              f"{per_call:,} records a call, medians)")  # fmt: skip
    return "copy" not in median or median["copy"] * scale <= TARGET_S


if __name__ == "__main__":
    sys.exit(main())
