"""The status table with live states merged, at DC1 scale, side by side with the history-only table.

Run by ``make bench`` (never by ``make test``)::

    .venv/bin/python benchmarks/live_status.py [--db sqlite:////path/history.db] [--rows N]

What it does:

1. Takes a DC1-shaped history of ~1,000,000 attempts: ``--db`` (e.g. the SQLite file that
   ``benchmarks/history_scale.py --skip-pg --keep`` leaves), or generates one into a temporary
   SQLite file with that benchmark's generator (~90 s; ``--rows`` for a smaller one).
2. Makes the live task instances of all 15 runs in progress at once, as ``status.live`` would
   read them from Airflow: one live process instance per latest attempt of each process that is
   not nested inside a bundle in ``dags/workflows/dc1.yaml`` (the top-level and mapped processes,
   and each bundled sub-task's own processes: a bundle's nested streams are not task instances).
   A tenth of their task instances are cleared at random (queued for their next try, every row of
   the task instance alike; a cleared bundle's successes keep their records) and the rest
   finished; plus
   5 % more not recorded yet (no state: Waiting).
3. Times, median of ``--repeat``: the history-only table (``status_counts`` + ``status_table``;
   ``plain``: ``summed_counts`` + ``status_rows``, what ``airflow-desc status --no-live`` does), the
   merged one (``merge_with_history``, pandas; ``plain``: the DBAPI reads and ``merge_rows``, what
   ``airflow-desc status`` does once the live rows are read) and, side by side, the merge before
   them (every latest attempt of the live tasks read, then ``merge_live``); prints them, what merging
   adds to the history-only table, and checks that the three merges give the same table, and that the
   cleared instances left their recorded columns for Queued, the new ones are Waiting, the Total is the
   history's plus the new ones. Target: merged table <= 3 s at full size, the worst case (all 15
   runs in progress at once, so a quarter of a million live rows and their records are read and
   matched; a few runs in progress cost proportionally less). Exit status 1 on a wrong table or a
   missed target.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import history_scale  # noqa: E402  # the generator of the DC1-shaped history, beside this file

from airflow_desc.clusters import load_cluster_profiles  # noqa: E402
from airflow_desc.history import HistoryStore  # noqa: E402
from airflow_desc.history.live_records import LiveRecords  # noqa: E402
from airflow_desc.history.queries import latest_attempts, status_counts  # noqa: E402
from airflow_desc.history.status_read import open_dbapi, summed_counts  # noqa: E402
from airflow_desc.reports.status import status_table  # noqa: E402
from airflow_desc.reports.status_rows import status_rows  # noqa: E402
from airflow_desc.status.current import merge_with_history, recorded_of_live  # noqa: E402
from airflow_desc.status.live import LIVE_COLUMNS  # noqa: E402
from airflow_desc.status.merge import merge_live  # noqa: E402
from airflow_desc.status.merge_rows import merge_rows  # noqa: E402
from airflow_desc.workflow.build import build_graph  # noqa: E402
from airflow_desc.workflow.spec import load_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 3.0


def live_processes() -> set[str]:
    """Processes whose instances are task instances, or direct processes of a bundle's streams."""
    spec = load_spec(
        REPO / "dags" / "workflows" / "dc1.yaml",
        clusters=load_cluster_profiles(REPO / "tests" / "data" / "clusters" / "site.yaml"),
    )
    graph = build_graph(spec, "imsim-dithered")
    names = {p.name for p in graph.iter_processes() if p.runs_as != "in-bundle"}
    names |= {p.name for t in graph.iter_tasks() if t.bundling.state == "bundle" for p in t.processes}
    return names


