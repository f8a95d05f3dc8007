"""Fixtures shared by the unit tests of several packages."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.workflow import parse_spec
from airflow_desc.workflow.registry import register, workflow_for
from airflow_desc.workflow.render import render_dags
from tests.specs import spec_text

ROOT = pathlib.Path(__file__).parents[2]
SITE = ROOT / "tests" / "data" / "clusters" / "site.yaml"

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
