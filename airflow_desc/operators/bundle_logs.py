"""The ends of a bundle's instance logs, for their records: bounded, secrets redacted (no Airflow)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from airflow_desc.exceptions import ClusterUnreachable
from airflow_desc.operators.trusted import own_log_path
from airflow_desc.slurm.log_tails import LOG_TAIL_BYTES, redact_secrets

if TYPE_CHECKING:
    from airflow_desc.history import ProcessRecord
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.operators.job_checks import TaskLog

__all__ = ["BUNDLE_TAILS_BYTES", "with_log_tails"]

#: The most bytes of log tails one bundle reads (each log's share, at least 4 KiB, at most 64 KiB).
BUNDLE_TAILS_BYTES = 16 * 1024 * 1024


def with_log_tails(
    hook: SlurmHook, task_dir: str, records: Sequence[ProcessRecord], secrets: Sequence[str], log: TaskLog
) -> list[ProcessRecord]:
    """Give each record of an instance that ran the end of its log (one SSH call), secrets redacted.

    Only this task instance's own logs are read (:func:`~airflow_desc.operators.trusted.own_log_path`:
    the file name the pilot recorded, in ``task_dir``'s ``logs/``); each is bounded, and together
    they stay within :data:`BUNDLE_TAILS_BYTES`. A log that cannot be read (or a cluster that
    cannot be reached) leaves the pilot's own last lines, if any.

    :param hook: the cluster's hook.
    :param task_dir: the bundle task instance's directory on the cluster.
    :param records: the bundle's records.
    :param secrets: values to redact wherever they show.
    :param log: the task log.
    """
    wanted = [(i, own_log_path(task_dir, r.log_path)) for i, r in enumerate(records) if r.log_path]
    found = [(i, path) for i, path in wanted if path is not None]
    per_log = max(4096, min(LOG_TAIL_BYTES, BUNDLE_TAILS_BYTES // max(1, len(found))))
    try:
        tails = hook.read_tails([path for _, path in found], max_bytes=per_log) if found else []
    except ClusterUnreachable as exc:  # the records matter, their tails can do without
        log.warning("the instances' logs were not read (%s); recording them without", exc)
        tails = [""] * len(found)
    read = {i: tail for (i, _), tail in zip(found, tails, strict=True) if tail}
    out = []
    for i, record in enumerate(records):
        tail = read.get(i) or record.log_tail
        out.append(dataclasses.replace(record, log_tail=redact_secrets(tail, secrets) if tail else None))
    return out
