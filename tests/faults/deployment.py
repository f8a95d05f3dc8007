"""The Airflow the fault matrix runs its workflow on: a thin adapter over :class:`tests.deploy.Deployment`.

Two entries in :data:`DEPLOYMENTS`, ``--deployment`` picks one:

- ``local``: :meth:`Deployment.local` (api-server, scheduler running the tasks with LocalExecutor,
  dag-processor, triggerer);
- ``celery``: :meth:`Deployment.celery` (two Celery workers with homes of their own, two
  triggerers), with room for the matrix's widest run (4 task slots per worker, triggerers of the
  default capacity).

Both with the DAGs of tests/faults/dags, on the site's metadata PostgreSQL (reset at start). The
history is Deployment's: the task processes write it, as production does, through the Airflow
connection ``desc_history`` (``[desc] history_conn_id``) into a schema of the site's history
database made for this session (``faults_<hex>``, dropped at the end), spooling to Deployment's
shared ``[desc] spool_dir`` while it is away.

The faults name components by role: ``triggerer`` is the local deployment's triggerer, the Celery
deployment's ``triggerer-a``.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
from typing import Any

from tests.deploy import LOG_PORT, NEEDS, Deployment, api
from tests.waiting import wait_for

__all__ = ["DEPLOYMENTS", "FaultDeployment"]

DAGS = pathlib.Path(__file__).parent / "dags"
#: The log server port of a component :meth:`FaultDeployment.add_component` starts (the
#: deployment's own components use LOG_PORT to LOG_PORT + 4).
EXTRA_LOG_PORT = LOG_PORT + 6


class FaultDeployment:
    """What the faults ask of an Airflow (these methods only), over a :class:`Deployment`."""

    def __init__(self, name: str, deployment: Deployment) -> None:
        self.name = name
        self.d = deployment
        for component in deployment.components.values():
            component.env["AIRFLOW__CORE__PARALLELISM"] = "16"

    @classmethod
    def local(cls, home: pathlib.Path) -> FaultDeployment:
        return cls("local", Deployment.local(home, dags=DAGS, history_prefix="faults"))

    @classmethod
    def celery(cls, home: pathlib.Path) -> FaultDeployment:
        deployment = Deployment.celery(
            home, worker_concurrency=4, triggerer_capacity=1000, dags=DAGS, history_prefix="faults"
        )
        return cls("celery", deployment)

    @property
    def home(self) -> pathlib.Path:
        return self.d.root

    # --- life -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.d.start()

    def stop(self) -> None:
        self.d.stop()

    def _component(self, name: str) -> str:
        if name == "triggerer" and name not in self.d.components:
            return "triggerer-a"
        return name

    def component_pid(self, name: str) -> int:
        """The process (group) id of a component: ``scheduler``, ``triggerer``, ``api-server``..."""
        proc = self.d.components[self._component(name)].proc
        assert proc is not None, f"{name} never started"
        return proc.pid

    def signal_component(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to a component's whole process group (LocalExecutor's workers are the scheduler's)."""
        self.d.components[self._component(name)].signal(sig)

    def restart_component(self, name: str, *, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop a component with ``sig`` (its process group), wait for it, start it again."""
        name = self._component(name)
        if sig == signal.SIGKILL:
            self.d.kill(name, sig)
        else:
            self.d.components[name].signal(sig)
            self.d.components[name].stop(timeout=60)
        self.d.start_component(name)

    def add_component(self, name: str, args: list[str]) -> None:
        """Start one more triggerer, until :meth:`stop_component` or :meth:`stop`."""
        assert args[0] == "triggerer", f"only triggerers are added, not {args}"
        self.d.add_component(name, args, NEEDS["triggerer"], log_port=EXTRA_LOG_PORT)

    def stop_component(self, name: str) -> None:
        self.d.remove_component(name)

    def worker_pids(self, ti_id: str) -> list[int]:
        """The processes running task instance ``ti_id``, found by their command line: the task
        process (``airflow worker -- <ti id>``, a child of the LocalExecutor worker or of a Celery
        worker's pool process); under Celery also its supervisor, the pool process itself
        (``airflow supervisor: <ti id>``), as a lost worker host would lose it."""
        pattern = f"^airflow worker -- {ti_id}"
        if self.name == "celery":
            pattern = f"^airflow (worker -- |supervisor: ){ti_id}"
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout
        return [int(p) for p in out.split()]

    def flush_history(self) -> int:
        """Write out what the task processes spooled while the history was away (``python -m
        airflow_desc.history flush``, as an operator would); return how many records waited."""
        spool = self.d.spool_dir / "history-spool.jsonl"
        waiting = len(spool.read_text().splitlines()) if spool.exists() else 0
        if waiting:
            subprocess.run(
                [sys.executable, "-m", "airflow_desc.history", "flush"],
                env=self.d.client_env, capture_output=True, check=False, timeout=120,
            )  # fmt: skip
        return waiting

    # --- runs -----------------------------------------------------------------------------------
    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Query Airflow's metadata DB."""
        return self.d.sql(query, *params)

    def history_sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Query the history the task processes write (the deployment's schema)."""
        return self.d.history.sql(query, *params)

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, object]) -> None:
        wait_for(
            lambda: self.sql("SELECT 1 FROM dag WHERE dag_id = %s", dag_id),
            timeout=180,
            what=f"{dag_id} parsed; logs in {self.home}",
        )
        self.d.run("dags", "unpause", dag_id)
        self.d.run("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        return self.d.run_state(dag_id, run_id)

    def fail_run(self, dag_id: str, run_id: str) -> None:
        """Mark a run failed through the REST API."""
        api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})

    def clear(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> dict[str, object]:
        """Clear one task instance through the REST API (``clearTaskInstances``)."""
        return api(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            {
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": [[task_id, map_index]],
                "only_failed": False,
                "reset_dag_runs": True,
            },
        )


DEPLOYMENTS = {"local": FaultDeployment.local, "celery": FaultDeployment.celery}
