"""Reading OpenSSH certificates: a recorded sshproxy-like one, fresh ones from ssh-keygen of each key type."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

from airflow_desc.history.key_checks import KeyCheck
from airflow_desc.ssh_keys import (
    KeyValidity,
    expired_message,
    expiring_message,
    key_notes,
    parse_certificate,
    read_certificate,
)

DATA = pathlib.Path(__file__).parents[1] / "data" / "ssh"
UTC = timezone.utc

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


def _keygen(*args: str) -> str:
    done = subprocess.run(
        ["ssh-keygen", *args], capture_output=True, text=True, check=True, env={**os.environ, "TZ": "UTC"}
    )
    return done.stdout


def _listed(listing: str) -> dict[str, object]:
    """What ``ssh-keygen -L`` says of a certificate: type, key id, serial, validity, principals."""
    kind = re.search(r"Type: (\S+) (\w+) certificate", listing)
    key_id = re.search(r'Key ID: "(.*)"', listing)
    serial = re.search(r"Serial: (\d+)", listing)
    valid = re.search(r"Valid: (.*)", listing)
    assert kind and key_id and serial and valid
    principals = listing.split("Principals:", 1)[1].split("Critical Options:", 1)[0].split()
    return {
        "key_type": kind[1], "cert_type": kind[2], "key_id": key_id[1], "serial": int(serial[1]),
        "valid": valid[1].strip(), "principals": tuple(p for p in principals if p != "(none)"),
    }  # fmt: skip


def _as_listed(after: datetime | None, before: datetime | None) -> str:
    """Write a validity as ``ssh-keygen -L`` does (in UTC here)."""
    if after is None and before is None:
        return "forever"
    if after is None:
        assert before is not None
        return f"before {before:%Y-%m-%dT%H:%M:%S}"
    if before is None:
        return f"after {after:%Y-%m-%dT%H:%M:%S}"
    return f"from {after:%Y-%m-%dT%H:%M:%S} to {before:%Y-%m-%dT%H:%M:%S}"


def _agrees_with_ssh_keygen(path: pathlib.Path, listing: str) -> None:
    cert, listed = read_certificate(path), _listed(listing)
    assert cert.key_type == listed["key_type"]
    assert cert.cert_type == listed["cert_type"]
    assert cert.key_id == listed["key_id"]
    assert cert.serial == listed["serial"]
    assert cert.principals == listed["principals"]
    assert _as_listed(cert.valid_after, cert.valid_before) == listed["valid"]


def test_a_recorded_certificate_reads_as_ssh_keygen_listed_it() -> None:
    _agrees_with_ssh_keygen(DATA / "sshproxy-cert.pub", (DATA / "sshproxy-cert.txt").read_text())
    cert = read_certificate(DATA / "sshproxy-cert.pub")
    assert cert.valid_after == datetime(2026, 12, 6, 14, 0, tzinfo=UTC)
    assert cert.valid_before == datetime(2026, 12, 7, 14, 0, tzinfo=UTC)


@needs_ssh_keygen
@pytest.mark.parametrize(
    ("key_type", "validity"),
    [
        ("ed25519", "+2m"),
        ("rsa", "20261206140000Z:20261207140000Z"),
        ("ecdsa", "always:20300101000000Z"),
        ("ed25519", "20250101000000Z:forever"),
        ("ecdsa", "always:forever"),
    ],
)
def test_fresh_certificates_of_each_key_type_read_as_ssh_keygen_lists_them(
    tmp_path: pathlib.Path, key_type: str, validity: str
) -> None:
    _keygen("-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca"))
    _keygen("-q", "-t", key_type, "-N", "", "-f", str(tmp_path / "id"))
    _keygen("-q", "-s", str(tmp_path / "ca"), "-I", "desc id 7", "-n", "desc", "-z", "7", "-V", validity,
            str(tmp_path / "id.pub"))  # fmt: skip
    cert_path = tmp_path / "id-cert.pub"
    _agrees_with_ssh_keygen(cert_path, _keygen("-L", "-f", str(cert_path)))
    # What this test asked ssh-keygen for, read back (not only "as ssh-keygen lists it").
    cert = read_certificate(cert_path)
    assert (cert.key_id, cert.serial, cert.principals) == ("desc id 7", 7, ("desc",))
    assert cert.valid_before is None if validity.endswith("forever") else cert.valid_before is not None


@needs_ssh_keygen
def test_a_host_certificate_with_no_principals(tmp_path: pathlib.Path) -> None:
    _keygen("-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca"))
    _keygen("-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host"))
    _keygen("-q", "-s", str(tmp_path / "ca"), "-I", "login", "-h", str(tmp_path / "host.pub"))
    cert_path = tmp_path / "host-cert.pub"
    _agrees_with_ssh_keygen(cert_path, _keygen("-L", "-f", str(cert_path)))
    assert read_certificate(cert_path).principals == ()


def test_not_a_certificate_says_what_to_name_instead(tmp_path: pathlib.Path) -> None:
    plain = tmp_path / "id.pub"
    plain.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOSvFZTENyaSzULYdFPKFVdYyT9LJxe872aHfB1af60/\n")
    with pytest.raises(ValueError, match=r"id.pub: not an OpenSSH certificate but a plain public key; name"):
        read_certificate(plain)
    with pytest.raises(ValueError, match="cannot read the SSH certificate"):
        read_certificate(tmp_path / "missing-cert.pub")
    with pytest.raises(ValueError, match="not a readable OpenSSH certificate"):
        parse_certificate("ssh-ed25519-cert-v01@openssh.com AAAA", "x-cert.pub")
    text = (DATA / "sshproxy-cert.pub").read_text().split()
    with pytest.raises(ValueError, match="not a readable OpenSSH certificate .*ends early"):
        parse_certificate(f"{text[0]} {text[1][:120]}", "cut-cert.pub")
    with pytest.raises(ValueError, match="its data says"):
        parse_certificate(f"ssh-rsa-cert-v01@openssh.com {text[1]}", "mixed-cert.pub")


NOW = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)


def test_validity_expired_soon_and_messages() -> None:
    cert = KeyValidity("the certificate /k-cert.pub", NOW + timedelta(minutes=90), cert_path="/k-cert.pub")
    assert not cert.expired(NOW) and cert.expires_soon(NOW)
    assert not cert.expires_soon(NOW - timedelta(hours=1))  # 2 h 30 min left: no warning yet
    assert expiring_message("nersc_ssh", cert, NOW) == (
        "the SSH certificate for nersc_ssh expires at 2026-12-06 16:30:00 UTC, in 1 h 30 min (the "
        "certificate /k-cert.pub): renew the key with sshproxy before then, or tasks wait for it"
    )
    later = NOW + timedelta(hours=2)
    assert cert.expired(later) and not cert.expires_soon(later)
    assert expired_message("nersc_ssh", cert, later) == (
        "the SSH certificate for nersc_ssh expired at 2026-12-06 16:30:00 UTC (the certificate "
        "/k-cert.pub): renew the key with sshproxy"
    )
    stated = KeyValidity("the key_expires of cluster profile perlmutter", NOW)
    assert expired_message("nersc_ssh", stated, NOW).endswith(
        "renew the key with sshproxy, then update key_expires in the profile"
    )
    early = KeyValidity("the certificate /k-cert.pub", None, NOW + timedelta(minutes=1), "/k-cert.pub")
    assert early.expired(NOW)
    assert "valid only from 2026-12-06 15:01:00 UTC" in expired_message("nersc_ssh", early, NOW)
    assert not KeyValidity("forever", None).expired(NOW)
    assert not KeyValidity("forever", None).expires_soon(NOW)


def _check(cluster: str, expires_at: datetime | None, checked_at: datetime = NOW) -> KeyCheck:
    return KeyCheck(
        ssh_conn_id=f"{cluster}_ssh", jump_conn_id="", cluster=cluster, source=f"the certificate /{cluster}",
        cert_path=f"/{cluster}", checked_by="poll",
        expires_at=expires_at.replace(tzinfo=None) if expires_at else None,
        checked_at=checked_at.replace(tzinfo=None),
    )  # fmt: skip


def test_key_notes_name_the_clusters_whose_key_expired_or_expires_within_two_hours() -> None:
    notes = key_notes(
        [
            _check("s3df", NOW - timedelta(minutes=5)),
            _check("perlmutter", NOW + timedelta(minutes=30)),
            _check("in2p3", NOW + timedelta(hours=3)),
            _check("forever", None),
            _check("unused", NOW - timedelta(hours=1), checked_at=NOW - timedelta(days=2)),
        ],
        NOW,
    )
    assert notes == [
        "cluster perlmutter: the SSH certificate for perlmutter_ssh expires at 2026-12-06 15:30:00 UTC, in "
        "30 min (the certificate /perlmutter): renew the key with sshproxy before then, or tasks wait for "
        "it (checked 2026-12-06 15:00:00 UTC by poll)",
        "cluster s3df: the SSH certificate for s3df_ssh expired at 2026-12-06 14:55:00 UTC (the certificate "
        "/s3df): renew the key with sshproxy; its tasks wait deferred until it is renewed (checked "
        "2026-12-06 15:00:00 UTC by poll)",
    ]
