"""A PostgreSQL cluster of one test or benchmark: the site's binaries, a fresh directory, a free port.

Started as docker/site/up starts the site's (``initdb``, then ``pg_ctl start`` as user ``postgres``,
trust authentication on 127.0.0.1, ``fsync=off``), so that a test may stop or freeze it
(``test_history_outage.py``) and a benchmark may load it (``benchmarks/writer_speed.py``) without
touching the site's clusters or waiting for their lock. Needs root (``runuser``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PrivatePostgres"]


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of one test or benchmark (:meth:`create`; :meth:`destroy` at the end)."""

    dir: Path
    port: int
    pg_bin: str

    @classmethod
    def create(cls, pg_bin: str) -> PrivatePostgres:
        base = Path(tempfile.mkdtemp(prefix="desc-pg-", dir="/tmp"))
        postgres = pwd.getpwnam("postgres")
        os.chown(base, postgres.pw_uid, postgres.pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cluster = cls(base, port, pg_bin)
        cluster.run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        cluster.start()
        return cluster

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def url(self, query: str = "") -> str:
        """The URL of its database ``postgres`` (user ``postgres``, trust), with ``query`` (``a=1&b=2``)."""
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        return f"{url}?{query}" if query else url

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["runuser", "-u", "postgres", "--", f"{self.pg_bin}/{tool}", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{tool} {args}: {proc.stdout}{proc.stderr}"
        return proc

    def start(self) -> None:
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def pids(self) -> list[int]:
        """The postmaster and every process it started (the backends serving our connections)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == postmaster:
                    children.append(int(entry.name))
        return [postmaster, *children]

    def backends_cpu(self) -> float:
        """CPU seconds (user + system) of the backends that ended so far (the postmaster reaped them)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        cutime, cstime = int(fields[13]), int(fields[14])  # stat(5) fields 16, 17
        return (cutime + cstime) / os.sysconf("SC_CLK_TCK")

    def signal(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):  # a backend that ended since
                os.kill(pid, sig)

    def destroy(self) -> None:
        self.signal(signal.SIGCONT)  # a test that failed while it was frozen
        subprocess.run(
            ["runuser", "-u", "postgres", "--", f"{self.pg_bin}/pg_ctl", "-D", str(self.data),
             "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=120,
        )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)
