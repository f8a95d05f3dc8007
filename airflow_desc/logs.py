"""``airflow-desc logs``: the log tails the history keeps, and a whole log fetched over SSH on request.

When a job (or a bundled instance) ends, its worker reads the end of its log (200 lines, at most
64 KiB, secrets redacted: :mod:`airflow_desc.slurm.log_tails`) and the history keeps it with the
attempt. :func:`print_logs` prints those of the selected process instances (the latest attempt of
each, or the attempts of one try) without reaching a cluster; ``full=True`` reads each whole log
on its cluster instead, from the task instance's own directory only
(:func:`~airflow_desc.operators.trusted.own_log_path`), secrets redacted the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

from airflow_desc.history import HistoryFilter
from airflow_desc.history.queries import attempt_logs
from airflow_desc.reports.attempts import attempt_heading

__all__ = ["full_log", "print_logs"]


def full_log(row: Mapping[str, Any], *, profiles: Any = None) -> str:
    """Return an attempt's whole log, read on its cluster, secrets redacted.

    :param row: a row of :func:`~airflow_desc.history.queries.attempt_logs`.
    :param profiles: the cluster profiles (default: the configured ones).
    :raises ValueError: when the attempt names no log, its cluster has no profile, or its log is not
        one of its task instance's own files.
    """
    from airflow_desc.config import configured_cluster_profiles
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.operators.job_names import task_dir_for
    from airflow_desc.operators.trusted import own_log_path
    from airflow_desc.slurm.log_tails import redact_secrets
    from airflow_desc.slurm.quoting import quote_path

    if not row.get("log_path") or not row.get("cluster"):
        raise ValueError(f"{attempt_heading(row)}: no log recorded for this attempt (a script, or never ran)")
    profile = (profiles or configured_cluster_profiles()).get(str(row["cluster"]))
    task_dir = task_dir_for(
        profile.work_dir, str(row["dag_id"]), str(row["run_id"]), str(row["task_id"]), int(row["map_index"])
    )
    path = own_log_path(task_dir, row["log_path"])
    if path is None:
        raise ValueError(
            f"{attempt_heading(row)}: the recorded log {row['log_path']!r} is not a log this task writes; "
            "not read (read it on the cluster yourself if you trust it)"
        )
    hook = SlurmHook(profile.ssh_conn_id, jump_conn_id=profile.jump_conn_id or "", cluster=profile.name)
    result = hook.run(f"cat -- {quote_path(path)}", check=False)
    if result.returncode != 0:
        why = result.stderr.strip() or f"exit status {result.returncode}"
        raise ValueError(f"{attempt_heading(row)}: cannot read {profile.name}:{path}: {why}")
    return redact_secrets(result.stdout)


def print_logs(
    engine: Any,
    selection: HistoryFilter,
    *,
    try_number: int | None = None,
    full: bool = False,
    out: TextIO,
    profiles: Any = None,
) -> int:
    """Print the log tail (or with ``full`` the whole log) of each selected attempt; return how many.

    :param engine: the history's engine.
    :param selection: which process instances (``process``, ``stream_glob``, ``run_id`` ...).
    :param try_number: that try's attempts instead of each instance's latest.
    :param full: read each whole log over SSH instead of the kept tail.
    :param out: where to print.
    :param profiles: the cluster profiles for ``full`` (default: the configured ones).
    """
    frame = attempt_logs(engine, selection, try_number=try_number, with_tails=not full)
    for row in frame.to_dict("records"):
        print(attempt_heading(row), file=out)
        if full:
            text = full_log(row, profiles=profiles)
        elif row["tail"]:
            text = str(row["tail"])
        else:
            text = "(no log tail kept: recorded before tails were kept, or its log was empty or unread)\n"
        print(text, end="" if text.endswith("\n") else "\n", file=out)
    return len(frame)
