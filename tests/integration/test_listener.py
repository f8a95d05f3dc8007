"""The plugin's listener records script processes run through `airflow dags test`."""

from __future__ import annotations

import pathlib

from airflow_desc.history import JsonLinesRecorder
from tests.integration.airflow_env import AirflowEnv


def test_script_processes_are_recorded(airflow_env: AirflowEnv, tmp_path: pathlib.Path) -> None:
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_scripts", history=history)
    recs = {r.process: r for r in JsonLinesRecorder(history).read()}
    assert set(recs) == {"setupEimageVisits", "wrapup"}, (proc.stdout + proc.stderr)[-4000:]
    setup, wrapup = recs["setupEimageVisits"], recs["wrapup"]
    assert (setup.state, setup.process_type, setup.task, setup.version) == (
        "success",
        "script",
        "DC1-DM12",
        "1.16",
    )
    assert setup.elapsed_s is not None and setup.elapsed_s >= 0
    assert wrapup.state == "failed"
    assert wrapup.reason == "python-exception"
    assert "no visits were ingested for filter r" in (wrapup.message or "")


def test_script_skips_are_recorded_with_the_variant_and_what_is_known_of_why(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_script_skips", history=history)
    recs = {r.process: r for r in JsonLinesRecorder(history).read()}
    assert set(recs) == {"setupEimageVisits", "launchL1L2"}, (proc.stdout + proc.stderr)[-4000:]
    for rec in recs.values():
        assert (rec.state, rec.workflow, rec.variant, rec.extra) == (
            "skipped", "DC1-DM12", "imsim-dithered", {"workflow_version": "1.16"},
        ), rec  # fmt: skip
    # Airflow 3.3 hands the listener no AirflowSkipException: only a reason the task noted is known.
    plain, noted = recs["setupEimageVisits"], recs["launchL1L2"]
    assert (plain.reason, plain.message) == ("skipped", None)
    assert (noted.reason, noted.message) == ("skip-condition", "skip_if holds: not run_level1")
