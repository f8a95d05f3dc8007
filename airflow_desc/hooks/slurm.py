"""SlurmHook: run SLURM commands on a cluster's login node over SSH.

One SSH connection per cluster connection per process is opened and reused (the
site notes measured ~80 ms saved per command); a jump host (bastion) is supported
through a second connection id. Host keys are always checked: the connection must
carry a ``host_key`` extra or the host must be in ``known_hosts``; a connection (or its bastion's) that
asks for anything looser (``no_host_key_check``, ``allow_host_key_change``) is refused before it
connects.

Every channel open (the bastion's tunnel, each command's session) and each exec request waits at most
``channel_timeout`` seconds (the connection's extra, default 30) for the server's answer. paramiko
would otherwise wait an hour for a tunnel and, for a session, as long as the command may run
(``command_timeout``, 300 s), while a stalled peer is never noticed: its keepalives ask for no reply.
An unanswered open drops the connection and builds it again once; a second one is
:class:`~airflow_desc.exceptions.ClusterUnreachable`.

Before it connects, the hook reads until when the key logs in (:meth:`SlurmHook.key_validity`): an
OpenSSH certificate's validity (NERSC's sshproxy issues them for 24 h: the connection's ``cert_file``
extra, else ``<key_file>-cert.pub``, which paramiko presents with the key), else the ``key_expires``
of the cluster profile of the connection. From two hours before the expiry every connect logs a
warning (once per process per certificate); an expired key raises
:class:`~airflow_desc.exceptions.SshKeyExpired` at once, without trying the login ("renew the key
with sshproxy"), which the operators turn into a deferred wait for a renewed certificate.

Errors are turned into the exceptions of :mod:`airflow_desc.exceptions` with a
message that says what to do: an authentication failure says what the key's validity rules out
(an expired certificate, or a valid one the login does not trust), a host-key mismatch is refused,
``command not found`` names the command, and an sbatch rejection carries stdout, stderr and the
exit status.

This module is the connection and the running of commands; the hook's other parts are mixed in
from :mod:`~airflow_desc.hooks.key_validity` (:class:`~airflow_desc.hooks.key_validity.SshKeyChecks`:
until when the key logs in) and :mod:`~airflow_desc.hooks.slurm_commands`
(:class:`~airflow_desc.hooks.slurm_commands.SlurmCommands`: sbatch, sacct, squeue ... and
:class:`CommandResult`, which this module re-exports).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import paramiko
import tenacity
from airflow.providers.ssh.hooks.ssh import SSHHook
from airflow.sdk import BaseHook

from airflow_desc.exceptions import (
    ClusterCommandError,
    ClusterUnreachable,
)
from airflow_desc.hooks.channels import ChannelTimeout, exec_command, open_channel, send_eof
from airflow_desc.hooks.key_validity import SshKeyChecks
from airflow_desc.hooks.slurm_commands import CommandResult, SlurmCommands

__all__ = ["DEFAULT_CHANNEL_TIMEOUT", "CommandResult", "SlurmHook"]

#: Seconds a channel open or an exec request may wait for the server's answer, unless the connection's
#: ``channel_timeout`` extra says otherwise. A healthy login answers in milliseconds, even loaded.
DEFAULT_CHANNEL_TIMEOUT = 30.0

# The SSHHook attributes (set from the connection's extras) that make paramiko accept a host key it
# cannot check: ``no_host_key_check`` (or its deprecated alias ``ignore_hostkey_verification``) adds
# any unknown key, ``allow_host_key_change`` skips the system known_hosts and accepts any key.
_UNCHECKED_HOST_KEY_SETTINGS = ("no_host_key_check", "allow_host_key_change")

# Errors worth another try: the network or the server dropped us, not a verdict on our request.
_TRANSIENT = (
    socket.timeout,
    TimeoutError,
    ConnectionError,
    EOFError,
    paramiko.ssh_exception.NoValidConnectionsError,
)


class SlurmHook(SshKeyChecks, SlurmCommands, BaseHook):
    """Run sbatch / sacct / squeue / scancel on a SLURM cluster's login node over SSH.

    :param ssh_conn_id: the Airflow SSH connection of the login node.
    :param jump_conn_id: an SSH connection to a bastion to go through (``ProxyJump``); defaults to
        the connection's ``jump_conn_id`` extra.
    :param cluster: the cluster name, for messages.
    :param retries: tries for a connection or an idempotent command on transient network errors.
    :param retry_wait: seconds before the first retry; doubles each time (exponential backoff).
    :param command_timeout: seconds a remote command may take.
    :param channel_timeout: seconds a channel open or an exec request may wait for the server's answer;
        defaults to the connection's ``channel_timeout`` extra, else :data:`DEFAULT_CHANNEL_TIMEOUT`.
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
        channel_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self._jump_conn_id = jump_conn_id
        self.cluster = cluster or ssh_conn_id
        self.retries = max(1, retries)
        self.retry_wait = retry_wait
        self.command_timeout = command_timeout
        self._channel_timeout = channel_timeout
        self._cert_files: tuple[str | None, str | None] | None = None  # (cert_file extra, beside key_file)

    # --- connection ---------------------------------------------------------------------------
    @property
    def jump_conn_id(self) -> str | None:
        """The bastion connection, from the argument or the connection's ``jump_conn_id`` extra."""
        if self._jump_conn_id is None:
            extra = self.get_connection(self.ssh_conn_id).extra_dejson
            self._jump_conn_id = extra.get("jump_conn_id") or ""
        return self._jump_conn_id or None

    @property
    def channel_timeout(self) -> float:
        """Seconds a channel open may wait: the argument, else the connection's extra, else 30."""
        if self._channel_timeout is None:
            raw = self.get_connection(self.ssh_conn_id).extra_dejson.get("channel_timeout")
            try:
                value = DEFAULT_CHANNEL_TIMEOUT if raw in (None, "") else float(raw)
            except (TypeError, ValueError):
                value = -1.0
            if not value > 0:
                raise ClusterUnreachable(
                    f"{self._where()}: the connection's channel_timeout extra is {raw!r}; give a number of "
                    f"seconds above 0 (or leave it out for {DEFAULT_CHANNEL_TIMEOUT:g})."
                )
            self._channel_timeout = value
        return self._channel_timeout

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

    def _route(self) -> str:
        """Name the cluster, its connection and its bastion, for messages about a stalled channel."""
        via = f", through the bastion {self.jump_conn_id}" if self.jump_conn_id else ""
        return f"cluster {self.cluster} (connection {self.ssh_conn_id}{via})"

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
        # A silent login must not hold the banner wait longer than any other answer we wait for.
        ssh_hook = SSHHook(
            ssh_conn_id=self.ssh_conn_id,
            conn_timeout=20,
            cmd_timeout=self.command_timeout,
            banner_timeout=self.channel_timeout,
        )
        # Our retries (with backoff and classified errors) replace SSHHook's fixed-wait ones.
        ssh_hook.conn_retry_attempts = 1
        self._refuse_unchecked_host_keys(ssh_hook)
        validity = self.check_key()  # an expired key fails here, before any login is tried
        if validity is not None and validity.cert_path:
            self._use_certificate(ssh_hook, validity.cert_path)
        if self.jump_conn_id:
            ssh_hook.__dict__["host_proxy"] = self._open_tunnel(ssh_hook)  # SSHHook passes it as `sock`
        try:
            client = ssh_hook.get_conn()
        except paramiko.BadHostKeyException as exc:
            raise ClusterUnreachable(
                f"{self._where(ssh_hook)}: the server's host key does not match the one on record; refusing "
                "to connect (possible man-in-the-middle). If the login node was really reinstalled, update "
                "the connection's host_key extra with its new key."
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise self._auth_failure(ssh_hook, exc) from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise ClusterUnreachable(
                    f"{self._where(ssh_hook)}: the server's host key is unknown; refusing to connect. "
                    "Add the login node's public key to the connection's host_key extra (or to known_hosts): "
                    f"{_keyscan(ssh_hook)} prints it; check its fingerprint with the site first."
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
        transport = client.get_transport()
        if transport is not None:
            # Bounds any channel open made on this client outside _open_channel too (paramiko: 1 h).
            transport.channel_timeout = self.channel_timeout
        self.stats[self.ssh_conn_id]["connections"] += 1
        return client

    def _refuse_unchecked_host_keys(self, ssh_hook: SSHHook) -> None:
        """Refuse a connection that would accept a host key not pinned in ``host_key`` or known_hosts.

        Called for the bastion too (its own SlurmHook connects through here), before anything connects.
        """
        loose = [name for name in _UNCHECKED_HOST_KEY_SETTINGS if getattr(ssh_hook, name, False)]
        if not loose:
            return
        settings = " and ".join(f"{name}: true" for name in loose)
        raise ClusterUnreachable(
            f"{self._where(ssh_hook)}: the connection turns host-key checking off ({settings} in its "
            "extra), so any server could pose as this host and read the commands and the key; airflow-desc "
            f"refuses that. Pin the host's key instead: {_keyscan(ssh_hook)} prints it; check its "
            "fingerprint with the site, put the 'ssh-ed25519 AAAA...' part in the connection's host_key "
            f"extra (or add the line to known_hosts), and remove {' and '.join(loose)}."
        )

    def _open_tunnel(self, ssh_hook: SSHHook) -> paramiko.Channel:
        """Open the bastion's TCP channel to the login; rebuild the bastion connection once if unanswered."""
        assert self.jump_conn_id
        where = (ssh_hook.remote_host, int(ssh_hook.port or 22))
        for attempt in (1, 2):
            bastion = SlurmHook(self.jump_conn_id, jump_conn_id="", cluster=f"{self.cluster} bastion")
            transport = bastion.get_conn().get_transport()
            assert transport is not None
            try:
                return self._open_channel(transport, "direct-tcpip", where, ("127.0.0.1", 0))
            except paramiko.ChannelException as exc:
                raise ClusterUnreachable(
                    f"{self._where(ssh_hook)}: the bastion {self.jump_conn_id} could not open a tunnel "
                    f"to {where[0]}:{where[1]} ({exc}); check the host and port, and "
                    "that the bastion allows TCP forwarding."
                ) from exc
            except ChannelTimeout as exc:
                bastion.close()
                if attempt == 1:
                    self.log.warning("%s; connecting to the bastion again", exc)
                    continue
                err = ClusterUnreachable(
                    f"{self._where(ssh_hook)}: the bastion {self.jump_conn_id} did not answer a request for "
                    f"a tunnel to {where[0]}:{where[1]} within {self.channel_timeout:g} s, twice (the "
                    "bastion connection was rebuilt in between). The bastion or the login node may be hung "
                    "or overloaded, or the network between them may be down: check that "
                    f"`ssh -J <bastion> -p {where[1]} {where[0]} true` answers. If the site is only slow, "
                    "raise the connection's channel_timeout extra (seconds)."
                )
                # Not marked transient: the rebuild was the retry, and _connect_with_retries would
                # multiply the waits.
                raise err from exc
        raise AssertionError("unreachable")  # the loop returns or raises

    def _open_channel(
        self,
        transport: paramiko.Transport,
        kind: str,
        dest: tuple[str, int] | None = None,
        src: tuple[str, int] | None = None,
    ) -> paramiko.Channel:
        """Open a channel, waiting at most ``channel_timeout`` for the server's answer."""
        return open_channel(transport, kind, self.channel_timeout, self._route(), dest, src)

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
            try:
                return self._run_once(command, stdin=stdin, timeout=timeout)
            except ChannelTimeout as first:
                # The session never opened, so nothing ran and even sbatch may go again, once, on a
                # rebuilt connection: an unanswered open is a stalled connection, not a busy server.
                self.log.warning("%s; dropping the connection and connecting again", first)
                self._drop()
                try:
                    return self._run_once(command, stdin=stdin, timeout=timeout)
                except ChannelTimeout as second:
                    self._drop()
                    err = ClusterUnreachable(
                        f"{self._route()}: the login node did not answer a request to open a session for "
                        f"{command.split()[0]!r} within {self.channel_timeout:g} s, twice (the connection "
                        "was dropped and rebuilt in between); nothing was run. The login node"
                        + (f" or the bastion {self.jump_conn_id}" if self.jump_conn_id else "")
                        + " may be hung or overloaded (check its sshd and its load, and that "
                        "`ssh <login> true` answers). If the site is only slow, raise the connection's "
                        "channel_timeout extra (seconds)."
                    )
                    raise err from second
        except (paramiko.SSHException, *_TRANSIENT):
            # The connection is suspect: the next try (or the next caller) reconnects.
            self.close()
            raise

    def _drop(self) -> None:
        """Close this cluster's connection and, when it goes through a bastion, the bastion's.

        A stalled session open through a tunnel cannot tell a hung login from a hung bastion, so both
        are rebuilt (other clusters behind the same bastion reconnect on their next command).
        """
        self.close()
        if self.jump_conn_id:
            SlurmHook(self.jump_conn_id, jump_conn_id="").close()

    def _run_once(self, command: str, *, stdin: str | None, timeout: float) -> CommandResult:
        client = self.get_conn()
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise EOFError("the SSH connection closed")
        # Not client.exec_command: it waits for the session as long as the command may run (300 s),
        # and its stdin file is what deadlocks paramiko's transport thread when the garbage collector
        # finalizes it there (paramiko#2685: the next channel open then never gets an answer). stdin
        # goes through the channel itself, and the channel is closed here, not by a finalizer.
        channel = self._open_channel(transport, "session")
        try:
            self.stats[self.ssh_conn_id][command.split(" ", 1)[0]] += 1
            self.stats[self.ssh_conn_id]["commands"] += 1
            channel.settimeout(timeout)
            exec_command(channel, command, self.channel_timeout)
            if stdin is not None:
                channel.sendall(stdin.encode())
            send_eof(channel)
            out = channel.makefile("r").read().decode(errors="replace")
            err = channel.makefile_stderr("r").read().decode(errors="replace")
            rc = channel.recv_exit_status()
        finally:
            channel.close()
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

    # --- async, for triggers ------------------------------------------------------------------
    async def arun(self, command: str, *, timeout: float | None = None, check: bool = True) -> CommandResult:
        """Run an idempotent command without blocking the event loop.

        The triggerer's per-cluster poller makes one such call per interval, so one worker thread
        over this process's shared paramiko connection serves it. That keeps one SSH code path
        (host keys, jump hosts, retries, error messages) for sync and async use.
        """
        return await asyncio.to_thread(self.run, command, timeout=timeout, check=check)


def _keyscan(ssh_hook: SSHHook) -> str:
    """Return the command that prints the host's ed25519 key, in known_hosts form."""
    port = f"-p {ssh_hook.port} " if ssh_hook.port and ssh_hook.port != 22 else ""
    return f"`ssh-keyscan -t ed25519 {port}{ssh_hook.remote_host}`"
