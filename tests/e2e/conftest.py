"""One real Airflow at a time on the site (tests/deploy.py): LocalExecutor, or CeleryExecutor.

Tests ask for ``airflow`` (LocalExecutor) or ``celery_airflow`` (CeleryExecutor, two workers, two
triggerers); a session starts each at most once per switch, and stops the one running before
starting the other (both use the one metadata DB and the same api-server port). The workers write
the PostgreSQL history into a schema of the deployment's own (``Deployment.history``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.deploy import Deployment
from tests.integration.site import Site


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.serial)  # one real Airflow on the one metadata DB


@pytest.fixture(scope="session")
def site() -> Site:
    return Site.from_env()


class OneAtATime:
    """The deployment of the session now running; asking for another kind stops it first."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.current: Deployment | None = None

    def get(self, executor: str, make: Callable[..., Deployment]) -> Deployment:
        if self.current is not None and self.current.executor == executor:
            return self.current
        self.stop()
        deployment = make(self.tmp.mktemp(executor.lower()))
        self.current = deployment
        deployment.start()
        return deployment

    def stop(self) -> None:
        if self.current is not None:
            current, self.current = self.current, None
            current.stop()


@pytest.fixture(scope="session")
def deployments(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[OneAtATime]:
    one = OneAtATime(tmp_path_factory)
    try:
        yield one
    finally:
        one.stop()


@pytest.fixture
def airflow(deployments: OneAtATime) -> Deployment:
    return deployments.get("LocalExecutor", Deployment.local)


@pytest.fixture
def celery_airflow(deployments: OneAtATime) -> Deployment:
    return deployments.get("CeleryExecutor", Deployment.celery)
