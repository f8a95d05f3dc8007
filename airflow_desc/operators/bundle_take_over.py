"""A bundle's side of being taken over by a sibling's pilot (no Airflow; :mod:`airflow_desc.pilot.launcher`).

With ``bundling.take_over`` the operator writes the bundle's offer once its job is submitted
(:func:`write_offer`), and, when that job ends, reads whether another job's pilot claimed the bundle
while it was pending (:func:`taken_by`): then the task waits for that job and collects from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc.pilot import CLAIM_PREFIX, offer_json
from airflow_desc.pilot.launcher import OFFER_FILE

if TYPE_CHECKING:
    from airflow_desc.hooks.slurm import SlurmHook
    from airflow_desc.operators.job_checks import TaskLog

__all__ = ["taken_by", "write_offer"]


def write_offer(
    hook: SlurmHook,
    paths: Mapping[str, str],
    *,
    job_id: str,
    manifest: dict[str, Any],
    cluster: str,
    skip_done: bool,
    label: str,
    log: TaskLog,
) -> None:
    """Write the bundle's ``offer.json``: a pilot out of work may take it over while it is pending.

    :param paths: the bundle's files on the cluster: ``dir``, ``records`` and ``logs``.
    :param skip_done: the pilot that takes it skips what the records say succeeded (``--skip-done``).
    """
    text = offer_json(
        manifest,
        job_id=job_id,
        cluster=cluster,
        records_path=paths["records"],
        logs_dir=paths["logs"],
        skip_done=paths["records"] if skip_done else None,
    )
    try:
        hook.write_file(f"{paths['dir']}/{OFFER_FILE}", text)
    except Exception as exc:  # the bundle runs all the same, in its own allocation
        log.warning("bundle %s: no offer to be taken over written (%s)", label, exc)


def taken_by(hook: SlurmHook, bundle_dir: str, own_job_id: str) -> str | None:
    """Return the job whose pilot took the bundle over while ``own_job_id`` was pending, if one did.

    The own job's claim (``claim-<job id>`` in ``bundle_dir``) names the job whose pilot runs the
    bundle; ``None`` when it is its own (or there is none: the job never started).
    """
    holder = hook.read_tail(f"{bundle_dir}/{CLAIM_PREFIX}{own_job_id}", lines=1, max_bytes=100).strip()
    return holder if holder.isdigit() and holder != own_job_id else None
