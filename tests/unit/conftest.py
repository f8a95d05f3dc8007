"""Fixtures shared by the unit tests of several packages."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.workflow import parse_spec
from airflow_desc.workflow.registry import register
from tests.specs import spec_text

ROOT = pathlib.Path(__file__).parents[2]
SITE = ROOT / "tests" / "data" / "clusters" / "site.yaml"
PYRAMID = spec_text("pyramid-bundle")


@pytest.fixture
def pyramid(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> Any:
    """The bundled pyramid workflow (registered, not rendered) and its bundled sub-task, processVisit."""
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(SITE))
    spec = parse_spec(PYRAMID, f"{tmp_path}/pyramid.yaml")
    workflow = register(spec, None, load_cluster_profiles(SITE))
    return workflow, workflow.task(None, "Pyramid/processVisit")
