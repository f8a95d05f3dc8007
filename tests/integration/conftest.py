from __future__ import annotations

import uuid

import pytest

from tests.integration.airflow_env import AirflowEnv
from tests.integration.site import Site


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def site() -> Site:
    return Site.from_env()


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory, site: Site) -> AirflowEnv:
    return AirflowEnv.create(tmp_path_factory.mktemp("airflow-home"))


@pytest.fixture
def in_process_airflow_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A throwaway AIRFLOW_HOME for tests that use hooks in-process (connections come from env vars)."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))


@pytest.fixture
def token() -> str:
    """A short unique string for job names, so that parallel tests never touch each other's jobs."""
    return uuid.uuid4().hex[:10]
