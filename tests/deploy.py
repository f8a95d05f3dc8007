"""A whole Airflow on the local site, wired as in production: for tests/e2e and fault injection.

Two variants, on the site's PostgreSQL metadata cluster (reset by :meth:`Deployment.start`):

- :meth:`Deployment.local`: LocalExecutor. api-server, scheduler (which runs the tasks),
  dag-processor, triggerer.
- :meth:`Deployment.celery`: CeleryExecutor, the site's Redis as broker and the metadata
  PostgreSQL as result backend. api-server, scheduler, dag-processor, two triggerers
  (``triggerer-a``, ``triggerer-b``) and two Celery workers (``worker-a``, ``worker-b``).

Either auth manager: Airflow's simple one (every request an admin's, or users of its four roles),
or FAB's (``auth="fab"``: apache-airflow-providers-fab, users created with ``airflow users create``,
roles with per-DAG permissions given by :meth:`Deployment.grant`).

Every component has its own ``AIRFLOW_HOME`` (under ``root``) and its own environment, holding
only what that component needs (:data:`NEEDS`): SSH connections only where SLURM is reached, the
history connection only where records are written or read, the SMTP connection ``desc_e2e_smtp``
(to 127.0.0.1:``SMTP_PORT``, where tests/e2e/test_notify_e2e.py listens) only where tasks run, as
a workflow's notifiers run in its verdict task. Each component stands for a host: its
``hostname_callable`` answers its name (the ``hostname`` of the task instances it ran), a Celery
worker also takes it as ``--celery-hostname``.

The history is the production one: the workers write PostgreSQL through the Airflow connection
``desc_history`` (``[desc] history_conn_id``), into a schema of the site's history database made
for this deployment (:class:`HistorySchema`: ``search_path`` in the connection's ``options``),
dropped by :meth:`Deployment.stop`, so that a session's assertions see its own rows only.
``[desc] spool_dir`` is one directory every component shares, as a shared volume would be.

A component can be killed and started again on its own (:meth:`Deployment.kill`,
:meth:`Deployment.start_component`), for fault injection.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import psycopg2

from tests.waiting import wait_for

REPO = pathlib.Path(__file__).resolve().parents[1]
DAGS = REPO / "tests" / "e2e" / "dags"
AIRFLOW = pathlib.Path(sys.executable).with_name("airflow")
PORT = int(os.environ.get("DESC_E2E_API_PORT", "18080"))
#: The site's Redis (docker/site/up), the Celery broker.
REDIS_URL = os.environ.get("DESC_SITE_REDIS_URL", "redis://127.0.0.1:16379/0")
#: The port of the SMTP relay the workers' connection ``desc_e2e_smtp`` names (a test's sink listens there).
SMTP_PORT = int(os.environ.get("DESC_E2E_SMTP_PORT", "18025"))
#: The first of the components' log-server ports (scheduler / workers even, triggerers odd, up to +4).
LOG_PORT = int(os.environ.get("DESC_E2E_LOG_PORT", "18793"))
#: Held by a started deployment until it stops: the site's metadata DB and these ports are one.
DEPLOYMENT_LOCK = os.environ.get("DESC_E2E_LOCK", "/tmp/desc-e2e-deployment.lock")

#: The environment variable a component's ``hostname_callable`` (:func:`component_hostname`) answers.
HOSTNAME_ENV = "DESC_DEPLOY_HOSTNAME"

Need = Literal["dags", "clusters", "ssh", "history", "mail"]
Auth = Literal["simple", "fab"]

#: The FAB auth manager (the ``fab`` extra): roles, and permissions per DAG.
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
#: The roles FAB makes; a user's role not among them is made empty, for :meth:`Deployment.grant` to fill.
FAB_ROLES = ("Admin", "Op", "User", "Viewer", "Public")

#: What each kind of component needs besides the metadata DB: ``dags`` the DAG files, ``clusters``
#: the cluster profiles, ``ssh`` the clusters' SSH connections (and keys), ``history`` the history
#: connection and the spool directory, ``mail`` the SMTP connection (for the verdict's notifiers).
NEEDS: dict[str, tuple[Need, ...]] = {
    # The status page reads databases only (process plans and polled SLURM states are in the
    # history): no DAG files, no cluster profiles, no SSH, as in production.
    "api-server": ("history",),
    # Runs no task under CeleryExecutor; the listener may still record a task instance it fails
    # (a task whose worker stopped heartbeating).
    "scheduler": ("dags", "history"),
    "dag-processor": ("dags", "clusters"),
    "triggerer": ("clusters", "ssh", "history"),
    "worker": ("dags", "clusters", "ssh", "history", "mail"),
}
#: LocalExecutor: the scheduler runs the tasks, so it needs what a worker needs.
LOCAL_SCHEDULER_NEEDS: tuple[Need, ...] = NEEDS["worker"]


def component_hostname() -> str:
    """The ``[core] hostname_callable`` of a deployment's components: the host the component stands for."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


