"""Parse cost of a task process: Airflow's floor (a no-op DAG file) vs our DC1 DAG files, side by side.

Run by ``make bench`` (never by ``make test``)::

    source /var/lib/airflow-desc-site/env.sh
    .venv/bin/python benchmarks/parse_cost.py [--repeat 9] [--no-bytecode]

Every task instance is a new task process, and it parses its DAG file before it runs (twice for a
deferred task: at the start and when it resumes). Under LocalExecutor that process is a fork of a
worker that is a fork of the scheduler; Celery's workers fork too. So each sample here is a fork
of a **parent** that has imported what the scheduler has (Airflow, the task runner, the DagBag)
and frozen its GC (LocalExecutor does so before it forks its workers). The fork then does what
``airflow.sdk.execution_time.task_runner.startup`` does before it runs the task:

* **plugins**: load the plugins (the listener manager), which imports airflow-desc's plugin;
* **parse**: ``BundleDagBag`` of the DAG file, inside the parsing context of the task instance
  (``get_parsing_context()`` returns its DAG id and task id, as in a real task).

Two parents, side by side:

* **fresh**: Airflow only: the plugins and everything of airflow-desc are imported in the fork;
* **sched**: as the scheduler is when LocalExecutor forks its workers: a ``Job`` was made, so
  the plugins are loaded and their ``on_starting`` listeners ran in the parent, and every fork
  inherits what they imported.

Three DAG files: a no-op (one ``EmptyOperator``: the floor); ``dags/dc1.py`` (dc1.yaml's 4 variants
+ the local overlay), the task in ``DC1-DM12_imsim-dithered_local``; the DAG file of
``benchmarks/dc1_scale.py`` (one variant). Times are the fork's CPU seconds (``process_time``:
less noisy than wall time on a shared machine; wall time in brackets), median of ``--repeat``.
Bytecode is cached (``__pycache__`` beside the sources, written by a first round not counted) unless
``--no-bytecode`` (what a process with ``PYTHONDONTWRITEBYTECODE=1`` pays: it compiles every
module of airflow-desc, which is not installed compiled when installed editable). The parents'
own start-up is printed once: what a task process would pay on top if it were a new interpreter.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]

NOOP = '''"""A no-op DAG: the floor of a task process."""
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("noop", schedule=None):
    EmptyOperator(task_id="t")
'''

# The parent: run as ``parse_cost.py --parent MODE FILES_JSON REPEAT``; prints one JSON line per sample.
_PARENT = """
import gc, json, os, sys, time
mode, files, repeat = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
cpu0 = time.process_time()
import airflow  # noqa: F401
from airflow.sdk.execution_time import task_runner
from airflow.sdk.definitions._internal.dag_parsing_context import _airflow_parsing_context_manager
from airflow.dag_processing.dagbag import BundleDagBag
if mode == "sched":
    from airflow.jobs.job import Job
    Job(job_type="SchedulerJob")  # its __init__ calls the plugins' on_starting, as the scheduler's does
print(json.dumps({"parent": mode, "cpu": time.process_time()}), flush=True)
gc.freeze()


def sample(path, bundle, dag_id, task_id):
    cpu0, wall0 = time.process_time(), time.perf_counter()
    task_runner.get_listener_manager()
    cpu1, wall1 = time.process_time(), time.perf_counter()
    with _airflow_parsing_context_manager(dag_id=dag_id, task_id=task_id):
        bag = BundleDagBag(
            dag_folder=path, safe_mode=False, load_op_links=False, bundle_path=bundle,
            bundle_name="dags-folder",
        )
    cpu2, wall2 = time.process_time(), time.perf_counter()
    dag = bag.dags.get(dag_id)
    return {
        "plugins": cpu1 - cpu0, "parse": cpu2 - cpu1,
        "plugins_wall": wall1 - wall0, "parse_wall": wall2 - wall1,
        "dags": len(bag.dags), "tasks": len(dag.tasks) if dag else 0,
        "task_found": bool(dag and task_id in dag.task_dict),
        "errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()},
        "modules": len(sys.modules),
    }


