from __future__ import annotations

import pathlib
import sys

import pytest

from airflow_desc.clusters import CLUSTERS_FILE_ENV
from airflow_desc.config import clusters_file, configured_cluster_profiles
from airflow_desc.exceptions import ClusterProfileError
from tests.unit.conftest import write_one_cluster

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


def test_works_without_airflow_configuration(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "airflow.configuration", None)  # import now raises ImportError
    monkeypatch.setenv("AIRFLOW__DESC__CLUSTERS_FILE", str(write_one_cluster(tmp_path / "airflow.yaml", 7)))
    with pytest.raises(ClusterProfileError) as caught:
        configured_cluster_profiles()
    assert str(caught.value) == NOT_CONFIGURED
    monkeypatch.setenv(CLUSTERS_FILE_ENV, str(write_one_cluster(tmp_path / "env.yaml", 8)))
    assert configured_cluster_profiles().get().cores_per_node == 8


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
