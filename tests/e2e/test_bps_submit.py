"""`bps submit`, `report`, `restart`, `cancel` with our plugin, through a real Airflow, on the site's SLURM.

Real parts: ctrl_bps's own CLI (``bps``) in the LSST venv (docker/site/lsst-venv), with this checkout's
airflow_desc.bps first on its path; an Airflow deployment (tests/deploy.py, LocalExecutor) whose
dag-processor reads a DAGs folder of this test's own, its api-server logging users in at
``/auth/token`` (``bps`` reaches it with a user and password from the environment, as a user would);
a butler repo and a pipeline YAML file of AddTask labels (lsst.pipe.base.tests.simpleQGraph, made by
tests/bps_lsst/make_submission.py), whose QuantumGraph ``bps submit`` builds itself (its
createQuantumGraph command, ``pipetask qgraph``), every quantum run by ``pipetask run-qbb`` inside our
SLURM jobs on the local clusters, as the site's user ``desc``, and the final job's ``butler
aggregate-graph``.
A quantum is made to fail by moving its input file away; it is put back before ``bps restart``.

One submission of 3 labels x 7 detectors (21 quanta) serves the checks of submit, report and restart:
3 labels so that a failed first label leaves both labels below it not run (a label with no streams
because its upstream failed counts as Skipped, not as an empty success; operators/run_states.py). The
cancel test's submission runs on ``perlmutter-held``, a profile of this deployment's own (perlmutter
with ``sbatch --begin=now+1hour``): its first job stays PENDING in SLURM's queue until cancelled, with
no need to fill the cluster.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from airflow_desc.operators.job_names import job_name_for
from tests.deploy import PORT, Deployment
from tests.e2e.conftest import OneAtATime
from tests.integration.site import Site
from tests.waiting import wait_for

ROOT = pathlib.Path(__file__).parents[2]
LSST_VENV = pathlib.Path(
    os.environ.get("DESC_LSST_VENV")
    or pathlib.Path(os.environ.get("DESC_SITE_DIR", "/var/lib/airflow-desc-site")) / "lsst-venv"
)
SERVICE = "airflow_desc.bps.AirflowService"
#: The deployment's one user: ``bps`` logs in as it.
USER, PASSWORD = "bps", "bps-e2e"

pytestmark = pytest.mark.skipif(
    not (LSST_VENV / ".installed").exists(),
    reason=f"no LSST venv at {LSST_VENV}: `make lsst-venv` (docker/site/lsst-venv) makes it",
)


#: A cluster profile of the bps deployment only: perlmutter, every job held in the queue for an hour.
HELD = "perlmutter-held"
#: The labels and detectors of the restart test's submission (21 quanta).
LABELS, DETECTORS = 3, 7


def clusters_with_held(folder: pathlib.Path) -> pathlib.Path:
    """The site's cluster profiles plus :data:`HELD` (perlmutter's, with ``sbatch --begin=now+1hour``)."""
    profiles = yaml.safe_load(pathlib.Path(os.environ["DESC_CLUSTERS_FILE"]).read_text(encoding="utf-8"))
    held = dict(profiles["clusters"]["perlmutter"])
    held["sbatch_options"] = {**dict(held.get("sbatch_options") or {}), "begin": "now+1hour"}
    profiles["clusters"][HELD] = held
    path = folder / "clusters.yaml"
    path.write_text(yaml.safe_dump(profiles, sort_keys=False), encoding="utf-8")
    return path


def _bps_deployment(root: pathlib.Path) -> Deployment:
    # Its components take DESC_CLUSTERS_FILE from this process's environment when they are set up.
    site_clusters = os.environ["DESC_CLUSTERS_FILE"]
    os.environ["DESC_CLUSTERS_FILE"] = str(clusters_with_held(root))
    try:
        return Deployment.local(root, dags=root / "dags", users={USER: ("admin", PASSWORD)})
    finally:
        os.environ["DESC_CLUSTERS_FILE"] = site_clusters


@pytest.fixture
def bps_airflow(deployments: OneAtATime) -> Deployment:
    """A LocalExecutor deployment with a DAGs folder of its own (``bps submit`` writes into it), a user,
    and the cluster profile :data:`HELD`."""
    return deployments.get("LocalExecutor-bps", _bps_deployment)


@pytest.fixture
def workdir(site: Site) -> Iterator[pathlib.Path]:
    """A directory the site's user can reach (the jobs run as it), removed afterwards."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="desc-bps-e2e-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def lsst_env() -> dict[str, str]:
    """The environment of a user running ``bps`` in the LSST venv against the deployment."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "PYTHONPATH"))},
        "PYTHONPATH": str(ROOT),
        "CTRL_MPEXEC_DIR": str(LSST_VENV),
        "BPS_WMS_SERVICE_CLASS": SERVICE,
        "AIRFLOW_DESC_API_URL": f"http://127.0.0.1:{PORT}",
        "AIRFLOW_DESC_API_USER": USER,
        "AIRFLOW_DESC_API_PASSWORD": PASSWORD,
    }


def bps(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Run ``bps`` in the LSST venv, in ``cwd`` (ctrl_bps may write beside it)."""
    done = subprocess.run(
        [str(LSST_VENV / "bin" / "bps"), *args], capture_output=True, text=True, env=lsst_env(), cwd=cwd,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"bps {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def make_submission(
    airflow: Deployment,
    site: Site,
    workdir: pathlib.Path,
    *,
    name: str,
    labels: int,
    detectors: int,
    cluster: str = "perlmutter",
) -> dict[str, Any]:
    """Write the butler repo, pipeline YAML and BPS config (bundled labels, no retries) for the site's user.

    :param name: the submission's workflow name (its DAG id): each test's own.
    :param cluster: the cluster profile every job runs on (computeSite).
    """
    extra = (
        f"airflowDagFolder: {airflow.dags}\nairflowWorkflowName: {name}\n"
        # Bundles of up to 4 quanta of 4 minutes (task0's own 25-minute, 2-core quanta still go one
        # per bundle: no more fit a node's 30 minutes): fewer allocations and task instances.
        "airflowBundling: {threshold: 1, target_instances: 4}\nrequestWalltime: 4\n"
        f"environment:\n  CTRL_MPEXEC_DIR: {LSST_VENV}\n  DAF_BUTLER_DIR: {LSST_VENV}\n"
    )
    command = [
        str(LSST_VENV / "bin" / "python"), str(ROOT / "tests" / "bps_lsst" / "make_submission.py"),
        str(workdir), "--labels", str(labels), "--detectors", str(detectors), "--retries", "0",
        "--extra", extra, "--no-prepare", "--cluster", cluster,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=lsst_env(), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    subprocess.run(["chown", "-R", f"{site.user}:", str(workdir)], check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def submit(config: str) -> str:
    """``bps submit``; return the run id it printed."""
    out = bps("submit", config, cwd=pathlib.Path(config).parent).stdout
    [run_id] = re.findall(r"^Run Id: (\S+)$", out, re.MULTILINE)
    return run_id


def qgraph_made_by_bps(workdir: pathlib.Path) -> None:
    """Check that the submission's QuantumGraph is the one BPS's createQuantumGraph step wrote in the submit
    directory, from the pipeline YAML (no pre-made graph in the config)."""
    submit_dir = workdir / "submit" / "u" / "tester" / "simple" / "run1"
    qgraph = submit_dir / "u_tester_simple_run1.qg"  # BPS's qgraphFileTemplate: {uniqProcName}.qg
    command = (submit_dir / "quantumGraphGeneration.out").read_text(encoding="utf-8").splitlines()[0].split()
    assert command[3] == "qgraph", command
    assert command[command.index("--pipeline") + 1] == str(workdir / "pipeline.yaml"), command
    assert command[command.index("--save-qgraph") + 1] == str(qgraph), command
    assert qgraph.stat().st_size > 0
    assert "qgraphFile" not in yaml.safe_load((workdir / "bps.yaml").read_text(encoding="utf-8"))


def report(run_id: str, cwd: pathlib.Path) -> tuple[str, dict[str, dict[str, int]]]:
    """``bps report --id``: the run's state and each label's counts per state (non-zero ones)."""
    out = bps("report", "--id", run_id, cwd=cwd).stdout
    lines = out.splitlines()
    [brief] = [i for i, line in enumerate(lines) if line.split()[:2] == ["X", "STATE"]]
    state = lines[brief + 2].split()[0]
    [header] = [line.split() for line in lines if "SUCCEEDED" in line and "EXPECTED" in line]
    table: dict[str, dict[str, int]] = {}
    for line in lines:
        cells = line.split()
        if len(cells) == len(header) + 1 and cells[0] != "TOTAL" and cells[1].lstrip("-").isdigit():
            table[cells[0]] = {k: int(v) for k, v in zip(header, cells[1:], strict=True) if int(v)}
    return state, table


def attempts(airflow: Deployment, run_id: str) -> dict[tuple[str, str], list[str]]:
    """Each batch process instance's attempts' states, keyed by process and detector, from the history."""
    out: dict[tuple[str, str], list[str]] = {}
    for row in airflow.history_rows(run_id):
        if row["process_type"] == "batch":
            found = re.search(r"detector=(\d+)", str(row["stream"]))
            out.setdefault((row["process"], found.group(1) if found else ""), []).append(row["state"])
    return out


def datasets(repo: str, dataset_type: str) -> list[str]:
    """The detectors of ``dataset_type`` the butler finds in the output run."""
    return datasets_by_type(repo, [dataset_type])[dataset_type]


def datasets_by_type(repo: str, dataset_types: list[str]) -> dict[str, list[str]]:
    """The detectors of each of ``dataset_types`` the butler finds in the output run (one ``butler`` call)."""
    query = [str(LSST_VENV / "bin" / "butler"), "query-datasets", repo, *dataset_types,
             "--collections", "u/tester/simple/run1"]  # fmt: skip
    out = subprocess.run(query, capture_output=True, text=True, env=lsst_env(), check=True).stdout
    found: dict[str, list[str]] = {name: [] for name in dataset_types}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] in found:
            found[cells[0]].append(cells[-1])
    return {name: sorted(detectors) for name, detectors in found.items()}


def test_bps_submit_report_and_restart_rerun_only_what_failed(
    bps_airflow: Deployment, site: Site, workdir: pathlib.Path
) -> None:
    airflow = bps_airflow
    made = make_submission(airflow, site, workdir, name="bps_e2e_restart", labels=LABELS, detectors=DETECTORS)
    broken = pathlib.Path(made["inputs"]["1"])  # detector 1's input: task0 fails there
    aside = broken.with_name(broken.name + ".aside")
    broken.rename(aside)
    every = [str(d) for d in range(DETECTORS)]
    below = [f"task{n}" for n in range(1, LABELS)]

    run_id = submit(made["config"])
    qgraph_made_by_bps(workdir)
    dag_id = run_id.removeprefix("bps__")
    assert airflow.wait_run(dag_id, run_id, timeout=900) == "failed", f"logs in {airflow.root}"

    state, labels = report(run_id, workdir)
    assert state == "FAILED"
    assert labels == {
        "pipetaskInit": {"SUCCEEDED": 1, "EXPECTED": 1},
        "task0": {"SUCCEEDED": DETECTORS - 1, "FAILED": 1, "EXPECTED": DETECTORS},
        # A failed quantum prunes the labels below it (per label: translate.py), down the whole chain.
        **{label: {"PRUNED": DETECTORS, "EXPECTED": DETECTORS} for label in below},
        "finalJob": {"SUCCEEDED": 1, "EXPECTED": 1},
    }
    first = attempts(airflow, run_id)
    assert not [key for key in first if key[0] in below], "a label below the failed one ran"
    # task0's seven one-quantum bundles (2 cores: a node each) on perlmutter's two nodes: a pilot out
    # of work took over bundles whose jobs were still pending (bundling.take_over, on for BPS), so
    # fewer allocations ran them than there are bundles; each quantum is still recorded once, by
    # its own bundle's task, with the job that ran it.
    task0 = [row for row in airflow.history_rows(run_id) if row["process"] == "task0"]
    assert len(task0) == DETECTORS, task0
    assert len({row["job_id"] for row in task0}) < DETECTORS, [(r["stream"], r["job_id"]) for r in task0]

    aside.rename(broken)
    restarted = bps("restart", "--id", run_id, cwd=workdir).stdout
    assert f"Run Id: {run_id}" in restarted
    assert airflow.wait_run(dag_id, run_id, timeout=900) == "success", f"logs in {airflow.root}"

    state, labels = report(run_id, workdir)
    assert state == "SUCCEEDED"
    assert {label: counts.get("SUCCEEDED") for label, counts in labels.items()} == {
        "pipetaskInit": 1, "task0": DETECTORS, **dict.fromkeys(below, DETECTORS), "finalJob": 1,
    }  # fmt: skip
    # Every label's outputs, registered by the final job.
    outputs = [f"add_dataset{n}" for n in range(1, LABELS + 1)]
    assert datasets_by_type(made["repo"], outputs) == dict.fromkeys(outputs, every)
    tries = attempts(airflow, run_id)
    # The rerun: exactly the failed quantum and what it prunes; nothing that succeeded ran again.
    assert tries[("task0", "1")] == ["failed", "success"]
    assert {d: tries[("task0", d)] for d in every if d != "1"} == {d: ["success"] for d in every if d != "1"}
    assert tries[("pipetaskInit", "")] == ["success"]
    assert {key: t for key, t in tries.items() if key[0] in below} == {
        (label, d): ["success"] for label in below for d in every
    }
    assert tries[("finalJob", "")] == ["success", "success"]  # aggregates the rerun's outputs too


def queued(site: Site, names: set[str]) -> dict[str, str]:
    """The jobs in perlmutter's queue (any user) named one of ``names``: job id -> state and reason."""
    out = site.run("perlmutter", "squeue -h -o '%i|%j|%T|%r'").stdout
    return {
        job: f"{state} {reason}"
        for job, name, state, reason in (line.split("|") for line in out.splitlines() if line.count("|") == 3)
        if name in names
    }


def job_names_of(airflow: Deployment, dag_id: str, run_id: str) -> set[str]:
    """The SLURM job names every try of every task instance of the run submits under (job_name_for)."""
    rows = airflow.sql(
        "SELECT task_id, map_index, try_number FROM task_instance WHERE dag_id = %s AND run_id = %s",
        dag_id,
        run_id,
    )
    return {
        job_name_for(dag_id, run_id, task_id, map_index, n)
        for task_id, map_index, tries in rows
        for n in range(1, max(1, tries) + 1)
    }


def test_bps_cancel_fails_the_run_and_cancels_its_slurm_job(
    bps_airflow: Deployment, site: Site, workdir: pathlib.Path
) -> None:
    # On HELD every job waits an hour in the queue (sbatch --begin): the submission is still going
    # when it is cancelled, whatever else the cluster runs. Job names repeat from one session to
    # the next (they are the run's and task's): the job is found by id, in squeue, never by name in
    # sacct (it was the flake: an earlier session's CANCELLED job of the same name).
    airflow = bps_airflow
    made = make_submission(airflow, site, workdir, name="bps_e2e_cancel", labels=1, detectors=2, cluster=HELD)
    run_id = submit(made["config"])
    dag_id = run_id.removeprefix("bps__")

    def waiting_job() -> dict[str, str]:
        # pipetaskInit waits for its job in its worker slot (running), a label's task in the
        # triggerer (deferred): either way its job is queued under its task instance's name.
        rows = airflow.sql(
            "SELECT task_id, map_index, try_number FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s AND state IN ('deferred', 'running')",
            dag_id,
            run_id,
        )
        names = {job_name_for(dag_id, run_id, task_id, index, number) for task_id, index, number in rows}
        return queued(site, names) if names else {}

    try:
        waiting = wait_for(waiting_job, timeout=300, what=f"a task of {run_id} waiting on its SLURM job")
        [(job_id, state)] = waiting.items()
        assert state.startswith("PENDING"), state
        cancel_checked(airflow, site, workdir, run_id, job_id)
    finally:  # a held job left behind would start in an hour
        for job in queued(site, job_names_of(airflow, dag_id, run_id)):
            site.run("perlmutter", f"scancel {job}", check=False)


def cancel_checked(airflow: Deployment, site: Site, workdir: pathlib.Path, run_id: str, job_id: str) -> None:
    """``bps cancel`` a running submission whose job ``job_id`` is queued; check what became of it."""
    dag_id = run_id.removeprefix("bps__")
    assert report(run_id, workdir)[0] == "RUNNING"

    out = bps("cancel", "--id", run_id, cwd=workdir).stdout

    assert f"Successfully canceled job with id '{run_id}'" in out
    assert airflow.run_state(dag_id, run_id) == "failed"
    names = job_names_of(airflow, dag_id, run_id)
    wait_for(lambda: not queued(site, names), timeout=120, what=f"no job of {run_id} left in the queue")
    accounted = wait_for(
        lambda: site.run("perlmutter", f"sacct -X -P -n -o State -j {job_id}").stdout.strip(),
        until=lambda s: s.startswith("CANCELLED"), timeout=120, what=f"job {job_id} cancelled in sacct",
    )  # fmt: skip
    assert accounted.startswith("CANCELLED")
    state, labels = report(run_id, workdir)
    assert state == "DELETED"
    assert labels["task0"] == {"PRUNED": 2, "EXPECTED": 2}, labels
    assert "has ended already (failed)" in bps("cancel", "--id", run_id, cwd=workdir).stdout
