"""The local site seen from the fault matrix: its services stopped and started with docker/site's
own scripts, and its SLURM commands run on this machine (we are root on the site's host).

A service is stopped with lib.sh's ``stop_pidfile`` (TERM, KILL after 20 s) or, for the history
PostgreSQL, ``pg_ctl stop -m fast``; :meth:`SiteControl.restore` starts again what was stopped,
with the command line ``docker/site/up`` starts it with, on the configuration files the running
site was started with, and waits until it answers. It does not run ``up`` itself: ``up``
regenerates every configuration file first, and one from another checkout than the running
site's (a site with a second node, say) would leave the site's daemons and files disagreeing.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
import signal
import subprocess
from collections.abc import Callable
from datetime import datetime

from tests.waiting import wait_for

__all__ = ["SERVICES", "SiteControl"]

ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE_SCRIPTS = ROOT / "docker" / "site"

#: Services a fault may stop: name -> pidfile under $DESC_SITE_DIR/run (as docker/site/down names them).
SERVICES = {
    "sshd-perlmutter": "sshd-perlmutter.pid",
    "sshd-s3df": "sshd-s3df.pid",
    "slurmdbd": "slurmdbd.pid",
    "slurmctld-perlmutter": "slurmctld-perlmutter.pid",
    "slurmctld-s3df": "slurmctld-s3df.pid",
}


@dataclasses.dataclass
class SiteControl:
    site_dir: pathlib.Path
    owner: str
    #: what :meth:`stop` stopped and :meth:`restore` has not started again
    stopped: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_env(cls) -> SiteControl:
        return cls(pathlib.Path(os.environ["DESC_SITE_DIR"]), os.environ.get("DESC_SITE_USER", "desc"))

    @property
    def home(self) -> pathlib.Path:
        """The cluster login's home (both clusters share it): where the task directories are."""
        return self.site_dir / "home" / self.owner

    def owner_uid(self) -> int:
        import pwd

        return pwd.getpwnam(self.owner).pw_uid

    # --- services -------------------------------------------------------------------------------
    def _lib(self, script: str) -> None:
        subprocess.run(
            ["bash", "-c", f". {shlex.quote(str(SITE_SCRIPTS / 'lib.sh'))}; {script}"],
            check=True,
            env={**os.environ, "DESC_SITE_DIR": str(self.site_dir)},
            capture_output=True,
            text=True,
        )

    def _env(self, name: str) -> str:
        return os.environ[name]

    def stop(self, service: str, *, sessions: bool = False) -> int:
        """Stop one of :data:`SERVICES`, or ``pg-history``, as docker/site/down would.

        :param sessions: for an sshd, also end its open sessions (the per-connection sshd processes it
            forked), as a login node going down would; stopping the listener alone leaves them.
        :return: how many sessions were ended.
        """
        self.stopped.append(service)
        if service == "pg-history":
            pg_bin = os.environ["DESC_SITE_PG_BIN"]
            data = os.environ["DESC_SITE_PG_HISTORY_DATA"]
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    f"{pg_bin}/pg_ctl",
                    "-D",
                    data,
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                check=True,
                capture_output=True,
            )
            return 0
        pidfile = self.site_dir / "run" / SERVICES[service]
        children = []
        if sessions and pidfile.exists():
            listener = pidfile.read_text().split()[0]
            out = subprocess.run(
                ["pgrep", "-P", listener], capture_output=True, text=True, check=False
            ).stdout
            children = [int(p) for p in out.split()]
        self._lib(f"stop_pidfile {shlex.quote(service)} {shlex.quote(str(pidfile))}")
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return len(children)

    def restore(self) -> None:
        """Start again what :meth:`stop` stopped (as docker/site/up does); wait until each answers."""
        while self.stopped:
            self._start(self.stopped[-1])
            self.stopped.pop()

    def _start(self, service: str) -> None:
        etc, log, run = self.site_dir / "etc", self.site_dir / "log", self.site_dir / "run"
        pm_conf = {"SLURM_CONF": str(etc / "perlmutter" / "slurm.conf")}
        answers: Callable[[], bool]
        if service == "pg-history":
            port = self._env("DESC_SITE_PG_HISTORY_PORT")
            options = f"-p {port} -k {run / 'pg-history'} -c listen_addresses=127.0.0.1"
            pg_ctl = f"{self._env('DESC_SITE_PG_BIN')}/pg_ctl"
            data = self._env("DESC_SITE_PG_HISTORY_DATA")
            argv = ["runuser", "-u", "postgres", "--", pg_ctl, "-D", data, "-l", str(log / "pg-history.log"),
                    "-w", "-t", "60", "-o", options, "start"]  # fmt: skip
            answers = lambda: _port_open(int(port))  # noqa: E731
            env: dict[str, str] = {}
        elif service.startswith("sshd-"):
            login = service.removeprefix("sshd-")
            argv = [
                "/usr/sbin/sshd",
                "-f",
                str(etc / f"sshd-{login}.conf"),
                "-E",
                str(log / f"sshd-{login}.log"),
            ]
            port = self._env(f"DESC_SITE_SSH_PORT_{login.upper()}")
            answers = lambda: _port_open(int(port))  # noqa: E731
            env = {}
        elif service == "slurmdbd":
            argv, env = ["/usr/sbin/slurmdbd"], pm_conf
            answers = lambda: _succeeds(["sacctmgr", "-n", "show", "cluster"], env)  # noqa: E731
        elif service.startswith("slurmctld-"):
            cluster = service.removeprefix("slurmctld-")
            argv, env = ["/usr/sbin/slurmctld"], {"SLURM_CONF": str(etc / cluster / "slurm.conf")}
            answers = lambda: _succeeds(["scontrol", "ping"], env)  # noqa: E731
        else:
            raise ValueError(f"no way to start {service!r}")
        with open(log / f"{service}.restart.log", "ab") as out:
            subprocess.run(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, check=True)
        wait_for(answers, timeout=120, what=f"{service} answers again")

    # --- SLURM, locally -------------------------------------------------------------------------
    def slurm(self, cluster: str, *argv: str, user: str | None = None, check: bool = True) -> str:
        """Run a SLURM command against ``cluster`` (as ``user``, default root); return its stdout."""
        conf = os.environ[f"DESC_SITE_SLURM_CONF_{cluster.upper()}"]
        prefix = ["runuser", "-u", user, "--"] if user else []
        proc = subprocess.run(
            [*prefix, "env", f"SLURM_CONF={conf}", *argv], capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} on {cluster} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc.stdout

    def queued(self, cluster: str, name: str) -> list[tuple[str, str]]:
        """``(job id, state)`` of the jobs named ``name`` that the controller has (squeue)."""
        out = self.slurm(cluster, "squeue", "-h", "-n", name, "-o", "%i|%T", check=False)
        return [tuple(line.split("|", 1)) for line in out.splitlines() if "|" in line]  # type: ignore[misc]

    def nodes(self, cluster: str) -> list[str]:
        return self.slurm(cluster, "sinfo", "-h", "-N", "-o", "%N").split()

    def jobs_named(self, cluster: str, names: list[str], since: datetime) -> list[dict[str, str]]:
        """sacct's job lines (no steps) of the jobs named ``names`` submitted since ``since``."""
        fields = ["JobID", "JobName", "State", "Submit", "Start", "End"]
        rows = []
        for i in range(0, len(names), 50):
            out = self.slurm(
                cluster, "sacct", "-X", "-P", "-n", "-o", ",".join(fields),
                "-S", since.strftime("%Y-%m-%dT%H:%M:%S"), "--name", ",".join(names[i : i + 50]),
            )  # fmt: skip
            rows.extend(dict(zip(fields, line.split("|"), strict=False)) for line in out.splitlines() if line)
        return rows

    def mariadb(self, sql: str) -> str:
        """Run SQL on the accounting database (MariaDB, as root over its socket)."""
        sock = self.site_dir / "run" / "mariadb" / "mariadb.sock"
        return subprocess.run(
            ["mariadb", f"--socket={sock}", "-u", "root", "-N", "slurm_acct_db", "-e", sql],
            capture_output=True,
            text=True,
            check=True,
        ).stdout


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _succeeds(argv: list[str], env: dict[str, str]) -> bool:
    proc = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, check=False, timeout=30)
    return proc.returncode == 0
