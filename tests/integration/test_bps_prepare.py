"""`bps prepare` with our plugin, in the LSST venv, on a real QuantumGraph; the spec it writes renders here.

tests/bps_lsst/make_submission.py runs in the LSST venv (docker/site/lsst-venv, `make lsst-venv`):
a butler repo, a pipeline YAML file of AddTask labels (lsst.pipe.base.tests.simpleQGraph), a BPS
config naming both and ``airflow_desc.bps.AirflowService``, and ctrl_bps's own prepare driver
(acquire, which builds the QuantumGraph with BPS's createQuantumGraph command, cluster, transform,
prepare). This test then loads the spec with airflow-desc's loader and renders the DAG
file it wrote (in this venv, which has Airflow). No site service is used.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
from typing import Any

import pytest

from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.workflow.build import build_graph
from airflow_desc.workflow.graph import WorkflowGraph
from airflow_desc.workflow.render import load_workflow_dags
from airflow_desc.workflow.spec import load_spec

ROOT = pathlib.Path(__file__).parents[2]
SITE_CLUSTERS = ROOT / "tests" / "data" / "clusters" / "site.yaml"
LSST_VENV = pathlib.Path(
    os.environ.get("DESC_LSST_VENV")
    or pathlib.Path(os.environ.get("DESC_SITE_DIR", "/var/lib/airflow-desc-site")) / "lsst-venv"
)
LSST_PYTHON = LSST_VENV / "bin" / "python"

pytestmark = pytest.mark.skipif(
    not (LSST_VENV / ".installed").exists(),
    reason=f"no LSST venv at {LSST_VENV}: `make lsst-venv` (docker/site/lsst-venv) makes it",
)


def make_submission(workdir: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run make_submission.py in the LSST venv, with this checkout's airflow_desc first on its path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CTRL_MPEXEC_DIR": str(LSST_VENV)}
    command = [str(LSST_PYTHON), str(ROOT / "tests" / "bps_lsst" / "make_submission.py"), str(workdir), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def submission(workdir: pathlib.Path, *args: str) -> dict[str, Any]:
    done = make_submission(workdir, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def qgraph_command(submit_path: pathlib.Path) -> str:
    """The command BPS's createQuantumGraph step ran: the first line of the output it saved."""
    return (submit_path / "quantumGraphGeneration.out").read_text(encoding="utf-8").splitlines()[0]


def graph_of(made: dict[str, Any]) -> WorkflowGraph:
    clusters = load_cluster_profiles(SITE_CLUSTERS)
    return build_graph(load_spec(made["spec"], clusters=clusters), clusters=clusters)


def test_bps_prepare_writes_a_spec_that_loads_and_a_dag_file_that_renders(tmp_path: pathlib.Path) -> None:
    extra = "airflowBundling: {threshold: 4}\nairflowLauncher: direct"
    made = submission(tmp_path, "--labels", "3", "--detectors", "5", "--extra", extra)

    assert made["job_counts"] == {"pipetaskInit": 1, "task0": 5, "task1": 5, "task2": 5, "finalJob": 1}
    # The QuantumGraph is BPS's own ({uniqProcName}.qg), from the pipeline YAML; every job reads it.
    submit_path, workdir = pathlib.Path(made["submit_path"]), tmp_path.resolve()
    qgraph = submit_path / "u_tester_simple_run1.qg"
    assert {job["files"]["runQgraphFile"] for job in made["jobs"]} == {str(qgraph)}
    assert shlex.split(qgraph_command(submit_path)) == [
        str(LSST_VENV / "bin" / "pipetask"), "--long-log", "--log-level=VERBOSE", "qgraph",
        "--butler-config", str(workdir / "repo"), "-i", "test", "-o", "u/tester/simple",
        "--output-run", "u/tester/simple/run1", "--pipeline", str(workdir / "pipeline.yaml"),
        "--save-qgraph", str(qgraph), "--qgraph-datastore-records", "-d", "instrument = 'INSTR'",
    ]  # fmt: skip
    graph = graph_of(made)
    assert {task.name: task.bundling.state for task in graph.root.children} == dict.fromkeys(
        ("task0", "task1", "task2"), "bundle"
    )  # five jobs a label, above airflowBundling's threshold
    clusters = load_cluster_profiles(SITE_CLUSTERS)
    # airflowLauncher: an overlay beside the spec, which the DAG file renders (its name in the file).
    overlay = pathlib.Path(made["spec"]).with_suffix(".site.yaml")
    assert repr(overlay.name) in pathlib.Path(made["dag_file"]).read_text()
    dags = load_workflow_dags(made["dag_file"], overlay.name, clusters=clusters)
    assert list(dags) == [graph.dag_id]
    assert {
        dags[graph.dag_id].task_dict[f"{t}.bundle"].partial_kwargs["launcher"] for t in ("task0", "task2")
    } == {"direct"}
    assert {"pipetaskInit", "bpsQuanta", "task0.bundle", "task2.bundle", "finalJob"} <= set(
        dags[graph.dag_id].task_dict
    )
    streams = graph.root.process("bpsQuanta").render_kwargs()["quanta"]
    assert sorted(s.partition("@")[0] for s in streams["task1"]) == [
        f"instrument=INSTR,detector={d}" for d in range(5)
    ]


