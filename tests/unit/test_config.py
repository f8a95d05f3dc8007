from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable

import pytest

from airflow_desc.clusters import CLUSTERS_FILE_ENV, ClusterProfiles, load_cluster_profiles
from airflow_desc.config import clusters_file, configured_cluster_profiles
from airflow_desc.exceptions import ClusterProfileError
from tests.unit.conftest import write_one_cluster
from tests.unit.test_clusters import NOT_CONFIGURED as CLUSTERS_NOT_CONFIGURED

NOT_CONFIGURED = (
    "no cluster profile file is configured; set the environment variable DESC_CLUSTERS_FILE, "
    "or clusters_file in the [desc] section of airflow.cfg (AIRFLOW__DESC__CLUSTERS_FILE), "
    "to the path of a YAML file of cluster profiles"
)


pytestmark = pytest.mark.usefixtures("no_config")


def test_environment_variable_wins_over_airflow_config(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__DESC__CLUSTERS_FILE", str(write_one_cluster(tmp_path / "airflow.yaml", 7)))
    assert clusters_file() == (
        str(tmp_path / "airflow.yaml"),
        "[desc] clusters_file of the Airflow configuration",
    )
    assert configured_cluster_profiles().get().cores_per_node == 7
    monkeypatch.setenv(CLUSTERS_FILE_ENV, str(write_one_cluster(tmp_path / "env.yaml", 8)))
    assert configured_cluster_profiles().get().cores_per_node == 8


def test_nothing_configured() -> None:
    assert clusters_file() is None
    with pytest.raises(ClusterProfileError) as caught:
        configured_cluster_profiles()
    assert str(caught.value) == NOT_CONFIGURED


# airflow_desc.config works without airflow.configuration; airflow_desc.clusters never reads it
# ([desc] clusters_file is airflow_desc.config's to read): for both, only the environment names the file.
@pytest.mark.parametrize(
    ("load", "not_configured"),
    [(configured_cluster_profiles, NOT_CONFIGURED), (load_cluster_profiles, CLUSTERS_NOT_CONFIGURED)],
    ids=["config", "clusters-not-read-here"],
)
def test_works_without_airflow_configuration(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    load: Callable[[], ClusterProfiles],
    not_configured: str,
) -> None:
    monkeypatch.setitem(sys.modules, "airflow.configuration", None)  # import now raises ImportError
    monkeypatch.setenv("AIRFLOW__DESC__CLUSTERS_FILE", str(write_one_cluster(tmp_path / "airflow.yaml", 7)))
    with pytest.raises(ClusterProfileError) as caught:
        load()
    assert str(caught.value) == not_configured
    monkeypatch.setenv(CLUSTERS_FILE_ENV, str(write_one_cluster(tmp_path / "env.yaml", 8)))
    assert load().get().cores_per_node == 8


def test_missing_file_names_where_the_name_came_from(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv("AIRFLOW__DESC__CLUSTERS_FILE", str(missing))
    with pytest.raises(ClusterProfileError) as caught:
        configured_cluster_profiles()
    assert str(caught.value) == (
        f"{missing}: no such cluster profile file "
        "(named by [desc] clusters_file of the Airflow configuration); create it or name an existing file"
    )
