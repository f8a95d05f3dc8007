"""SlurmHook: run SLURM commands on a cluster's login node over SSH.

One SSH connection per cluster connection per process is opened and reused (the
site notes measured ~80 ms saved per command); a jump host (bastion) is supported
through a second connection id. Host keys are always checked: the connection must
carry a ``host_key`` extra or the host must be in ``known_hosts``.

Errors are turned into the exceptions of :mod:`airflow_desc.exceptions` with a
message that says what to do: an authentication failure hints at an expired key
(NERSC's sshproxy keys last 24 h), a host-key mismatch is refused, ``command not
found`` names the command, and an sbatch rejection carries stdout, stderr and the
exit status.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import paramiko
import tenacity
from airflow.providers.ssh.hooks.ssh import SSHHook
from airflow.sdk import BaseHook

from airflow_desc.exceptions import ClusterCommandError, ClusterUnreachable, SlurmSubmitError
from airflow_desc.slurm import (
    JobAccounting,
    SqueueRow,
    SubmittedJob,
    chunked_sacct_commands,
    group_accounting,
    parse_sacct,
    parse_sbatch_output,
    parse_squeue,
    sacct_command,
    scancel_command,
    squeue_command,
    submit_script_command,
)

__all__ = ["CommandResult", "SlurmHook"]

# Errors worth another try: the network or the server dropped us, not a verdict on our request.
_TRANSIENT = (
    socket.timeout,
    TimeoutError,
    ConnectionError,
    EOFError,
    paramiko.ssh_exception.NoValidConnectionsError,
)


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did.

    :param command: the command line.
    :param returncode: its exit status.
    :param stdout: what it printed.
    :param stderr: what it printed on stderr.
    """

    command: str
    returncode: int
    stdout: str
    stderr: str