for round_ in range(repeat + 1):  # round 0 warms the bytecode cache and is not kept
    for name, (path, bundle, dag_id, task_id) in files.items():
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                out = sample(path, bundle, dag_id, task_id)
            except BaseException as exc:  # reported by the parent
                out = {"errors": {path: repr(exc)}}
            os.write(write, json.dumps(out).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as stream:
            result = json.loads(stream.read() or "{}")
        os.waitpid(pid, 0)
        if round_:
            print(json.dumps({"file": name, **result}), flush=True)
"""


def _bench_dag_file(folder: pathlib.Path) -> tuple[pathlib.Path, str]:
    """Write benchmarks/dc1_scale.py's DAG file (scale 0.1) under ``folder``; return it and its DAG id."""
    spec = importlib.util.spec_from_file_location("dc1_scale", ROOT / "benchmarks" / "dc1_scale.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_dags(folder, 0.1, 0.2, 50.0)
    return folder / "dc1_bench.py", str(module.DAG_ID)


def _environment(home: pathlib.Path, bytecode: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    env.pop("PYTHONPYCACHEPREFIX", None)  # it would hide the bytecode installed with Airflow
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run_parent(
    mode: str, files: dict[str, tuple[str, str, str, str]], repeat: int, env: dict[str, str]
) -> list[Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _PARENT, mode, json.dumps(files), str(repeat)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"the {mode} parent failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=9, help="samples per DAG file and parent (median)")
    parser.add_argument("--no-bytecode", action="store_true", help="as with PYTHONDONTWRITEBYTECODE=1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parse-cost-") as tmp:
        root = pathlib.Path(tmp)
        (root / "noop").mkdir()
        (root / "noop" / "noop.py").write_text(NOOP)
        bench_file, bench_dag = _bench_dag_file(root / "bench")
        files = {
            "no-op DAG file (floor)": (str(root / "noop" / "noop.py"), str(root / "noop"), "noop", "t"),
            "dags/dc1.py (5 DAGs)": (
                str(ROOT / "dags" / "dc1.py"), str(ROOT / "dags"), "DC1-DM12_imsim-dithered_local", "verdict",
            ),
            "dc1_scale.py's (1 DAG)": (str(bench_file), str(bench_file.parent), bench_dag, "verdict"),
        }  # fmt: skip
        env = _environment(root / "home", bytecode=not args.no_bytecode)
        results = {mode: _run_parent(mode, files, args.repeat, env) for mode in ("fresh", "sched")}
    parents = {r["parent"]: float(r["cpu"]) for rows in results.values() for r in rows if "parent" in r}
    results = {mode: [r for r in rows if "file" in r] for mode, rows in results.items()}
    failed = [r for rows in results.values() for r in rows if r.get("errors") or not r.get("task_found")]
    if failed:
        print(f"parse failed: {failed[0]}")
        return 1
    print(
        "task process start-up: plugins + DAG file parse, CPU ms of the fork (wall ms), "
        f"median of {args.repeat}; bytecode {'off' if args.no_bytecode else 'cached'}"
    )
    header = (
        f"{'DAG file':<26} {'parent':<6} {'tasks':>5} "
        f"{'plugins':>14} {'parse':>14} {'total':>14} {'x floor':>8}"
    )
    print(header)
    print("-" * len(header))
    floor: dict[str, float] = {}
    for name in files:
        for mode, rows in results.items():
            mine = [r for r in rows if r["file"] == name]

            def med(key: str, rows: list[Any] = mine) -> float:
                return 1000 * statistics.median(float(r[key]) for r in rows)

            total = statistics.median(1000 * (float(r["plugins"]) + float(r["parse"])) for r in mine)
            total_wall = statistics.median(
                1000 * (float(r["plugins_wall"]) + float(r["parse_wall"])) for r in mine
            )
            floor.setdefault(mode, total)
            print(
                f"{name:<26} {mode:<6} {mine[0]['tasks']:>5} "
                f"{med('plugins'):>5.0f} ({med('plugins_wall'):>5.0f}) "
                f"{med('parse'):>5.0f} ({med('parse_wall'):>5.0f}) "
                f"{total:>5.0f} ({total_wall:>5.0f}) {total / floor[mode]:>7.1f}x"
            )
    print(
        "the parents' own start-up (interpreter, Airflow, task runner; once, not per task process): "
        + ", ".join(f"{mode} {1000 * cpu:.0f} ms" for mode, cpu in parents.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
