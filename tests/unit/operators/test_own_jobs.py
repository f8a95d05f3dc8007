"""Which candidate jobs a try may re-attach to: the controller's live job wins over accounting."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_desc.operators.job_checks import candidate_jobs, own_jobs
from airflow_desc.slurm.ownership import parse_owners

OURS = "measureSingle.b20029b2dfc8.t1"
SUBMITTED = datetime(2026, 12, 6, 8, 2, 43, tzinfo=timezone.utc)


class Cluster:
    """What sacct (``owners``) and squeue answer about job ids, as the site answered them."""

    def __init__(self, sacct: str, squeue: dict[str, str]) -> None:
        self._sacct, self._squeue = sacct, squeue

    def owners(self, ids: list[str]) -> Any:
        return parse_owners(self._sacct)

    def squeue(self, ids: list[str]) -> list[Any]:
        return [SimpleNamespace(job_id=i, name=n) for i, n in self._squeue.items() if i in ids]


def test_a_stale_accounting_row_does_not_hide_our_live_job() -> None:
    # 2 s after sbatch, slurmdbd still answered with an older job that held id 5000278.
    cluster = Cluster("5000278|allocation|1001|2026-12-06T04:10:00", {"5000278": OURS})
    assert own_jobs(cluster, {"5000278": (OURS, SUBMITTED)}, logging.getLogger("t")) == ["5000278"]  # type: ignore[arg-type]


def test_a_live_job_of_another_name_is_not_ours(caplog: pytest.LogCaptureFixture) -> None:
    cluster = Cluster(f"5000278|{OURS}|1001|2026-12-06T08:02:43", {"5000278": "allocation"})
    with caplog.at_level(logging.WARNING):
        assert own_jobs(cluster, {"5000278": (OURS, SUBMITTED)}, logging.getLogger("t")) == []  # type: ignore[arg-type]
    assert "named 'allocation'" in caplog.text


def test_a_finished_job_is_judged_by_accounting_name_and_submit_time() -> None:
    old = Cluster(f"5000278|{OURS}|1001|2026-12-06T04:10:00", {})  # ours by name, but submitted before
    assert own_jobs(old, {"5000278": (OURS, SUBMITTED)}, logging.getLogger("t")) == []  # type: ignore[arg-type]
    fresh = Cluster(f"5000278|{OURS}|1001|2026-12-06T08:02:43", {})
    assert own_jobs(fresh, {"5000278": (OURS, SUBMITTED)}, logging.getLogger("t")) == ["5000278"]  # type: ignore[arg-type]


class Named:
    """sacct --name on the site: the jobs of each name, oldest first."""

    def __init__(self, jobs: dict[str, list[str]]) -> None:
        self.jobs = jobs

    def find_jobs_by_name(self, name: str) -> list[str]:
        return self.jobs.get(name, [])


def name_of_try(number: int) -> str:
    return f"measureSingle.b20029b2dfc8.t{number}"


def test_a_job_found_by_name_must_be_newer_than_this_airflows_claim() -> None:
    # A scheduled run's job names are the same in every Airflow: job 4145 is an earlier Airflow's t1.
    cluster = Named({name_of_try(1): ["4145", "5349"], name_of_try(2): []})
    state = {"claimed_at": "2026-12-06T08:02:43+00:00", "job_id": "5349", "recorded": ["5349"]}
    expected = candidate_jobs(cluster, state, 2, name_of_try)  # type: ignore[arg-type]
    assert expected == {"4145": (name_of_try(1), SUBMITTED)}
    old = Cluster(f"4145|{name_of_try(1)}|1001|2026-12-06T04:10:00", {})
    assert own_jobs(old, expected, logging.getLogger("t")) == []  # type: ignore[arg-type]


def test_a_claim_alone_asks_no_names_on_the_first_try() -> None:
    cluster = Named({name_of_try(1): ["4145"]})
    assert candidate_jobs(cluster, {"claimed_at": "2026-12-06T08:02:43+00:00"}, 1, name_of_try) == {}  # type: ignore[arg-type]
    # A state saved before claims existed: found by name alone, as then.
    assert candidate_jobs(cluster, {"recorded": ["1"]}, 1, name_of_try) == {"4145": (name_of_try(1), None)}  # type: ignore[arg-type]
