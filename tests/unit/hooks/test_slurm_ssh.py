"""SlurmHook against a real SSH server in a thread: host-key policies refused, channel opens bounded.

The server (tests/unit/hooks/sshd.py) is paramiko's own server mode on a local port; the
connections are Airflow SSH connections, read by the SSH provider's SSHHook as in production.
A stalled answer is a server thread that really never answers, so the bounds shown here are
the hook's, not a mock's.
"""

from __future__ import annotations

import pathlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator

import paramiko
import pytest

from airflow_desc.exceptions import ClusterUnreachable
from airflow_desc.hooks.slurm import SlurmHook
from tests.unit.hooks.recorded_log import RecordedWarnings
from tests.unit.hooks.sshd import Keys, Sshd, Stalls, add_connection, make_keys

# Short enough for a unit test, long enough for a loaded machine to answer a healthy open.
CHANNEL_TIMEOUT = 0.5
# What "bounded" means here: two waits of CHANNEL_TIMEOUT plus connections, far below paramiko's
# own waits (300 s for a session via exec_command's timeout, 3600 s for a tunnel).
BOUND = 15.0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(autouse=True)
def empty_home(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ~/.ssh (known_hosts, config) and no agent: only what the connection carries counts."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def sshd(keys: Keys) -> Iterator[Callable[..., Sshd]]:
    servers: list[Sshd] = []

    def start(stalls: Stalls | None = None) -> Sshd:
        servers.append(Sshd(keys.client, keys.host, stalls or Stalls()))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def conn_id() -> Iterator[Callable[[str], str]]:
    """Fresh connection ids (SlurmHook's connection cache and stats are per process), closed after."""
    made: list[str] = []

    def make(role: str) -> str:
        made.append(f"desc_unit_{role}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield make
    for name in made:
        SlurmHook(name, jump_conn_id="").close()


def hook_for(name: str, **kwargs: object) -> SlurmHook:
    hook = SlurmHook(name, cluster="unitcluster", **kwargs)  # type: ignore[arg-type]
    hook.close()
    return hook


# --- host keys -----------------------------------------------------------------------------------


def test_a_pinned_host_key_connects_and_runs(
    sshd: Callable[..., Sshd], keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sshd()
    name = conn_id("pinned")
    add_connection(monkeypatch, name, server.port, keys, host_key=server.public_key())
    assert hook_for(name).run("echo hi").stdout == "echo hi\n"
    assert server.connections == 1 and server.commands == ["echo hi"]


def test_a_pinned_key_of_another_host_is_refused(
    sshd: Callable[..., Sshd], keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sshd()
    name = conn_id("wrongkey")
    wrong = f"{keys.other_host.get_name()} {keys.other_host.get_base64()}"
    add_connection(monkeypatch, name, server.port, keys, host_key=wrong)
    with pytest.raises(ClusterUnreachable, match="does not match the one on record; refusing"):
        hook_for(name, retry_wait=5).run("echo hi")
    assert server.commands == []


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        pytest.param({"allow_host_key_change": True}, "allow_host_key_change", id="allow_host_key_change"),
        pytest.param(
            {"allow_host_key_change": "true", "pinned": True}, "allow_host_key_change", id="change+pinned"
        ),
        pytest.param({"no_host_key_check": True}, "no_host_key_check", id="no_host_key_check"),
    ],
)
def test_a_loose_host_key_policy_is_refused_before_connecting(
    sshd: Callable[..., Sshd],
    keys: Keys,
    conn_id: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    extra: dict[str, object],
    named: str,
) -> None:
    server = sshd()
    name = conn_id("loose")
    if extra.pop("pinned", False):
        extra["host_key"] = server.public_key()
    add_connection(monkeypatch, name, server.port, keys, **extra)
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable) as caught:
        hook_for(name, retry_wait=5).run("echo hi")
    message = str(caught.value)
    assert f"{named}: true" in message and "host-key checking off" in message, message
    assert "refuses" in message and name in message, message
    assert f"ssh-keyscan -t ed25519 -p {server.port} 127.0.0.1" in message, message
    assert "host_key extra" in message and "known_hosts" in message, message
    # A verdict: not retried (retry_wait=5 would show), and the server never saw a connection.
    assert time.monotonic() - started < 5
    assert not getattr(caught.value, "transient", False)
    assert server.connections == 0
    assert SlurmHook.stats[name]["connections"] == 0


def test_a_bastion_that_allows_host_key_changes_is_refused(
    sshd: Callable[..., Sshd], keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    login, bastion = sshd(), sshd()
    name, jump = conn_id("login"), conn_id("bastion")
    add_connection(monkeypatch, jump, bastion.port, keys, allow_host_key_change=True)
    add_connection(monkeypatch, name, login.port, keys, host_key=login.public_key(), jump_conn_id=jump)
    with pytest.raises(ClusterUnreachable) as caught:
        hook_for(name).run("echo hi")
    message = str(caught.value)
    assert "allow_host_key_change: true" in message and f"(connection {jump})" in message, message
    assert "unitcluster bastion" in message, message
    assert f"ssh-keyscan -t ed25519 -p {bastion.port} 127.0.0.1" in message, message
    assert bastion.connections == 0 and login.connections == 0


# --- channel timeouts ----------------------------------------------------------------------------


def test_an_unanswered_session_open_drops_and_rebuilds_the_connection_once(
    sshd: Callable[..., Sshd],
    keys: Keys,
    conn_id: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    warned: RecordedWarnings,
) -> None:
    server = sshd(Stalls(sessions={1}))
    name = conn_id("stall1")
    add_connection(
        monkeypatch, name, server.port, keys, host_key=server.public_key(), channel_timeout=CHANNEL_TIMEOUT
    )
    started = time.monotonic()
    assert hook_for(name).run("echo hi").stdout == "echo hi\n"
    elapsed = time.monotonic() - started
    assert CHANNEL_TIMEOUT <= elapsed < BOUND, elapsed
    assert server.stalled == 1 and server.connections == 2
    assert SlurmHook.stats[name]["connections"] == 2
    assert warned == [
        f"cluster unitcluster (connection {name}): no answer to a session channel open within 0.5 s; "
        "dropping the connection and connecting again"
    ]


def test_a_session_open_never_answered_is_unreachable_after_one_rebuild(
    sshd: Callable[..., Sshd], keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sshd(Stalls(sessions={1, 2, 3}))
    name = conn_id("stalls")
    add_connection(
        monkeypatch, name, server.port, keys, host_key=server.public_key(), channel_timeout=CHANNEL_TIMEOUT
    )
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable) as caught:
        hook_for(name, retries=3, retry_wait=0.01).run("squeue -h")
    elapsed = time.monotonic() - started
    assert 2 * CHANNEL_TIMEOUT <= elapsed < BOUND, elapsed
    message = str(caught.value)
    assert f"cluster unitcluster (connection {name})" in message, message
    assert "'squeue'" in message and "within 0.5 s, twice" in message and "nothing was run" in message
    assert "channel_timeout extra" in message, message
    # Rebuilt once, not once per retry of the backoff policy.
    assert server.connections == 2 and server.commands == []


def test_sbatch_goes_again_when_its_session_never_opened(
    sshd: Callable[..., Sshd], keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sshd(Stalls(sessions={1}))
    name = conn_id("sbatch")
    add_connection(
        monkeypatch, name, server.port, keys, host_key=server.public_key(), channel_timeout=CHANNEL_TIMEOUT
    )
    result = hook_for(name).run("sbatch --parsable job.sh", idempotent=False)
    assert result.returncode == 0
    assert server.commands == ["sbatch --parsable job.sh"]


def test_an_unanswered_exec_request_is_a_drop_so_sbatch_is_not_rerun(
    sshd: Callable[..., Sshd], keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sshd(Stalls(execs={1}))
    name = conn_id("exec")
    add_connection(
        monkeypatch, name, server.port, keys, host_key=server.public_key(), channel_timeout=CHANNEL_TIMEOUT
    )
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable, match=r"connection lost while running 'sbatch' \(TimeoutError"):
        hook_for(name, retry_wait=0.01).run("sbatch --parsable job.sh", idempotent=False)
    assert time.monotonic() - started < BOUND
    # The request arrived and may have run: it is not sent again.
    assert server.commands == ["sbatch --parsable job.sh"]
    # An idempotent command is retried on a new connection by the backoff policy.
    assert hook_for(name, retry_wait=0.01).run("echo again").stdout == "echo again\n"


def test_an_unanswered_tunnel_open_names_the_bastion(
    sshd: Callable[..., Sshd],
    keys: Keys,
    conn_id: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    warned: RecordedWarnings,
) -> None:
    login, bastion = sshd(), sshd(Stalls(tunnels={1, 2, 3}))
    name, jump = conn_id("behind"), conn_id("jump")
    add_connection(monkeypatch, jump, bastion.port, keys, host_key=bastion.public_key())
    add_connection(
        monkeypatch,
        name,
        login.port,
        keys,
        host_key=login.public_key(),
        jump_conn_id=jump,
        channel_timeout=CHANNEL_TIMEOUT,
    )
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable) as caught:
        hook_for(name, retry_wait=0.01).run("echo hi")
    elapsed = time.monotonic() - started
    assert 2 * CHANNEL_TIMEOUT <= elapsed < BOUND, elapsed
    message = str(caught.value)
    assert f"the bastion {jump} did not answer a request for a tunnel to 127.0.0.1:{login.port}" in message
    assert "within 0.5 s, twice" in message and "ssh -J" in message and "channel_timeout" in message
    # The bastion connection was rebuilt once; the login was never reached.
    assert bastion.connections == 2 and login.connections == 0
    assert len(warned) == 1 and "connecting to the bastion again" in warned[0], warned


def test_a_silent_listener_is_given_up_after_channel_timeout(
    keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel completes the TCP handshake; nothing ever answers paramiko's banner.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        name = conn_id("silent")
        host_key = f"{keys.host.get_name()} {keys.host.get_base64()}"
        port = listener.getsockname()[1]
        add_connection(monkeypatch, name, port, keys, host_key=host_key, channel_timeout=CHANNEL_TIMEOUT)
        started = time.monotonic()
        with pytest.raises(ClusterUnreachable, match="protocol banner") as caught:
            hook_for(name, retries=1).run("echo hi")
        assert time.monotonic() - started < BOUND
        assert getattr(caught.value, "transient", False)


@pytest.mark.parametrize("value", ["soon", 0, -3])
def test_a_bad_channel_timeout_extra_is_named(
    keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch, value: object
) -> None:
    name = conn_id("badtimeout")
    add_connection(monkeypatch, name, 1, keys, channel_timeout=value)
    with pytest.raises(ClusterUnreachable, match=rf"channel_timeout extra is {value!r}; give a number"):
        hook_for(name).run("echo hi")


def test_the_channel_timeout_defaults_to_30_s(
    keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = conn_id("default")
    add_connection(monkeypatch, name, 1, keys)
    assert hook_for(name).channel_timeout == 30.0
    assert hook_for(name, channel_timeout=2).channel_timeout == 2.0


def test_stdin_goes_through_the_channel_and_no_stdin_file_is_left_to_a_finalizer(
    sshd: Callable[..., Sshd], keys: Keys, conn_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # paramiko#2685: a ChannelStdinFile (what SSHClient.exec_command hands out) finalized by the
    # garbage collector on the transport thread deadlocks that thread, and every later channel open
    # waits for an answer that never comes. The hook must never make one.
    def no_stdin_file(*args: object, **kwargs: object) -> None:
        raise AssertionError("a ChannelStdinFile was made")

    monkeypatch.setattr(paramiko.Channel, "makefile_stdin", no_stdin_file)
    server = sshd()
    name = conn_id("stdin")
    add_connection(monkeypatch, name, server.port, keys, host_key=server.public_key())
    hook = hook_for(name)
    assert hook.run("cat", stdin="#!/bin/bash\ntrue\n").stdout == "#!/bin/bash\ntrue\n\n"
    assert hook.run("echo after").stdout == "echo after\n"
    assert server.connections == 1
