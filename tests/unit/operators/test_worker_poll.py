"""The polls of a job waited for in the worker: fast while a short job may end, then backing off."""

from __future__ import annotations

import itertools

from airflow_desc.operators.worker_poll import FAST_POLL_FOR_S, FAST_POLL_S, poll_waits


def test_a_short_job_is_polled_every_half_second_then_the_waits_double_up_to_the_interval() -> None:
    waits = list(itertools.islice(poll_waits(30.0), 40))
    fast = int(FAST_POLL_FOR_S / FAST_POLL_S)
    assert waits[:fast] == [FAST_POLL_S] * fast
    assert waits[fast : fast + 7] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert set(waits[fast + 5 :]) == {30.0}


def test_an_interval_shorter_than_the_fast_poll_is_kept() -> None:
    assert list(itertools.islice(poll_waits(0.2), 100)) == [0.2] * 100
