"""DC1 end to end under the real scheduler: the rendered DC1 DAG at scale 0.001 on the local site.

The DAG is dags/dc1.py's DC1-DM12_imsim-dithered_local (dags/workflows/dc1-local.yaml: dc1.yaml
with each request capped to the local clusters; in the e2e DAGs folder as
tests/e2e/dags/desc_e2e_dc1.py), triggered with ``scale`` 0.001. The workers write the PostgreSQL
history; every process instance that ran, failed or was skipped is in it: the top-level processes,
each mapped instance of the sub-tasks that are not bundled, and every instance inside the bundles
(processVisit, processimageDifferenceVisit). The run's state is its verdict's.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
from typing import Any

import pytest

from airflow_desc.history import ProcessRecord, latest_attempts_of
from airflow_desc.workflow.registry import load_workflow
from airflow_desc.workflow.verdict import judge_run
from tests.deploy import Deployment
from tests.e2e.conftest import DC1_DAG_ID as DAG_ID
from tests.integration.site import NODES

ROOT = pathlib.Path(__file__).parents[2]

TOP = ("serialingest", "ingestRefCat", "setupEimageVisits", "launchL1L2", "wrapup", "report")
RENDERER_TASKS = ("streams", "bundle", "verdict")
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(ProcessRecord) if f.name != "log_tail")


def record_of(row: dict[str, Any]) -> ProcessRecord:
    return ProcessRecord(**{name: row[name] for name in RECORD_FIELDS})


@pytest.mark.checks_background_run  # the run went on beside Twinkles' years (conftest.py: dc1_run)
def test_dc1_tiny_scale_runs_with_every_process_instance_recorded(airflow: Deployment, dc1_run: str) -> None:
    run_id = dc1_run
    run_state = airflow.wait_run(DAG_ID, run_id, timeout=900)
    recs = [record_of(row) for row in airflow.history_rows(run_id)]
    # The run's state is its verdict's: failed when an instance's latest attempt failed or was
    # terminated outside a met min_success (DC1's launchL1L2 tolerates failed visits).
    graph = load_workflow(ROOT / "dags" / "workflows" / "dc1-local.yaml").graph("imsim-dithered")
    verdict = judge_run(graph, latest_attempts_of(recs))
    assert run_state == ("failed" if verdict.failed else "success"), verdict.summary()
    verdict_state, _ = airflow.task_states(DAG_ID, run_id)["verdict"]
    assert verdict_state == run_state
    assert verdict.summary().splitlines()[0] in airflow.task_log(DAG_ID, run_id, "verdict", 1)
    by_process = collections.defaultdict(list)
    for rec in recs:
        by_process[rec.process].append(rec)
        assert (rec.workflow, rec.dag_id, rec.run_id) == ("DC1-DM12", DAG_ID, run_id)
        # One workflow identity, the listener's records of the scripts that are tasks included.
        assert (rec.variant, rec.extra.get("workflow_version")) == ("imsim-dithered", "1.16"), rec

    # The top-level processes: one instance each, version 1.16.
    for name in TOP:
        [rec] = by_process[name]
        assert (rec.task, rec.version) == ("DC1-DM12", "1.16"), rec
    assert by_process["serialingest"][0].state == "success"
    assert by_process["serialingest"][0].req_cpus == 2  # 16 CPUs capped to a perlmutter node

    # Every task instance of a process that ended is recorded (the renderer's own tasks are not
    # processes; a mapped task with no streams has no instance).
    states = airflow.sql(
        "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = %s AND run_id = %s",
        DAG_ID,
        run_id,
    )
    recorded = {(r.task_id, r.map_index) for r in recs}
    for task_id, map_index, state in states:
        if task_id.rsplit(".", 1)[-1] in RENDERER_TASKS:
            continue
        if state in ("success", "failed") or (state == "skipped" and map_index >= 0):
            assert (task_id, map_index) in recorded, (task_id, map_index, state, sorted(recorded))
    assert all(state in ("success", "failed", "skipped") for _, _, state in states), states

    # Inside the bundles: each stream a setup script made has its instances recorded.
    def made(script: str) -> int:
        return sum(sum(r.extra.get("streams_made", {}).values()) for r in by_process[script])

    visits = len(by_process["setupEimageRafts"])
    assert visits >= 3 and len(by_process["wrapupEimageRafts"]) == visits
    assert (
        made("setupEimageRafts")
        == len(by_process["setupEimageSensors"])
        == len(by_process["wrapupEimageSensors"])
    )
    assert made("setupEimageSensors") == len(by_process["processEimage"]) >= visits
    for rec in by_process["processEimage"]:
        assert (rec.task, rec.version, rec.process_type, rec.task_id) == (
            "processSensor", "1.0", "batch", "processVisit.bundle"
        )  # fmt: skip
        assert rec.stream.count("/") == 2 and rec.job_id and rec.node in NODES["perlmutter"], rec
        if rec.state == "success":
            assert rec.max_rss_bytes and rec.max_rss_bytes >= 1000 * 2**20, rec  # it holds 1500 MB
            assert rec.slurm_state == "COMPLETED" and rec.total_cpu_s and rec.total_cpu_s >= 2.0, rec
    assert made("setupImageDifferenceSensors") == len(by_process["imageDifference"])

    # Skipped per stream, as DC1 counted: an assembly is skipped exactly where its warp did not succeed.
    warps = {r.stream: r.state for r in by_process["level1MakeTempExpCoadd"]}
    assert warps, "level1 did not run"
    for rec in by_process["level1AssembleCoadd"]:
        assert (rec.state == "skipped") == (warps[rec.stream] != "success"), (rec, warps)
    # wrapup waits for level1 and level2 and runs only if both succeeded.
    [wrapup] = by_process["wrapup"]
    outside = {"DC1-DM12", "processVisit", "processRaft", "processSensor"}
    level_failed = any(r.state in ("failed", "terminated") for r in recs if r.task not in outside)
    assert wrapup.state == ("skipped" if level_failed else "success"), wrapup
