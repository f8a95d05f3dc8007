"""Two clears of a running single job within a second, under the real scheduler and triggerer.

No duplicate (one job completes, every other one was cancelled), every cancelled attempt is
recorded Cancelled (a clear is the workflow's own people stopping it), no job cancelled by the first
clear is adopted by the second, and the rerun starts at once: the task has ``retry_delay=1h``, so a
rerun that waited as a retry after a failure would not finish within this test's wait.
"""

from __future__ import annotations

import threading

from airflow_desc.operators.job_names import job_name_for
from tests.deploy import Deployment, api
from tests.integration.site import Site
from tests.waiting import wait_for

DAG_ID = "desc_e2e_clear_twice"


def jobs_of(site: Site, dag_id: str, run_id: str, tries: int) -> dict[str, tuple[str, str]]:
    """Every job of the task instance's tries 1..``tries``: id -> (name, state)."""
    found: dict[str, tuple[str, str]] = {}
    for try_number in range(1, tries + 1):
        name = job_name_for(dag_id, run_id, "job", -1, try_number)
        out = site.run("perlmutter", f"sacct -X -P -n -o JobID,State --name={name} -S now-1days").stdout
        for line in out.splitlines():
            job_id, state = line.split("|", 1)
            found[job_id] = (name, state)
    return found


def clear(run_id: str) -> None:
    api(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        {"dry_run": False, "task_ids": ["job"], "dag_run_id": run_id, "only_failed": False},
    )


def test_two_clears_within_a_second_rerun_once_and_at_once(airflow: Deployment, site: Site) -> None:
    run_id = airflow.trigger(DAG_ID)
    first = job_name_for(DAG_ID, run_id, "job", -1, 1)
    wait_for(
        lambda: site.run("perlmutter", f"squeue -h -t RUNNING -o %i --name={first}").stdout.split(),
        timeout=180,
        what="the first job runs",
    )
    wait_for(
        lambda: airflow.task_states(DAG_ID, run_id)["job"][0] == "deferred",
        timeout=60,
        what="the task defers",
    )
    # Two clears as close together as two REST calls go: the second one from another thread.
    second = threading.Thread(target=clear, args=(run_id,))
    clear(run_id)
    second.start()
    second.join(timeout=60)
    assert airflow.wait_run(DAG_ID, run_id, timeout=400) == "success", f"logs in {airflow.root}"
    state, tries = airflow.task_states(DAG_ID, run_id)["job"]
    assert state == "success"
    jobs = jobs_of(site, DAG_ID, run_id, tries)
    completed = [j for j, (_, s) in jobs.items() if s == "COMPLETED"]
    assert len(completed) == 1, jobs  # no duplicate
    assert all(s.startswith("CANCELLED by ") for j, (_, s) in jobs.items() if j not in completed), jobs
    recs = [r for r in airflow.history_rows(run_id) if r["dag_id"] == DAG_ID]
    by_job = {r["job_id"]: r["state"] for r in recs}
    assert by_job == {j: ("success" if j in completed else "cancelled") for j in jobs}, recs
    # No try went up for retry (Airflow's history marks a try cleared while unfinished "failed").
    history = airflow.sql(
        "SELECT try_number, state FROM task_instance_history WHERE dag_id = %s AND run_id = %s",
        DAG_ID,
        run_id,
    )
    assert all(s != "up_for_retry" for _, s in history), history
