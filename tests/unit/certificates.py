"""Real OpenSSH user certificates for the unit tests: a client key and a CA made by ssh-keygen."""

from __future__ import annotations

import pathlib
import subprocess

import paramiko

from tests.unit.hooks.sshd import Keys


def certified_keys(directory: pathlib.Path) -> Keys:
    """Make a client key (OpenSSH's own format, as sshproxy writes keys) and a CA beside it."""
    for name in ("id_ed25519", "ca"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
                       check=True)  # fmt: skip
    client_file = directory / "id_ed25519"
    client = paramiko.Ed25519Key(filename=str(client_file))
    return Keys(client, client_file, paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate())


def certify(keys: Keys, validity: str, *, out: pathlib.Path | None = None) -> pathlib.Path:
    """Sign the client key for user ``desc`` (``ssh-keygen -V validity``); return the certificate.

    Written beside the key (``<key>-cert.pub``, where sshproxy puts it), or moved to ``out``.
    """
    ca = keys.client_file.parent / "ca"
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", "desc", "-n", "desc", "-V", validity,
                    str(keys.client_file) + ".pub"], check=True)  # fmt: skip
    cert = pathlib.Path(f"{keys.client_file}-cert.pub")
    if out is not None:
        cert.rename(out)
        return out
    return cert
