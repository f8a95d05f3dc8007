"""What a bundle's allocation runs, as shell text: the emulated payload, the pilot, its manifest (no Airflow).

One job script carries a bundle's whole allocation (step 2 of :mod:`~airflow_desc.operators.bundle`):
the emulated payload program, written once for every instance of the bundle (:func:`payload_lines`),
then the pilot (:func:`~airflow_desc.pilot.bundle_job_command`) on the plan's manifest, each
instance in its process's container as the cluster runs it, if any (:func:`allocation_command`).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Collection, Iterable, Mapping

from airflow_desc.clusters import ClusterProfile
from airflow_desc.emulate import payload_source
from airflow_desc.operators.job_script import container_for
from airflow_desc.pilot import bundle_job_command
from airflow_desc.slurm.quoting import quote_path
from airflow_desc.workflow.bundle_plan import BundlePlan

__all__ = ["allocation_command", "payload_lines"]

_PAYLOAD_EOF = "DESC_PAYLOAD_EOF"


def allocation_command(
    plan: BundlePlan,
    *,
    bundle: str,
    profile: ClusterProfile,
    env: Iterable[str],
    paths: Mapping[str, str],
    launcher: str,
    python: str,
    rerun: str,
    again: Collection[str],
    kill_grace_s: float,
) -> str:
    """Return the shell text of the allocation: the emulated payload (if any), then the pilot.

    :param plan: the bundle's plan.
    :param bundle: the bundle's id in the manifest.
    :param profile: the cluster the allocation runs on (its containers and its ``env``).
    :param env: the operator's ``env``, which a container is given beside the profile's.
    :param paths: the bundle's files on the cluster: ``records``, ``logs`` and ``payload``.
    :param launcher: the pilot's launcher, ``srun`` or ``direct``.
    :param python: the cluster's Python 3 for the pilot.
    :param rerun: ``failed``: the pilot skips what the records say is done, but ``again``.
    :param again: the batch instance ids this try reruns whatever their earlier state.
    :param kill_grace_s: seconds from SIGTERM to SIGKILL when an instance must stop.
    :raises ValueError: if the payload program holds the end marker of its here-document.
    """
    # Each instance runs in its process's container (else the cluster's default image), if any.
    manifest_data = plan.manifest(
        bundle,
        containers=lambda image: container_for(profile, image),
        env=(*profile.env, *env),
    )
    if again and rerun == "failed":
        manifest_data["rerun"] = sorted(again)  # run again whatever --skip-done says
    pilot = bundle_job_command(
        json.dumps(manifest_data),
        launcher=launcher,
        records_path=paths["records"],
        logs_dir=paths["logs"],
        python=python,
        skip_done=paths["records"] if rerun == "failed" else None,
        kill_grace_s=kill_grace_s,
        bind=profile.pilot_binding == "cores",
    )
    return payload_lines(plan, paths["payload"]) + pilot


def payload_lines(plan: BundlePlan, path: str) -> str:
    """Return the lines that write the emulated payload to ``path`` once ("" if no instance is emulated).

    :raises ValueError: if the payload program holds the end marker of its here-document.
    """
    if not any(i.process.emulated for i in plan.instances):
        return ""
    source = payload_source()
    if _PAYLOAD_EOF in source:
        raise ValueError(f"the payload source contains {_PAYLOAD_EOF}")
    quoted = quote_path(path)
    return (
        "# airflow-desc: the emulated payload, written once for every instance of the bundle.\n"
        f"mkdir -p -- {quote_path(posixpath.dirname(path))} || exit 2\n"
        f"cat > {quoted} <<'{_PAYLOAD_EOF}' || exit 2\n{source.rstrip()}\n{_PAYLOAD_EOF}\n"
        f"export DESC_PAYLOAD={quoted}\n"
    )
