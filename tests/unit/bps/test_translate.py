"""The spec of a real GenericWorkflow loads, renders a DAG, and runs each quantum's own command.

tests/data/bps/addtask-3x4.json holds the jobs of a GenericWorkflow that ctrl_bps made from a real
QuantumGraph (three AddTask labels, four detectors: tests/bps_lsst/make_submission.py, with its
paths moved to /global/cfs/desc/bps-test), as :func:`airflow_desc.bps.jobs.jobs_from_generic_workflow`
read them; tests/integration/test_bps_prepare.py makes a new one in the LSST venv.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
from typing import Any

import pytest

from airflow_desc.bps.jobs import BpsJob
from airflow_desc.bps.streams import quanta_by_label
from airflow_desc.bps.translate import (
    QUANTA_PROCESS,
    SpecSettings,
    dag_file_text,
    refuse_other_wms_options,
    spec_text,
    workflow_spec,
)
from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.exceptions import BpsWorkflowError
from airflow_desc.workflow.build import build_graph
from airflow_desc.workflow.graph import WorkflowGraph
from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.spec import load_spec

ROOT = pathlib.Path(__file__).parents[3]
SITE = ROOT / "tests" / "data" / "clusters" / "site.yaml"
SUBMISSION = json.loads((ROOT / "tests" / "data" / "bps" / "addtask-3x4.json").read_text())
RUN = SUBMISSION["run_name"]
JOBS = [BpsJob.from_dict(job) for job in SUBMISSION["jobs"]]
LABELS = ("task0", "task1", "task2")
REPO = "/global/cfs/desc/bps-test/repo"
QGRAPH = "/global/cfs/desc/bps-test/submit/u/tester/simple/run1/u_tester_simple_run1.qg"


def write_spec(tmp_path: pathlib.Path, jobs: list[BpsJob] = JOBS, **settings: Any) -> pathlib.Path:
    # As make_submission.py's airflowDefaultWalltime: within the site's 30 minutes.
    spec = workflow_spec(RUN, jobs, SpecSettings(**{"walltime": "0:20:00", **settings}))
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(spec_text(spec, RUN), encoding="utf-8")
    (tmp_path / f"{spec['name']}.py").write_text(dag_file_text(path.name), encoding="utf-8")
    return path


def graph_of(path: pathlib.Path) -> WorkflowGraph:
    clusters = load_cluster_profiles(SITE)
    return build_graph(load_spec(path, clusters=clusters), clusters=clusters)


def test_the_spec_of_a_real_generic_workflow_loads_and_renders_a_dag(tmp_path: pathlib.Path) -> None:
    path = write_spec(tmp_path)
    dags = render_dags(path, clusters=load_cluster_profiles(SITE))

    assert list(dags) == [RUN]
    dag = dags[RUN]
    assert {"pipetaskInit", QUANTA_PROCESS, "finalJob", "verdict"} <= set(dag.task_dict)
    assert {f"{label}.streams" for label in LABELS} <= set(dag.task_dict)
    graph = graph_of(path)
    # Labels as sub-tasks, waiting for the labels (and the init job) their jobs depend on.
    assert {task.name: task.depends_on for task in graph.root.children} == {
        "task0": ("pipetaskInit",),
        "task1": ("task0",),
        "task2": ("task1",),
    }
    assert graph.root.process("finalJob").after == ("pipetaskInit", *LABELS)


def test_the_init_job_waits_in_the_worker_and_the_rest_in_the_triggerer(tmp_path: pathlib.Path) -> None:
    # The init job takes seconds and every quantum waits for it: no second start of its task.
    dag = render_dags(write_spec(tmp_path), clusters=load_cluster_profiles(SITE))[RUN]

    waits = {}
    for task_id, task in dag.task_dict.items():
        kwargs = getattr(task, "partial_kwargs", None)  # a mapped task's (a label's quanta)
        if kwargs is not None and "process" in kwargs:
            waits[task_id] = kwargs.get("deferrable", True)
        elif hasattr(task, "process") and hasattr(task, "deferrable"):
            waits[task_id] = task.deferrable
    assert waits.pop("pipetaskInit") is False
    assert waits.pop("finalJob") is True
    assert set(waits) == {f"{label}.{label}" for label in LABELS}, waits
    assert all(waits.values()), waits


def test_a_labels_run_times_come_from_every_submission(tmp_path: pathlib.Path) -> None:
    # Each submission is a workflow of its own: bundle sizes fit again from any workflow's records.
    assert graph_of(write_spec(tmp_path)).settings.run_times_from == "any"
    bundling = {"target_instances": 8, "run_times_from": "workflow"}
    assert graph_of(write_spec(tmp_path, bundling=bundling)).settings.run_times_from == "workflow"


def test_bps_resources_retries_and_memory_multiplier_are_honoured(tmp_path: pathlib.Path) -> None:
    graph = graph_of(write_spec(tmp_path))

    task0 = graph.task("task0").process("task0")
    assert task0.resources is not None
    assert (task0.resources.cluster, task0.resources.cpus, task0.resources.memory_mb) == (
        "perlmutter",
        2,
        1500,
    )
    assert task0.resources.walltime_s == 25 * 60  # requestWalltime: 25 (minutes)
    assert task0.retries == 2
    assert (task0.escalation.memory_factor, task0.escalation.walltime_factor) == (1.5, 1.0)
    task1 = graph.task("task1").process("task1")
    assert task1.resources is not None
    assert (task1.resources.cpus, task1.resources.walltime_s) == (1, 20 * 60)  # the default walltime
    final = graph.root.process("finalJob")
    assert final.resources is not None
    assert (final.resources.cpus, final.resources.memory_mb) == (1, 2000)


def test_a_label_with_more_jobs_than_the_threshold_runs_in_bundles(tmp_path: pathlib.Path) -> None:
    (tmp_path / "small").mkdir()
    (tmp_path / "big").mkdir()
    unbundled = graph_of(write_spec(tmp_path / "small"))
    bundled = graph_of(write_spec(tmp_path / "big", bundling={"threshold": 3}))

    assert {t.name: t.bundling.state for t in unbundled.root.children} == dict.fromkeys(LABELS, "none")
    assert {t.name: t.bundling.state for t in bundled.root.children} == dict.fromkeys(LABELS, "bundle")
    dag = render_dags(
        write_spec(tmp_path / "big", bundling={"threshold": 3}), clusters=load_cluster_profiles(SITE)
    )
    assert {f"{label}.bundle" for label in LABELS} <= set(dag[RUN].task_dict)


def test_each_job_is_a_stream_named_by_its_data_id_and_node_ids(tmp_path: pathlib.Path) -> None:
    graph = graph_of(write_spec(tmp_path))

    streams = quanta_by_label(**graph.root.process(QUANTA_PROCESS).render_kwargs())
    assert {label: len(values) for label, values in streams.items()} == dict.fromkeys(LABELS, 4)
    expected = {
        f"instrument=INSTR,detector={job.data_id['detector']}@{job.cmdvals['qgraphNodeId']}"
        for job in JOBS
        if job.label == "task1"
    }
    assert set(streams["task1"]) == expected


def run_command(command: str, tmp_path: pathlib.Path) -> list[str]:
    """Run shell text as a job would, with a pipetask that prints its arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    pipetask = bin_dir / "pipetask"
    pipetask.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    pipetask.chmod(0o755)
    env = {**os.environ, "CTRL_MPEXEC_DIR": str(tmp_path)}
    done = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, env=env, cwd=tmp_path, check=True
    )
    return done.stdout.splitlines()


