from __future__ import annotations

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
