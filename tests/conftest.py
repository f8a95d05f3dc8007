from __future__ import annotations

import pathlib

import pytest

DATA = pathlib.Path(__file__).parent / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # An `exclusive` test runs alone (tests/run-suite), so never in the parallel phase either.
    for item in items:
        if item.get_closest_marker("exclusive"):
            item.add_marker(pytest.mark.serial)


@pytest.fixture
def data_dir() -> pathlib.Path:
    return DATA
