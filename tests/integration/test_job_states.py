"""The state rules on the real site: who cancelled a job, a node failure, a reused job id.

- The login user's own ``scancel`` of a running job: Cancelled, the task fails, its retry unused.
- root's ``scancel`` (on the cluster host, as an admin would): Terminated, retried.
- A node drained and set DOWN under a running job (exclusive: it takes a node of the shared site): it ends
  NODE_FAIL and the try resubmits it (no retry spent), on the other perlmutter node; on s3df, whose
  partition has one node, without ``--exclude``: it runs once the node is back.
- A job id in the saved state that names another task's job (as after slurmctld lost its state and
  handed the id out again) is not re-attached: the task submits its own job.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_desc.emulate import payload_command
from airflow_desc.history import JsonLinesRecorder, ProcessRecord
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.operators.job_names import task_dir_for
from airflow_desc.operators.slurm import SlurmOperator
from airflow_desc.slurm import JobSpec, render_job_script
from tests.integration.airflow_env import AirflowEnv
from tests.integration.site import NODES, Site
from tests.waiting import wait_for


def records(path: pathlib.Path) -> list[ProcessRecord]:
    return sorted(JsonLinesRecorder(path).read(), key=lambda r: (r.try_number, r.end_time or datetime.min))


def attempts(path: pathlib.Path) -> list[ProcessRecord]:
    """Every record as it was written, in order (``records`` keeps the last write of each attempt)."""
    return [
        ProcessRecord.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()
    ]


def slurm_conf(cluster: str) -> str:
    return os.environ[f"DESC_SITE_SLURM_CONF_{cluster.upper()}"]


def as_root(cluster: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a SLURM command on the cluster host as root (an admin), not through the login."""
    proc = subprocess.run(
        argv,
        env={**os.environ, "SLURM_CONF": slurm_conf(cluster)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc


def resume(cluster: str, node: str) -> None:
    """Return a node to service unless it is back already (ReturnToService=2 lets a DOWN node's slurmd
    register it again)."""
    state = as_root(cluster, "sinfo", "-h", "-n", node, "-o", "%T").stdout.strip()
    if state.rstrip("*~#!%$@^-+") in ("down", "drained", "draining", "drain", "fail", "failing"):
        as_root(cluster, "scontrol", "update", f"nodename={node}", "state=resume")


def fail_node(cluster: str, node: str) -> None:
    """Fail a node under its running jobs (they end NODE_FAIL), and keep it out until resumed: DRAIN
    first, as an admin would, so that ReturnToService=2 does not bring the DOWN node back by itself."""
    reason = "reason=desc-it-node-fail"
    as_root(cluster, "scontrol", "update", f"nodename={node}", "state=drain", reason)
    as_root(cluster, "scontrol", "update", f"nodename={node}", "state=down", reason)


def jobs_named(site: Site, cluster: str, prefix: str) -> list[dict[str, str]]:
    """The login user's queued and running jobs whose name starts with ``prefix``."""
    out = site.run(cluster, "squeue -h -u \"$USER\" -o '%i|%j|%T|%N'").stdout
    rows = [
        dict(zip(("id", "name", "state", "node"), line.split("|"), strict=True)) for line in out.splitlines()
    ]
    return [r for r in rows if r["name"].startswith(prefix)]


def running(site: Site, cluster: str, prefix: str) -> dict[str, str] | None:
    found = [r for r in jobs_named(site, cluster, prefix) if r["state"] == "RUNNING"]
    return found[0] if found else None


class DagRun:
    """`airflow dags test` of one DAG in the background; its jobs are cancelled if the test fails."""

    def __init__(self, env: AirflowEnv, dag_id: str, tmp_path: pathlib.Path) -> None:
        self.history = tmp_path / "history.jsonl"
        self.output = tmp_path / "dags-test.log"
        self.proc = env.dags_test_start(dag_id, history=self.history, output=self.output)

    def wait(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.output.read_text()[-8000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)


@pytest.fixture
def dag_run(airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site) -> Iterator[Any]:
    started: list[tuple[DagRun, str, str]] = []

    def start(dag_id: str, cluster: str, task_id: str) -> DagRun:
        run = DagRun(airflow_env, dag_id, tmp_path)
        started.append((run, cluster, task_id))
        return run

    yield start
    for run, cluster, task_id in started:
        run.stop()
        for row in jobs_named(site, cluster, f"{task_id}."):
            site.run(cluster, f"scancel {row['id']}", check=False)


def test_a_users_own_scancel_is_cancelled_and_not_retried(dag_run: Any, site: Site) -> None:
    run = dag_run("desc_it_cancel_by_owner", "perlmutter", "cancel_by_owner")
    job = wait_for(lambda: running(site, "perlmutter", "cancel_by_owner."), timeout=300, what="the job runs")
    site.run("perlmutter", f"scancel {job['id']}")  # as the login user, the job's owner
    assert run.wait() != 0, run.log()
    recs = records(run.history)
    assert [(r.try_number, r.state, r.job_id) for r in recs] == [(1, "cancelled", job["id"])], run.log()
    assert recs[0].slurm_state.startswith("CANCELLED by ")
    assert "recorded Cancelled and not retried" in run.log()
    # The task had a retry left: no job of a second try was ever submitted.
    second = job["name"].rsplit(".t", 1)[0] + ".t2"
    assert SlurmHook("perlmutter_ssh", cluster="perlmutter").find_jobs_by_name(second) == []


def test_roots_scancel_is_terminated_and_retried(dag_run: Any, site: Site) -> None:
    run = dag_run("desc_it_cancel_by_root", "perlmutter", "cancel_by_root")
    job = wait_for(lambda: running(site, "perlmutter", "cancel_by_root."), timeout=300, what="the job runs")
    as_root("perlmutter", "scancel", job["id"])
    assert run.wait() == 0, run.log()
    recs = records(run.history)
    assert [(r.try_number, r.state) for r in recs] == [(1, "terminated"), (2, "success")], run.log()
    assert recs[0].slurm_state == "CANCELLED by 0" and recs[0].job_id == job["id"]


@pytest.fixture
def restore_nodes() -> Iterator[list[tuple[str, str]]]:
    downed: list[tuple[str, str]] = []
    yield downed
    for cluster, node in downed:
        resume(cluster, node)


@pytest.mark.exclusive  # the node it drains is every other test's too
def test_a_node_failure_reruns_on_the_other_node_within_the_try(
    dag_run: Any, site: Site, restore_nodes: list[tuple[str, str]]
) -> None:
    run = dag_run("desc_it_node_fail", "perlmutter", "node_fail")
    job = wait_for(lambda: running(site, "perlmutter", "node_fail."), timeout=300, what="the job runs")
    failed = job["node"]
    [other] = [n for n in NODES["perlmutter"] if n != failed]
    restore_nodes.append(("perlmutter", failed))
    fail_node("perlmutter", failed)
    # The task has no retries: it succeeds only because a node failure spends none.
    assert run.wait() == 0, run.log()
    lost, done = attempts(run.history)
    assert (lost.try_number, lost.slurm_state, lost.node) == (1, "NODE_FAIL", failed), run.log()
    assert (done.try_number, done.slurm_state, done.node) == (1, "COMPLETED", other), run.log()
    assert (lost.state, lost.reason) == ("terminated", "node-failure")
    assert f"Node {failed} of perlmutter is " in (lost.message or ""), lost.message
    assert "(SLURM's reason: desc-it-node-fail)" in (lost.message or ""), lost.message
    assert f"scontrol update nodename={failed} state=resume" in (lost.message or "")
    assert done.state == "success" and done.job_id != lost.job_id
    assert f"excluding {failed}" in run.output.read_text(), run.log()
    # Each SLURM job of the try is an attempt of its own: the node-failed one (resubmit 0), then the
    # success (resubmit 1, the latest), which names the lost job.
    rows = sorted(records(run.history), key=lambda r: r.attempt())
    assert [(r.try_number, r.resubmit, r.job_id, r.state) for r in rows] == [
        (1, 0, lost.job_id, "terminated"),
        (1, 1, done.job_id, "success"),
    ]
    assert [f["job_id"] for f in rows[1].extra["node_failures"]] == [lost.job_id]


@pytest.mark.exclusive
def test_a_node_failure_on_the_only_node_excludes_nothing(
    dag_run: Any, site: Site, restore_nodes: list[tuple[str, str]]
) -> None:
    run = dag_run("desc_it_node_fail_single", "s3df", "node_fail_single")
    job = wait_for(lambda: running(site, "s3df", "node_fail_single."), timeout=300, what="the job runs")
    restore_nodes.append(("s3df", "s3df-n1"))
    fail_node("s3df", "s3df-n1")
    again = wait_for(
        lambda: [r for r in jobs_named(site, "s3df", "node_fail_single.") if r["id"] != job["id"]],
        timeout=300,
        what="the job is resubmitted",
    )
    shown = as_root("s3df", "scontrol", "show", "job", again[0]["id"]).stdout
    assert "ExcNodeList=(null)" in shown, shown
    resume("s3df", "s3df-n1")
    assert run.wait() == 0, run.log()
    assert [(r.try_number, r.slurm_state) for r in attempts(run.history)] == [
        (1, "NODE_FAIL"),
        (1, "COMPLETED"),
    ], run.log()
    assert "no node excluded" in run.output.read_text(), run.log()


# --- a job id in the saved state that names another task's job ---


class Store:
    def __init__(self, **values: Any) -> None:
        self.values = dict(values)

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any, retention: Any = None) -> None:
        self.values[key] = value


class TI:
    dag_id, run_id, map_index, try_number = "desc_it_states", "reused_id", -1, 1

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id

    def xcom_push(self, key: str, value: Any) -> None:
        pass


@pytest.mark.usefixtures("in_process_airflow_home")
def test_a_reused_job_id_in_the_saved_state_is_not_re_attached(
    tmp_path: pathlib.Path, token: str, hook: SlurmHook, jobs: list[str]
) -> None:
    # Another task's job, running, whose id our task's saved state names (as when slurmctld lost
    # its state and handed the id out again).
    script = render_job_script(
        JobSpec(job_name=f"other.{token}.t1", command="sleep 300", time_limit_s=600, output="/dev/null")
    )
    foreign = hook.submit(script, remote_dir=f"airflow-desc-it/{token}", script_name="other.sh").job_id
    jobs.append(foreign)
    task_id = f"reused_{token}"
    saved = {
        "job_id": foreign,
        "try_number": 1,
        "submitted_at": datetime.now(timezone.utc).isoformat(),
        "log_path": f"{task_dir_for('airflow-desc', TI.dag_id, TI.run_id, task_id, -1)}/t1-{foreign}.out",
    }
    store = Store(slurm=saved)
    command = payload_command("--name", task_id, "--cpu-seconds", "0.5")
    op = SlurmOperator(
        task_id=task_id, cluster="perlmutter", command=command, deferrable=False, poll_interval=1,
        recorder=JsonLinesRecorder(tmp_path / "history.jsonl"),
    )  # fmt: skip
    summary = op.execute({"ti": TI(task_id), "task_state_store": store})  # type: ignore[arg-type]
    jobs.append(summary["job_id"])
    assert summary["job_id"] != foreign and summary["state"] == "success"
    assert store.values["slurm"]["job_id"] == summary["job_id"]
    # The other task's job was neither adopted nor touched.
    assert hook.squeue([foreign])[0].state.state.value == "RUNNING"
