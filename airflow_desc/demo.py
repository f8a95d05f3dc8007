"""`make demo`: run the demo DAG through Airflow on the local site, print the table, write the report.

Usage: python -m airflow_desc.demo [--out DIR]. Needs the site's environment
(``source $DESC_SITE_DIR/env.sh``), which ``make demo`` provides.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from airflow_desc.history import JsonLinesRecorder, ProcessRecord

REPO = Path(__file__).resolve().parent.parent
STATES = ("success", "failed", "terminated", "cancelled", "skipped")


def _airflow(args: list[str], env: dict[str, str], log: Path) -> int:
    airflow = Path(sys.executable).with_name("airflow")
    with open(log, "a") as f:
        return subprocess.run([str(airflow), *args], env=env, stdout=f, stderr=subprocess.STDOUT).returncode


def status_table(records: list[ProcessRecord]) -> str:
    """Render the per-process table (latest attempt per process instance; attempts counted apart)."""
    latest: dict[tuple[str, str, str, int], ProcessRecord] = {}
    attempts: Counter[str] = Counter()
    for r in sorted(records, key=lambda r: r.try_number):
        latest[(r.task_id, r.stream, r.process, r.map_index)] = r
        attempts[r.process] += 1
    by_process: dict[str, list[ProcessRecord]] = defaultdict(list)
    for r in latest.values():
        by_process[r.process].append(r)
    head = f"{'process':<24}{'cluster':<12}" + "".join(f"{s:>11}" for s in STATES)
    head += f"{'total':>7}{'attempts':>10}{'cpu s':>9}{'wall s':>9}{'maxrss MB':>11}"
    lines = [head, "-" * len(head)]
    for process, recs in sorted(by_process.items()):
        counts = Counter(r.state for r in recs)
        cpu = sum(r.total_cpu_s or 0 for r in recs)
        wall = sum(r.elapsed_s or 0 for r in recs)
        rss = max((r.max_rss_bytes or 0) for r in recs) / 2**20
        clusters = ",".join(sorted({r.cluster or "-" for r in recs}))
        lines.append(
            f"{process:<24}{clusters:<12}" + "".join(f"{counts[s]:>11}" for s in STATES)
            + f"{len(recs):>7}{attempts[process]:>10}{cpu:>9.1f}{wall:>9.1f}{rss:>11.0f}"
        )  # fmt: skip
    return "\n".join(lines)


def write_report(records: list[ProcessRecord], out: Path) -> list[Path]:
    """Write every attempt as CSV and a CPU-vs-wall-clock figure per process (seaborn)."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame([r.to_json() for r in records]).drop(columns=["extra"])
    csv = out / "process_instances.csv"
    frame.to_csv(csv, index=False)
    grid = sns.relplot(data=frame, x="elapsed_s", y="total_cpu_s", hue="process", style="state", s=80)
    grid.set_axis_labels("wall clock (s)", "CPU time (s)")
    grid.figure.suptitle("CPU time vs wall clock, every attempt", y=1.02)
    png = out / "cpu_vs_wall.png"
    grid.savefig(png, dpi=110)
    return [csv, png]


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return 0 when the DAG ran and every process instance was recorded."""
    parser = argparse.ArgumentParser(prog="python -m airflow_desc.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="directory for Airflow home, history, report")
    args = parser.parse_args(argv)
    if "DESC_CLUSTERS_FILE" not in os.environ:
        print("DESC_CLUSTERS_FILE is not set: run `make demo`, or `source $DESC_SITE_DIR/env.sh` first.")
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    history = out / "history.jsonl"
    history.unlink(missing_ok=True)
    log = out / "airflow.log"
    log.unlink(missing_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(out / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DESC_HISTORY_JSONL": str(history),
    }
    t0 = time.monotonic()
    print(f"[demo] airflow db migrate (Airflow home {env['AIRFLOW_HOME']})")
    if _airflow(["db", "migrate"], env, log) != 0:
        print(f"[demo] airflow db migrate failed; see {log}")
        return 1
    print("[demo] airflow dags test desc_demo: 8 SLURM jobs on perlmutter and s3df over SSH ...")
    rc = _airflow(["dags", "test", "desc_demo"], env, log)
    records = JsonLinesRecorder(history).read()
    print(f"[demo] DAG run finished in {time.monotonic() - t0:.0f} s (airflow exit {rc}); log: {log}\n")
    if not records:
        print("[demo] no process instance was recorded: the run failed before any job ended; see the log.")
        return 1
    print(status_table(records))
    print()
    for r in sorted(records, key=lambda r: (str(r.end_time), r.task_id)):
        if r.state != "success":
            print(f"[demo] {r.task_id} try {r.try_number}: {r.state} ({r.reason}): {r.message}")
    for path in write_report(records, out):
        print(f"[demo] wrote {path}")
    expected = {"serialingest", "processEimage", "diaObjectMaker", "level1MakeTempExpCoadd", "wrapup"}
    missing = expected - {r.process for r in records}
    if missing:
        print(f"[demo] not recorded: {', '.join(sorted(missing))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
