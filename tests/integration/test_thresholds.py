"""Thresholds and the run's verdict on the local site: `airflow dags test` of dags/desc_it_thresholds.py.

Four streams of ``work`` (a SLURM job each on perlmutter), visit 3's failing; ``combine`` depends on
``work`` with ``min_success`` 0.75 (it runs; the run is green, the failure tolerated and listed) or
1.0 (it is Skipped with the counts, recorded so; the verdict fails the run and lists the failure).
The same DAG with nothing failing ends green.
"""

from __future__ import annotations

import pathlib
import re

from airflow_desc.history import JsonLinesRecorder, ProcessRecord
from tests.integration.airflow_env import AirflowEnv, explain, task_outcomes


def _run(env: AirflowEnv, dag_id: str, history: pathlib.Path, **conf: str) -> tuple[str, str, dict[str, str]]:
    proc = env.dags_test(dag_id, history=history, conf=conf or None, timeout=600)
    text = proc.stdout + proc.stderr
    finished = re.search(r"DagRun Finished: .*?run_id=(\S+?), .*?state=(\w+)", text)
    assert finished, explain(proc)
    return finished.group(1), text, {**task_outcomes(text), "run": finished.group(2)}


def _records(history: pathlib.Path, run_id: str) -> dict[tuple[str, str], ProcessRecord]:
    return {(r.process, r.stream): r for r in JsonLinesRecorder(history).read() if r.run_id == run_id}


def test_at_the_threshold_the_dependent_runs_and_the_run_is_green(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    run_id, text, outcomes = _run(airflow_env, "desc_it_min_success_075", history)
    records = _records(history, run_id)
    assert records[("step", "visit=3")].state == "failed"
    assert [records[("step", f"visit={v}")].state for v in (1, 2, 4)] == ["success"] * 3
    assert records[("combine", "")].state == "success"
    assert (outcomes["combine"], outcomes["verdict"], outcomes["run"]) == ("success", "success", "success")
    assert "run SUCCESS: 6 process instances (failed 1, success 5)" in text
    assert "1 tolerated, within a met min_success" in text and "work/step [visit=3]: failed" in text
    assert "work: 3 of 4 streams succeeded, min_success 0.75 met" in text


def test_below_the_threshold_the_dependent_is_skipped_and_the_run_fails_until_fixed(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    run_id, text, outcomes = _run(airflow_env, "desc_it_min_success_100", history)
    combine = _records(history, run_id)[("combine", "")]
    assert (combine.state, combine.reason, combine.message) == (
        "skipped", "upstream-failed", "upstream work below its min_success 1: 3 of 4 streams succeeded",
    )  # fmt: skip
    assert (outcomes["combine"], outcomes["verdict"], outcomes["run"]) == ("skipped", "failed", "failed")
    assert "run FAILED: 6 process instances (failed 1, skipped 1, success 4)" in text
    assert "work/step [visit=3]: failed" in text
    # Nothing failing: the same DAG ends green.
    run_id, text, outcomes = _run(airflow_env, "desc_it_min_success_100", history, fail_visit="0")
    assert _records(history, run_id)[("combine", "")].state == "success"
    assert (outcomes["verdict"], outcomes["run"]) == ("success", "success")
    assert "run SUCCESS: 6 process instances (success 6)" in text
