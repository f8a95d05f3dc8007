"""Maintenance-aware submission on the real site: a MAINT reservation of every node, a partition set down.

Each test makes the cluster unusable for everyone (an admin's ``scontrol`` as root, undone in the
teardown even when the test fails): exclusive, run alone. A SlurmOperator task and a bundle task
started while the cluster is in maintenance wait deferred (`airflow dags test` runs their trigger),
their log saying what they wait for; no job reaches SLURM meanwhile (sacct and squeue show none);
once the reservation is deleted (the partition is up again) the task submits and succeeds, its
retries unspent (it has none).
A job (and a bundle) whose cluster is in maintenance and that names a fallback cluster runs there at
once instead, its records saying so.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest

from tests.integration.airflow_env import AirflowEnv
from tests.integration.site import Site
from tests.integration.test_job_states import DagRun, as_root, records, slurm_conf
from tests.waiting import wait_for

pytestmark = pytest.mark.exclusive


def undo(cluster: str, *argv: str) -> None:
    """An admin's command of a teardown: run it whatever state the test left (it may be undone already)."""
    subprocess.run(
        argv,
        env={**os.environ, "SLURM_CONF": slurm_conf(cluster)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def create_maintenance(cluster: str, prefix: str = "desc_it_maint") -> str:
    """As an admin: a MAINT reservation of every node of ``cluster``, from now for an hour; its name."""
    name = f"{prefix}_{secrets.token_hex(3)}"
    as_root(
        cluster, "scontrol", "create", "reservation", f"reservationname={name}", "starttime=now",
        "duration=60", "flags=maint,ignore_jobs", "nodes=ALL", "users=root",
    )  # fmt: skip
    return name


def delete_maintenance(cluster: str, name: str) -> None:
    as_root(cluster, "scontrol", "delete", f"reservationname={name}")


@pytest.fixture
def maintenance() -> Iterator[Callable[[str], Callable[[], None]]]:
    """Start a MAINT reservation of every node of a cluster, now; return what ends it."""
    made: list[tuple[str, str]] = []

    def start(cluster: str) -> Callable[[], None]:
        name = create_maintenance(cluster)
        made.append((cluster, name))
        return lambda: delete_maintenance(cluster, name)

    yield start
    for cluster, name in made:
        undo(cluster, "scontrol", "delete", f"reservationname={name}")


def jobs_since(site: Site, cluster: str, since: datetime) -> list[str]:
    """Every job sacct or squeue knows on ``cluster`` submitted since ``since``: id|name|submit time."""
    start = since.strftime("%Y-%m-%dT%H:%M:%S")
    sacct = site.run(cluster, f"TZ=UTC sacct -X -n -P -S {start} -o JobID,JobName,Submit").stdout
    squeue = site.run(cluster, "TZ=UTC squeue -h -o '%i|%j|%V'").stdout
    rows = {line for line in (sacct + squeue).splitlines() if line.strip()}
    return sorted(row for row in rows if row.rsplit("|", 1)[-1] >= start)


def wait_for_hold(run: DagRun, text: str) -> str:
    return wait_for(
        lambda: run.output.read_text(),
        until=lambda log: text in log,
        timeout=300,
        what=f"the task log says {text!r}",
    )


@pytest.fixture
def run_dag(
    airflow_env: AirflowEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], DagRun]]:
    started: list[DagRun] = []

    def start(dag_id: str) -> DagRun:
        started.append(DagRun(airflow_env, dag_id, tmp_path_factory.mktemp(dag_id)))
        return started[-1]

    yield start
    for run in started:
        run.stop()


def test_a_job_into_maintenance_waits_deferred_and_goes_when_it_ends(
    run_dag: Callable[[str], DagRun], site: Site, maintenance: Callable[[str], Callable[[], None]]
) -> None:
    since = datetime.now(timezone.utc).replace(microsecond=0)
    end = maintenance("perlmutter")
    run = run_dag("desc_it_maint_job")
    log = wait_for_hold(run, "waiting for maintenance to end at ")
    assert "maintenance reservation desc_it_maint_" in log and "partition regular of perlmutter" in log, log
    assert "not submitting to perlmutter now, nothing is sent" in log
    assert jobs_since(site, "perlmutter", since) == [], "a job reached SLURM during the maintenance"
    end()
    assert run.wait() == 0, run.log()
    [rec] = records(run.history)
    assert (rec.try_number, rec.state, rec.slurm_state) == (1, "success", "COMPLETED"), run.log()
    assert "done waiting" in run.output.read_text()


