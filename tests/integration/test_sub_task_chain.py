"""A chain of sub-tasks a -> b -> c on the local site: `airflow dags test` of dags/desc_it_chain.py.

``a``'s job of stream d1 fails: ``b`` makes no streams (blocked by ``a``) and ``c`` none either
(``b`` counts as Skipped, not as an empty success: the bug was that ``c`` ran), ``finish`` runs after
them, the verdict fails the run on ``a``'s failure.
"""

from __future__ import annotations

import pathlib
import re

from airflow_desc.history import JsonLinesRecorder
from tests.integration.airflow_env import AirflowEnv, explain, task_outcomes


def test_a_failed_first_sub_task_leaves_the_chain_below_it_not_run_and_the_run_failed(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_chain", history=history, timeout=600)
    text = proc.stdout + proc.stderr
    finished = re.search(r"DagRun Finished: .*?run_id=(\S+?), .*?state=(\w+)", text)
    assert finished, explain(proc)
    run_id, run_state = finished.groups()
    records = {
        (r.process, r.stream): r.state for r in JsonLinesRecorder(history).read() if r.run_id == run_id
    }
    assert records == {
        ("makeQuanta", ""): "success",
        ("step_a", "q=d0"): "success",
        ("step_a", "q=d1"): "failed",
        ("finish", ""): "success",
    }, explain(proc)  # nothing of b or c ran
    assert "no streams for the run: a failed" in text and "no streams for the run: b skipped" in text
    outcomes = task_outcomes(text)
    assert (outcomes["b.streams"], outcomes["c.streams"], outcomes["verdict"], run_state) == (
        "success", "success", "failed", "failed",
    )  # fmt: skip
