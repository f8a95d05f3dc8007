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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _airflow(args: list[str], env: dict[str, str], log: Path) -> int:
    airflow = Path(sys.executable).with_name("airflow")
    with open(log, "a") as f:
        return subprocess.run([str(airflow), *args], env=env, stdout=f, stderr=subprocess.STDOUT).returncode


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
    log = out / "airflow.log"
    log.unlink(missing_ok=True)
    airflow_home = out / "airflow"
    # A fresh embedded history per demo, so that the table shows this run only.
    (airflow_home / "desc" / "history.db").unlink(missing_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    for var in ("DESC_HISTORY_JSONL", "DESC_HISTORY_CONN_ID"):
        env.pop(var, None)
    t0 = time.monotonic()
    print(f"[demo] airflow db migrate (Airflow home {airflow_home})")
    if _airflow(["db", "migrate"], env, log) != 0:
        print(f"[demo] airflow db migrate failed; see {log}")
        return 1
    print("[demo] airflow dags test desc_demo: 8 SLURM jobs on perlmutter and s3df over SSH ...")
    rc = _airflow(["dags", "test", "desc_demo"], env, log)
    print(f"[demo] DAG run finished in {time.monotonic() - t0:.0f} s (airflow exit {rc}); log: {log}\n")
    os.environ["AIRFLOW_HOME"] = str(airflow_home)
    from airflow_desc.history import open_history
    from airflow_desc.history.queries import process_instances, status_counts
    from airflow_desc.reports.html import write_report
    from airflow_desc.reports.status import attempts_table, format_text, status_table

    store = open_history(f"sqlite:///{airflow_home / 'desc' / 'history.db'}")
    counts = status_counts(store.engine)
    instances = process_instances(store.engine)
    if counts.empty:
        print("[demo] no process instance was recorded: the run failed before any job ended; see the log.")
        return 1
    table = status_table(counts)
    print(format_text(table))
    print()
    print(format_text(attempts_table(counts)))
    print()
    for row in instances.sort_values("end_time").itertuples():
        if row.state != "success":
            print(f"[demo] {row.task_id} try {row.try_number}: {row.state} ({row.reason}): {row.message}")
    index = write_report(out / "report", table, instances, title="airflow-desc demo: a DC1-shaped slice")
    print(f"[demo] wrote {index} (status table, figures, resource advice)")
    expected = {"serialingest", "processEimage", "diaObjectMaker", "level1MakeTempExpCoadd", "wrapup"}
    missing = expected - set(instances["process"])
    if missing:
        print(f"[demo] not recorded: {', '.join(sorted(missing))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
