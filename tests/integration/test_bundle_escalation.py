"""Escalation and ``after`` inside a bundle on the local site, through dags/desc_it_bundle_escalation.py.

An emulated payload holds the 160 MB it asks for, and its interpreter takes it over: the pilot
kills it for memory on the first try; the retry of the bundle task reruns it (only it) with twice
the memory, and it succeeds. An instance that runs ``after`` it ran on the first try all the same.
"""

from __future__ import annotations

import pathlib
import uuid
from datetime import datetime

import pytest

from airflow_desc.history import JsonLinesRecorder, ProcessRecord
from tests.integration.airflow_env import AirflowEnv, explain

# A bundle asks for a whole perlmutter node: beside the parallel suite it would wait in SLURM's queue.
pytestmark = pytest.mark.serial

MIB = 1024 * 1024


def _when(value: datetime | None) -> datetime:
    assert value is not None
    return value


def test_an_instance_out_of_memory_reruns_with_twice_the_memory(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    conf = {"out": f"it-bundle-escalation/{uuid.uuid4().hex[:10]}"}
    proc = airflow_env.dags_test("desc_it_bundle_escalation", history=history, conf=conf, timeout=150)
    recs: list[ProcessRecord] = JsonLinesRecorder(history).read()
    hungry = sorted((r for r in recs if r.process == "hungry"), key=lambda r: r.try_number)
    assert [(r.try_number, r.state, r.reason) for r in hungry] == [
        (1, "terminated", "out-of-memory"),
        (2, "success", None),
    ], explain(proc)
    first, second = hungry
    # What each try asked for is in the record: 160 MB, then 320 MB.
    assert [r.req_mem_bytes for r in hungry] == [160 * MIB, 320 * MIB]
    assert [r.req_walltime_s for r in hungry] == [120, 120]
    assert first.max_rss_bytes is not None and first.max_rss_bytes > 160 * MIB
    assert "over its 160 MB" in (first.message or "")
    assert "next try asks for memory 320 MB (x2 of 160 MB)" in (first.message or "")
    assert second.extra.get("raised") == {"memory_mb": 320}
    assert first.job_id != second.job_id
    # `after: [hungry]`: ran on the first try though hungry was terminated, and was not rerun.
    tally = [r for r in recs if r.process == "tally"]
    assert [(r.try_number, r.state) for r in tally] == [(1, "success")]
    assert _when(tally[0].start_time) >= _when(first.end_time)
    assert proc.returncode == 0, explain(proc)