def _site_env() -> dict[str, str]:
    """The process environment without Airflow's or desc's settings: each component gets its own."""
    dropped = (
        "AIRFLOW_CONN_",
        "AIRFLOW__",
        "DESC_HISTORY_",
        "DESC_SPOOL_DIR",
        "DESC_CLUSTERS_FILE",
        "AIRFLOW_HOME",
        # Bytecode cached (__pycache__ is ignored by git): with PYTHONDONTWRITEBYTECODE=1 every task
        # process compiled airflow-desc, installed editable, again (benchmarks/parse_cost.py --no-bytecode).
        "PYTHONDONTWRITEBYTECODE",
    )
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


@dataclasses.dataclass
class HistorySchema:
    """A schema of the site's history database, made for one deployment.

    :param admin_uri: the history database (``$DESC_SITE_HISTORY_DB_URI``).
    :param name: the schema.
    """

    admin_uri: str
    name: str

    @classmethod
    def fresh(cls, prefix: str = "e2e") -> HistorySchema:
        schema = cls(os.environ["DESC_SITE_HISTORY_DB_URI"], f"{prefix}_{uuid.uuid4().hex[:12]}")
        schema.sql(f'CREATE SCHEMA "{schema.name}"')
        return schema

    @property
    def _dsn(self) -> str:
        return self.admin_uri.replace("postgresql+psycopg2://", "postgresql://")

    @property
    def conn_uri(self) -> str:
        """The URI of the Airflow connection ``desc_history`` writing into this schema."""
        options = urllib.parse.quote(f"-csearch_path={self.name}", safe="")
        return f"{self._dsn}?options={options}"

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg2.connect(self._dsn, options=f"-csearch_path={self.name}") as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def drop(self) -> None:
        self.sql(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


@dataclasses.dataclass
class Component:
    """One Airflow process of the deployment: ``airflow <argv>`` in ``env``, logging to ``log``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def home(self) -> pathlib.Path:
        return pathlib.Path(self.env["AIRFLOW_HOME"])

    @property
    def log(self) -> pathlib.Path:
        return self.home / f"{self.name}.log"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [str(AIRFLOW), *self.argv],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@dataclasses.dataclass
class Deployment:
    """A running Airflow: its components, its history schema, and what tests ask of it.

    :param executor: ``LocalExecutor`` or ``CeleryExecutor``.
    :param root: where the components' homes, logs and the shared spool live.
    :param history: the history schema the workers write.
    :param components: by name, in start order.
    :param client_env: an environment like a user's shell on the deployment (metadata DB, history,
        clusters): for ``airflow`` and ``airflow-desc`` commands.
    :param dags: the DAGs folder of the components that parse DAGs.
    :param users: the auth manager's users, name -> (role, password); none: every request is an
        admin's (simple auth manager, ``simple_auth_manager_all_admins``). With users, the client's
        API connection ``desc_api`` logs in as the first, and ``desc_api_<name>`` as each.
    :param auth: ``simple`` (Airflow's simple auth manager: roles viewer, user, op, admin) or ``fab``
        (the FAB auth manager: its roles, e.g. ``Admin``, or roles of the test's own, see :meth:`grant`).
    """

    executor: str
    root: pathlib.Path
    history: HistorySchema
    components: dict[str, Component]
    client_env: dict[str, str]
    dags: pathlib.Path = DAGS
    users: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    auth: Auth = "simple"
    _site_lock: Any = dataclasses.field(default=None, repr=False)
    _once: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    # --- the two variants -------------------------------------------------------------------------------

    @classmethod
    def local(
        cls,
        root: pathlib.Path,
        *,
        dags: pathlib.Path = DAGS,
        history_prefix: str = "e2e",
        users: Mapping[str, tuple[str, str]] | None = None,
        auth: Auth = "simple",
    ) -> Deployment:
        """LocalExecutor: api-server, scheduler (running the tasks), dag-processor, triggerer.

        :param dags: the DAGs folder (default: tests/e2e/dags).
        :param history_prefix: the history schema's name starts with it.
        :param users: the auth manager's users (see the class); none: all admins.
        :param auth: the auth manager (see the class).
        """
        deployment = cls._empty("LocalExecutor", root, dags, history_prefix, users or {}, auth)
        deployment._add(
            "api-server", ["api-server", "--port", str(PORT), "--host", "127.0.0.1"], NEEDS["api-server"]
        )
        deployment._add("scheduler", ["scheduler"], LOCAL_SCHEDULER_NEEDS, log_port=LOG_PORT)
        deployment._add("dag-processor", ["dag-processor"], NEEDS["dag-processor"])
        deployment._add("triggerer", ["triggerer"], NEEDS["triggerer"], log_port=LOG_PORT + 1)
        return deployment

    @classmethod
    def celery(
        cls,
        root: pathlib.Path,
        *,
        worker_concurrency: int = 1,
        triggerer_capacity: int = 2,
        dags: pathlib.Path = DAGS,
        history_prefix: str = "e2e",
    ) -> Deployment:
        """CeleryExecutor: api-server, scheduler, dag-processor, two triggerers, two Celery workers.

        :param worker_concurrency: task slots of each worker (1: a second task queued while the first
            runs goes to the other worker).
        :param triggerer_capacity: triggers each triggerer holds at most (small: both hold some).
        :param dags: the DAGs folder (default: tests/e2e/dags).
        :param history_prefix: the history schema's name starts with it.
        """
        deployment = cls._empty("CeleryExecutor", root, dags, history_prefix)
        deployment._add(
            "api-server", ["api-server", "--port", str(PORT), "--host", "127.0.0.1"], NEEDS["api-server"]
        )
        deployment._add("scheduler", ["scheduler"], NEEDS["scheduler"])
        deployment._add("dag-processor", ["dag-processor"], NEEDS["dag-processor"])
        for i, name in enumerate(("triggerer-a", "triggerer-b")):
            deployment._add(
                name,
                ["triggerer", "--capacity", str(triggerer_capacity)],
                NEEDS["triggerer"],
                log_port=LOG_PORT + 1 + 2 * i,
            )
        for i, name in enumerate(("worker-a", "worker-b")):
            argv = [
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--concurrency",
                str(worker_concurrency),
            ]
            deployment._add(name, argv, NEEDS["worker"], log_port=LOG_PORT + 2 * i)
        return deployment

    @classmethod
    def _empty(
        cls,
        executor: str,
        root: pathlib.Path,
        dags: pathlib.Path,
        history_prefix: str,
        users: Mapping[str, tuple[str, str]] | None = None,
        auth: Auth = "simple",
    ) -> Deployment:
        if auth == "fab" and not users:
            raise ValueError("the FAB auth manager needs users: no request is anyone's without a login")
        history = HistorySchema.fresh(history_prefix)
        deployment = cls(executor, root, history, {}, {}, dags, dict(users or {}), auth)
        deployment.client_env = deployment._env("client", ("dags", "clusters", "ssh", "history"))
        for i, (name, (_role, password)) in enumerate(deployment.users.items()):
            conn = json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{PORT}", "login": name,
                               "password": password})  # fmt: skip
            deployment.client_env[f"AIRFLOW_CONN_DESC_API_{name.upper()}"] = conn
            if i == 0:
                deployment.client_env["AIRFLOW_CONN_DESC_API"] = conn
        if not deployment.users:  # all admins: any login is an admin's
            conn = json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{PORT}", "login": "admin"})
            deployment.client_env["AIRFLOW_CONN_DESC_API"] = conn
        return deployment

    @property
    def passwords_file(self) -> pathlib.Path:
        """The simple auth manager's passwords (``simple_auth_manager_passwords_file``)."""
        return self.root / "shared" / "passwords.json"

    def token(self, user: str) -> str:
        """Log ``user`` in at the api-server's ``/auth/token``; return the JWT."""
        body = json.dumps({"username": user, "password": self.users[user][1]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{PORT}/auth/token", data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as resp:
            return str(json.loads(resp.read())["access_token"])

    def _env(self, name: str, needs: tuple[Need, ...], log_port: int | None = None) -> dict[str, str]:
        db = os.environ["DESC_SITE_AIRFLOW_DB_URI"]
        env = {
            **_site_env(),
            "AIRFLOW_HOME": str(self.root / name),
            # tests.deploy (the hostname callable) importable by every component
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            HOSTNAME_ENV: name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.deploy.component_hostname",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": "juFpW5XVBj-XOP6pNVPz_XPTW87hCLjht4A-K8AGc5E=",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{PORT}/execution/",
            "AIRFLOW__API__PORT": str(PORT),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "desc-e2e-secret",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False" if self.users else "True",
            # A new DAG file is found within 5 s; the files never change during a deployment, so
            # none is parsed again for 10 min (each parse of a rendered workflow costs CPU).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            # A component that should not parse DAGs finds none.
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags if "dags" in needs else self.root / name / "dags"),
        }
        if self.auth == "fab":
            env["AIRFLOW__CORE__AUTH_MANAGER"] = FAB_AUTH_MANAGER
        elif self.users:
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = ",".join(
                f"{n}:{r}" for n, (r, _) in self.users.items()
            )
            env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(self.passwords_file)
        if self.executor == "CeleryExecutor":
            env["AIRFLOW__CELERY__BROKER_URL"] = REDIS_URL
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + db.replace(
                "postgresql+psycopg2://", "postgresql://"
            )
        if log_port is not None:
            env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(log_port)
            env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(log_port)
        if "clusters" in needs:
            env["DESC_CLUSTERS_FILE"] = os.environ["DESC_CLUSTERS_FILE"]
        if "ssh" in needs:
            env.update(
                {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_") and k.endswith("_SSH")}
            )
        if "history" in needs:
            env["AIRFLOW_CONN_DESC_HISTORY"] = self.history.conn_uri
            env["AIRFLOW__DESC__HISTORY_CONN_ID"] = "desc_history"
            env["AIRFLOW__DESC__SPOOL_DIR"] = str(self.spool_dir)
        if "mail" in needs:
            # Imported here: every component imports this module (its hostname callable), none needs aiosmtpd.
            from tests.smtp_sink import smtp_connection

            env["AIRFLOW_CONN_DESC_E2E_SMTP"] = json.dumps(smtp_connection("127.0.0.1", SMTP_PORT))
        return env

    def _add(self, name: str, argv: list[str], needs: tuple[Need, ...], log_port: int | None = None) -> None:
        env = self._env(name, needs, log_port)
        pathlib.Path(env["AIRFLOW__CORE__DAGS_FOLDER"]).mkdir(parents=True, exist_ok=True)
        self.components[name] = Component(name, argv, env)

    @property
    def spool_dir(self) -> pathlib.Path:
        """The history spool every component shares (``[desc] spool_dir``)."""
        return self.root / "shared" / "desc-spool"

    # --- life cycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Reset the metadata DB, migrate the history schema, sync the pools, empty the broker, start all.

        Under FAB, the users are made in the metadata DB (their roles too, empty, when not FAB's own).
        """
        # One deployment at a time on the site's metadata DB and ports: a second pytest session (a
        # developer's beside make test's) waits here instead of resetting the DB under the first.
        self._site_lock = open(DEPLOYMENT_LOCK, "a")  # noqa: SIM115 (held until stop)
        fcntl.flock(self._site_lock, fcntl.LOCK_EX)
        if self.users and self.auth == "simple":
            self.passwords_file.parent.mkdir(parents=True, exist_ok=True)
            self.passwords_file.write_text(json.dumps({n: pw for n, (_, pw) in self.users.items()}))
        self.run("db", "reset", "-y")  # drops, then makes the tables at the head (the auth manager's too)
        if self.auth == "fab":
            self._fab_users()
        self._command(sys.executable, ("-m", "airflow_desc.history", "upgrade", "--db", "desc_history"), 120)
        self.desc("pools", "sync")  # one pool per cluster, as a deployment runs it
        if self.executor == "CeleryExecutor":
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()  # messages of an earlier session
        try:
            for component in self.components.values():
                component.start()
            wait_for(self._healthy, timeout=180, what=f"the api-server to answer; logs in {self.root}")
            self._warm_execution_api()
            if self.executor == "CeleryExecutor":
                ready = f"both Celery workers ready; logs in {self.root}"
                wait_for(self._workers_ready, timeout=180, what=ready)
        except BaseException:
            # Components left running would hold the api-server's port and write into the metadata DB
            # the next deployment resets (a failed start once left an api-server that the next e2e
            # test's REST calls reached).
            self.stop()
            raise

    def _fab_users(self) -> None:
        for role in sorted({role for role, _ in self.users.values()} - set(FAB_ROLES)):
            self.run("roles", "create", role)
        for name, (role, password) in self.users.items():
            email = f"{name}@desc-e2e.invalid"
            self.run("users", "create", "--username", name, "--password", password, "--role", role,
                     "--email", email, "--firstname", name, "--lastname", "e2e")  # fmt: skip

    def grant(self, role: str, resources: list[str], actions: list[str]) -> None:
        """Let a FAB role do ``actions`` (``can_read``, ``can_edit`` ...) on ``resources``.

        A DAG's resource is ``DAG:<dag id>``, made once the DAG is parsed (``airflow sync-perm
        --include-dags`` here, as an operator would); others are FAB's, e.g. ``Task Instances``.
        """
        self.run("sync-perm", "--include-dags")
        self.run("roles", "add-perms", role, "--resource", *resources, "--action", *actions)

    def _healthy(self) -> bool:
        for component in self.components.values():
            if component.proc is not None and not component.running():
                raise RuntimeError(
                    f"airflow {component.name} exited {component.proc.returncode}; see {component.log}"
                )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/v2/monitor/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _warm_execution_api(self) -> None:
        """Ask the api-server's execution API once, so that the first task does not wait for it.

        Its first request takes ~4-5 s here (measured: ``GET /execution/health`` 4.3 s, every
        later request ~30 ms), and a fresh api-server's first task runner makes it while its task
        waits (``PATCH /execution/task-instances/<id>/run``); a deployment in production is not
        that fresh. Not an error when it does not answer: the tasks' own requests will say why.
        """
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/execution/health", timeout=120):
                pass
        except OSError:
            pass

    def _workers_ready(self) -> bool:
        self._healthy()
        return all(
            " ready." in c.log.read_text(errors="replace")
            for n, c in self.components.items()
            if n.startswith("worker")
        )

    def stop(self) -> None:
        """Stop every component (TERM, then KILL after 30 s) and drop the history schema."""
        try:
            for component in self.components.values():
                component.signal(signal.SIGTERM)
            for component in self.components.values():
                component.stop()
            self.history.drop()
        finally:
            if self._site_lock is not None:
                self._site_lock.close()  # lets the next deployment start
                self._site_lock = None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one component's whole process group (its task processes included)."""
        self.components[name].signal(sig)
        if sig == signal.SIGKILL and (proc := self.components[name].proc) is not None:
            proc.wait(timeout=30)

    def start_component(self, name: str) -> None:
        """Start one component (again)."""
        self.components[name].start()

    def add_component(
        self, name: str, argv: list[str], needs: tuple[Need, ...], *, log_port: int | None = None
    ) -> None:
        """Start one more component (a third triggerer, say) until :meth:`remove_component` or :meth:`stop`.

        :param needs: what it needs (:data:`NEEDS` of its kind).
        :param log_port: its log server's port, when it serves logs (one no other component uses).
        """
        self._add(name, argv, needs, log_port)
        self.components[name].start()

    def remove_component(self, name: str) -> None:
        """Stop a component (TERM, then KILL after 30 s) and forget it."""
        self.components.pop(name).stop()

    # --- what tests ask ---------------------------------------------------------------------------------

    @property
    def home(self) -> pathlib.Path:
        return self.root

    @property
    def env(self) -> dict[str, str]:
        return self.client_env

    def log_of(self, name: str) -> str:
        return self.components[name].log.read_text(errors="replace")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """Return one try's task log: the file the component that ran it wrote, as the UI's log view shows it.

        Read from disk: the UI reaches a worker's log server by the worker's host name, which the
        components here only answer as (:func:`component_hostname`), no resolver knows it.
        """
        mapped = f"/map_index={map_index}" if map_index >= 0 else ""
        where = f"logs/dag_id={dag_id}/run_id={run_id}/task_id={task_id}{mapped}"
        files = sorted(self.root.glob(f"*/{where}/attempt={try_number}.log"))
        assert files, f"no task log {where}/attempt={try_number}.log under {self.root}"
        return "\n".join(f.read_text(errors="replace") for f in files)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``airflow <args>`` as a user of the deployment; raises with its output when it fails."""
        return self._command(str(AIRFLOW), args, timeout)

    def desc(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``airflow-desc <args>`` as a user of the deployment; raises with its output when it fails."""
        return self._command(str(AIRFLOW.with_name("airflow-desc")), args, timeout)

    def _command(self, exe: str, args: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess[str]:
        (self.root / "client").mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [exe, *args], env=self.client_env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{exe} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Query Airflow's metadata DB."""
        uri = os.environ["DESC_SITE_AIRFLOW_DB_URI"].replace("postgresql+psycopg2://", "postgresql://")
        with psycopg2.connect(uri) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    @property
    def history_db(self) -> str:
        """The history the workers write, as a URL for ``airflow-desc --db``.

        The same database and schema as the connection ``desc_history``; a URL, because resolving
        the connection makes Airflow log a warning on stdout (the site's password is short), which
        would spoil ``--format json``.
        """
        return self.history.conn_uri

    def history_rows(self, run_id: str) -> list[dict[str, Any]]:
        """Every attempt the history holds of ``run_id``, every column (``extra`` too), None for NULL."""
        from airflow_desc.history import HistoryFilter, HistoryStore
        from airflow_desc.history.queries import process_instances

        store = HistoryStore(self.history_db)
        try:
            frame = process_instances(store.engine, HistoryFilter(run_id=run_id))
        finally:
            store.dispose()
        return list(frame.astype(object).where(frame.notna(), None).to_dict("records"))

    def wait_parsed(self, dag_id: str) -> None:
        """Wait until the dag-processor has put ``dag_id`` in the metadata DB."""
        wait_for(
            lambda: self.sql("SELECT 1 FROM dag WHERE dag_id = %s", dag_id),
            timeout=120,
            what=f"{dag_id} parsed",
        )

    def trigger(self, dag_id: str, conf: Mapping[str, object] | None = None) -> str:
        """Unpause ``dag_id`` once parsed, ``airflow dags trigger`` a run with a unique id; return the id."""
        self.wait_parsed(dag_id)
        self.run("dags", "unpause", dag_id)
        run_id = f"e2e__{dag_id}__{time.time_ns()}"
        args = ["dags", "trigger", dag_id, "--run-id", run_id]
        if conf is not None:
            args += ["--conf", json.dumps(conf)]
        self.run(*args)
        return run_id

    def trigger_once(self, dag_id: str, conf: Mapping[str, object] | None = None) -> str:
        """Trigger ``dag_id`` the first time a test asks, on this deployment; return that run's id.

        For a long run that goes on in the background while other tests run, and that the test
        checking it finds started (or done) when its turn comes.
        """
        if dag_id not in self._once:
            self._once[dag_id] = self.trigger(dag_id, conf)
        return self._once[dag_id]

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.sql("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", dag_id, run_id)
        return str(rows[0][0]) if rows else None

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        return str(
            wait_for(
                lambda: self.run_state(dag_id, run_id),
                until=lambda state: state in ("success", "failed"),
                timeout=timeout,
                what=f"run {run_id} finishes; logs in {self.root}",
                interval=2,
            )
        )

    def task_states(self, dag_id: str, run_id: str) -> dict[str, tuple[str | None, int]]:
        rows = self.sql(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = %s AND run_id = %s",
            dag_id,
            run_id,
        )
        return {str(t): (None if s is None else str(s), int(n)) for t, s, n in rows}


def api(
    method: str, path: str, body: dict[str, object] | None = None, *, token: str | None = None
) -> dict[str, object]:
    """Call the api-server's REST API (all-admins simple auth: no token needed; else a user's ``token``)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/api/v2{path}", data=data, method=method, headers=headers
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read() or b"{}"))
