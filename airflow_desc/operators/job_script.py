"""What a single job's sbatch script asks for: the operator's settings over its cluster's (no Airflow)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc.operators.job_names import home_relative
from airflow_desc.slurm import ContainerSpec, JobSpec
from airflow_desc.slurm.quoting import quote_path

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfile
    from airflow_desc.operators.slurm import SlurmOperator

__all__ = ["container_for", "job_spec_for", "workdir_lines"]


def workdir_lines(work_dir: str) -> tuple[str, ...]:
    """Job-script lines that make the cluster's ``work_dir`` the current directory.

    Spec paths (``dc1/imsim-dithered/repo``) are relative to it, so every process of a workflow
    on a cluster sees the same files.
    """
    quoted = quote_path(work_dir if work_dir.startswith(("/", "~")) else f"~/{work_dir}")
    return (f"mkdir -p -- {quoted} && cd -- {quoted}",)


def container_for(profile: ClusterProfile, image: str | None) -> ContainerSpec:
    """Return the container a payload runs in: ``image``, else the cluster's default; none if neither.

    The cluster profile says the engine, its options and binds.

    :param profile: the cluster.
    :param image: the image the process asks for, if any.
    :raises ValueError: for an image on a cluster without a container runtime, naming both.
    """
    image = image or profile.container_image
    if not image:
        return ContainerSpec()
    if profile.container_runtime == "none":
        raise ValueError(
            f"the payload asks for the container image {image!r} but cluster {profile.name!r} has "
            "container_runtime 'none'; set its container_runtime in the cluster profile, or run the "
            "process without a container"
        )
    return ContainerSpec(
        runtime=profile.container_runtime,
        image=image,
        options=profile.container_options,
        binds=profile.container_binds,
    )


def job_spec_for(
    op: SlurmOperator, profile: ClusterProfile, res: Mapping[str, Any], *, name: str, log_pattern: str
) -> JobSpec:
    """Return the job of one try of ``op``.

    :param op: the operator (its command, environment, overrides of the profile...).
    :param profile: its cluster.
    :param res: the try's resources (:func:`~airflow_desc.operators.escalation.next_resources`).
    :param name: the try's job name (:func:`~airflow_desc.operators.job_names.job_name_for`).
    :param log_pattern: the job's log, ``%j`` for its id.
    """
    # A bundle's pilot runs on the node; its instances run in their own containers.
    container = container_for(profile, op.container_image) if op.payload_in_container else ContainerSpec()
    return JobSpec(
        job_name=name,
        command=op.command,
        partition=res["partition"],
        qos=op.qos or profile.qos,
        account=op.account or profile.account,
        constraint=op.constraint or profile.constraint,
        time_limit_s=res["time_limit_s"],
        nodes=op.nodes,
        cpus_per_task=res["cpus"],
        mem_mb=res["mem_mb"],
        mem_per_cpu_mb=res.get("mem_per_cpu_mb"),
        # SLURM does not expand "~" in #SBATCH lines; a relative path is relative to the
        # directory sbatch ran in, the login's home: the same place.
        output=home_relative(log_pattern),
        signal=op.signal,
        env={**profile.env, **op.env},
        # The work dir of the cluster this try goes to (a fallback's own, not the home cluster's).
        setup_lines=(
            *profile.setup_lines,
            *op.setup_lines,
            *(workdir_lines(profile.work_dir) if op.in_work_dir else ()),
        ),
        container=container,
        exclude=tuple(res["exclude"].split(",")) if res["exclude"] else (),
        # We retry by cause ourselves; SLURM requeueing the same failing job would hide it.
        requeue=False,
        extra_sbatch={**profile.sbatch_options, **op.sbatch_args},
    )
