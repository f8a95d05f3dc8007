"""tests/waiting.py: a wait returns the value it waited for, or says what it waited for and saw last."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import wait_for


def test_returns_the_first_true_value() -> None:
    values = iter([0, "", [3]])
    assert wait_for(lambda: next(values), timeout=5, interval=0, what="a list") == [3]


def test_until_judges_the_value_and_the_value_is_returned() -> None:
    counter = itertools.count()
    assert wait_for(lambda: next(counter), until=lambda n: n >= 3, timeout=5, interval=0, what="3") == 3


def test_runs_out_saying_what_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"the job ends: not true after 0\.05 s \(last: 'PENDING'\)"):
        wait_for(
            lambda: "PENDING", until=lambda s: s == "DONE", timeout=0.05, interval=0.01, what="the job ends"
        )
