"""The local site seen from the fault matrix: its services stopped and started with docker/site's
own scripts, and its SLURM commands run on this machine (we are root on the site's host).

A service is stopped with lib.sh's ``stop_pidfile`` (TERM, KILL after 20 s) or, for the history
PostgreSQL, ``pg_ctl stop -m fast``; :meth:`SiteControl.restore` runs ``docker/site/up``, which
starts whatever is not running and leaves the rest alone.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
import signal
import subprocess
from datetime import datetime

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


@dataclasses.dataclass(frozen=True)
class SiteControl:
    site_dir: pathlib.Path
    owner: str

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

    def stop(self, service: str, *, sessions: bool = False) -> int:
        """Stop one of :data:`SERVICES`, or ``pg-history``, as docker/site/down would.

        :param sessions: for an sshd, also end its open sessions (the per-connection sshd processes it
            forked), as a login node going down would; stopping the listener alone leaves them.
        :return: how many sessions were ended.
        """
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
        """Start what is not running (docker/site/up; it waits until every daemon answers)."""
        proc = subprocess.run([str(SITE_SCRIPTS / "up")], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"docker/site/up failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    def history_database(self, name: str) -> str:
        """Create database ``name`` (owned by the history's role) in the history PostgreSQL, if missing;
        return its URI (that of ``AIRFLOW_CONN_DESC_HISTORY`` with the database replaced)."""
        base = os.environ["AIRFLOW_CONN_DESC_HISTORY"]
        role = base.split("://", 1)[1].split(":", 1)[0]
        psql = [
            "runuser", "-u", "postgres", "--", f"{os.environ['DESC_SITE_PG_BIN']}/psql", "-h",
            str(self.site_dir / "run" / "pg-history"), "-p", os.environ["DESC_SITE_PG_HISTORY_PORT"],
            "-U", "postgres", "-qtA", "-v", "ON_ERROR_STOP=1", "-c",
        ]  # fmt: skip
        exists = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if exists != "1":
            subprocess.run(
                [*psql, f'CREATE DATABASE "{name}" OWNER "{role}"'], capture_output=True, check=True
            )
        return base.rsplit("/", 1)[0] + "/" + name

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
