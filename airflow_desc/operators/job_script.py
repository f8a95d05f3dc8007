"""What a single job's sbatch script asks for: the operator's settings over its cluster's (no Airflow)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc.operators.job_names import home_relative
from airflow_desc.slurm import ContainerSpec, JobSpec

if TYPE_CHECKING:
    from airflow_desc.clusters import ClusterProfile
    from airflow_desc.operators.slurm import SlurmOperator

__all__ = ["job_spec_for"]


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
    container = ContainerSpec()
    if op.container_image or profile.container_image:
        container = ContainerSpec(
            runtime=profile.container_runtime, image=op.container_image or profile.container_image
        )
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
        setup_lines=(*profile.setup_lines, *op.setup_lines),
        container=container,
        exclude=tuple(res["exclude"].split(",")) if res["exclude"] else (),
        # We retry by cause ourselves; SLURM requeueing the same failing job would hide it.
        requeue=False,
        extra_sbatch={**profile.sbatch_options, **op.sbatch_args},
    )