def test_a_quantum_runs_pipetask_with_its_own_node_id(tmp_path: pathlib.Path) -> None:
    graph = graph_of(write_spec(tmp_path))
    job = next(job for job in JOBS if job.label == "task2")
    stream = f"instrument=INSTR,detector={job.data_id['detector']}@{job.cmdvals['qgraphNodeId']}"

    command = graph.task("task2").process("task2").render_command({"quantum": stream})

    node_id = job.cmdvals["qgraphNodeId"]
    assert run_command(command, tmp_path) == [
        "--long-log", "--log-level=VERBOSE", "run-qbb", REPO, QGRAPH, "--qgraph-node-id", node_id,
    ]  # fmt: skip
    init = graph.root.process("pipetaskInit").render_command()
    assert run_command(init, tmp_path) == [
        "--long-log",
        "--log-level=VERBOSE",
        "pre-exec-init-qbb",
        REPO,
        QGRAPH,
    ]


def test_every_value_reaches_the_command_as_data_never_as_shell_code(tmp_path: pathlib.Path) -> None:
    # ctrl_bps fills values into a command line, which is then split into words as a shell would
    # (as every BPS plugin runs it): a value with spaces is several words, yet no value is shell code.
    hostile_repo = "/repo;touch${IFS}PWNED&&`touch${IFS}PWNED1`"
    query = """-d "visit = 1 AND band = 'r' $(touch PWNED2)" --no-versions"""
    jobs = [
        dataclasses.replace(
            job,
            cmdvals={**job.cmdvals, "butlerConfig": hostile_repo, "extraRunQuantumOptions": query},
            data_id={**job.data_id, "detector": "0;touch PWNED3 `touch PWNED4`"},
            environment={"DESC_NOTE": "it's $(touch PWNED5)"},
        )
        for job in JOBS
    ]
    graph = graph_of(write_spec(tmp_path, jobs))
    stream = quanta_by_label(**graph.root.process(QUANTA_PROCESS).render_kwargs())["task0"][0]
    node_id = stream.rpartition("@")[2]
    assert stream.startswith("instrument=INSTR,detector=0;touch PWNED3 `touch PWNED4`@")

    command = graph.task("task0").process("task0").render_command({"quantum": stream})
    words = run_command(f'{command}; echo "$DESC_NOTE"', tmp_path)

    assert words == [
        "--long-log", "--log-level=VERBOSE", "run-qbb", hostile_repo, QGRAPH, "--qgraph-node-id", node_id,
        "-d", "visit = 1 AND band = 'r' $(touch PWNED2)", "--no-versions", "it's $(touch PWNED5)",
    ]  # fmt: skip
    assert not list(tmp_path.glob("PWNED*"))


