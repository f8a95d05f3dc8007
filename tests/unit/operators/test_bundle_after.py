"""The bundle planner keeps the spec's two kinds of upstream apart: ``depends_on`` and ``after``.

``after: [X]`` waits for X whatever its end state; through a setup script the kinds compose (a
stream waits for what its setup script waited for, as ``depends_on`` only if both links are).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Any

import pytest

from airflow_desc.pilot import parse_records, validate_manifest
from airflow_desc.workflow.bundle_planner import plan_bundle
from tests.unit.conftest import SiteWorkflow
from tests.unit.pilot.pilot_process import clean_env, pilot_argv, write_manifest


@pytest.fixture
def plan(site_workflow: SiteWorkflow) -> Any:
    workflow, task = site_workflow("edges", "Edges/processVisit", render=True)
    return plan_bundle(workflow, task, [{"visit": 7}], workflow.spec.variables_for(None))


def _edges(plan: Any) -> dict[str, tuple[list[str], list[str]]]:
    entries = validate_manifest(plan.manifest("b"))["instances"]
    return {e["process"]: (e["depends_on"], e["after"]) for e in entries}


def test_the_manifest_keeps_depends_on_and_after_apart(plan: Any) -> None:
    edges = _edges(plan)
    raft = next(i for i in plan.instances if i.process.name == "assemble").id
    sensor = next(i for i in plan.instances if i.process.name == "eimage").id
    assert edges["calibrate"] == ([], [])
    assert edges["report"] == ([], ["visit=7:calibrate"])
    assert edges["qa"] == (["visit=7:calibrate"], ["visit=7:report"])
    # setupRafts runs `after` calibrate: its streams wait for calibrate, whatever its end.
    assert edges["assemble"] == ([], ["visit=7:calibrate"])
    # setupSensors `depends_on` assemble: the sensors need it; calibrate is still only waited for.
    assert edges["eimage"] == ([raft], ["visit=7:calibrate"])
    # `after` a sub-task: every batch instance below it, whatever their end.
    assert edges["summarise"] == ([], sorted([raft, sensor]))


def test_the_pilot_runs_what_only_waits_for_a_failed_upstream(plan: Any, tmp_path: pathlib.Path) -> None:
    manifest = validate_manifest(plan.manifest("b"))
    write_manifest(tmp_path, manifest["instances"])
    proc = subprocess.run(
        pilot_argv(tmp_path, python=sys.executable, cores=2),
        capture_output=True, text=True, timeout=60, env=clean_env(), cwd=tmp_path,
    )  # fmt: skip
    states = {r["process"]: r["state"] for r in parse_records((tmp_path / "records.jsonl").read_text())}
    assert states == {
        "calibrate": "failed",
        "report": "success",
        "qa": "skipped",  # depends_on calibrate
        "assemble": "success",
        "eimage": "success",
        "summarise": "success",
    }, proc.stdout + proc.stderr
