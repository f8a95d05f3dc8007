"""An expired cluster key makes a task wait for its renewal, deferred, instead of spending a retry.

:func:`waits_for_key_renewal` decorates an operator's ``execute`` and ``execute_complete``: when
the hook refuses an expired key (:class:`~airflow_desc.exceptions.SshKeyExpired`, raised before any
login), the message goes to the task log and the task defers to
:class:`~airflow_desc.triggers.key_renewal.SshKeyRenewalTrigger`, which fires once the certificate
file (or the profile's ``key_expires``) says the key logs in again. The task then resumes where it
stopped: ``execute`` from the start (it re-attaches to a job it submitted, as after any
interruption), ``execute_complete`` with the event it was handling. An operator built with
``deferrable=False`` waits in its worker instead, reading the key as the trigger would.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from airflow_desc.config import configured_cluster_profiles
from airflow_desc.exceptions import ClusterProfileError, SshKeyExpired
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.triggers.key_renewal import SshKeyRenewalTrigger

__all__ = ["RESUME_AFTER_RENEWAL", "ResumesAfterKeyRenewal", "waits_for_key_renewal"]

#: The method a task deferred from ``execute`` resumes in: it runs ``execute`` again.
RESUME_AFTER_RENEWAL = "execute_after_key_renewal"
#: Seconds between two reads of the key's validity when no profile says how often to poll.
_DEFAULT_CHECK_S = 60.0

Method = TypeVar("Method", bound=Callable[..., Any])


def _check_interval(operator: Any, cluster: str) -> float:
    """As often as the operator polls its cluster's jobs (a file read costs nothing), at most every minute."""
    interval = getattr(operator, "poll_interval", None)
    if not interval:
        try:
            interval = configured_cluster_profiles().get(cluster).poll_interval
        except ClusterProfileError:
            interval = _DEFAULT_CHECK_S
    return min(float(interval), _DEFAULT_CHECK_S)


def _wait_in_worker(operator: Any, expired: SshKeyExpired) -> None:
    hook = SlurmHook(expired.ssh_conn_id, jump_conn_id=expired.jump_conn_id, cluster=expired.cluster)
    while True:
        time.sleep(_check_interval(operator, expired.cluster))
        validity = hook.key_validity()
        if validity is None or not validity.expired():
            return


class ResumesAfterKeyRenewal:
    """Mixed into an operator whose ``execute`` is decorated with :func:`waits_for_key_renewal`."""

    def execute_after_key_renewal(self, context: Any, event: Any = None) -> Any:
        """Run ``execute`` again once the cluster's key was renewed (the trigger's event says no more)."""
        return cast(Any, self).execute(context)


def waits_for_key_renewal(method: Method) -> Method:
    """Decorate ``execute(context)`` or ``execute_complete(context, event)`` of a SLURM operator."""
    resumes_with_event = method.__name__ != "execute"

    @functools.wraps(method)
    def run(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        while True:
            try:
                return method(self, context, *args, **kwargs)
            except SshKeyExpired as exc:
                self.log.error("%s", exc)
                if not getattr(self, "deferrable", True):
                    _wait_in_worker(self, exc)
                    continue
                event = (args[0] if args else kwargs.get("event")) if resumes_with_event else None
                self.defer(
                    trigger=SshKeyRenewalTrigger(
                        ssh_conn_id=exc.ssh_conn_id, jump_conn_id=exc.jump_conn_id, cluster=exc.cluster,
                        check_interval=_check_interval(self, exc.cluster), resume_event=event,
                    ),
                    method_name=method.__name__ if resumes_with_event else RESUME_AFTER_RENEWAL,
                )  # fmt: skip

    return cast(Method, run)
