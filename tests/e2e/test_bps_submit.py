"""`bps submit`, `report`, `restart`, `cancel` with our plugin, through a real Airflow, on the site's SLURM.

Real parts: ctrl_bps's own CLI (``bps``) in the LSST venv (docker/site/lsst-venv), with this checkout's
airflow_desc.bps first on its path; an Airflow deployment (tests/deploy.py, LocalExecutor) whose
dag-processor reads a DAGs folder of this test's own, its api-server logging users in at
``/auth/token`` (``bps`` reaches it with a user and password from the environment, as a user would);
a butler repo and a QuantumGraph of AddTask quanta (lsst.pipe.base.tests.simpleQGraph, made by
tests/bps_lsst/make_submission.py), every quantum run by ``pipetask run-qbb`` inside our SLURM jobs
on the local clusters, as the site's user ``desc``, and the final job's ``butler aggregate-graph``.
A quantum is made to fail by moving its input file away; it is put back before ``bps restart``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

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


@pytest.fixture
def bps_airflow(deployments: OneAtATime) -> Deployment:
    """A LocalExecutor deployment with a DAGs folder of its own (``bps submit`` writes into it) and a user."""
    return deployments.get(
        "LocalExecutor-bps",
        lambda root: Deployment.local(root, dags=root / "dags", users={USER: ("admin", PASSWORD)}),
    )


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
    airflow: Deployment, site: Site, workdir: pathlib.Path, *, name: str, labels: int, detectors: int
) -> dict[str, Any]:
    """Write the butler repo, QuantumGraph and BPS config (bundled labels, no retries) for the site's user.

    :param name: the submission's workflow name (its DAG id): each test's own.
    """
    extra = (
        f"airflowDagFolder: {airflow.dags}\nairflowWorkflowName: {name}\n"
        "airflowBundling: {threshold: 1}\n"
        f"environment:\n  CTRL_MPEXEC_DIR: {LSST_VENV}\n  DAF_BUTLER_DIR: {LSST_VENV}\n"
    )
    command = [
        str(LSST_VENV / "bin" / "python"), str(ROOT / "tests" / "bps_lsst" / "make_submission.py"),
        str(workdir), "--labels", str(labels), "--detectors", str(detectors), "--retries", "0",
        "--extra", extra, "--no-prepare",
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
    query = [str(LSST_VENV / "bin" / "butler"), "query-datasets", repo, dataset_type,
             "--collections", "u/tester/simple/run1"]  # fmt: skip
    out = subprocess.run(query, capture_output=True, text=True, env=lsst_env(), check=True).stdout
    return sorted(line.split()[-1] for line in out.splitlines() if line.strip().startswith(dataset_type))


def test_bps_submit_report_and_restart_rerun_only_what_failed(
    bps_airflow: Deployment, site: Site, workdir: pathlib.Path
) -> None:
    airflow = bps_airflow
    made = make_submission(airflow, site, workdir, name="bps_e2e_restart", labels=2, detectors=3)
    broken = pathlib.Path(made["inputs"]["1"])  # detector 1's input: task0 fails there
    aside = broken.with_name(broken.name + ".aside")
    broken.rename(aside)

    run_id = submit(made["config"])
    dag_id = run_id.removeprefix("bps__")
    assert airflow.wait_run(dag_id, run_id) == "failed", f"logs in {airflow.root}"

    state, labels = report(run_id, workdir)
    assert state == "FAILED"
    assert labels == {
        "pipetaskInit": {"SUCCEEDED": 1, "EXPECTED": 1},
        "task0": {"SUCCEEDED": 2, "FAILED": 1, "EXPECTED": 3},
        "task1": {"PRUNED": 3, "EXPECTED": 3},  # a failed quantum skips the labels below it
        "finalJob": {"SUCCEEDED": 1, "EXPECTED": 1},
    }

    aside.rename(broken)
    restarted = bps("restart", "--id", run_id, cwd=workdir).stdout
    assert f"Run Id: {run_id}" in restarted
    assert airflow.wait_run(dag_id, run_id) == "success", f"logs in {airflow.root}"

    state, labels = report(run_id, workdir)
    assert state == "SUCCEEDED"
    assert {label: counts.get("SUCCEEDED") for label, counts in labels.items()} == {
        "pipetaskInit": 1, "task0": 3, "task1": 3, "finalJob": 1,
    }  # fmt: skip
    assert datasets(made["repo"], "add_dataset2") == ["0", "1", "2"]  # task1's, registered by the final job
    tries = attempts(airflow, run_id)
    assert tries[("task0", "0")] == tries[("task0", "2")] == ["success"]  # not rerun
    assert tries[("task0", "1")] == ["failed", "success"]
    assert tries[("pipetaskInit", "")] == ["success"]
    assert [t[-1] for (process, _), t in tries.items() if process == "task1"] == ["success"] * 3
    assert tries[("finalJob", "")] == ["success", "success"]  # aggregates the rerun's outputs too


@pytest.fixture
def full_perlmutter(site: Site) -> Iterator[None]:
    """Both perlmutter nodes taken by a job of the site's user: the submission's jobs wait in the queue."""
    job_id = site.sbatch(
        "perlmutter",
        "#!/bin/bash\nsleep 600\n",
        "--nodes=2",
        "--exclusive",
        "--time=10",
        "--output=/dev/null",
    )
    try:
        wait_for(
            lambda: job_state(site, f"-j {job_id}") == "RUNNING", timeout=120, what=f"blocker {job_id} runs"
        )
        yield
    finally:
        site.run("perlmutter", f"scancel {job_id}", check=False)


def job_state(site: Site, which: str) -> str:
    return site.run("perlmutter", f"sacct -X -P -n -o State {which} -S now-1days").stdout.strip()


@pytest.mark.exclusive  # it fills every perlmutter node: run alone
@pytest.mark.skip(
    reason="not reliable yet: in one whole-file run its first job never showed PENDING in sacct within "
    "120 s (passed alone); to be found before it joins make test (issue #16)"
)
@pytest.mark.usefixtures("full_perlmutter")
def test_bps_cancel_fails_the_run_and_cancels_its_slurm_job(
    bps_airflow: Deployment, site: Site, workdir: pathlib.Path
) -> None:
    airflow = bps_airflow
    made = make_submission(airflow, site, workdir, name="bps_e2e_cancel", labels=1, detectors=2)
    run_id = submit(made["config"])
    dag_id = run_id.removeprefix("bps__")

    def deferred() -> Mapping[str, Any] | None:
        rows = airflow.sql(
            "SELECT task_id, map_index, try_number FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s AND state = 'deferred'",
            dag_id,
            run_id,
        )
        return dict(zip(("task_id", "map_index", "try_number"), rows[0], strict=True)) if rows else None

    ti = wait_for(deferred, timeout=300, what=f"a task of {run_id} waiting on its SLURM job")
    name = job_name_for(dag_id, run_id, ti["task_id"], ti["map_index"], ti["try_number"])
    wait_for(lambda: job_state(site, f"--name={name}") == "PENDING", timeout=120, what=f"job {name} queued")

    out = bps("cancel", "--id", run_id, cwd=workdir).stdout

    assert f"Successfully canceled job with id '{run_id}'" in out
    assert airflow.run_state(dag_id, run_id) == "failed"
    state = wait_for(
        lambda: job_state(site, f"--name={name}"), until=lambda s: s.startswith("CANCELLED"), timeout=120,
        what=f"job {name} cancelled",
    )  # fmt: skip
    assert state.startswith("CANCELLED")
    assert report(run_id, workdir)[0] == "DELETED"
    assert "has ended already (failed)" in bps("cancel", "--id", run_id, cwd=workdir).stdout
