"""A real Airflow for end-to-end tests: api-server, scheduler, dag-processor and triggerer.

LocalExecutor on the site's PostgreSQL metadata cluster (reset at start). Tests read task and
run states straight from that database. ``component_env`` changes one component's environment
(a value ``None`` removes the variable): the api-server runs with no DAG files and no cluster
connections (:func:`databases_only`), as in production.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

import psycopg2

from tests.waiting import wait_for

DAGS = pathlib.Path(__file__).parent / "dags"
AIRFLOW = pathlib.Path(sys.executable).with_name("airflow")
PORT = int(os.environ.get("DESC_E2E_API_PORT", "18080"))


@dataclasses.dataclass
class Airflow:
    home: pathlib.Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)
    component_env: dict[str, dict[str, str | None]] = dataclasses.field(default_factory=dict)

    def env_of(self, component: str) -> dict[str, str]:
        """Return the environment ``component`` (``api-server``, ``scheduler`` ...) runs with."""
        env = dict(self.env)
        for name, value in self.component_env.get(component, {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    @classmethod
    def configure(cls, home: pathlib.Path, history: pathlib.Path) -> Airflow:
        db = os.environ["DESC_SITE_AIRFLOW_DB_URI"]
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{PORT}/execution/",
            "AIRFLOW__API__PORT": str(PORT),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "desc-e2e-secret",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "DESC_HISTORY_JSONL": str(history),
        }
        return cls(home, env)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(AIRFLOW), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def start(self) -> None:
        self.run("db", "reset", "-y")
        self.run("db", "migrate")
        for name, args in {
            "api-server": ["api-server", "--port", str(PORT), "--host", "127.0.0.1"],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
        }.items():
            log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
            self.procs[name] = subprocess.Popen(
                [str(AIRFLOW), *args],
                env=self.env_of(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._healthy, timeout=120, what=f"the api-server to answer; logs in {self.home}")

    def _healthy(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited {proc.returncode}; see {self.home / (name + '.log')}"
                )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/v2/monitor/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        uri = self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace(
            "postgresql+psycopg2://", "postgresql://"
        )
        with psycopg2.connect(uri) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def trigger(self, dag_id: str) -> str:
        wait_for(
            lambda: self.sql("SELECT 1 FROM dag WHERE dag_id = %s", dag_id),
            timeout=120,
            what=f"{dag_id} parsed",
        )
        self.run("dags", "unpause", dag_id)
        run_id = f"e2e__{dag_id}__{time.time_ns()}"
        self.run("dags", "trigger", dag_id, "--run-id", run_id)
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.sql("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", dag_id, run_id)
        return str(rows[0][0]) if rows else None

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        return str(
            wait_for(
                lambda: self.run_state(dag_id, run_id),
                until=lambda state: state in ("success", "failed"),
                timeout=timeout,
                what=f"run {run_id} finishes; logs in {self.home}",
                interval=2,
            )
        )

    def task_states(self, dag_id: str, run_id: str) -> dict[str, tuple[str | None, int]]:
        rows = self.sql(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = %s AND run_id = %s",
            dag_id,
            run_id,
        )
        return {str(t): (None if s is None else str(s), int(n)) for t, s, n in rows}  # type: ignore[call-overload]


def databases_only(env: dict[str, str], empty_dags: pathlib.Path) -> dict[str, str | None]:
    """The api-server's change of ``env``: an empty DAGs folder, no cluster connection, no clusters file.

    The status page must read databases only (the metadata DB, the history): with these it could
    neither parse a DAG file nor open SSH if it tried. The history's connection stays.
    """
    empty_dags.mkdir(parents=True, exist_ok=True)
    change: dict[str, str | None] = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(empty_dags),
        "DESC_CLUSTERS_FILE": None,
    }
    change.update(
        {n: None for n in env if n.startswith("AIRFLOW_CONN_") and n != "AIRFLOW_CONN_DESC_HISTORY"}
    )
    return change


def api(method: str, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
    """Call the api-server's REST API (all-admins simple auth: no token needed)."""
    import json

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/api/v2{path}", data=data, method=method,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read() or b"{}"))
