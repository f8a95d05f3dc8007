"""Twinkles year by year under the real scheduler: three scheduled runs, each its year; one year rerun alone.

Twinkles_all-at-once_local (dags/workflows/twinkles-local.yaml, in the e2e DAGs folder as
tests/e2e/dags/desc_e2e_twinkles.py) is scheduled by SurveyYearTimetable: survey years 1-3 from
2022-10-01, all due at once, catchup on. Unpaused through the REST API, the scheduler makes exactly
three runs (run type ``scheduled``, no conf), one per survey year, and then no more: the timetable
has no fourth year. The workers write every process instance to the PostgreSQL history, where
each run's row keeps its survey year (``runs.survey_year``) and every attempt its ``survey_year``
(``extra``). Clearing year 2's run (REST ``clearTaskInstances`` on that run only) reruns year 2:
its top-level processes show a second try with year 2, while years 1 and 3 keep exactly the
attempts they had.

Run ids repeat across deployments: each bundle sets aside the directory an earlier deployment's
run of its id left on the cluster, and no try adopts an earlier deployment's job of its name (year 2's
rerun used to adopt them, rewriting its first try's records with the old jobs' and running nothing).
"""

from __future__ import annotations

import collections
import shlex
import time
from typing import Any

import pytest

from tests.deploy import Deployment, api
from tests.integration.site import Site
from tests.waiting import wait_for

DAG_ID = "Twinkles_all-at-once_local"
# The survey years' data intervals (calendar years from the survey start).
INTERVALS = {
    1: ("2022-10-01", "2023-10-01"),
    2: ("2023-10-01", "2024-10-01"),
    3: ("2024-10-01", "2025-10-01"),
}
# The top-level processes: one instance a year, each an Airflow task of its own (the listener or the
# operator records it); the bundled sensors and forced photometry are streams below them.
TOP = (
    "ingestYear", "setupEimageVisits", "makeCoaddTempExp", "assembleCoadd", "setupImageDifferenceVisits",
    "diaObjectMaker", "setupForcedPhotometryVisits", "wrapupYear", "report",
)  # fmt: skip
WORK_DIR = "airflow-desc"  # the site's clusters.yaml work_dir, relative to the home directory
ROOT = "twinkles/phosim"  # twinkles.yaml's root (the runs have no conf), under the work dir
# Three years of ~10 SLURM jobs each, side by side on the local site (DC1 at 0.001 beside them), then one
# year again.
RUNS_TIMEOUT = 1500


def dag_runs(airflow: Deployment) -> list[tuple[str, str, str, str, str]]:
    """Every run of the DAG: (run_id, run_type, state, data interval start date, end date), in year order."""
    rows = airflow.sql(
        "SELECT run_id, run_type, state, data_interval_start, data_interval_end FROM dag_run "
        "WHERE dag_id = %s ORDER BY data_interval_start",
        DAG_ID,
    )
    return [(r, t, s, a.date().isoformat(), b.date().isoformat()) for r, t, s, a, b in rows]


def attempts(airflow: Deployment, run_id: str) -> list[dict[str, Any]]:
    """Every attempt the history holds of ``run_id``, sorted, without the columns a re-read may reorder."""
    rows = [r for r in airflow.history_rows(run_id) if r["dag_id"] == DAG_ID]
    return sorted(rows, key=lambda r: (r["task_id"], r["process"], r["stream"], r["try_number"]))


def task_dirs(site: Site, cluster: str, pattern: str) -> set[str]:
    """The paths matching ``pattern`` under the DAG's directory on ``cluster``'s work dir."""
    where = shlex.quote(f"{WORK_DIR}/{DAG_ID}")
    return set(site.run(cluster, f"cd {where} 2>/dev/null && ls -d {pattern}", check=False).stdout.split())


