"""SlurmOperator under a real scheduler, triggerer and LocalExecutor: deferral, worker death."""

from __future__ import annotations

import subprocess
from typing import Any

from airflow_desc.operators.job_names import job_name_for
from tests.deploy import Deployment, api
from tests.integration.site import Site
from tests.waiting import wait_for


def jobs_named(site: Site, cluster: str, name: str) -> list[str]:
    out = site.run(cluster, f"sacct -X -P -n -o JobID --name={name} -S now-1days").stdout
    return out.split()


def kill_task_process(airflow: Deployment, dag_id: str, run_id: str, task_id: str = "job") -> int:
    """SIGKILL one task instance's runner ('airflow worker -- <its id>'), as if its machine had died.

    Found by the task instance's id, not by the title alone: a task of an earlier test's run (a
    deferred one resuming) may be running too.
    """
    rows = airflow.sql(
        "SELECT id FROM task_instance WHERE dag_id = %s AND run_id = %s AND task_id = %s",
        dag_id,
        run_id,
        task_id,
    )
    [(ti_id,)] = rows
    pids = wait_for(
        lambda: subprocess.run(
            ["pgrep", "-f", f"^airflow worker -- {ti_id}"], capture_output=True, text=True
        ).stdout.split(),
        timeout=60,
        what=f"the task process of {dag_id} {run_id} {task_id}",
        interval=0.3,
    )
    for pid in pids:
        subprocess.run(["kill", "-9", pid], check=False)
    return len(pids)


def records_of(airflow: Deployment, run_id: str) -> list[dict[str, Any]]:
    """The run's attempts in the PostgreSQL history, as the workers wrote them."""
    return airflow.history_rows(run_id)


def test_deferrable_job_waits_in_the_real_triggerer(airflow: Deployment) -> None:
    run_id = airflow.trigger("desc_e2e_deferred")
    seen = set()

    def run_state() -> str | None:
        state = airflow.run_state("desc_e2e_deferred", run_id)
        if state not in ("success", "failed"):  # the task states seen while the run goes on
            seen.update(s for s, _ in airflow.task_states("desc_e2e_deferred", run_id).values())
        return state

    state = wait_for(
        run_state,
        until=lambda state: state in ("success", "failed"),
        timeout=300,
        interval=0.5,
        what=f"run {run_id} finishes; logs in {airflow.home}",
    )
    assert state == "success", f"logs in {airflow.home}"
    assert "deferred" in seen, seen
    [rec] = records_of(airflow, run_id)
    assert rec["state"] == "success"
    # The UI's log view of the task shows the job's output, on success too.
    log = airflow.task_log("desc_e2e_deferred", run_id, "job", 1)
    assert f"output of SLURM job {rec['job_id']}" in log and "[deferred] done" in log, log[-3000:]
    # The poll ran in the triggerer process: its SSH login to the cluster is in the triggerer's log.
    assert "Authentication (publickey) successful" in airflow.log_of("triggerer")


def kill_the_worker_during_the_first_try(
    airflow: Deployment, site: Site, dag_id: str
) -> tuple[str, str, dict[str, Any]]:
    """Trigger ``dag_id``, SIGKILL its task process once the first try's job is in SLURM, and check
    that the run still succeeds with that one job only (no job of a second try).

    :return: the run id, the first try's job name and the run's one history record (a success).
    """
    run_id = airflow.trigger(dag_id)
    first = job_name_for(dag_id, run_id, "job", -1, 1)
    wait_for(lambda: jobs_named(site, "s3df", first), timeout=120, what="the first try's job", interval=1)
    assert kill_task_process(airflow, dag_id, run_id) == 1
    assert airflow.wait_run(dag_id, run_id) == "success", f"logs in {airflow.home}"
    assert len(jobs_named(site, "s3df", first)) == 1
    assert jobs_named(site, "s3df", job_name_for(dag_id, run_id, "job", -1, 2)) == []
    [rec] = records_of(airflow, run_id)
    assert rec["state"] == "success"
    return run_id, first, rec


def test_worker_death_then_retry_reattaches_to_the_same_job(airflow: Deployment, site: Site) -> None:
    dag_id = "desc_e2e_reattach"
    # Exactly one SLURM job for this task instance: the retry re-attached instead of submitting.
    run_id, first, rec = kill_the_worker_during_the_first_try(airflow, site, dag_id)
    assert airflow.task_states(dag_id, run_id)["job"] == ("success", 2)
    assert rec["job_id"] == jobs_named(site, "s3df", first)[0]


def test_worker_death_after_the_job_ended_adopts_its_result(airflow: Deployment, site: Site) -> None:
    _, _, rec = kill_the_worker_during_the_first_try(airflow, site, "desc_e2e_adopt")
    assert rec["extra"].get("adopted") is True


def test_marking_the_deferred_task_failed_cancels_the_job(airflow: Deployment, site: Site) -> None:
    dag_id = "desc_e2e_markfailed"
    run_id = airflow.trigger(dag_id)
    name = job_name_for(dag_id, run_id, "job", -1, 1)
    wait_for(
        lambda: airflow.task_states(dag_id, run_id).get("job", (None, 0))[0] == "deferred",
        timeout=180,
        what="deferral",
    )
    [job_id] = wait_for(lambda: jobs_named(site, "perlmutter", name), timeout=60, what="the job")

    def slurm_state() -> str:
        return site.run("perlmutter", f"sacct -X -P -n -o State -j {job_id}").stdout.strip()

    wait_for(lambda: slurm_state() == "RUNNING", timeout=120, what="the job to run")
    api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/job", {"new_state": "failed"})
    state = wait_for(lambda: (s := slurm_state()).startswith("CANCELLED") and s, timeout=90, what="scancel")
    assert state.startswith("CANCELLED")
    assert airflow.task_states(dag_id, run_id)["job"][0] == "failed"
