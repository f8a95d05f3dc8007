"""The history engine's timeouts: defaults, the ``[desc]`` settings, and the connection's extra."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from sqlalchemy.engine import URL, make_url

from airflow_desc.history import engine
from airflow_desc.history.engine import normalize_url

PG = "postgresql+psycopg2://desc:pw@db.example:5432/desc_history"


@pytest.fixture(autouse=True)
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HISTORY_CONNECT_TIMEOUT", "HISTORY_STATEMENT_TIMEOUT", "HISTORY_REPLY_TIMEOUT"):
        monkeypatch.delenv(f"AIRFLOW__DESC__{name}", raising=False)


def connect_arguments(url: URL, given: dict[str, Any]) -> tuple[URL, dict[str, Any]]:
    """The engine's, without the reply deadline's connection class (``test_deadline.py``)."""
    url, args = engine.connect_arguments(url, given)
    args.pop("connection_factory", None)
    return url, args


def test_postgresql_defaults_to_a_few_seconds() -> None:
    url, args = connect_arguments(make_url(PG), {})
    assert args == {"connect_timeout": 3, "options": "-c statement_timeout=5000"}
    assert url == make_url(PG)


def test_sqlite_waits_a_few_seconds_for_another_writer() -> None:
    assert connect_arguments(make_url("sqlite:////tmp/h.db"), {})[1] == {"timeout": 5.0}
    url, args = connect_arguments(make_url("sqlite:////tmp/h.db?timeout=20"), {})
    assert args == {} and url.query == {"timeout": "20"}  # the URL's own wins


def test_desc_settings_override_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DESC__HISTORY_CONNECT_TIMEOUT", "7.5")
    monkeypatch.setenv("AIRFLOW__DESC__HISTORY_STATEMENT_TIMEOUT", "1.5")
    _, args = connect_arguments(make_url(PG), {"options": "-csearch_path=test_1"})
    assert args == {"connect_timeout": 8, "options": "-csearch_path=test_1 -c statement_timeout=1500"}
    assert connect_arguments(make_url("sqlite://"), {})[1] == {"timeout": 1.5}
    monkeypatch.setenv("AIRFLOW__DESC__HISTORY_CONNECT_TIMEOUT", "0")
    monkeypatch.setenv("AIRFLOW__DESC__HISTORY_STATEMENT_TIMEOUT", "0")
    _, args = connect_arguments(make_url(PG), {})
    assert args == {"connect_timeout": 0, "options": "-c statement_timeout=0"}  # no limits


def test_a_setting_that_is_not_a_number_of_seconds_keeps_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__DESC__HISTORY_CONNECT_TIMEOUT", "soon")
    with caplog.at_level(logging.WARNING, logger="airflow_desc.history.engine"):
        assert connect_arguments(make_url(PG), {})[1]["connect_timeout"] == 3
    assert "[desc] history_connect_timeout = 'soon' is not a number of seconds" in caplog.text


def test_the_connection_extra_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__DESC__HISTORY_CONNECT_TIMEOUT", "7")
    # As Airflow's Connection.get_uri() renders an extra {"connect_timeout": "9", ...}.
    given = normalize_url("postgres://desc:pw@db.example:5432/desc_history"
                          "?connect_timeout=9&statement_timeout=10s&options=-csearch_path%3Dx")  # fmt: skip
    url, args = connect_arguments(given, {})
    assert url.query == {"connect_timeout": "9"}  # libpq's own keyword: psycopg2 reads it there
    assert args == {"options": "-csearch_path=x -c statement_timeout=10s"}
    _, args = connect_arguments(given, {"options": "-c statement_timeout=0"})
    assert args == {"options": "-c statement_timeout=0"}  # the caller's options say it already


def test_an_extra_airflow_packed_as_json_is_unpacked() -> None:
    # Connection(extra='{"connect_timeout": 5}').get_uri(): a non-string value packs the extra.
    url, args = connect_arguments(make_url(PG + "?__extra__=%7B%22connect_timeout%22%3A+5%7D"), {})
    assert url.query == {"connect_timeout": "5"}
    assert args == {"options": "-c statement_timeout=5000"}
