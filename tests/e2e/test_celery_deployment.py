"""A generated workflow on the distributed deployment (tests/deploy.py, ``Deployment.celery``).

CeleryExecutor with the site's Redis as broker and the metadata PostgreSQL as result backend; two
Celery workers of one slot each, with their own AIRFLOW_HOMEs (two hosts), two triggerers holding
2 triggers each, one scheduler, dag-processor and api-server. desc_e2e_celery
(tests/data/specs/desc-e2e-celery.yaml) queues 4 bundle task instances at once and defers 5 jobs,
which all wait for a gate file the test creates only once 4 of their triggers are held (2 per
triggerer) and a triggerer polled 2 perlmutter jobs at once; then:

- both workers executed workloads of the run: each worker's own log names the task instances it
  ran (``Executing workload ... run_id=...``), and ``task_instance.hostname`` (the worker's
  ``hostname_callable``), sampled while the run goes on, names both: a deferred task's hostname is
  that of the worker that resumed it last, so the rows at the end may name one worker only; all
  from the ``default`` queue;
- both triggerers held its triggers (``trigger.triggerer_id``, sampled while the run goes on, is
  the id of each triggerer's job, whose ``hostname`` names it);
- each triggerer polled each cluster from one poller: its log's ``poll N of <conn>`` lines count
  1, 2, 3... per cluster (two pollers of one cluster in one triggerer would repeat numbers), one
  sacct call each, and a poll covered several jobs at once;
- the workers wrote the PostgreSQL history themselves (no JSON lines anywhere, nothing left in
  the shared spool), one row per process instance try, nothing twice;
- the api-server's status.json shows every process instance Success.
"""

from __future__ import annotations

import collections
import json
import re
import shlex
import time
import urllib.request

from tests.deploy import PORT, Deployment
from tests.integration.site import Site
from tests.waiting import wait_for

DAG_ID = "desc_e2e_celery"
POLL = re.compile(r"poll (\d+) of (\S+): (\d+) job\(s\) in (\d+) sacct call\(s\)")
WORKERS = ("worker-a", "worker-b")


def workloads(af: Deployment, run_id: str) -> dict[str, list[str]]:
    """The task ids of ``run_id`` each worker's log says it executed (a deferred task's twice)."""
    ran = re.compile(r"Executing workload in Celery: .*?/run_id=" + re.escape(run_id) + r"/task_id=([^/]+)/")
    return {name: ran.findall(af.log_of(name)) for name in WORKERS}


def test_a_generated_workflow_runs_on_two_workers_and_two_triggerers(
    celery_airflow: Deployment, site: Site
) -> None:
    af = celery_airflow
    assert not any("DESC_HISTORY_JSONL" in c.env for c in af.components.values())
    gate = f"/tmp/desc-e2e-celery.{time.time_ns()}"
    run_id = af.trigger(DAG_ID, conf={"gate": gate})

    holders: set[int] = set()
    hostnames: set[str] = set()

    def held() -> int:
        hostnames.update(
            h for (h,) in af.sql(
                "SELECT hostname FROM task_instance WHERE dag_id = %s AND run_id = %s AND hostname <> ''",
                DAG_ID, run_id,
            )
        )  # fmt: skip
        rows = af.sql(
            "SELECT t.triggerer_id FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
            "WHERE ti.dag_id = %s AND ti.run_id = %s AND t.triggerer_id IS NOT NULL",
            DAG_ID, run_id,
        )  # fmt: skip
        holders.update(int(t) for (t,) in rows)
        return len(rows)

    def shared_poll() -> bool:
        logs = af.log_of("triggerer-a") + af.log_of("triggerer-b")
        return any(int(jobs) >= 2 for _, conn, jobs, _ in POLL.findall(logs) if conn == "perlmutter_ssh")

    wait_for(
        lambda: held() == 4 and shared_poll(),
        timeout=300,
        interval=0.5,
        what=f"4 triggers held, 2 per triggerer, and a poll of 2 perlmutter jobs; logs in {af.root}",
    )
    site.run("perlmutter", f"touch {shlex.quote(gate)}")  # the jobs may end

    def run_state() -> str | None:
        held()
        return af.run_state(DAG_ID, run_id)

    state = wait_for(
        run_state,
        until=lambda s: s in ("success", "failed"),
        timeout=600,
        interval=0.5,
        what=f"run {run_id} finishes; logs in {af.root}",
    )
    assert state == "success", f"{af.task_states(DAG_ID, run_id)}; logs in {af.root}"

    # Both workers ran task instances of the run, from the default queue.
    ran = af.sql(
        "SELECT hostname, queue, state FROM task_instance WHERE dag_id = %s AND run_id = %s", DAG_ID, run_id
    )
    hostnames.update(h for h, _, _ in ran if h)
    executed = workloads(af, run_id)
    alive = {name: af.components[name].running() for name in WORKERS}
    assert all(executed.values()) and hostnames == set(WORKERS), (
        f"workloads per worker (their logs): {executed}; hostnames seen: {sorted(hostnames)}; "
        f"workers running: {alive}; logs in {af.root}"
    )
    assert {q for _, q, _ in ran} == {"default"}
    # Both triggerers held triggers of the run.
    triggerers = dict(af.sql("SELECT id, hostname FROM job WHERE job_type = 'TriggererJob'"))
    assert {triggerers[t] for t in holders} == {"triggerer-a", "triggerer-b"}, (holders, triggerers)

    # One poller per cluster per triggerer: its polls count 1, 2, 3... one sacct call each.
    shared = 0
    for name in ("triggerer-a", "triggerer-b"):
        polls: dict[str, list[int]] = collections.defaultdict(list)
        for number, conn, jobs, calls in POLL.findall(af.log_of(name)):
            polls[conn].append(int(number))
            assert calls == "1", f"{name}: poll {number} of {conn} made {calls} sacct calls"
            shared = max(shared, int(jobs))
        assert polls, f"{name} never polled: see {af.components[name].log}"
        for conn, numbers in polls.items():
            assert numbers == list(range(1, len(numbers) + 1)), (
                f"{name} polled {conn} from 2 pollers: {numbers}"
            )
    assert shared >= 2

    # The workers wrote the PostgreSQL history: one row per process instance try, nothing twice.
    rows = af.history_rows(run_id)
    tries = collections.Counter((r["process"], r["stream"], r["try_number"]) for r in rows)
    assert [k for k, n in tries.items() if n > 1] == []
    assert collections.Counter(r["process"] for r in rows) == {
        "setupVisits": 1, "ingest": 1, "calibrateVisit": 4, "summary": 1,
    }  # fmt: skip
    assert {r["state"] for r in rows} == {"success"}
    twice = af.history.sql(
        "SELECT run_ref, stream_ref, process, try_number FROM process_instances "
        "GROUP BY run_ref, stream_ref, process, try_number HAVING count(*) > 1"
    )
    assert twice == []
    spool = af.spool_dir / "history-spool.jsonl"
    assert not spool.exists() or not spool.read_text().strip(), spool.read_text()

    # The api-server's status page reads that history.
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/desc/status.json?run={run_id}", timeout=60) as resp:
        table = {r["Process"] or r["Type"]: r for r in json.loads(resp.read())}
    assert table["calibrateVisit"]["Success"] == 4
    assert table["Totals"]["Success"] == table["Totals"]["Total"] == 7
