from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.e2e.services import Airflow, databases_only
from tests.integration.site import Site


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.serial)  # one real Airflow on the one metadata DB


@pytest.fixture(scope="session")
def site() -> Site:
    return Site.from_env()


@pytest.fixture(scope="session")
def history_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("e2e-history") / "history.jsonl"


@pytest.fixture(scope="session")
def airflow(
    tmp_path_factory: pytest.TempPathFactory, site: Site, history_file: pathlib.Path
) -> Iterator[Airflow]:
    af = Airflow.configure(tmp_path_factory.mktemp("e2e-airflow"), history_file)
    af.component_env["api-server"] = databases_only(af.env, af.home / "no-dags")
    try:
        af.start()
        yield af
    finally:
        af.stop()
