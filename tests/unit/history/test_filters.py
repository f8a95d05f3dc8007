"""HistoryFilter: one selection for every history query; queries refuse what they cannot apply."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from airflow_desc.history import HistoryFilter
from airflow_desc.history.filters import INSTANCE_FIELDS


def test_an_empty_filter_narrows_nothing() -> None:
    assert HistoryFilter().narrowed_by() == ()
    assert HistoryFilter(variant="", since=datetime(2018, 1, 1)).narrowed_by() == ("variant", "since")


def test_dag_ids_are_kept_as_a_frozenset_and_the_filter_is_hashable() -> None:
    selection = HistoryFilter(dag_ids=["b", "a", "b"])
    assert selection.dag_ids == frozenset({"a", "b"})
    assert hash(selection) == hash(HistoryFilter(dag_ids={"a", "b"}))
    assert HistoryFilter(dag_ids=[]).narrowed_by() == ("dag_ids",)  # none of them: selects nothing
    with pytest.raises(dataclasses.FrozenInstanceError):
        selection.workflow = "DC1"  # type: ignore[misc]


def test_require_only_names_what_a_query_cannot_filter_by() -> None:
    HistoryFilter(workflow="DC1", run_id="r1").require_only(INSTANCE_FIELDS, "status_counts")
    with pytest.raises(TypeError, match=r"status_counts selects by .*, not by process, state: leave"):
        HistoryFilter(workflow="DC1", process="p", state="failed").require_only(
            INSTANCE_FIELDS, "status_counts"
        )