def test_a_feature_airflow_desc_does_not_run_is_refused_at_prepare_naming_it(tmp_path: pathlib.Path) -> None:
    # (ctrl_bps keeps a config's WMS `profile` out of the GenericWorkflow; mailTo reaches every job.)
    done = make_submission(
        tmp_path, "--labels", "2", "--detectors", "3", "--extra", "mailTo: ops@example.org"
    )

    assert done.returncode != 0
    assert "BpsWorkflowError" in done.stderr
    assert "label task0 (3 job(s), e.g. " in done.stderr
    assert (
        "mail_to ('ops@example.org'): remove mailTo; the workflow spec's notify section sends mail"
        in done.stderr
    )
    assert not list(tmp_path.glob("submit/**/airflow/*.yaml"))


def test_a_wms_specific_option_is_refused_at_prepare_naming_it(tmp_path: pathlib.Path) -> None:
    # HTCondor's profile: ctrl_bps leaves it out of the GenericWorkflow; the plugin reads the config.
    extra = "site:\n  perlmutter:\n    profile:\n      condor:\n        requirements: 'x == 1'\n"
    done = make_submission(tmp_path, "--labels", "1", "--detectors", "1", "--extra", extra)

    assert done.returncode != 0
    assert "BpsWorkflowError: the BPS config sets what airflow-desc does not run" in done.stderr
    assert (
        "site.perlmutter.profile ({'condor': {'requirements': 'x == 1'}}): WMS-specific options"
        in done.stderr
    )
    assert not list(tmp_path.glob("submit/**/airflow/*.yaml"))


def test_the_lsst_venv_holds_the_plugin_and_no_airflow() -> None:
    code = (
        "import importlib.metadata as m, importlib.util as u; print(m.version('airflow-desc-bps'), "
        "u.find_spec('airflow') is None, u.find_spec('lsst.ctrl.bps') is not None)"
    )
    done = subprocess.run([str(LSST_PYTHON), "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0.1.0", "True", "True"]


def test_a_cluster_of_quanta_is_one_stream_running_all_its_node_ids(tmp_path: pathlib.Path) -> None:
    # ctrl_bps sums requestWalltime over a cluster's quanta and fails on a task without one: set it.
    clustering = (
        "requestWalltime: 2\n"
        "clusterAlgorithm: lsst.ctrl.bps.quantum_clustering_funcs.dimension_clustering\n"
        "cluster:\n  early:\n    pipetasks: task0, task1\n    dimensions: detector"
    )
    made = submission(tmp_path, "--labels", "3", "--detectors", "3", "--extra", clustering)

    assert made["job_counts"] == {"pipetaskInit": 1, "early": 3, "task2": 3, "finalJob": 1}
    graph = graph_of(made)
    assert {task.name: task.depends_on for task in graph.root.children} == {
        "early": ("pipetaskInit",),
        "task2": ("early",),
    }
    streams = graph.root.process("bpsQuanta").render_kwargs()["quanta"]["early"]
    node_ids = {
        job["data_id"]["detector"]: job["cmdvals"]["qgraphNodeId"]
        for job in made["jobs"]
        if job["label"] == "early"
    }
    assert sorted(streams) == sorted(f"detector={d}@{ids}" for d, ids in node_ids.items())
    assert all(len(ids.split(",")) == 2 for ids in node_ids.values())  # task0's and task1's quantum
    early = graph.task("early").process("early")
    assert early.resources is not None and early.resources.cpus == 2  # the largest of its quanta


def test_the_specs_commands_run_the_quanta_and_the_final_job_registers_their_outputs(
    tmp_path: pathlib.Path,
) -> None:
    """Each command of the spec, run by bash in the DAG's order (no SLURM here), is a real pipetask run."""
    # ctrl_bps's commands run ${CTRL_MPEXEC_DIR}/bin/pipetask and ${DAF_BUTLER_DIR}/bin/butler: the BPS
    # config's environment gives them to every job, as on a cluster.
    environment = f"environment:\n  CTRL_MPEXEC_DIR: {LSST_VENV}\n  DAF_BUTLER_DIR: {LSST_VENV}"
    made = submission(tmp_path, "--labels", "2", "--detectors", "1", "--extra", environment)
    graph = graph_of(made)
    streams = graph.root.process("bpsQuanta").render_kwargs()["quanta"]
    commands = [
        graph.root.process("pipetaskInit").render_command(),
        *(
            graph.task(label).process(label).render_command({"quantum": s})
            for label in streams
            for s in streams[label]
        ),
        graph.root.process("finalJob").render_command(),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("CTRL_MPEXEC_DIR", "DAF_BUTLER_DIR")}

    for command in commands:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"

    repo = str(tmp_path / "repo")
    query = [
        str(LSST_VENV / "bin" / "butler"),
        "query-datasets",
        repo,
        "add_dataset*",
        "--collections",
        "u/tester/simple/run1",
    ]
    found = subprocess.run(query, capture_output=True, text=True, env=env, check=True).stdout.split()
    assert {"add_dataset1", "add_dataset2"} <= set(found)  # task0's and task1's outputs, registered