class SlurmHook(BaseHook):
    """Run sbatch / sacct / squeue / scancel on a SLURM cluster's login node over SSH.

    :param ssh_conn_id: the Airflow SSH connection of the login node.
    :param jump_conn_id: an SSH connection to a bastion to go through (``ProxyJump``); defaults to
        the connection's ``jump_conn_id`` extra.
    :param cluster: the cluster name, for messages.
    :param retries: tries for a connection or an idempotent command on transient network errors.
    :param retry_wait: seconds before the first retry; doubles each time (exponential backoff).
    :param command_timeout: seconds a remote command may take.
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "slurm_default"
    conn_type = "desc_slurm"
    hook_name = "SLURM cluster over SSH"

    # One connection per (conn id, jump conn id) per process, shared by every hook instance.
    _clients: ClassVar[dict[tuple[str, str | None], paramiko.SSHClient]] = {}
    _lock: ClassVar[threading.RLock] = threading.RLock()  # re-entered when a jump host connects first
    #: What this process did, per connection id: ``connections`` opened and ``commands`` run by
    #: first word (``sacct``, ``sbatch`` ...). Benchmarks and tests read it to count SSH traffic.
    stats: ClassVar[dict[str, collections.Counter[str]]] = collections.defaultdict(collections.Counter)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Show the SSH fields in the connection form."""
        return SSHHook.get_ui_field_behaviour()

    def __init__(
        self,
        ssh_conn_id: str = default_conn_name,
        *,
        jump_conn_id: str | None = None,
        cluster: str | None = None,
        retries: int = 3,
        retry_wait: float = 1.0,
        command_timeout: float = 300.0,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self._jump_conn_id = jump_conn_id
        self.cluster = cluster or ssh_conn_id
        self.retries = max(1, retries)
        self.retry_wait = retry_wait
        self.command_timeout = command_timeout

    # --- connection ---------------------------------------------------------------------------
    @property
    def jump_conn_id(self) -> str | None:
        """The bastion connection, from the argument or the connection's ``jump_conn_id`` extra."""
        if self._jump_conn_id is None:
            extra = self.get_connection(self.ssh_conn_id).extra_dejson
            self._jump_conn_id = extra.get("jump_conn_id") or ""
        return self._jump_conn_id or None

    def _key(self) -> tuple[str, str | None]:
        return (self.ssh_conn_id, self.jump_conn_id)

    def _where(self, ssh_hook: SSHHook | None = None) -> str:
        if ssh_hook is None:
            return f"cluster {self.cluster} (connection {self.ssh_conn_id})"
        via = f" via {self.jump_conn_id}" if self.jump_conn_id else ""
        return (
            f"cluster {self.cluster}: {ssh_hook.username}@{ssh_hook.remote_host}:{ssh_hook.port}{via} "
            f"(connection {self.ssh_conn_id})"
        )

    def get_conn(self) -> paramiko.SSHClient:
        """Return this process's open connection to the login node, connecting if needed."""
        key = self._key()
        with self._lock:
            client = self._clients.get(key)
            transport = client.get_transport() if client else None
            if client is not None and transport is not None and transport.is_active():
                return client
            client = self._connect_with_retries()
            self._clients[key] = client
            return client

    def _backoff(self, should_retry: Callable[[BaseException], bool], what: str) -> tenacity.Retrying:
        """Return this hook's one retry policy: ``retries`` tries, waits of ``retry_wait`` doubling.

        Only errors for which ``should_retry`` is true are retried; the last error (or the first
        one not worth a retry) is raised as it was. ``what`` names the failing thing in the
        warning logged before each wait (``"SSH to"`` gives "SSH to perlmutter failed ...").
        """

        def log_retry(state: tenacity.RetryCallState) -> None:
            assert state.outcome is not None
            assert state.next_action is not None
            self.log.warning(
                "%s %s failed (%s); retry %d in %.1f s",
                what,
                self.cluster,
                state.outcome.exception(),
                state.attempt_number,
                state.next_action.sleep,
            )

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries),
            wait=tenacity.wait_exponential(multiplier=self.retry_wait, exp_base=2),
            retry=tenacity.retry_if_exception(should_retry),
            before_sleep=log_retry,
            reraise=True,
        )

    def _connect_with_retries(self) -> paramiko.SSHClient:
        # A refused host key or failed authentication is a verdict, not a hiccup: only errors
        # _connect marks transient are retried.
        policy = self._backoff(
            lambda exc: isinstance(exc, ClusterUnreachable) and getattr(exc, "transient", False), "SSH to"
        )
        return policy(self._connect)

    def _connect(self) -> paramiko.SSHClient:
        ssh_hook = SSHHook(ssh_conn_id=self.ssh_conn_id, conn_timeout=20, cmd_timeout=self.command_timeout)
        # Our retries (with backoff and classified errors) replace SSHHook's fixed-wait ones.
        ssh_hook.conn_retry_attempts = 1
        if ssh_hook.no_host_key_check:
            raise ClusterUnreachable(
                f"{self._where(ssh_hook)}: the connection turns host-key checking off; airflow-desc refuses "
                "that. Put the login node's public key in the connection's host_key extra."
            )
        if self.jump_conn_id:
            bastion = SlurmHook(
                self.jump_conn_id, jump_conn_id="", cluster=f"{self.cluster} bastion"
            ).get_conn()
            transport = bastion.get_transport()
            assert transport is not None
            try:
                channel = transport.open_channel(
                    "direct-tcpip", (ssh_hook.remote_host, ssh_hook.port), ("127.0.0.1", 0)
                )
            except paramiko.ChannelException as exc:
                raise ClusterUnreachable(
                    f"{self._where(ssh_hook)}: the bastion {self.jump_conn_id} could not open a tunnel "
                    f"to {ssh_hook.remote_host}:{ssh_hook.port} ({exc}); check the host and port, and "
                    "that the bastion allows TCP forwarding."
                ) from exc
            ssh_hook.__dict__["host_proxy"] = channel  # SSHHook passes it to paramiko as `sock`
        try:
            client = ssh_hook.get_conn()
        except paramiko.BadHostKeyException as exc:
            raise ClusterUnreachable(
                f"{self._where(ssh_hook)}: the server's host key does not match the one on record; refusing "
                "to connect (possible man-in-the-middle). If the login node was really reinstalled, update "
                "the connection's host_key extra with its new key."
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise ClusterUnreachable(
                f"{self._where(ssh_hook)}: authentication failed ({exc}). The key may have expired (NERSC "
                "sshproxy keys last 24 h: run sshproxy again) or is not in the login's authorized_keys; "
                "check key_file / private_key of the connection."
            ) from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise ClusterUnreachable(
                    f"{self._where(ssh_hook)}: the server's host key is unknown; refusing to connect. "
                    "Add the login node's public key to the connection's host_key extra (or to known_hosts)."
                ) from exc
            err = ClusterUnreachable(f"{self._where(ssh_hook)}: SSH failed: {exc}")
            err.transient = True  # type: ignore[attr-defined]
            raise err from exc
        except _TRANSIENT + (OSError,) as exc:
            err = ClusterUnreachable(
                f"{self._where(ssh_hook)}: cannot connect ({type(exc).__name__}: {exc}); the login node may "
                "be down or in maintenance. Airflow will retry the task."
            )
            err.transient = True  # type: ignore[attr-defined]
            raise err from exc
        self.stats[self.ssh_conn_id]["connections"] += 1
        return client

    def close(self) -> None:
        """Close this process's connection for this hook's cluster (the next call reconnects)."""
        with self._lock:
            client = self._clients.pop(self._key(), None)
        if client is not None:
            client.close()

    # --- commands -----------------------------------------------------------------------------
    def run(
        self,
        command: str,
        *,
        stdin: str | None = None,
        timeout: float | None = None,
        check: bool = True,
        idempotent: bool = True,
    ) -> CommandResult:
        """Run one command line on the login node.

        :param command: the command, already shell-quoted (see :mod:`airflow_desc.slurm.commands`).
        :param stdin: text to send on the command's standard input.
        :param timeout: seconds; defaults to the hook's ``command_timeout``.
        :param check: raise :class:`ClusterCommandError` on a non-zero exit status.
        :param idempotent: whether the command may be rerun after the connection drops mid-way.
            sbatch is not: a dropped sbatch may have submitted the job.
        """
        # sbatch is not rerun after a drop: it may have submitted the job (see submit()).
        policy = self._backoff(
            lambda exc: idempotent and isinstance(exc, (paramiko.SSHException, *_TRANSIENT)),
            "command on",
        )
        try:
            result = policy(
                self._run_once_or_close, command, stdin=stdin, timeout=timeout or self.command_timeout
            )
        except (paramiko.SSHException, *_TRANSIENT) as exc:
            raise ClusterUnreachable(
                f"{self._where()}: connection lost while running {command.split()[0]!r} "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if check and result.returncode != 0:
            raise self._command_error(result)
        return result

    def _run_once_or_close(self, command: str, *, stdin: str | None, timeout: float) -> CommandResult:
        try:
            return self._run_once(command, stdin=stdin, timeout=timeout)
        except (paramiko.SSHException, *_TRANSIENT):
            # The connection is suspect: the next try (or the next caller) reconnects.
            self.close()
            raise

    def _run_once(self, command: str, *, stdin: str | None, timeout: float) -> CommandResult:
        client = self.get_conn()
        self.stats[self.ssh_conn_id][command.split(" ", 1)[0]] += 1
        self.stats[self.ssh_conn_id]["commands"] += 1
        chan_in, chan_out, chan_err = client.exec_command(command, timeout=timeout)
        if stdin is not None:
            chan_in.write(stdin)
            chan_in.flush()
        chan_in.channel.shutdown_write()
        out = chan_out.read().decode(errors="replace")
        err = chan_err.read().decode(errors="replace")
        rc = chan_out.channel.recv_exit_status()
        return CommandResult(command=command, returncode=rc, stdout=out, stderr=err)

    def _command_error(self, result: CommandResult) -> ClusterCommandError:
        name = result.command.split(" ", 1)[0]
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        last = detail[-1] if detail else "(no output)"
        if result.returncode == 127:
            message = (
                f"{self._where()}: command not found: {last}. Is SLURM installed and in the PATH of the "
                f"login shell of {self.ssh_conn_id}'s user?"
            )
        else:
            message = f"{self._where()}: {name} exited {result.returncode}: {last}"
        return ClusterCommandError(
            message,
            command=result.command,
            returncode=result.returncode,
            stdout=result.stdout,
            stderr=result.stderr,
        )

    # --- SLURM --------------------------------------------------------------------------------
    def submit(
        self, script: str, *, remote_dir: str, script_name: str, job_name: str | None = None
    ) -> SubmittedJob:
        """Write ``script`` to ``remote_dir/script_name`` on the cluster and sbatch it.

        sbatch is not idempotent: when the connection drops during the call and ``job_name`` is
        given, the cluster is asked whether a job of that name exists before anyone resubmits.

        :param script: the job script (see :func:`airflow_desc.slurm.render_job_script`).
        :param remote_dir: its directory on the cluster.
        :param script_name: its file name.
        :param job_name: the job's (unique) name, to find it after a dropped connection.
        :raises SlurmSubmitError: sbatch refused the job (carries stdout, stderr, exit status).
        """
        command = submit_script_command(remote_dir, script_name)
        try:
            result = self.run(command, stdin=script, check=False, idempotent=False)
        except ClusterUnreachable:
            found = self.find_jobs_by_name(job_name) if job_name else []
            if found:
                self.log.warning("connection dropped during sbatch, but job %s was submitted", found[-1])
                return SubmittedJob(job_id=found[-1], cluster=None)
            raise
        if result.returncode != 0:
            reason = (result.stderr.strip() or result.stdout.strip() or "(no output)").splitlines()[-1]
            raise _submit_error(f"{self._where()}: sbatch rejected the job: {reason}", command, result)
        try:
            return parse_sbatch_output(result.stdout)
        except ValueError as exc:
            message = f"{self._where()}: sbatch printed no job id ({exc})"
            raise _submit_error(message, command, result) from exc

    def sacct(self, job_ids: Sequence[str]) -> dict[str, JobAccounting]:
        """Accounting of ``job_ids`` and their steps, in as few sacct calls as the id list allows."""
        rows = []
        for command in chunked_sacct_commands(list(job_ids)):
            rows.extend(parse_sacct(self.run(command).stdout))
        return group_accounting(rows)

    def squeue(self, job_ids: Sequence[str] | None = None, *, name: str | None = None) -> list[SqueueRow]:
        """Jobs the controller still knows. An id it has forgotten is simply absent (not an error)."""
        result = self.run(squeue_command(list(job_ids) if job_ids else None, name=name), check=False)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return []
            raise self._command_error(result)
        return parse_squeue(result.stdout)

    def find_jobs_by_name(self, name: str, *, since: str = "now-30days") -> list[str]:
        """Ids of the jobs named ``name`` (queued, running or finished since ``since``), oldest first."""
        ids = {row.job_id for row in self.squeue(name=name)}
        found = parse_sacct(self.run(sacct_command(name=name, start=since)).stdout)
        ids.update(row.job_id for row in found if row.step is None)
        return sorted(ids, key=lambda i: [int(p) for p in i.replace("_", ".").split(".") if p.isdigit()])

    def scancel(self, job_ids: Sequence[str], *, signal: str | None = None) -> None:
        """Cancel (or signal) jobs."""
        self.run(scancel_command(list(job_ids), signal=signal))

    def read_tail(self, path: str, *, lines: int = 60) -> str:
        """Return the last ``lines`` lines of a file on the cluster; empty if it does not exist."""
        from airflow_desc.slurm.quoting import quote_path

        result = self.run(f"tail -n {int(lines)} -- {quote_path(path)} 2>/dev/null", check=False)
        return result.stdout

    # --- async, for triggers ------------------------------------------------------------------
    async def arun(self, command: str, *, timeout: float | None = None, check: bool = True) -> CommandResult:
        """Run an idempotent command without blocking the event loop.

        The triggerer's per-cluster poller makes one such call per interval, so one worker thread
        over this process's shared paramiko connection serves it. That keeps one SSH code path
        (host keys, jump hosts, retries, error messages) for sync and async use.
        """
        return await asyncio.to_thread(self.run, command, timeout=timeout, check=check)


def _submit_error(message: str, command: str, result: CommandResult) -> SlurmSubmitError:
    """Return the error for an sbatch that did not give a job id, with all it printed."""
    return SlurmSubmitError(
        message, command=command, returncode=result.returncode, stdout=result.stdout, stderr=result.stderr
    )
