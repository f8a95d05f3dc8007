"""Fixtures shared by the unit tests of several packages."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from airflow_desc.clusters import CLUSTERS_FILE_ENV, ClusterProfile, load_cluster_profiles
from airflow_desc.workflow import parse_spec
from airflow_desc.workflow.registry import register, workflow_for
from airflow_desc.workflow.render import render_dags
from tests.specs import spec_text

ROOT = pathlib.Path(__file__).parents[2]
SITE = ROOT / "tests" / "data" / "clusters" / "site.yaml"
# A cluster profile file of one cluster, "one", of {cores} cores per node.
ONE_CLUSTER = (
    "clusters:\n  one:\n    ssh_conn_id: one_ssh\n    cores_per_node: {cores}\n"
    "    memory_per_node_mb: 1024\n    max_walltime: 10\n"
)


def s3df_profile(**changes: Any) -> ClusterProfile:
    """s3df as the site has it (1 core and 8192 MB per node, 2 hours at most), with ``changes``."""
    settings: dict[str, Any] = {
        "name": "s3df",
        "ssh_conn_id": "s3df_ssh",
        "partition": "roma",
        "cores_per_node": 1,
        "memory_per_node_mb": 8192,
        "max_walltime": "02:00:00",
    }
    settings.update(changes)
    return ClusterProfile(**settings)


# (spec name under tests/data/specs, whether to render its DAGs too) -> (workflow, its bundled task)
SiteWorkflow = Callable[..., tuple[Any, Any]]


@pytest.fixture
def site_workflow(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> SiteWorkflow:
    """Load a spec of tests/data/specs on the site's clusters: its workflow and the bundled sub-task named.

    ``render=True`` renders its DAGs too (and registers it that way); else it is registered only.
    """
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(SITE))

    def load(name: str, bundled: str, *, render: bool = False) -> tuple[Any, Any]:
        spec = parse_spec(spec_text(name), f"{tmp_path}/{name}.yaml")
        if render:
            render_dags(spec, clusters=load_cluster_profiles(SITE))
            workflow = workflow_for(spec.source)
        else:
            workflow = register(spec, None, load_cluster_profiles(SITE))
        return workflow, workflow.task(None, bundled)

    return load


@pytest.fixture
def pyramid(site_workflow: SiteWorkflow) -> Any:
    """The bundled pyramid workflow (registered, not rendered) and its bundled sub-task, processVisit."""
    return site_workflow("pyramid-bundle", "Pyramid/processVisit")


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """No cluster profile file configured: neither DESC_CLUSTERS_FILE nor [desc] clusters_file."""
    monkeypatch.delenv(CLUSTERS_FILE_ENV, raising=False)
    monkeypatch.setenv("AIRFLOW__DESC__CLUSTERS_FILE", "")


def write_one_cluster(path: pathlib.Path, cores: int) -> pathlib.Path:
    """Write a profile file of the one cluster "one" with ``cores`` cores per node at ``path``; return it."""
    path.write_text(ONE_CLUSTER.format(cores=cores), encoding="utf-8")
    return path
