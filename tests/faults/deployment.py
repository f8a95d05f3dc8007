"""The Airflow the fault matrix runs its workflow on, behind one small interface.

``local`` (:class:`LocalDeployment`): tests/e2e/services.py's Airflow (api-server, scheduler,
dag-processor, triggerer; LocalExecutor on the site's metadata PostgreSQL, reset at start) with
the DAGs of tests/faults/dags, and the history written by the task processes themselves into the
site's history PostgreSQL, in a database of the matrix's own (``desc_faults_history``: other tests
reset ``desc_history``), as production does: an Airflow connection named by ``[desc]
history_conn_id``, no ``DESC_HISTORY_JSONL``.

A Celery deployment (two workers, two triggerers) is one more entry in :data:`DEPLOYMENTS`
implementing the same methods (the faults use only these); ``--deployment`` picks it.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess

from tests.e2e.services import AIRFLOW, PORT, Airflow, api
from tests.waiting import wait_for

__all__ = ["DEPLOYMENTS", "LocalDeployment"]

DAGS = pathlib.Path(__file__).parent / "dags"
ROOT = pathlib.Path(__file__).resolve().parents[2]
HISTORY_CONN_ID = "desc_faults_history"


class LocalDeployment:
    """One Airflow with LocalExecutor: its task processes are the scheduler's children."""

    name = "local"

    def __init__(self, home: pathlib.Path, history_uri: str) -> None:
        self.af = Airflow.configure(home, home / "unused-history.jsonl")
        env = self.af.env
        env.pop("DESC_HISTORY_JSONL", None)
        env.pop("DESC_HISTORY_CONN_ID", None)
        env.update(
            {
                "AIRFLOW__DESC__HISTORY_CONN_ID": HISTORY_CONN_ID,
                f"AIRFLOW_CONN_{HISTORY_CONN_ID.upper()}": history_uri,
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__CORE__PARALLELISM": "16",
                # The components import airflow_desc and the DAG files from this checkout.
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
            }
        )
        self.home = home
        self.history_uri = history_uri
        self.extra: dict[str, subprocess.Popen[bytes]] = {}

    # --- life -----------------------------------------------------------------------------------
    def start(self) -> None:
        self.af.start()

    def stop(self) -> None:
        for name in list(self.extra):
            self.stop_component(name)
        self.af.stop()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(
            [str(AIRFLOW), *args],
            env=self.af.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def component_pid(self, name: str) -> int:
        """The process (group) id of a component: ``scheduler``, ``triggerer``, ``api-server``..."""
        proc = self.af.procs.get(name) or self.extra[name]
        return proc.pid

    def signal_component(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to a component's whole process group (LocalExecutor's workers are the scheduler's)."""
        os.killpg(self.component_pid(name), sig)

    def restart_component(self, name: str, *, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop a component with ``sig`` (its process group), wait for it, start it again."""
        proc = self.af.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        args = {"api-server": ["api-server", "--port", str(PORT), "--host", "127.0.0.1"]}.get(name, [name])
        self.af.procs[name] = self._spawn(name, args)

    def add_component(self, name: str, args: list[str]) -> None:
        """Start one more component (a second triggerer), until :meth:`stop_component` or :meth:`stop`."""
        self.extra[name] = self._spawn(name, args)

    def stop_component(self, name: str) -> None:
        proc = self.extra.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)

    def worker_pids(self, ti_id: str) -> list[int]:
        """The processes running task instance ``ti_id`` (LocalExecutor: ``airflow worker -- <ti id>``,
        the supervisor and the task process it forked)."""
        out = subprocess.run(
            ["pgrep", "-f", f"^airflow worker -- {ti_id}"], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def flush_history(self) -> int:
        """Write out what the task processes spooled while the history was away (``python -m
        airflow_desc.history flush``, as an operator would); return how many records waited."""
        spool = self.home / "desc" / "history-spool.jsonl"
        waiting = len(spool.read_text().splitlines()) if spool.exists() else 0
        if waiting:
            subprocess.run(
                [str(AIRFLOW.with_name("python")), "-m", "airflow_desc.history", "flush"],
                env=self.af.env, capture_output=True, check=False, timeout=120,
            )  # fmt: skip
        return waiting

    # --- runs -----------------------------------------------------------------------------------
    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        return self.af.sql(query, *params)

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, object]) -> None:
        wait_for(
            lambda: self.sql("SELECT 1 FROM dag WHERE dag_id = %s", dag_id),
            timeout=180,
            what=f"{dag_id} parsed; logs in {self.home}",
        )
        self.af.run("dags", "unpause", dag_id)
        self.af.run("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        return self.af.run_state(dag_id, run_id)

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


DEPLOYMENTS = {"local": LocalDeployment}
