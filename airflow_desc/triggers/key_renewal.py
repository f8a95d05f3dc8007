"""SshKeyRenewalTrigger: a task whose cluster key expired waits here, deferred, for a renewed one.

An expired key (:class:`~airflow_desc.exceptions.SshKeyExpired`) is no reason to spend a retry:
the operator defers to this trigger, which reads the key's validity again every ``check_interval``
seconds (:meth:`~airflow_desc.hooks.slurm.SlurmHook.key_validity`: the certificate file sshproxy
rewrites, or the profile's ``key_expires``; a file read, no login) and fires once the key logs in
again. While it waits it writes what it found to the history (:func:`record_key_check`), so that
the status page says which cluster's key expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_desc.exceptions import ClusterUnreachable, SshKeyExpired
from airflow_desc.history.writer import HistoryStore
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.ssh_keys import KeyValidity

__all__ = ["KEY_CHECK_REFRESH_S", "SshKeyRenewalTrigger", "check_key_in_poll", "record_key_check"]

log = logging.getLogger(__name__)

#: Seconds after which a login's unchanged key check is written again (the page shows when it was).
KEY_CHECK_REFRESH_S = 600.0

# Per process: (conn id, bastion) -> (expiry written, when): the checks a poll or a waiting task wrote.
_written: dict[tuple[str, str], tuple[Any, float]] = {}


def record_key_check(
    hook: SlurmHook,
    validity: KeyValidity | None,
    checked_by: str,
    store: Callable[[], HistoryStore] | None = None,
) -> bool:
    """Write a login's key check to the history when it changed, or every :data:`KEY_CHECK_REFRESH_S`.

    Blocking (call it in a thread from a trigger). A failing write logs a warning: the caller goes on.

    :param store: returns the history to write to (default: the configured one).

    :return: whether it was written.
    """
    key = (hook.ssh_conn_id, hook.jump_conn_id or "")
    expires = validity.expires_at if validity else None
    last = _written.get(key)
    if last is not None and last[0] == expires and time.monotonic() - last[1] < KEY_CHECK_REFRESH_S:
        return False
    # Stamped before the write: one that fails is tried again on a change or after the refresh time,
    # not at every poll.
    _written[key] = (expires, time.monotonic())
    try:
        from airflow_desc.history import default_history_store
        from airflow_desc.history.key_checks import write_key_check

        write_key_check((store or default_history_store)(), hook.key_check(validity, checked_by))
    except Exception as exc:  # noqa: BLE001 - the page's line is a convenience; polling and waiting go on
        log.warning("the SSH key check of %s not written to the history: %s", hook.ssh_conn_id, exc)
        return False
    return True


def check_key_in_poll(hook: SlurmHook, store: Callable[[], HistoryStore] | None = None) -> None:
    """Look at a poller's login key: warn in the triggerer's log, write the check for the page.

    An expired key does not stop the poll: the open connection still works (sshd checks a
    certificate at login only); it is logged when the check is written (on a change, then every
    :data:`KEY_CHECK_REFRESH_S`), not every poll. Blocking: call it in a thread.
    """
    try:
        validity = hook.check_key()
        expired = None
    except SshKeyExpired as exc:
        validity, expired = hook.key_validity(), exc
    except Exception as exc:  # noqa: BLE001 - an unreadable certificate, a missing connection: the poll says
        log.warning("poll of %s: the SSH key not checked: %s", hook.ssh_conn_id, exc)
        return
    if record_key_check(hook, validity, "poll", store) and expired is not None:
        log.warning("poll of %s: %s", hook.ssh_conn_id, expired)


class SshKeyRenewalTrigger(BaseTrigger):
    """Wait until the key of a cluster login logs in again; then fire once.

    Fires ``resume_event`` when given (the event the task was handling when the key expired, so that
    it picks up where it stopped), else ``{"status": "key renewed", "ssh_conn_id", "expires_at"}``.

    :param ssh_conn_id: the cluster's SSH connection.
    :param jump_conn_id: its bastion connection (``""``: none).
    :param cluster: the cluster, for messages.
    :param check_interval: seconds between two reads of the key's validity.
    :param resume_event: the event to fire once the key is renewed.
    """

    def __init__(
        self,
        *,
        ssh_conn_id: str,
        jump_conn_id: str = "",
        cluster: str = "",
        check_interval: float = 60.0,
        resume_event: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.ssh_conn_id = ssh_conn_id
        self.jump_conn_id = jump_conn_id or ""
        self.cluster = cluster
        self.check_interval = float(check_interval)
        self.resume_event = resume_event

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the kwargs that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "jump_conn_id": self.jump_conn_id,
                "cluster": self.cluster,
                "check_interval": self.check_interval,
                "resume_event": self.resume_event,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Read the key's validity every ``check_interval`` seconds; fire once it logs in again."""
        hook = SlurmHook(self.ssh_conn_id, jump_conn_id=self.jump_conn_id, cluster=self.cluster or None)
        told = False
        while True:
            try:
                validity = await asyncio.to_thread(hook.key_validity)
            except ClusterUnreachable as exc:
                # A certificate being rewritten, or removed before the new one lands: look again.
                log.warning("%s; looking again in %g s", exc, self.check_interval)
            else:
                await asyncio.to_thread(record_key_check, hook, validity, "task waiting for a renewed key")
                if validity is None or not validity.expired():
                    until = validity.expires_at.isoformat() if validity and validity.expires_at else None
                    log.info("the SSH key of %s logs in again (valid until %s)", self.ssh_conn_id, until)
                    event = self.resume_event if self.resume_event is not None else {
                        "status": "key renewed", "ssh_conn_id": self.ssh_conn_id, "expires_at": until,
                    }  # fmt: skip
                    yield TriggerEvent(event)  # type: ignore[no-untyped-call]
                    return
                if not told:
                    log.info(
                        "waiting for a renewed SSH key of %s (%s), looking every %g s",
                        self.ssh_conn_id, validity.source, self.check_interval,
                    )  # fmt: skip
                    told = True
            await asyncio.sleep(self.check_interval)