def refused(jobs: list[BpsJob]) -> str:
    with pytest.raises(BpsWorkflowError) as caught:
        workflow_spec(RUN, jobs)
    return str(caught.value)


def test_what_airflow_desc_does_not_run_is_refused_naming_the_job_and_the_feature() -> None:
    first = JOBS[1]
    marked = [
        dataclasses.replace(job, unsupported=("profile ({'condor': {'+Foo': 1}}): WMS-specific options ...",))
        if job is first
        else job
        for job in JOBS
    ]
    message = refused(marked)
    assert f"label task0 (1 job(s), e.g. {first.name!r}): profile" in message

    # A label whose jobs run different commands besides their node ids cannot be one sub-task.
    other = next(job for job in JOBS if job.label == "task0" and job is not first)
    differing = [
        dataclasses.replace(job, cmdvals={**job.cmdvals, "extraRunQuantumOptions": "--debug"})
        if job is other
        else job
        for job in JOBS
    ]
    assert "label task0: jobs" in refused(differing) and other.name in refused(differing)

    # A placeholder the job gives no value.
    missing = [dataclasses.replace(job, arguments=job.arguments + " {notGiven}") for job in JOBS]
    assert "{notGiven}" in refused(missing)

    # A label that is not a spec name.
    assert "label 'bad label'" in refused([dataclasses.replace(job, label="bad label") for job in JOBS])

    # A job with no cluster to run on.
    assert "computeSite" in refused([dataclasses.replace(job, compute_site=None) for job in JOBS])


def test_jobs_round_trip_through_json() -> None:
    assert [BpsJob.from_dict(json.loads(json.dumps(job.to_dict()))) for job in JOBS] == JOBS


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (
            {"site": {"perlmutter": {"profile": {"condor": {"+Foo": 1}}}}},
            "site.perlmutter.profile ({'condor'",
        ),
        (
            {"pipetask": {"task0": {"attrs": {"x": "y"}}}},
            "pipetask.task0.attrs ({'x': 'y'}): WMS job attributes",
        ),
        ({"provisionResources": True}, "provisionResources (True): provisioning (HTCondor glideins)"),
        ({"site": {"s3df": {"class": "lsst.ctrl.bps.parsl.sites.Slurm"}}}, "site.s3df.class ('lsst.ctrl"),
    ],
)
def test_a_bps_config_option_of_another_wms_is_refused_naming_its_key(
    config: dict[str, Any], named: str
) -> None:
    with pytest.raises(
        BpsWorkflowError, match="the BPS config sets what airflow-desc does not run"
    ) as caught:
        refuse_other_wms_options({"computeSite": "perlmutter", "payload": {"class": "x"}, **config})
    assert named in str(caught.value) and "remove it from the BPS config" in str(caught.value)


def test_a_bps_config_of_no_other_wms_passes() -> None:
    # "class" is only another plugin's in a site section; unset or false values are not set.
    config = {
        "computeSite": "perlmutter",
        "payload": {"class": "x"},
        "provisionResources": False,
        "site": {"a": {}},
    }
    assert refuse_other_wms_options(config) is None
    # The same config, one of those values set: refused (the check above looked at them).
    with pytest.raises(BpsWorkflowError, match="provisionResources"):
        refuse_other_wms_options({**config, "provisionResources": True})
    with pytest.raises(BpsWorkflowError, match=r"site\.a\.class"):
        refuse_other_wms_options({**config, "site": {"a": {"class": "lsst.ctrl.bps.parsl.sites.Local"}}})


def test_a_submissions_bundles_take_each_other_over_unless_told_not_to(tmp_path: pathlib.Path) -> None:
    # A label's walltime request is often many times a quantum's run: a pilot out of work runs the
    # bundles still pending rather than leave its node idle while they wait in the queue for it.
    assert graph_of(write_spec(tmp_path)).settings.take_over is True
    bundling = {"target_instances": 8, "take_over": False}
    assert graph_of(write_spec(tmp_path, bundling=bundling)).settings.take_over is False
