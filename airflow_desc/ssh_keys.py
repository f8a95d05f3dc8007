"""How long an SSH key may still log in: OpenSSH user certificates and stated expiries.

NERSC's sshproxy issues an OpenSSH user certificate (``<key>-cert.pub`` beside the key) valid for
24 h; a cluster profile may also state when its key expires (``key_expires``). This module reads a
certificate's validity from the file itself (the wire format of OpenSSH's PROTOCOL.certkeys: no
``ssh-keygen`` and no paramiko, so that the status page may import it) and words the warnings and
the error. :class:`~airflow_desc.hooks.slurm.SlurmHook` checks a key before it connects, the
triggerers' pollers and ``airflow-desc clusters check`` write what they found to the history
(:mod:`airflow_desc.history.key_checks`), and the status page shows :func:`key_notes` of it.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_desc.history.key_checks import KeyCheck

__all__ = [
    "KEEP_KEY_CHECKS_S",
    "WARN_BEFORE_S",
    "KeyValidity",
    "OpenSshCertificate",
    "expired_message",
    "expiring_message",
    "key_notes",
    "parse_certificate",
    "read_certificate",
]

#: Seconds before its expiry from which a key is warned about: in the task log, in
#: ``airflow-desc clusters check`` and on the status page.
WARN_BEFORE_S = 7200.0
#: Seconds after which the page no longer trusts a check nobody repeated (nothing uses the key).
KEEP_KEY_CHECKS_S = 86_400.0

# The public key's fields after the nonce, per certificate type (PROTOCOL.certkeys): each one is
# a string or an mpint, both a uint32 length and that many bytes.
_KEY_FIELDS = {
    "ssh-rsa-cert-v01@openssh.com": 2,  # e, n
    "ssh-dss-cert-v01@openssh.com": 4,  # p, q, g, y
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": 2,  # curve, public key
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": 2,
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": 2,
    "ssh-ed25519-cert-v01@openssh.com": 1,  # public key
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": 3,  # curve, public key, application
    "sk-ssh-ed25519-cert-v01@openssh.com": 2,  # public key, application
}
_FOREVER = 2**64 - 1
_CERT_TYPES = {1: "user", 2: "host"}


@dataclass(frozen=True)
class OpenSshCertificate:
    """What an OpenSSH certificate says of itself (as ``ssh-keygen -L -f`` shows it).

    :param key_type: e.g. ``ssh-ed25519-cert-v01@openssh.com``.
    :param serial: the CA's serial number.
    :param cert_type: ``user`` or ``host``.
    :param key_id: the key id the CA gave it (``ssh-keygen -I``).
    :param principals: the user names it may log in as (empty: any).
    :param valid_after: from when it is valid (aware UTC; ``None``: always).
    :param valid_before: until when (aware UTC; ``None``: forever).
    """

    key_type: str
    serial: int
    cert_type: str
    key_id: str
    principals: tuple[str, ...]
    valid_after: datetime | None
    valid_before: datetime | None


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob, self.at = blob, 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.blob):
            raise ValueError("it ends early")
        part = self.blob[self.at : self.at + size]
        self.at += size
        return part

    def uint32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def string(self) -> bytes:
        return self.take(self.uint32())


def _when(seconds: int, never: datetime | None) -> datetime | None:
    if seconds == _FOREVER:
        return never
    try:
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return never  # past the year 9999: as good as forever


def parse_certificate(text: str, source: str = "<certificate>") -> OpenSshCertificate:
    """Read an OpenSSH certificate file's text (``<type> <base64> [comment]``).

    :param text: the ``-cert.pub`` file's text.
    :param source: its path, for messages.
    :raises ValueError: naming ``source`` when it is no OpenSSH certificate.
    """
    words = text.split()
    if len(words) < 2:
        raise ValueError(f"{source}: not an OpenSSH certificate (expected '<type> <base64> [comment]')")
    declared = words[0]
    if declared not in _KEY_FIELDS:
        what = "a plain public key" if "-cert-" not in declared else f"an unknown type {declared!r}"
        raise ValueError(
            f"{source}: not an OpenSSH certificate but {what}; name the '-cert.pub' file the CA "
            "(sshproxy) issued"
        )
    try:
        blob = base64.b64decode(words[1], validate=True)
        reader = _Reader(blob)
        key_type = reader.string().decode()
        if key_type != declared:
            raise ValueError(f"its data says {key_type!r}, its first word {declared!r}")
        reader.string()  # nonce
        for _ in range(_KEY_FIELDS[key_type]):
            reader.string()
        serial = reader.uint64()
        cert_type = reader.uint32()
        key_id = reader.string().decode(errors="replace")
        principals_blob = _Reader(reader.string())
        principals = []
        while principals_blob.at < len(principals_blob.blob):
            principals.append(principals_blob.string().decode(errors="replace"))
        valid_after = _when(reader.uint64(), None)
        valid_before = _when(reader.uint64(), None)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source}: not a readable OpenSSH certificate ({exc})") from None
    return OpenSshCertificate(
        key_type=key_type,
        serial=serial,
        cert_type=_CERT_TYPES.get(cert_type, str(cert_type)),
        key_id=key_id,
        principals=tuple(principals),
        valid_after=valid_after if valid_after and valid_after.timestamp() > 0 else None,
        valid_before=valid_before,
    )


def read_certificate(path: str | Path) -> OpenSshCertificate:
    """Read the certificate file at ``path``.

    :raises ValueError: when it cannot be read or is no certificate, naming the file.
    """
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the SSH certificate: {exc.strerror or exc}") from None
    return parse_certificate(text, str(path))


@dataclass(frozen=True)
class KeyValidity:
    """Until when a connection's key may log in, and who says so.

    :param source: what says so, for messages (``the certificate /path/id-cert.pub`` or ``the
        key_expires of cluster profile perlmutter``).
    :param expires_at: when it stops logging in (aware UTC; ``None``: never).
    :param valid_from: when it starts to (aware UTC; ``None``: always).
    :param cert_path: the certificate file, when a certificate says so: what to watch for a renewal.
    """

    source: str
    expires_at: datetime | None
    valid_from: datetime | None = None
    cert_path: str | None = None

    @classmethod
    def of_certificate(cls, path: str | Path) -> KeyValidity:
        """Return the validity of the certificate file at ``path`` (:func:`read_certificate`)."""
        cert = read_certificate(path)
        return cls(f"the certificate {path}", cert.valid_before, cert.valid_after, str(path))

    def expired(self, now: datetime | None = None) -> bool:
        """Whether the key no longer logs in (or not yet: a certificate valid only from later)."""
        now = now or datetime.now(timezone.utc)
        if self.valid_from is not None and now < self.valid_from:
            return True
        return self.expires_at is not None and now >= self.expires_at

    def expires_soon(self, now: datetime | None = None, within_s: float = WARN_BEFORE_S) -> bool:
        """Whether the key still logs in but stops within ``within_s`` seconds."""
        now = now or datetime.now(timezone.utc)
        return (
            not self.expired(now)
            and self.expires_at is not None
            and self.expires_at - now <= timedelta(seconds=within_s)
        )


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _left(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def expired_message(conn_id: str, validity: KeyValidity, now: datetime | None = None) -> str:
    """Say that the key of ``conn_id`` does not log in now, and what to do."""
    now = now or datetime.now(timezone.utc)
    what = "SSH certificate" if validity.cert_path else "SSH key"
    if validity.valid_from is not None and now < validity.valid_from:
        return (
            f"the {what} for {conn_id} is valid only from {_utc(validity.valid_from)} "
            f"({validity.source}): check the clock of this host, or renew the key with sshproxy"
        )
    assert validity.expires_at is not None
    return (
        f"the {what} for {conn_id} expired at {_utc(validity.expires_at)} ({validity.source}): renew "
        "the key with sshproxy" + ("" if validity.cert_path else ", then update key_expires in the profile")
    )


def expiring_message(conn_id: str, validity: KeyValidity, now: datetime | None = None) -> str:
    """Say that the key of ``conn_id`` expires soon, when, and what to do."""
    now = now or datetime.now(timezone.utc)
    assert validity.expires_at is not None
    what = "SSH certificate" if validity.cert_path else "SSH key"
    left = _left((validity.expires_at - now).total_seconds())
    return (
        f"the {what} for {conn_id} expires at {_utc(validity.expires_at)}, in {left} "
        f"({validity.source}): renew the key with sshproxy before then, or tasks wait for it"
    )


def key_notes(checks: Iterable[KeyCheck], now: datetime | None = None) -> list[str]:
    """Return one line per cluster login whose key has expired or expires within :data:`WARN_BEFORE_S`.

    From the checks the pollers, ``clusters check`` and waiting tasks wrote (checks older than
    :data:`KEEP_KEY_CHECKS_S` are left out: nothing has used that key since).
    """
    now = now or datetime.now(timezone.utc)
    notes = []
    for check in sorted(checks, key=lambda c: (c.cluster, c.ssh_conn_id, c.jump_conn_id)):
        checked = check.checked_at.replace(tzinfo=timezone.utc)
        if check.expires_at is None or (now - checked).total_seconds() > KEEP_KEY_CHECKS_S:
            continue
        validity = KeyValidity(
            check.source, check.expires_at.replace(tzinfo=timezone.utc), cert_path=check.cert_path
        )
        where = f"cluster {check.cluster}" if check.cluster else "a cluster"
        seen = f" (checked {_utc(check.checked_at)} by {check.checked_by})"
        if validity.expired(now):
            notes.append(
                f"{where}: {expired_message(check.ssh_conn_id, validity, now)}; its tasks wait deferred "
                f"until it is renewed{seen}"
            )
        elif validity.expires_soon(now):
            notes.append(f"{where}: {expiring_message(check.ssh_conn_id, validity, now)}{seen}")
    return notes
