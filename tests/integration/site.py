"""Test-side access to the local site of docker/site/up, through the OpenSSH client.

Host-key checking stays on, as in production: every call goes through the site's
known_hosts with StrictHostKeyChecking=yes.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess

from tests.waiting import wait_for

CLUSTERS = ("perlmutter", "s3df")
#: The nodes of each cluster (docker/site/lib.sh): perlmutter's jobs go to pm-n1 first, to pm-n2 when
#: pm-n1 is full (other tests share the site) or down.
NODES = {"perlmutter": ("pm-n1", "pm-n2"), "s3df": ("s3df-n1",)}


class SiteNotUp(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Site:
    dir: str
    user: str
    key: str
    known_hosts: str
    ports: dict[str, int]
    proctrack: str

    @classmethod
    def from_env(cls) -> Site:
        try:
            return cls(
                dir=os.environ["DESC_SITE_DIR"],
                user=os.environ["DESC_SITE_USER"],
                key=os.environ["DESC_SITE_SSH_KEY"],
                known_hosts=os.environ["DESC_SITE_KNOWN_HOSTS"],
                ports={
                    "perlmutter": int(os.environ["DESC_SITE_SSH_PORT_PERLMUTTER"]),
                    "s3df": int(os.environ["DESC_SITE_SSH_PORT_S3DF"]),
                    "bastion": int(os.environ["DESC_SITE_SSH_PORT_BASTION"]),
                },
                proctrack=os.environ["DESC_SITE_PROCTRACK"],
            )
        except KeyError as exc:
            raise SiteNotUp(
                f"{exc.args[0]} is not set: integration tests need the local site. "
                "Run `make site-up` and `source $DESC_SITE_DIR/env.sh`, or just `make test`."
            ) from None

    def ssh_argv(self, login: str, *, known_hosts: str | None = None) -> list[str]:
        return [
            "ssh", "-p", str(self.ports[login]), "-i", self.key,
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            f"{self.user}@127.0.0.1",
        ]  # fmt: skip

    def run(
        self,
        login: str,
        command: str,
        *,
        check: bool = True,
        stdin: str | None = None,
        known_hosts: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.ssh_argv(login, known_hosts=known_hosts), command],
            input=stdin, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ssh {login} {command!r} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def sbatch(self, cluster: str, script: str, *args: str) -> str:
        """Submit ``script`` (read from stdin by sbatch) and return the job id."""
        out = self.run(cluster, "sbatch --parsable " + " ".join(map(shlex.quote, args)), stdin=script).stdout
        return out.strip().split(";")[0]

    def sacct(self, cluster: str, job_id: str, fields: str) -> list[dict[str, str]]:
        out = self.run(cluster, f"sacct -P -n --noconvert -o {fields} -j {shlex.quote(job_id)}").stdout
        names = fields.split(",")
        return [dict(zip(names, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()]

    def wait_done(self, cluster: str, job_id: str, fields: str, timeout: float = 240) -> list[dict[str, str]]:
        """Poll sacct until the job row has a terminal state and its steps have MaxRSS recorded."""
        running = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "SUSPENDED"}

        def finished(rows: list[dict[str, str]]) -> bool:
            job = [r for r in rows if r["JobID"] == job_id]
            return bool(job) and job[0]["State"].split()[0] not in running

        return wait_for(
            lambda: self.sacct(cluster, job_id, "JobID,State," + fields),
            until=finished,
            timeout=timeout,
            what=f"job {job_id} on {cluster} finished",
        )
