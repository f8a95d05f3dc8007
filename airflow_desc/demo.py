"""`make demo`: run a small DC1 through Airflow on the local site, print the table, write the report.

Usage: python -m airflow_desc.demo [--out DIR] [--scale S] [--dag desc_demo]. Needs the site's
environment (``source $DESC_SITE_DIR/env.sh``), which ``make demo`` provides.

By default it runs ``DC1-DM12_imsim-dithered_local`` (``dags/workflows/dc1-local.yaml``: every
DC1 task and process, resources capped to the local nodes) with ``airflow dags test`` and the
conf ``{"scale": 0.001}``; ``--dag desc_demo`` runs the hand-written slice of ``dags/desc_demo.py``
instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parent.parent
DC1_DAG = "DC1-DM12_imsim-dithered_local"
DC1_OVERLAY = REPO / "dags" / "workflows" / "dc1-local.yaml"
#: What the hand-written slice must have recorded.
SLICE_PROCESSES = {"serialingest", "processEimage", "diaObjectMaker", "level1MakeTempExpCoadd", "wrapup"}


def _airflow(args: list[str], env: dict[str, str], log: Path, progress: DagTestProgress | None = None) -> int:
    """Run ``airflow <args>`` into ``log``; with ``progress``, print a line per finished task as it goes."""
    airflow = Path(sys.executable).with_name("airflow")
    with open(log, "a") as f:
        if progress is None:
            return subprocess.run(
                [str(airflow), *args], env=env, stdout=f, stderr=subprocess.STDOUT
            ).returncode
        proc = subprocess.Popen(
            [str(airflow), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            progress.feed(line)
        return proc.wait()


class DagTestProgress:
    """Follow ``airflow dags test`` output and print one line per task instance that ends.

    ``[demo]   +42s  processVisit.bundle[3] success   (success 12, failed 1, skipped 2)``: the task
    (and map index), how it ended, and the counts so far; the run's verdict when it is logged.

    :param out: where the lines go.
    :param clock: seconds since some start (``time.monotonic``).
    """

    _START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
    _STATE = re.compile(r"new_state=(\w+)")
    _END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
    _VERDICT = re.compile(r"(run (?:FAILED|SUCCESS): .*?process instances \([^)]*\))")

    def __init__(self, out: TextIO = sys.stdout, clock: Any = time.monotonic) -> None:
        self.out = out
        self.clock = clock
        self.t0 = clock()
        self.counts: Counter[str] = Counter()
        self._state: str | None = None
        self._verdicts: set[str] = set()

    def feed(self, line: str) -> None:
        """Read one line of output; print when a task instance ended."""
        if self._START.search(line):
            self._state = None
        elif changed := self._STATE.search(line):
            self._state = changed.group(1)
        elif end := self._END.search(line):
            task, index = end.group(1), int(end.group(2))
            ended = self._state or "unknown"
            if ended == "deferred":  # a deferred task comes back: it ends later
                return
            self.counts[ended] += 1
            name = task if index < 0 else f"{task}[{index}]"
            so_far = ", ".join(f"{s} {n}" for s, n in sorted(self.counts.items()))
            self._print(f"{name} {ended}".ljust(60) + f" ({so_far})")
        elif (verdict := self._VERDICT.search(line)) and verdict.group(1) not in self._verdicts:
            self._verdicts.add(verdict.group(1))  # logged, then raised: said once
            self._print(f"verdict: {verdict.group(1)}")

    def _print(self, text: str) -> None:
        print(f"[demo] {self.clock() - self.t0:>5.0f}s  {text}", file=self.out, flush=True)


def _dc1_order() -> tuple[list[tuple[str, str]], set[str]]:
    """Return the DC1 table's rows in spec order, and the processes that are tasks of their own.

    Those run (or are recorded skipped) in every run; the others run once per stream, and a
    stream whose parent failed is never made.
    """
    from airflow_desc.workflow.registry import load_workflow

    graph = load_workflow(DC1_OVERLAY).graph("imsim-dithered")
    processes = list(graph.iter_processes())
    return [(p.task, p.name) for p in processes], {p.name for p in processes if p.runs_as == "task"}


def _failures(instances: Any) -> None:
    """Print the instances that did not succeed, grouped by process and reason, with one message each."""
    failed = instances[~instances["state"].isin(["success"])]
    if failed.empty:
        print("[demo] every process instance succeeded")
        return
    for (process, state, reason), group in failed.groupby(["process", "state", "reason"], dropna=False):
        message = next((m for m in group["message"] if isinstance(m, str) and m), "")
        print(f"[demo] {len(group):>3} x {process} {state} ({reason}): {message[:150]}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return 0 when the DAG ran and every process instance was recorded."""
    parser = argparse.ArgumentParser(prog="python -m airflow_desc.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo", help="directory for Airflow home, history, report")
    parser.add_argument("--dag", default=DC1_DAG, help=f"the DAG to run (default: {DC1_DAG}; or desc_demo)")
    parser.add_argument("--scale", type=float, default=0.001, help="DC1's scale variable (default: 0.001)")
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
    dc1 = args.dag == DC1_DAG
    test = ["dags", "test", args.dag]
    if dc1:
        test += ["--conf", json.dumps({"scale": args.scale})]
        print(f"[demo] airflow dags test {args.dag} --conf '{{\"scale\": {args.scale}}}': every DC1 task and "
              "process, on perlmutter and s3df over SSH (a few minutes) ...")  # fmt: skip
    else:
        print(f"[demo] airflow dags test {args.dag}: SLURM jobs on perlmutter and s3df over SSH ...")
    rc = _airflow(test, env, log, DagTestProgress())
    print(f"[demo] DAG run finished in {time.monotonic() - t0:.0f} s (airflow exit {rc}); log: {log}\n")
    os.environ["AIRFLOW_HOME"] = str(airflow_home)
    from airflow_desc.history import open_history
    from airflow_desc.history.queries import process_instances, status_counts
    from airflow_desc.reports.html import write_report
    from airflow_desc.reports.status import attempts_table, format_text, status_table

    order, expected = _dc1_order() if dc1 else (None, SLICE_PROCESSES)
    store = open_history(f"sqlite:///{airflow_home / 'desc' / 'history.db'}")
    counts = status_counts(store.engine)
    instances = process_instances(store.engine)
    if counts.empty:
        print("[demo] no process instance was recorded: the run failed before any job ended; see the log.")
        return 1
    table = status_table(counts, order=order)
    print(format_text(table))
    print()
    print(format_text(attempts_table(counts, order=order)))
    print()
    _failures(instances)
    title = f"airflow-desc demo: {'DC1 at scale ' + str(args.scale) if dc1 else 'a DC1-shaped slice'}"
    index = write_report(out / "report", table, instances, title=title)
    print(f"[demo] wrote {index} (status table, figures, resource advice)")
    missing = expected - set(instances["process"])
    if missing:
        print(f"[demo] not recorded: {', '.join(sorted(missing))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
