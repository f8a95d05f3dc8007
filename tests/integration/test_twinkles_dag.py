"""Twinkles year by year: `airflow dags test` of the rendered Twinkles DAG for survey years 1 and 2.

The DAG is dags/twinkles.py's Twinkles_all-at-once_local (dags/workflows/twinkles-local.yaml: twinkles.yaml
at scale 0.001, one visit of four sensors a year, each request capped to the local clusters). Each run is
triggered with a logical date inside its survey year: the timetable makes the year its data interval, the
renderer makes it the variable `year` of every process, and the history keeps it with every instance.
"""

from __future__ import annotations

import collections
import json
import pathlib
import re
import shlex
import subprocess

import pytest
import sqlalchemy as sa

from airflow_desc.history import HistoryStore, JsonLinesRecorder, ProcessRecord
from airflow_desc.history.schema import runs, workflows
from airflow_desc.timetables import SurveyYearTimetable
from airflow_desc.workflow.registry import load_workflow
from tests.integration.airflow_env import AIRFLOW, AirflowEnv, explain
from tests.integration.site import Site

# A bundle takes a whole perlmutter node, and the two years take ~2.5 minutes: run it apart.
pytestmark = pytest.mark.serial

ROOT = pathlib.Path(__file__).parents[2]
OVERLAY = ROOT / "dags" / "workflows" / "twinkles-local.yaml"
DAG_ID = "Twinkles_all-at-once_local"
WORK_DIR = "airflow-desc"  # the site's clusters.yaml work_dir, relative to the home directory
# A logical date inside each survey year (the survey starts 2022-10-01): any instant of a year picks it.
LOGICAL_DATES = {1: "2022-11-15T00:00:00+00:00", 2: "2024-02-29T12:00:00+00:00"}
INTERVALS = {
    1: ("2022-10-01 00:00:00+00:00", "2023-10-01 00:00:00+00:00"),
    2: ("2023-10-01 00:00:00+00:00", "2024-10-01 00:00:00+00:00"),
}
TOP = (
    "ingestYear", "setupEimageVisits", "makeCoaddTempExp", "assembleCoadd", "setupImageDifferenceVisits",
    "diaObjectMaker", "setupForcedPhotometryVisits", "wrapupYear", "report",
)  # fmt: skip
FINISHED = re.compile(
    r"DagRun Finished: dag_id=(?P<dag_id>\S+?), .*?run_id=(?P<run_id>\S+?), .*?state=(?P<state>\w+), .*?"
    r"data_interval_start=(?P<start>[^,]+), data_interval_end=(?P<end>[^,]+),"
)


def run_year(
    env: AirflowEnv, year: int, history: pathlib.Path, conf: dict[str, object]
) -> tuple[subprocess.CompletedProcess[str], re.Match[str]]:
    args = [str(AIRFLOW), "dags", "test", DAG_ID, LOGICAL_DATES[year], "--conf", json.dumps(conf)]
    proc = subprocess.run(
        args, env={**env.env, "DESC_HISTORY_JSONL": str(history)}, capture_output=True, text=True, timeout=300
    )
    finished = FINISHED.search(proc.stdout + proc.stderr)
    assert proc.returncode == 0 and finished, explain(proc)
    return proc, finished


def files_under(site: Site, cluster: str, root: str) -> set[str]:
    quoted = shlex.quote(f"{WORK_DIR}/{root}")
    listing = site.run(cluster, f"test -d {quoted} && cd {quoted} && find . -type f || true").stdout
    return {line.removeprefix("./") for line in listing.split()}


def test_two_survey_years_run_with_the_year_in_every_record(
    airflow_env: AirflowEnv, site: Site, tmp_path: pathlib.Path, token: str
) -> None:
    env = AirflowEnv(airflow_env.home, {**airflow_env.env, "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags")})
    # Its own files on the clusters: the years' outputs, and no earlier run's.
    root = f"twinkles-it/{token}"
    conf: dict[str, object] = {"root": root}
    workflow = load_workflow(OVERLAY)
    timetable = SurveyYearTimetable.from_variables(workflow.param_defaults("all-at-once"))
    try:
        by_year: dict[int, list[ProcessRecord]] = {}
        run_ids: dict[int, str] = {}
        for year in (1, 2):
            # The timetable puts the logical date in this year, as Airflow does with the run.
            assert timetable.survey_year(LOGICAL_DATES[year]) == year
            interval = timetable.year_interval(year)
            assert (interval.start.isoformat(sep=" "), interval.end.isoformat(sep=" ")) == INTERVALS[year]
            history = tmp_path / f"history-year{year}.jsonl"
            proc, finished = run_year(env, year, history, conf)
            assert finished["dag_id"] == DAG_ID
            assert finished["state"] == "success", explain(proc)
            assert (finished["start"], finished["end"]) == INTERVALS[year], finished.group(0)
            run_ids[year] = finished["run_id"]
            by_year[year] = JsonLinesRecorder(history).read()
            assert by_year[year], explain(proc)
        assert run_ids[1] != run_ids[2]

        visits: dict[int, set[str]] = {}
        for year, recs in by_year.items():
            by_process = collections.defaultdict(list)
            for rec in recs:
                by_process[rec.process].append(rec)
                # Every instance: this run, this year, one workflow identity (the listener's too).
                assert (rec.workflow, rec.dag_id, rec.run_id) == ("Twinkles", DAG_ID, run_ids[year]), rec
                assert (rec.variant, rec.extra.get("workflow_version")) == ("all-at-once", "1.0"), rec
                assert rec.extra.get("survey_year") == year, rec
                assert rec.state == "success", rec
            for name in TOP:
                assert len(by_process[name]) == 1, (name, sorted(by_process))
            # The year reached the payloads: the setup scripts got it, the outputs are the year's.
            eimages = by_process["processEimage"]
            assert len(eimages) == 4 and all(r.task_id == "processVisit.bundle" for r in eimages), eimages
            # Differencing and forced photometry work on the visits this year processed.
            visits[year] = {r.stream.split("/")[0] for r in eimages}
            assert {r.stream.split("/")[0] for r in by_process["imageDifference"]} == visits[year]
            assert {r.stream for r in by_process["forcedPhotometry"]} == visits[year]
        assert visits[1] != visits[2]  # each year lists its own visits

        perlmutter = files_under(site, "perlmutter", root)
        s3df = files_under(site, "s3df", root)
        for year in (1, 2):
            rerun = f"repo/rerun/year{year}"
            [visit] = sorted(visits[year])
            assert f"repo/ingest/year{year}.done" in perlmutter, sorted(perlmutter)
            assert f"{rerun}/wrapup-year{year}.done" in perlmutter, sorted(perlmutter)
            assert any(p.startswith(f"{rerun}/calexp/v{visit.removeprefix('visit=')}/") for p in perlmutter)
            assert f"{rerun}/deepCoadd/0/0,0.fits" in s3df, sorted(s3df)

        # The history store: one workflow, two runs with their survey years.
        store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
        store.record([rec for recs in by_year.values() for rec in recs])
        with store.engine.connect() as conn:
            identities = conn.execute(sa.select(workflows.c.name, workflows.c.variant, workflows.c.version))
            assert identities.all() == [("Twinkles", "all-at-once", "1.0")]
            years = dict(conn.execute(sa.select(runs.c.run_id, runs.c.survey_year)).all())
        assert years == {run_ids[1]: 1, run_ids[2]: 2}
    finally:
        for cluster in ("perlmutter", "s3df"):
            site.run(cluster, f"rm -rf {shlex.quote(f'{WORK_DIR}/twinkles-it/{token}')}", check=False)
