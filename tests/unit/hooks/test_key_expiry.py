"""SlurmHook and key lifetimes: real certificates from ssh-keygen, a real SSH server in a thread.

An expired certificate fails before any login (the server sees no connection); one expiring within
two hours warns once; a profile's ``key_expires`` stands in for a key without a certificate; a
login that refuses a valid certificate is not blamed on an expiry.
"""

from __future__ import annotations

import pathlib
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import paramiko
import pytest

from airflow_desc.exceptions import ClusterUnreachable, SshKeyExpired
from airflow_desc.hooks.slurm import SlurmHook
from tests.unit.certificates import certified_keys, certify
from tests.unit.hooks.recorded_log import RecordedWarnings
from tests.unit.hooks.sshd import Keys, Sshd, Stalls, add_connection

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


@pytest.fixture
def keys(tmp_path: pathlib.Path) -> Keys:
    return certified_keys(tmp_path)


@pytest.fixture
def server(keys: Keys) -> Iterator[Sshd]:
    sshd = Sshd(keys.client, keys.host, Stalls())
    yield sshd
    sshd.close()


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch, server: Sshd, keys: Keys) -> Iterator[str]:
    name = f"desc_unit_key_{uuid.uuid4().hex[:8]}"
    add_connection(monkeypatch, name, server.port, keys, host_key=server.public_key())
    monkeypatch.delenv("DESC_CLUSTERS_FILE", raising=False)
    yield name
    SlurmHook(name, jump_conn_id="").close()


def hook_for(name: str) -> SlurmHook:
    return SlurmHook(name, jump_conn_id="", cluster="unitcluster", retries=1)


def test_an_expired_certificate_fails_before_any_login(conn: str, keys: Keys, server: Sshd) -> None:
    cert = certify(keys, "20200101000000Z:20200102000000Z")
    with pytest.raises(SshKeyExpired) as caught:
        hook_for(conn).run("true")
    assert str(caught.value) == (
        f"cluster unitcluster (connection {conn}): the SSH certificate for {conn} expired at "
        f"2020-01-02 00:00:00 UTC (the certificate {cert}): renew the key with sshproxy. Tasks of this "
        "cluster wait deferred until the key is renewed."
    )
    assert caught.value.cert_path == str(cert)
    assert caught.value.expired_at == datetime(2020, 1, 2, tzinfo=timezone.utc)
    assert server.connections == 0


def test_a_certificate_valid_only_later_is_refused_too(conn: str, keys: Keys) -> None:
    certify(keys, "+1h:+2h")
    with pytest.raises(SshKeyExpired, match="is valid only from .*check the clock of this host"):
        hook_for(conn).check_key()


def test_a_certificate_expiring_within_two_hours_warns_once(
    conn: str, keys: Keys, warned: RecordedWarnings
) -> None:
    cert = certify(keys, "-5m:+90m")
    hook = hook_for(conn)
    validity = hook.check_key()
    assert validity is not None and validity.cert_path == str(cert)
    hook_for(conn).check_key()
    assert len(warned) == 1
    assert warned[0].startswith(f"cluster unitcluster (connection {conn}): the SSH certificate for {conn} "
                                "expires at ")  # fmt: skip
    assert f"(the certificate {cert}): renew the key with sshproxy before then" in warned[0]
    check = hook.key_check(validity, "poll")
    assert (check.cluster, check.cert_path, check.checked_by) == ("unitcluster", str(cert), "poll")


def test_a_certificate_valid_for_a_day_says_nothing(conn: str, keys: Keys, warned: RecordedWarnings) -> None:
    certify(keys, "-5m:+1d")
    assert hook_for(conn).check_key() is not None
    assert warned == []


def test_a_login_that_refuses_a_valid_certificate_is_not_called_an_expiry(
    monkeypatch: pytest.MonkeyPatch, keys: Keys
) -> None:
    cert = certify(keys, "-5m:+1d")
    stranger = Sshd(paramiko.ECDSAKey.generate(), keys.host, Stalls())  # trusts another key only
    try:
        add_connection(monkeypatch, "desc_unit_refused", stranger.port, keys, host_key=stranger.public_key())
        with pytest.raises(ClusterUnreachable) as caught:
            hook_for("desc_unit_refused").run("true")
    finally:
        stranger.close()
    assert not isinstance(caught.value, SshKeyExpired)
    assert f"although the certificate {cert} is valid until " in str(caught.value)
    assert "the login does not trust its CA, or the user is not among its principals" in str(caught.value)


def test_the_plain_key_still_logs_in_and_says_no_certificate_tells(
    conn: str, keys: Keys, server: Sshd
) -> None:
    hook = hook_for(conn)
    assert hook.key_validity() is None
    assert hook.run("true").returncode == 0


def test_a_certificate_named_by_the_cert_file_extra(
    monkeypatch: pytest.MonkeyPatch, keys: Keys, server: Sshd, tmp_path: pathlib.Path
) -> None:
    elsewhere = certify(keys, "20200101000000Z:20200102000000Z", out=tmp_path / "sshproxy-cert.pub")
    add_connection(monkeypatch, "desc_unit_named_cert", server.port, keys, cert_file=str(elsewhere))
    expired = f"expired at 2020-01-02 00:00:00 UTC \\(the certificate {elsewhere}"
    with pytest.raises(SshKeyExpired, match=expired):
        hook_for("desc_unit_named_cert").check_key()
    add_connection(monkeypatch, "desc_unit_bad_cert", server.port, keys, cert_file=str(tmp_path / "nope"))
    unreadable = "cannot read the SSH certificate: .*Fix the connection's cert_file"
    with pytest.raises(ClusterUnreachable, match=unreadable):
        hook_for("desc_unit_bad_cert").check_key()


def test_a_profile_states_the_expiry_of_a_key_without_certificate(
    conn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    profiles = tmp_path / "clusters.yaml"
    profiles.write_text(
        f"clusters:\n  unitcluster:\n    ssh_conn_id: {conn}\n    cores_per_node: 1\n"
        f"    memory_per_node_mb: 1000\n    max_walltime: 60\n    key_expires: {past}\n"
    )
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(profiles))
    with pytest.raises(SshKeyExpired) as caught:
        hook_for(conn).check_key()
    assert "the SSH key for " in str(caught.value)
    assert "(the key_expires of cluster profile unitcluster): renew the key with sshproxy, then update " \
        "key_expires in the profile" in str(caught.value)  # fmt: skip
    assert caught.value.cert_path is None
