"""Parse time: the DC1 spec -> its DAGs, as the DAG processor does it (target <= 2 s).

Run by ``make bench`` (never by ``make test``)::

    source /var/lib/airflow-desc-site/env.sh
    .venv/bin/python benchmarks/parse_time.py [--repeat 5]

Three measurements, each the median of ``--repeat`` runs:

* **render**: ``render_dags("dags/workflows/dc1.yaml")`` in a warm interpreter: load and check the
  spec, build the graph of each of the 4 variants, make the 4 DAGs (the per-DAG-file work);
* **DAG file**: ``dags/dc1.py`` parsed by ``DagBag`` in a fresh interpreter (Airflow already
  imported, as in the DAG processor): the 4 DAGs of dc1.yaml plus the local overlay's;
* **serialize**: the DAGs turned into the JSON the scheduler and UI read (information only).

Exit status 1 when the DAG file takes more than the target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "dags" / "workflows" / "dc1.yaml"
DAG_FILE = ROOT / "dags" / "dc1.py"
TARGET_S = 2.0

_FRESH = """
import json, sys, time
import airflow  # noqa: F401 - the DAG processor has Airflow imported already
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
took = time.perf_counter() - start
errors = {k: str(v) for k, v in bag.import_errors.items()}
tasks = sum(len(d.tasks) for d in bag.dags.values())
print(json.dumps({"seconds": took, "dags": sorted(bag.dags), "errors": errors, "tasks": tasks}))
"""


def render_once() -> tuple[float, int, int]:
    from airflow_desc.workflow import registry, render

    registry._REGISTRY.clear()
    start = time.perf_counter()
    dags = render.render_dags(SPEC)
    took = time.perf_counter() - start
    return took, len(dags), sum(len(d.tasks) for d in dags.values())


def dag_file_once() -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH, str(DAG_FILE)],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ,
    )
    if proc.returncode != 0:
        raise SystemExit(f"parsing {DAG_FILE} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("{"))
    result: dict[str, object] = json.loads(line)
    return result


def serialize_once() -> float:
    from airflow.serialization.serialized_objects import DagSerialization

    from airflow_desc.workflow import render

    dags = render.render_dags(SPEC)
    start = time.perf_counter()
    for dag in dags.values():
        DagSerialization.to_dict(dag)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    import airflow  # noqa: F401 - imported once, not measured (the DAG processor has it)

    render_once()  # warm-up: imports of airflow_desc
    renders = [render_once() for _ in range(args.repeat)]
    render_s = statistics.median(r[0] for r in renders)
    files = [dag_file_once() for _ in range(args.repeat)]
    errors = files[0]["errors"]
    if errors:
        print(f"import errors: {errors}")
        return 1
    file_s = statistics.median(float(str(f["seconds"])) for f in files)
    try:
        serialize_s: float | None = statistics.median(serialize_once() for _ in range(args.repeat))
    except ImportError:
        serialize_s = None
    _, ndags, ntasks = renders[0]
    print(f"spec: {SPEC.relative_to(ROOT)}; DAG file: {DAG_FILE.relative_to(ROOT)}; median of {args.repeat}")
    print(f"{'measurement':<34} {'seconds':>8}  what")
    print(f"{'render (spec -> DAGs, warm)':<34} {render_s:>8.3f}  {ndags} DAGs, {ntasks} tasks")
    print(
        f"{'DAG file (DagBag, fresh process)':<34} {file_s:>8.3f}  {len(files[0]['dags'])} DAGs, "  # type: ignore[arg-type]
        f"{files[0]['tasks']} tasks: {', '.join(files[0]['dags'])}"  # type: ignore[arg-type]
    )
    if serialize_s is not None:
        print(f"{'serialize (information)':<34} {serialize_s:>8.3f}  the DAGs of dc1.yaml to JSON")
    ok = file_s <= TARGET_S
    print(f"target: DAG file <= {TARGET_S:.1f} s: {'met' if ok else 'MISSED'} ({file_s:.2f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
