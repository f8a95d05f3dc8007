"""Until when a cluster login's SSH key logs in: :class:`SshKeyChecks`, a part of the SLURM hook.

Before it connects, the hook reads until when the key logs in (:meth:`SshKeyChecks.key_validity`):
an OpenSSH certificate's validity (the connection's ``cert_file`` extra, else
``<key_file>-cert.pub``), else the ``key_expires`` of the cluster profiles of the connection; it
refuses an expired key and warns before the expiry (:meth:`SshKeyChecks.check_key`), presents a
certificate paramiko would not find (:meth:`SshKeyChecks._use_certificate`) and says why a login
refused the key (:meth:`SshKeyChecks._auth_failure`). See :mod:`airflow_desc.hooks.slurm`.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import paramiko

from airflow_desc.config import configured_cluster_profiles
from airflow_desc.exceptions import ClusterProfileError, ClusterUnreachable, SshKeyExpired
from airflow_desc.history.key_checks import KeyCheck
from airflow_desc.ssh_keys import KeyValidity, expired_message, expiring_message

if TYPE_CHECKING:
    from airflow.providers.ssh.hooks.ssh import SSHHook

__all__ = ["SshKeyChecks"]


class SshKeyChecks:
    """The key-validity part of :class:`~airflow_desc.hooks.slurm.SlurmHook` (which it is mixed into)."""

    # (conn id, expiry) of the keys this process warned about: one warning per certificate.
    _warned: ClassVar[set[tuple[str, datetime | None]]] = set()
    if TYPE_CHECKING:  # what the hook provides
        ssh_conn_id: str
        cluster: str

        @property
        def jump_conn_id(self) -> str | None:
            """The hook's bastion connection."""

        _cert_files: tuple[str | None, str | None] | None
        log: Any

        def get_connection(self, conn_id: str) -> Any:
            """Return the Airflow connection (BaseHook's)."""

        def _where(self, ssh_hook: SSHHook | None = None) -> str:
            """Name the cluster and its login, for messages (the hook's)."""

    def _certificate_path(self) -> str | None:
        """Return the certificate: the ``cert_file`` extra, else ``<key_file>-cert.pub`` if it exists."""
        if self._cert_files is None:
            extra = self.get_connection(self.ssh_conn_id).extra_dejson
            named, key_file = extra.get("cert_file"), extra.get("key_file")
            beside = f"{os.path.expanduser(key_file)}-cert.pub" if key_file else None
            self._cert_files = (os.path.expanduser(str(named)) if named else None, beside)
        named, beside = self._cert_files
        # Looked for at every call: sshproxy may write the first certificate after the hook was made.
        return named or (beside if beside and os.path.exists(beside) else None)

    def _profiles_of_connection(self) -> list[Any]:
        """Return the cluster profiles that log in through this connection, this hook's cluster first."""
        try:
            profiles = [p for p in configured_cluster_profiles() if p.ssh_conn_id == self.ssh_conn_id]
        except ClusterProfileError:
            return []  # no profile file here: a connection used on its own
        return sorted(profiles, key=lambda p: p.name != self.cluster)

    def key_validity(self) -> KeyValidity | None:
        """Return until when this connection's key logs in, or ``None`` when nothing says.

        A certificate says it itself (read each call: a renewal replaces the file); else the
        earliest ``key_expires`` of the cluster profiles of this connection.

        :raises ClusterUnreachable: when the certificate cannot be read.
        """
        path = self._certificate_path()
        if path is not None:
            try:
                return KeyValidity.of_certificate(path)
            except ValueError as exc:
                raise ClusterUnreachable(
                    f"{self._where()}: {exc}. Fix the connection's cert_file extra (or remove it to use "
                    "<key_file>-cert.pub), or run sshproxy again."
                ) from None
        stated = [p for p in self._profiles_of_connection() if p.key_expires is not None]
        if not stated:
            return None
        first = min(stated, key=lambda p: p.key_expires)
        return KeyValidity(f"the key_expires of cluster profile {first.name}", first.key_expires)

    def check_key(self) -> KeyValidity | None:
        """Refuse an expired key before any login; warn (once per key) from two hours before its expiry.

        :raises SshKeyExpired: when the key does not log in now; nothing was tried.
        """
        validity = self.key_validity()
        now = datetime.now(timezone.utc)
        if validity is None:
            return None
        if validity.expired(now):
            raise SshKeyExpired(
                f"{self._where()}: {expired_message(self.ssh_conn_id, validity, now)}. Tasks of this "
                "cluster wait deferred until the key is renewed.",
                ssh_conn_id=self.ssh_conn_id, jump_conn_id=self.jump_conn_id or "", cluster=self.cluster,
                expired_at=validity.expires_at, cert_path=validity.cert_path,
            )  # fmt: skip
        warned = (self.ssh_conn_id, validity.expires_at)
        if validity.expires_soon(now) and warned not in self._warned:
            self._warned.add(warned)
            self.log.warning("%s: %s", self._where(), expiring_message(self.ssh_conn_id, validity, now))
        return validity

    def key_check(self, validity: KeyValidity | None, checked_by: str) -> KeyCheck:
        """Return ``validity`` as the history's row for this login (``None``: a key that never expires)."""
        profiles = self._profiles_of_connection()
        return KeyCheck(
            ssh_conn_id=self.ssh_conn_id, jump_conn_id=self.jump_conn_id or "",
            cluster=profiles[0].name if profiles else self.cluster,
            source=validity.source if validity else "nothing says it expires",
            cert_path=validity.cert_path if validity else None,
            expires_at=validity.expires_at if validity else None,
            checked_at=datetime.now(timezone.utc), checked_by=checked_by,
        )  # fmt: skip

    def _use_certificate(self, ssh_hook: SSHHook, cert_path: str) -> None:
        """Make paramiko present ``cert_path`` with the key (it looks only beside ``key_file`` itself)."""
        if ssh_hook.key_file and cert_path == f"{os.path.expanduser(ssh_hook.key_file)}-cert.pub":
            return
        try:
            pkey = ssh_hook.pkey or paramiko.PKey.from_path(os.path.expanduser(ssh_hook.key_file or ""))
            pkey.load_certificate(cert_path)
        except (OSError, ValueError, paramiko.SSHException) as exc:
            raise ClusterUnreachable(
                f"{self._where(ssh_hook)}: the certificate {cert_path} (cert_file extra) cannot be used with "
                f"the connection's key ({exc}); name the certificate the CA issued for that key."
            ) from exc
        ssh_hook.pkey, ssh_hook.key_file = pkey, None

    def _auth_failure(self, ssh_hook: SSHHook, exc: paramiko.AuthenticationException) -> ClusterUnreachable:
        """Say why a login refused the key, as far as the key's validity tells."""
        try:
            self.check_key()  # it may have expired since the check before the login
            validity = self.key_validity()
        except ClusterUnreachable as expired:
            return expired
        where = f"{self._where(ssh_hook)}: authentication failed ({exc})"
        if validity is not None and validity.cert_path:
            until = f"until {validity.expires_at:%Y-%m-%d %H:%M:%S} UTC" if validity.expires_at else "forever"
            return ClusterUnreachable(
                f"{where}, although the certificate {validity.cert_path} is valid {until}: the login does "
                "not trust its CA, or the user is not among its principals (`ssh-keygen -L -f "
                f"{validity.cert_path}` shows them); ask the site, or run sshproxy again."
            )
        return ClusterUnreachable(
            f"{where}. The key is not in the login's authorized_keys, or it has expired: no certificate "
            "says when (NERSC's sshproxy writes <key>-cert.pub beside the key: run sshproxy again); check "
            "key_file / private_key of the connection."
        )
