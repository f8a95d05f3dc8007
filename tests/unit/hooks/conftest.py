"""Fixtures of the hook's unit tests."""

from __future__ import annotations

import pytest

from airflow_desc.hooks.slurm import SlurmHook
from tests.unit.hooks.recorded_log import RecordedWarnings


@pytest.fixture
def warned(monkeypatch: pytest.MonkeyPatch) -> RecordedWarnings:
    """The warnings the hook logs during the test, one formatted line each."""
    lines = RecordedWarnings()
    monkeypatch.setattr(SlurmHook, "log", property(lambda self: lines))
    return lines