def test_a_bundle_into_maintenance_waits_deferred_and_goes_when_it_ends(
    run_dag: Callable[[str], DagRun], site: Site, maintenance: Callable[[str], Callable[[], None]]
) -> None:
    since = datetime.now(timezone.utc).replace(microsecond=0)
    end = maintenance("perlmutter")
    run = run_dag("desc_it_bundle")
    log = wait_for_hold(run, "waiting for maintenance to end at ")
    assert "partition regular of perlmutter" in log, log
    assert jobs_since(site, "perlmutter", since) == [], "an allocation reached SLURM during the maintenance"
    end()
    assert run.wait() == 0, run.log()
    batch = [r for r in records(run.history) if r.process_type == "batch"]
    assert len(batch) == 40 and {r.state for r in batch} == {"success"}, run.log()
    assert len({r.job_id for r in batch}) == 1  # one allocation, submitted after the maintenance


def test_a_job_for_a_partition_that_is_down_waits_until_it_is_up(
    run_dag: Callable[[str], DagRun], site: Site
) -> None:
    since = datetime.now(timezone.utc).replace(microsecond=0)
    as_root("s3df", "scontrol", "update", "partitionname=roma", "state=down")
    try:
        run = run_dag("desc_it_partition_down")
        wait_for_hold(run, "waiting for partition roma of s3df to come up: sinfo says it is down")
        assert jobs_since(site, "s3df", since) == [], "a job reached SLURM while its partition was down"
    finally:
        undo("s3df", "scontrol", "update", "partitionname=roma", "state=up")
    assert run.wait() == 0, run.log()
    [rec] = records(run.history)
    assert (rec.try_number, rec.state) == (1, "success"), run.log()


def test_a_job_whose_cluster_is_in_maintenance_runs_on_its_fallback(
    run_dag: Callable[[str], DagRun], site: Site, maintenance: Callable[[str], Callable[[], None]]
) -> None:
    since = datetime.now(timezone.utc).replace(microsecond=0)
    maintenance("perlmutter")  # not ended by the test: the job must not wait for it
    run = run_dag("desc_it_fallback_job")
    assert run.wait() == 0, run.log()
    [rec] = records(run.history)
    assert (rec.try_number, rec.state, rec.cluster, rec.node) == (1, "success", "s3df", "s3df-n1"), run.log()
    moved = rec.extra["fallback"]
    assert (moved["from"], moved["to"], moved["why"]) == ("perlmutter", "s3df", "maintenance"), moved
    assert "maintenance reservation desc_it_maint_" in moved["reason"], moved
    assert "perlmutter cannot take it now: moved to fallback s3df" in run.output.read_text()
    assert jobs_since(site, "perlmutter", since) == [], "a job reached perlmutter during its maintenance"


def test_a_bundle_whose_cluster_is_in_maintenance_runs_on_its_fallback(
    run_dag: Callable[[str], DagRun], site: Site, maintenance: Callable[[str], Callable[[], None]]
) -> None:
    since = datetime.now(timezone.utc).replace(microsecond=0)
    maintenance("perlmutter")
    run = run_dag("desc_it_bundle_fallback")
    assert run.wait() == 0, run.log()
    batch = [r for r in records(run.history) if r.process_type == "batch"]
    assert len(batch) == 10 and {r.state for r in batch} == {"success"}, run.log()
    assert {(r.cluster, r.node) for r in batch} == {("s3df", "s3df-n1")}
    assert {r.extra["fallback"]["why"] for r in batch} == {"maintenance"}
    assert jobs_since(site, "perlmutter", since) == [], "an allocation reached perlmutter in its maintenance"
