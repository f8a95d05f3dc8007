"""Whose a bundle's directory on the cluster is: this Airflow's, or another's set aside (no Airflow).

A run id repeats across Airflows (``scheduled__<due time>``, or a deleted run triggered again),
and so does the bundle's directory: records another Airflow's run left there would pass for an
earlier try's, and the bundle would run and record none of its streams. The first try writes a
token (saved in the bundle's state) into the directory; a directory with another token, or with
files but no state of this Airflow's for the task instance, is renamed ``<name>.stale-<UTC time>``
(:func:`~airflow_desc.operators.resume.stale_task_dir` decides) and every stream runs. A clear in
this Airflow keeps the token, the directory and its records (``--skip-done``).
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_desc.operators.resume import stale_task_dir
from airflow_desc.slurm.quoting import quote_path

if TYPE_CHECKING:
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.operators.job_checks import TaskLog

__all__ = ["TOKEN_FILE", "claim_task_dir"]

#: In the bundle's directory on the cluster: which Airflow's task instance wrote it.
TOKEN_FILE = ".airflow-desc-token"


def claim_task_dir(
    hook: SlurmHook,
    task_dir: str,
    saved: Mapping[str, Any],
    save: Callable[[dict[str, Any]], None],
    *,
    label: str,
    log: TaskLog,
) -> None:
    """Make the bundle's directory on the cluster this Airflow's, setting another Airflow's aside.

    :param hook: the cluster's hook.
    :param task_dir: the bundle task instance's directory (``~/...`` or absolute).
    :param saved: the bundle's saved state (its ``dir_token``, if any).
    :param save: saves the bundle's state: called with ``dir_token`` added before the token is
        written, so that a crash in between leaves a directory still ours.
    :param label: the bundle, as the task log names it.
    :param log: the task log.
    """
    where, token_file = quote_path(task_dir), quote_path(f"{task_dir}/{TOKEN_FILE}")
    probe = hook.run(
        f'printf "token=%s\\n" "$(head -c 64 -- {token_file} 2>/dev/null)"; '
        f'if [ -n "$(ls -A -- {where} 2>/dev/null)" ]; then echo in-use; fi',
        check=False,
    )
    lines = probe.stdout.splitlines()
    dir_token = next((ln[len("token=") :].strip() for ln in lines if ln.startswith("token=")), "") or None
    saved_token = saved.get("dir_token")
    in_use = "in-use" in lines
    why = stale_task_dir(
        saved_token=saved_token, dir_token=dir_token, dir_in_use=in_use, saved_state=bool(saved)
    )
    if why is not None:
        aside = f"{task_dir}.stale-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')}"
        hook.run(f"mv -- {where} {quote_path(aside)}")
        log.warning(
            "bundle %s: directory %s set aside as %s: %s; every stream runs", label, task_dir, aside, why
        )
        dir_token = None
    token = saved_token or uuid.uuid4().hex
    if token != saved_token:
        save({**saved, "dir_token": token})
    if token != dir_token:  # saved first: a crash before this line leaves a directory still ours
        hook.run(f"mkdir -p -- {where} && printf '%s\\n' {shlex.quote(token)} > {token_file}")
