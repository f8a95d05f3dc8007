"""``airflowChains``: quanta that make chains by data id run as one sub-task, a stream per data id.

The same real GenericWorkflow as test_translate.py (three AddTask labels, four detectors).
"""

from __future__ import annotations

import dataclasses
import pathlib

from airflow_desc.bps.jobs import BpsJob
from airflow_desc.bps.streams import quanta_by_label
from airflow_desc.bps.translate import CHAINS_TASK, QUANTA_PROCESS, SpecSettings, workflow_spec
from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.workflow.render import render_dags
from tests.unit.bps.test_translate import (
    JOBS,
    LABELS,
    QGRAPH,
    REPO,
    RUN,
    SITE,
    graph_of,
    run_command,
    write_spec,
)


def node_id(label: str, detector: int, jobs: list[BpsJob] = JOBS) -> str:
    [job] = [j for j in jobs if j.label == label and str(j.data_id.get("detector")) == str(detector)]
    return str(job.cmdvals["qgraphNodeId"])


def test_chains_are_one_sub_task_a_stream_per_data_id_a_process_per_label(tmp_path: pathlib.Path) -> None:
    # Quanta of a minute (requestWalltime): a bundle of 2 data ids fits the site's 30 minutes.
    jobs = [dataclasses.replace(job, walltime_minutes=1) if job.node_ids else job for job in JOBS]
    path = write_spec(tmp_path, jobs, chains=True, bundling={"threshold": 1, "target_instances": 6})
    graph = graph_of(path)

    [task] = graph.root.children
    assert task.name == CHAINS_TASK
    assert task.depends_on == ("pipetaskInit",)
    assert task.bundling.state == "bundle"
    assert task.bundling.bundle_size == 2  # 6 quanta: 2 data ids of 3 labels
    assert {p.name: p.depends_on for p in task.processes} == {
        "task0": (),
        "task1": ("task0",),
        "task2": ("task1",),
    }
    assert graph.root.process("finalJob").after == ("pipetaskInit", CHAINS_TASK)
    streams = quanta_by_label(**graph.root.process(QUANTA_PROCESS).render_kwargs())
    assert sorted(streams[CHAINS_TASK]) == [
        f"instrument=INSTR,detector={d}@{'+'.join(node_id(label, d) for label in LABELS)}" for d in range(4)
    ]
    assert "lowered" not in task.bundling.reason
    assert f"{CHAINS_TASK}.bundle" in render_dags(path, clusters=load_cluster_profiles(SITE))[RUN].task_dict

    # Each label's process runs pipetask on its own quantum of the stream's data id.
    [stream] = [s for s in streams[CHAINS_TASK] if "detector=2@" in s]
    for label in LABELS:
        command = task.process(label).render_command({"quantum": stream})
        assert run_command(command, tmp_path) == [
            "--long-log", "--log-level=VERBOSE", "run-qbb", REPO, QGRAPH,
            "--qgraph-node-id", node_id(label, 2),
        ]  # fmt: skip


def test_a_hostile_data_id_reaches_each_label_s_command_as_data(tmp_path: pathlib.Path) -> None:
    detector = "0;touch PWNED1 `touch PWNED2` $(touch PWNED3)+x"
    jobs = [
        dataclasses.replace(job, data_id={**job.data_id, "detector": detector})
        if str(job.data_id.get("detector")) == "0" else job
        for job in JOBS
    ]  # fmt: skip
    graph = graph_of(write_spec(tmp_path, jobs, chains=True))
    streams = quanta_by_label(**graph.root.process(QUANTA_PROCESS).render_kwargs())[CHAINS_TASK]
    [stream] = [s for s in streams if "PWNED" in s]

    for label in LABELS:
        command = graph.task(CHAINS_TASK).process(label).render_command({"quantum": stream})
        assert run_command(command, tmp_path)[-1] == node_id(label, 0)
    assert not list(tmp_path.glob("PWNED*"))


def test_quanta_that_depend_across_data_ids_stay_a_sub_task_per_label() -> None:
    # task1 of detector 1 reads task0's output of detector 0 too: no chains by data id.
    parent = next(j.name for j in JOBS if j.label == "task0" and str(j.data_id.get("detector")) == "0")
    jobs = [
        dataclasses.replace(job, parents=(*job.parents, parent))
        if job.label == "task1" and str(job.data_id.get("detector")) == "1" else job
        for job in JOBS
    ]  # fmt: skip
    spec = workflow_spec(RUN, jobs, SpecSettings(chains=True))

    assert list(spec["tasks"]) == list(LABELS)
    assert spec["tasks"]["task1"]["depends_on"] == ["task0"]