def written_since(site: Site, cluster: str, since: int) -> set[str]:
    """The files under Twinkles' root on ``cluster`` last written at or after ``since`` (epoch seconds)."""
    where = shlex.quote(f"{WORK_DIR}/{ROOT}")
    found = f"cd {where} 2>/dev/null && find . -type f -newermt @{since - 1}"
    return {p.removeprefix("./") for p in site.run(cluster, found, check=False).stdout.split()}


def left_behind(site: Site) -> dict[str, tuple[set[str], set[str]]]:
    """By cluster: the task directories holding records under the DAG's scheduled runs, and those set aside.

    A scheduled run's id is the same in every deployment (``scheduled__<due time>``), and so is its
    task directories' path on the cluster: an earlier deployment of this test left them there.
    """
    return {
        cluster: (
            {
                p.rsplit("/", 1)[0]
                for p in task_dirs(site, cluster, "scheduled__*/*/records.jsonl")
                if ".stale-" not in p  # set aside by an earlier deployment already: left alone
            },
            task_dirs(site, cluster, "scheduled__*/*.stale-*"),
        )
        for cluster in ("perlmutter", "s3df")
    }


@pytest.mark.starts_background_run
def test_three_survey_years_run_as_scheduled_runs_and_one_year_reruns_alone(
    airflow: Deployment, site: Site, dc1_run: str
) -> None:
    # dc1_run: DC1 at scale 0.001 runs beside the years (tests/e2e/test_dc1_e2e.py checks it after).
    # What an earlier deployment's runs of the same run ids left on the clusters: each bundle of
    # this deployment sets it aside (``<dir>.stale-<time>``) and runs all its streams (the records
    # below), instead of taking the old records for an earlier try's and recording nothing.
    left = left_behind(site)
    started = int(time.time())  # the site's clusters run on this machine: one clock
    parsed = "SELECT 1 FROM dag WHERE dag_id = %s"
    wait_for(lambda: airflow.sql(parsed, DAG_ID), timeout=180, what=f"{DAG_ID} parsed")
    assert [r[0] for r in airflow.sql("SELECT is_paused FROM dag WHERE dag_id = %s", DAG_ID)] == [True]
    assert dag_runs(airflow) == []  # paused at creation: catchup has made nothing yet
    api("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})

    # Catchup: the scheduler makes the three years' runs (all due at once) and they finish.
    runs = wait_for(
        lambda: dag_runs(airflow),
        until=lambda rs: len(rs) >= 3 and all(state in ("success", "failed") for _, _, state, _, _ in rs),
        timeout=RUNS_TIMEOUT,
        what=f"three scheduled runs of {DAG_ID} finish; logs in {airflow.root}",
        interval=5,
    )
    assert [(t, s, (a, b)) for _, t, s, a, b in runs] == [
        ("scheduled", "success", INTERVALS[year]) for year in (1, 2, 3)
    ], runs
    run_of = {year: run[0] for year, run in zip((1, 2, 3), runs, strict=True)}
    # No fourth year: the timetable ended, so the DAG has no next run to make.
    assert airflow.sql("SELECT next_dagrun, next_dagrun_create_after FROM dag WHERE dag_id = %s", DAG_ID) == [
        (None, None)
    ]
    assert [c for (c,) in airflow.sql("SELECT conf FROM dag_run WHERE dag_id = %s", DAG_ID)] in (
        [None] * 3,
        [{}] * 3,
    )  # the year is in the data interval, not in a conf

    # The history the workers wrote: every run's row keeps its survey year, every attempt its year.
    survey_years = "SELECT run_id, survey_year FROM runs WHERE dag_id = %s"
    years = dict(airflow.history.sql(survey_years, DAG_ID))
    assert years == {run_of[year]: year for year in (1, 2, 3)}
    before: dict[int, list[dict[str, Any]]] = {}
    visits: dict[int, set[str]] = {}
    for year, run_id in run_of.items():
        rows = attempts(airflow, run_id)
        before[year] = rows
        assert rows, f"no history of year {year}'s run {run_id}"
        by_process = collections.Counter(r["process"] for r in rows)
        assert all(by_process[name] == 1 for name in TOP), by_process
        assert by_process["processEimage"] == 4, by_process  # one visit of four sensors a year
        for row in rows:
            # Every instance: this year, one workflow identity (the listener's records too).
            assert (row["workflow"], row["variant"], row["workflow_version"]) == (
                "Twinkles",
                "all-at-once",
                "1.0",
            )
            assert row["extra"]["survey_year"] == year, row
            assert row["try_number"] == 1 and row["state"] == "success", row
        eimages = [r for r in rows if r["process"] == "processEimage"]
        assert all(r["task_id"] == "processVisit.bundle" for r in eimages), eimages
        visits[year] = {r["stream"].split("/")[0] for r in eimages}
        # Differencing and forced photometry work on the visits this year processed.
        assert {r["stream"].split("/")[0] for r in rows if r["process"] == "imageDifference"} == visits[year]
        assert {r["stream"] for r in rows if r["process"] == "forcedPhotometry"} == visits[year]
    assert len(visits[1] | visits[2] | visits[3]) == 3, visits  # each year processed its own visit
    # The year reached the payloads: each wrote its year's outputs, in its year's rerun, during this test.
    perlmutter, s3df = (written_since(site, cluster, started) for cluster in ("perlmutter", "s3df"))
    for year in (1, 2, 3):
        rerun = f"repo/rerun/year{year}"
        [visit] = sorted(visits[year])
        assert f"repo/ingest/year{year}.done" in perlmutter, sorted(perlmutter)
        assert f"{rerun}/wrapup-year{year}.done" in perlmutter, sorted(perlmutter)
        assert any(p.startswith(f"{rerun}/calexp/v{visit.removeprefix('visit=')}/") for p in perlmutter)
        assert f"{rerun}/deepCoadd/0/0,0.fits" in s3df, sorted(s3df)
    for cluster, (dirs, aside_before) in left.items():
        aside = task_dirs(site, cluster, "scheduled__*/*.stale-*") - aside_before
        assert all(any(a.startswith(f"{d}.stale-") for a in aside) for d in dirs), (cluster, dirs, aside)

    # Clear year 2's run, every task of it, and nothing else.
    cleared = api(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        {"dry_run": False, "dag_run_id": run_of[2], "only_failed": False, "reset_dag_runs": True},
    )
    cleared_runs = {ti["dag_run_id"] for ti in cleared["task_instances"]}
    assert cleared_runs == {run_of[2]}, cleared
    # The verdict is the last task: its second try ending means year 2's rerun is over.
    wait_for(
        lambda: airflow.task_states(DAG_ID, run_of[2])["verdict"],
        until=lambda state: state[1] == 2 and state[0] in ("success", "failed"),
        timeout=RUNS_TIMEOUT,
        what=f"year 2's rerun ends; logs in {airflow.root}",
        interval=5,
    )
    assert airflow.wait_run(DAG_ID, run_of[2], timeout=120) == "success"
    assert [(r, s) for r, _, s, _, _ in dag_runs(airflow)] == [(run_of[y], "success") for y in (1, 2, 3)]

    # Years 1 and 3: exactly the attempts they had. Year 2: a second try of every process that is a
    # task (the top-level ones and the visit's forced photometry job), with its year; the bundles had
    # nothing left to rerun (a cleared bundle reruns only the streams that did not succeed).
    for year in (1, 3):
        assert attempts(airflow, run_of[year]) == before[year], f"year {year}'s history changed"
    again = attempts(airflow, run_of[2])
    assert all(row in again for row in before[2])
    new = [r for r in again if r not in before[2]]
    assert all(r["try_number"] == 2 for r in new), new
    assert sorted(r["process"] for r in new) == sorted((*TOP, "forcedPhotometry")), new
    assert all(r["extra"]["survey_year"] == 2 and r["state"] == "success" for r in new), new
    assert dict(airflow.history.sql(survey_years, DAG_ID)) == years
