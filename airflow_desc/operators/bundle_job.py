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
from typing import Any

from airflow_desc.clusters import ClusterProfile
from airflow_desc.emulate import payload_source
from airflow_desc.operators.job_script import container_for
from airflow_desc.pilot import TakeOver, bundle_job_command
from airflow_desc.slurm.quoting import quote_path
from airflow_desc.workflow.bundle_plan import BundlePlan

__all__ = ["allocation_command", "bundle_manifest", "payload_lines"]

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
    take_over: TakeOver | None = None,
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
    :param take_over: the pilot claims its bundle in ``paths["dir"]`` and may take over sibling
        bundles still pending (:mod:`airflow_desc.pilot.launcher`); ``None``: neither.
    :raises ValueError: if the payload program holds the end marker of its here-document.
    """
    manifest_data = bundle_manifest(plan, bundle=bundle, profile=profile, env=env, rerun=rerun, again=again)
    pilot = bundle_job_command(
        json.dumps(manifest_data),
        launcher=launcher,
        records_path=paths["records"],
        logs_dir=paths["logs"],
        python=python,
        skip_done=paths["records"] if rerun == "failed" else None,
        kill_grace_s=kill_grace_s,
        bind=profile.pilot_binding == "cores",
        bundle_dir=paths["dir"] if take_over is not None else None,
        take_over=take_over,
    )
    return payload_lines(plan, paths["payload"]) + pilot


def bundle_manifest(
    plan: BundlePlan,
    *,
    bundle: str,
    profile: ClusterProfile,
    env: Iterable[str],
    rerun: str,
    again: Collection[str],
) -> dict[str, Any]:
    """Return the pilot's manifest of the bundle (the parameters are :func:`allocation_command`'s)."""
    # Each instance runs in its process's container (else the cluster's default image), if any.
    manifest_data = plan.manifest(
        bundle,
        containers=lambda image: container_for(profile, image),
        env=(*profile.env, *env),
    )
    if again and rerun == "failed":
        manifest_data["rerun"] = sorted(again)  # run again whatever --skip-done says
    return manifest_data


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
