"""Fixtures of the workflow tests: the site's clusters, Mini rendered, a real workflow's spec and graph.

A module that tests one real workflow of ``dags/workflows`` names it with ``WORKFLOW`` (the spec file)
and ``VARIANT`` (the variant its ``graph`` is built for); modules that define their own ``spec`` or
``graph`` fixture use theirs.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from airflow_desc.clusters import ClusterProfiles, load_cluster_profiles
from airflow_desc.workflow import WorkflowGraph, WorkflowSpec, build_graph, load_spec
from airflow_desc.workflow.registry import workflow_for
from airflow_desc.workflow.render import render_dags
from tests.unit.conftest import SITE

#: (Mini's spec text, the DAG id to return) -> (the registered workflow, that DAG)
RenderMini = Callable[[str, str], tuple[Any, Any]]


@pytest.fixture(scope="module")
def clusters() -> ClusterProfiles:
    return load_cluster_profiles(SITE)


@pytest.fixture
def render_mini(tmp_path: pathlib.Path, clusters: ClusterProfiles) -> RenderMini:
    """Render a text of Mini (tests/data/specs/mini.yaml, or a variant of it) from a file of its own."""

    def render(text: str, dag_id: str) -> tuple[Any, Any]:
        path = tmp_path / "mini.yaml"
        path.write_text(text)
        dags = render_dags(path, clusters=clusters)
        return workflow_for(str(path.resolve())), dags[dag_id]

    return render


@pytest.fixture(scope="module")
def spec(request: pytest.FixtureRequest) -> WorkflowSpec:
    """The module's ``WORKFLOW``, checked against the site's clusters."""
    return load_spec(request.module.WORKFLOW, clusters=load_cluster_profiles(SITE))


@pytest.fixture(scope="module")
def graph(request: pytest.FixtureRequest, spec: WorkflowSpec) -> WorkflowGraph:
    """The graph of the module's ``VARIANT`` of its ``WORKFLOW``."""
    return build_graph(spec, request.module.VARIANT)
