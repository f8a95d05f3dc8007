"""What airflow-desc reads from the Airflow configuration: the ``[desc]`` section.

The modules below Airflow (:mod:`airflow_desc.clusters`, the workflow spec and graph) import
no Airflow; code that runs inside Airflow finds its settings here::

    [desc]
    clusters_file = /sdf/group/desc/airflow/clusters.yaml   # or AIRFLOW__DESC__CLUSTERS_FILE

An environment variable of airflow-desc's own (``DESC_CLUSTERS_FILE``) wins over the Airflow
configuration, so that one shell can point the CLI and a test at another file.
"""

from __future__ import annotations

from airflow_desc.clusters import (
    CLUSTERS_FILE_ENV,
    ClusterProfiles,
    clusters_file_from_env,
    load_cluster_profiles,
)
from airflow_desc.exceptions import ClusterProfileError

__all__ = ["clusters_file", "configured_cluster_profiles"]

_FROM_AIRFLOW = "[desc] clusters_file of the Airflow configuration"


def clusters_file() -> tuple[str, str] | None:
    """Return the configured cluster profile file and where its name came from.

    :return: ``(path as written, origin)``: from ``$DESC_CLUSTERS_FILE``, else from
        ``[desc] clusters_file`` of the Airflow configuration; ``None`` if neither is set.
    """
    from_env = clusters_file_from_env()
    if from_env is not None:
        return from_env, f"${CLUSTERS_FILE_ENV}"
    try:
        # Imported here: reading Airflow's configuration is slow, and the CLI also runs on
        # laptops without Airflow, where only the environment variable counts.
        from airflow.configuration import conf
    except ImportError:
        return None
    from_conf = conf.get("desc", "clusters_file", fallback=None)
    if from_conf and from_conf.strip():
        return from_conf.strip(), _FROM_AIRFLOW
    return None


def configured_cluster_profiles() -> ClusterProfiles:
    """Load the configured cluster profile file (see :func:`clusters_file`), cached while unchanged.

    :raises ClusterProfileError: if no file is configured, it cannot be read, or it is invalid.
    """
    found = clusters_file()
    if found is None:
        raise ClusterProfileError(
            "no cluster profile file is configured; set the environment variable "
            f"{CLUSTERS_FILE_ENV}, or clusters_file in the [desc] section of airflow.cfg "
            "(AIRFLOW__DESC__CLUSTERS_FILE), to the path of a YAML file of cluster profiles"
        )
    path, origin = found
    return load_cluster_profiles(path, named_by=origin)
