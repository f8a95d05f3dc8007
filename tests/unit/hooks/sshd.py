"""A real SSH server in a thread (paramiko's own server mode) whose answers the unit tests choose.

It listens on 127.0.0.1, accepts one client key, and either answers a channel open at once or
never does (its transport thread blocks, as a hung login or bastion would, until the test ends). An
exec request is answered by echoing the command (for ``cat``, what came on stdin) on stdout with
exit status 0, which is enough to show that a command ran. No mocks: the hook under test talks
SSH over real sockets.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import socket
import threading
import time

import paramiko
import pytest
from airflow.sdk import Connection


@dataclasses.dataclass
class Stalls:
    """Which of the server's answers never come: by connection number (1 is the first accepted)."""

    sessions: set[int] = dataclasses.field(default_factory=set)
    tunnels: set[int] = dataclasses.field(default_factory=set)
    execs: set[int] = dataclasses.field(default_factory=set)


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: Sshd, number: int) -> None:
        self.server = server
        self.number = number

    def _stall(self, which: set[int]) -> None:
        if self.number in which:
            self.server.stalled += 1
            self.server.release.wait(60)

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = key.get_base64() == self.server.client_key.get_base64()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind != "session":
            return paramiko.OPEN_FAILED_UNKNOWN_CHANNEL_TYPE
        self._stall(self.server.stalls.sessions)
        return paramiko.OPEN_SUCCEEDED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        self._stall(self.server.stalls.tunnels)
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED  # the tests only need the stall

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.server.commands.append(command.decode())
        self._stall(self.server.stalls.execs)
        threading.Thread(target=_echo, args=(channel, command), daemon=True).start()
        return True


def _echo(channel: paramiko.Channel, command: bytes) -> None:
    # Answer only once the client has its exec reply (it then closes its stdin, as SlurmHook does):
    # a close before that reply would fail the exec request itself.
    deadline = time.monotonic() + 30
    while not (channel.eof_received or channel.closed) and time.monotonic() < deadline:
        time.sleep(0.005)
    received = b""
    while channel.recv_ready():
        received += channel.recv(65536)
    if command == b"cat":
        command = received  # what the client sent on stdin, echoed back
    try:
        channel.sendall(command + b"\n")
        channel.send_exit_status(0)
        channel.close()
    except OSError:
        pass  # the client gave up on this channel (a stalled exec answered at teardown)


class Sshd:
    """The server: ``port``, its ``host_key``, the ``connections`` it accepted and the ``commands`` run."""

    def __init__(self, client_key: paramiko.PKey, host_key: paramiko.PKey, stalls: Stalls) -> None:
        self.client_key = client_key
        self.host_key = host_key
        self.stalls = stalls
        self.release = threading.Event()
        self.connections = 0
        self.stalled = 0
        self.commands: list[str] = []
        self._transports: list[paramiko.Transport] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.connections += 1
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            self._transports.append(transport)
            transport.start_server(server=_Interface(self, self.connections))

    def public_key(self) -> str:
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    def close(self) -> None:
        self.release.set()
        self._listener.close()
        for transport in self._transports:
            transport.close()


@dataclasses.dataclass
class Keys:
    """A client key (and its file) and two host keys, so that one can be the wrong one."""

    client: paramiko.PKey
    client_file: pathlib.Path
    host: paramiko.PKey
    other_host: paramiko.PKey


def make_keys(directory: pathlib.Path) -> Keys:
    client = paramiko.ECDSAKey.generate()
    client_file = directory / "id_ecdsa"
    client.write_private_key_file(str(client_file))
    return Keys(client, client_file, paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate())


def add_connection(
    monkeypatch: pytest.MonkeyPatch, conn_id: str, port: int, keys: Keys, **extra: object
) -> None:
    """Define the Airflow SSH connection ``conn_id`` (an environment variable) to 127.0.0.1:``port``."""
    conn = Connection(
        conn_id=conn_id,
        conn_type="ssh",
        host="127.0.0.1",
        port=port,
        login="desc",
        extra=json.dumps({"key_file": str(keys.client_file), "look_for_keys": False, **extra}),
    )
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn.as_json())
