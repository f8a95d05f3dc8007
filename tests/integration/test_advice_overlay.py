"""Advice applied: `airflow-desc advice --write` from a real run's history, rendered by the DAG file,
makes the next run's job ask SLURM for the advised memory and walltime (sacct's ReqMem, Timelimit)."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys

from airflow_desc.history import JsonLinesRecorder, open_history
from airflow_desc.workflow.overlays import load_overlay
from tests.integration.airflow_env import AirflowEnv, explain
from tests.integration.dags.desc_it_advice import SPEC

MIB = 2**20
AIRFLOW_DESC = pathlib.Path(sys.executable).with_name("airflow-desc")


def test_a_dag_rendered_with_the_advice_overlay_asks_slurm_for_the_advice(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    first = tmp_path / "first.jsonl"
    proc = airflow_env.dags_test("desc_it_advice", history=first)
    [used] = JsonLinesRecorder(first).read()
    assert used.state == "success", explain(proc)
    assert (used.req_mem_bytes, used.req_walltime_s) == (1000 * MIB, 1200)  # the spec's, from sacct
    db = f"sqlite:///{tmp_path / 'history.db'}"
    open_history(db).record([used])

    overlay = tmp_path / "advice.yaml"
    cli = subprocess.run(
        [str(AIRFLOW_DESC), "advice", "--db", db, "--workflow", "desc_it_advice",
         "--write", str(overlay), "--extends", str(SPEC)],
        env=airflow_env.env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"wrote {overlay}: memory and walltime of 1 process(es)" in cli.stdout
    _spec, options = load_overlay(overlay)
    advised = options.resources["work"]
    assert advised.memory_mb is not None and advised.walltime_s is not None
    # What it used (200 MB held, a few seconds) with 20 % headroom, rounded up: far below the spec's.
    assert used.max_rss_bytes is not None and advised.memory_mb * MIB >= used.max_rss_bytes * 1.2
    assert advised.memory_mb < 1000 and advised.walltime_s == 60
    assert 'evidence: {task: "desc_it_advice", instances: 1, succeeded: 1' in overlay.read_text()

    second = tmp_path / "second.jsonl"
    with_advice = dataclasses.replace(
        airflow_env, env={**airflow_env.env, "DESC_IT_ADVICE_OVERLAY": str(overlay)}
    )
    proc = with_advice.dags_test("desc_it_advice", history=second)
    [applied] = JsonLinesRecorder(second).read()
    assert applied.state == "success", explain(proc)
    assert applied.req_mem_bytes == advised.memory_mb * MIB, applied
    assert applied.req_walltime_s == advised.walltime_s, applied
