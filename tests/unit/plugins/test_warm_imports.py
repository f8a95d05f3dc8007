"""airflow-desc imported once in each Airflow job process, for its forks (plugins.warm_imports)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[3]

# In a fresh interpreter: what a job process has imported of airflow-desc once the plugins' listeners
# saw it start, and what parsing the DC1 DAG file then still imports (what each fork would pay).
_JOB = """
import json, sys
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.jobs.job import Job
from airflow_desc.plugins import warm_imports

ours = lambda: {m for m in sys.modules if m.startswith("airflow_desc.")}
warm_imports.on_starting(component=object())  # a task runner's marker, say: not a job
not_a_job = "airflow_desc.workflow.render" in sys.modules
Job()  # Airflow calls the plugins' on_starting here, as the scheduler does before it starts its executor
warmed = ours()
bag = BundleDagBag(
    dag_folder=sys.argv[1], bundle_path=sys.argv[2], bundle_name="dags-folder", safe_mode=False
)
print(json.dumps({
    "not_a_job": not_a_job, "warmed": sorted(warmed), "parse_imported": sorted(ours() - warmed),
    "dags": sorted(bag.dags), "errors": [str(e) for e in bag.import_errors.values()],
}))
"""


def test_a_job_process_imports_what_parsing_a_generated_dag_file_needs(tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
    env.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        DESC_CLUSTERS_FILE=str(ROOT / "tests" / "data" / "clusters" / "site.yaml"),
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _JOB, str(ROOT / "dags" / "dc1.py"), str(ROOT / "dags")],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["errors"] == []
    assert "DC1-DM12_imsim-dithered" in out["dags"]
    assert not out["not_a_job"]
    assert "airflow_desc.workflow.render" in out["warmed"]
    assert out["parse_imported"] == []