def make_live(store: HistoryStore, processes: set[str], seed: int) -> tuple[pd.DataFrame, int, int]:
    """Return live rows (:data:`LIVE_COLUMNS`), the number cleared and the number not recorded yet."""
    with store.engine.connect() as conn:
        dag_runs = [tuple(r) for r in conn.execute(sa.text("SELECT dag_id, run_id FROM runs"))]
    recorded = latest_attempts(store.engine, dag_runs, processes=sorted(processes))
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    cleared = 0
    queued: dict[tuple[Any, ...], bool] = {}  # a task instance's state is one for all its instances
    for r in recorded.itertuples(index=False):
        bundled = str(r.task_id).endswith(".bundle")
        ti = (r.dag_id, r.run_id, r.task_id, r.map_index)
        if ti not in queued:
            queued[ti] = rng.random() < 0.1
        # A cleared bundle reruns only what did not succeed: its successes stay Success.
        again = queued[ti] and not (bundled and r.state == "success")
        cleared += again
        rows.append({
            "dag_id": r.dag_id, "run_id": r.run_id, "task_id": r.task_id, "map_index": r.map_index,
            "stream": r.stream if bundled else None, "process": r.process, "task": r.task,
            "version": r.version, "process_type": r.process_type,
            "ti_state": "queued" if queued[ti] else "success",
            "try_number": int(r.try_number) + 1 if again else int(r.try_number), "bundled": bundled,
        })  # fmt: skip
    new = len(rows) // 20
    for i, r in enumerate(recorded.sample(n=new, random_state=seed).itertuples(index=False)):
        rows.append({
            "dag_id": r.dag_id, "run_id": r.run_id, "task_id": r.task_id, "map_index": 10_000_000 + i,
            "stream": None, "process": r.process, "task": r.task, "version": r.version,
            "process_type": r.process_type, "ti_state": None, "try_number": 0, "bundled": False,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(LIVE_COLUMNS)), cleared, new


def merged_table(store: HistoryStore, live: pd.DataFrame) -> pd.DataFrame:
    """The status table merged with ``live`` (what ``current_counts`` does once live rows are read)."""
    return status_table(*merge_with_history(store.engine, status_counts(store.engine), live))


def merged_table_before(store: HistoryStore, live: pd.DataFrame) -> pd.DataFrame:
    """The same, as merged before ``merge_with_history``: every latest attempt of the live tasks read."""
    counts = status_counts(store.engine)
    return status_table(*merge_live(counts, live, recorded_of_live(store.engine, live)))


def merged_rows(url: str, live: list[dict[str, Any]]) -> list[list[Any]]:
    """The same table as ``airflow-desc status`` builds it: DBAPI reads, plain rows (``merge_rows``)."""
    opened = open_dbapi(url)
    assert opened is not None, url
    conn, placeholder, _ = opened
    try:
        counts = summed_counts(url)
        assert counts is not None
        merged, live_counts = merge_rows(counts, live, LiveRecords(conn, placeholder))
        return status_rows([*merged, *live_counts])
    finally:
        conn.close()


def print_extras(times: dict[str, list[float]]) -> None:
    """Print what merging adds to the history-only table: pandas, before, plain."""
    plain_s = statistics.median(times["history only"])
    extra, before = (
        statistics.median(times["merged with live"]) - plain_s,
        statistics.median(times["merged, before"]) - plain_s,
    )
    less = before / max(extra, 1e-9)
    print(f"merged - history only: {extra:.3f} s (before: {before:.3f} s; {less:.1f}x less)")
    plain_extra = statistics.median(times["merged, plain"]) - statistics.median(times["history, plain"])
    print(f"plain (airflow-desc status): merged - history only: {plain_extra:.3f} s "
          f"({extra / max(plain_extra, 1e-9):.1f}x less than pandas' {extra:.3f} s; target +1 s"
          f"{'' if plain_extra <= 1.0 else ' MISSED'})")  # fmt: skip


def wrong_table(tables: dict[str, Any]) -> str | None:
    """Say which table differs from the one it must equal, if one does."""
    if not tables["merged with live"].equals(tables["merged, before"]):
        return "merged table: WRONG (not the table the merge before gives)"
    if tables["merged, plain"] != tables["merged with live"].to_numpy().tolist():
        return "merged table: WRONG (the plain merge's is not the pandas merge's)"
    if tables["history, plain"] != tables["history only"].to_numpy().tolist():
        return "history-only table: WRONG (the plain one is not the pandas one)"
    return None


def open_store(args: argparse.Namespace) -> tuple[HistoryStore, Any]:
    """Return the history (``--db``, or generated into a temporary directory, also returned)."""
    if args.db:
        return HistoryStore(args.db), None
    tmp = tempfile.TemporaryDirectory(prefix="live-status-")
    store = HistoryStore(f"sqlite:///{tmp.name}/history.db")
    rows = history_scale.read_tsv(history_scale.DEFAULT_TSV)
    if args.rows:
        rows = history_scale.scaled(rows, args.rows / history_scale.expected(rows)[1])
    n, load_s = history_scale.load(store, rows, args.seed, 20_000, "sqlite")
    print(f"generated {n:,} attempts in {load_s:.0f} s")
    return store, tmp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="an existing DC1-shaped history (default: generate one)")
    parser.add_argument("--rows", type=int, default=None, help="rows to generate (default: full size)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args(argv)

    store, tmp = open_store(args)
    processes = live_processes()
    live, cleared, new = make_live(store, processes, args.seed)
    print(f"live process instances: {len(live):,} ({cleared:,} cleared and queued, {new:,} not recorded yet)")

    url = str(store.engine.url.render_as_string(hide_password=False))
    live_dicts = live.astype(object).where(live.notna(), None).to_dict("records")  # as live_rows gives them

    def history_only() -> pd.DataFrame:
        return status_table(status_counts(store.engine))

    def history_only_plain() -> list[list[Any]]:
        return status_rows(row[:6] for row in summed_counts(url) or [])

    def merged_plain() -> list[list[Any]]:
        return merged_rows(url, live_dicts)

    def merged() -> pd.DataFrame:
        return merged_table(store, live)

    def merged_before() -> pd.DataFrame:
        return merged_table_before(store, live)

    runs = (("history only", history_only), ("merged with live", merged), ("merged, before", merged_before),
            ("history, plain", history_only_plain), ("merged, plain", merged_plain))  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    cpu: dict[str, list[float]] = {name: [] for name, _ in runs}
    tables: dict[str, Any] = {}
    for _ in range(args.repeat):
        for name, fn in runs:
            t0, c0 = time.perf_counter(), time.process_time()
            tables[name] = fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    for name, values in times.items():
        print(f"{name:<17} {statistics.median(values):.3f} s  ({', '.join(f'{v:.3f}' for v in values)}), "
              f"CPU {statistics.median(cpu[name]):.3f} s")  # fmt: skip
    print_extras(times)
    wrong = wrong_table(tables)
    if wrong:
        print(wrong)
        return 1

    plain, live_table = tables["history only"].iloc[-1], tables["merged with live"].iloc[-1]
    ok = (
        int(live_table["Total"]) == int(plain["Total"]) + new
        and int(live_table["Waiting"]) == int(plain["Waiting"]) + new
        and int(live_table["Queued"]) == int(plain["Queued"]) + cleared
    )
    print("merged table: " + ("OK" if ok else "WRONG") + f" (Total {int(live_table['Total']):,}, "
          f"Queued {int(live_table['Queued']):,}, Waiting {int(live_table['Waiting']):,})")  # fmt: skip
    met = statistics.median(times["merged with live"]) <= TARGET_S
    print(f"merged status table: {statistics.median(times['merged with live']):.3f} s "
          f"(target <= {TARGET_S:g} s){'' if met else ' MISSED'}")  # fmt: skip
    if tmp is not None:
        store.dispose()
        tmp.cleanup()
    return 0 if ok and met else 1


if __name__ == "__main__":
    sys.exit(main())
