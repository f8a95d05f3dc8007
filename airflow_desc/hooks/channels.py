"""SSH channels with bounded waits: what paramiko's API leaves unbounded or racy.

A channel open waits for the server's answer as long as it is told (``exec_command`` passes the
command's whole timeout, a tunnel open waits an hour), the exec request waits without a timeout
(paramiko#739), and ``Channel.shutdown_write`` can send its EOF after the channel is gone, which
makes OpenSSH drop the whole connection. :class:`~airflow_desc.hooks.slurm.SlurmHook` opens,
execs and ends its channels through these instead.
"""

from __future__ import annotations

import threading

import paramiko

__all__ = ["ChannelTimeout", "exec_command", "open_channel", "send_eof"]


class ChannelTimeout(Exception):
    """The server did not answer a channel open in time; nothing was run yet."""


def open_channel(
    transport: paramiko.Transport,
    kind: str,
    timeout: float,
    route: str,
    dest: tuple[str, int] | None = None,
    src: tuple[str, int] | None = None,
) -> paramiko.Channel:
    """Open a channel, waiting at most ``timeout`` seconds for the server's answer.

    :param transport: the connection.
    :param kind: ``session`` or ``direct-tcpip``.
    :param timeout: seconds.
    :param route: how the connection goes, for the message (``nersc_ssh via bastion_ssh``).
    :param dest: the tunnel's destination (``direct-tcpip``).
    :param src: the tunnel's source (``direct-tcpip``).
    :raises ChannelTimeout: when the server did not answer in time.
    """
    try:
        return transport.open_channel(kind, dest, src, timeout=timeout)
    except paramiko.ChannelException:
        raise  # the server answered: a refusal, not a stall
    except paramiko.SSHException as exc:
        # paramiko says so only when the wait ran out on a live transport; a dead one raises its cause.
        if "Timeout opening channel" not in str(exc):
            raise
        raise ChannelTimeout(f"{route}: no answer to a {kind} channel open within {timeout:g} s") from exc


def exec_command(channel: paramiko.Channel, command: str, timeout: float) -> None:
    """Send the exec request, waiting at most ``timeout`` seconds for the server's answer.

    :raises TimeoutError: when it did not answer: the command may be running (a drop, not a clean
        refusal, so that a non-idempotent command such as sbatch is not run again).
    """
    # paramiko waits for that answer without a timeout (paramiko#739); closing the channel wakes it.
    gave_up = threading.Event()

    def give_up() -> None:
        gave_up.set()
        try:
            channel.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # marked closed (which wakes the wait) before the close message failed to go out

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        channel.exec_command(command)
    except paramiko.SSHException as exc:
        if gave_up.is_set():
            raise TimeoutError(f"no answer to the exec request within {timeout:g} s") from exc
        raise
    finally:
        watchdog.cancel()


def send_eof(channel: paramiko.Channel) -> None:
    """Tell the command its stdin has ended, unless the server has closed the channel already.

    ``Channel.shutdown_write`` marks the EOF sent under the channel's lock but sends it after releasing
    it, so the transport thread can answer the server's CLOSE (a command that exited) in between. The
    EOF then reaches OpenSSH after the channel is gone, and it drops the whole connection ("ieof
    packet referred to nonexistent channel"): every command sharing it fails and the hook reconnects.
    Sending under the lock orders the EOF before any CLOSE of ours. (The send can wait for a key
    exchange, at most paramiko's 30 s, while the transport thread may want this lock; it then raises.)
    """
    with channel.lock:
        if channel.closed or channel.eof_sent:
            return
        message = channel._send_eof()
        if message is not None:
            channel.transport._send_user_message(message)
