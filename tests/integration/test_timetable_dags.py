"""Year-by-year runs: a DAG scheduled by the plugin's SurveyYearTimetable, parsed and run by Airflow.

The DAG is tests/integration/dags/desc_it_twinkles.py (survey from 2022-10-01, 3 years).
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess

import pytest

from tests.integration.airflow_env import AIRFLOW, AirflowEnv

DAG_ID = "desc_it_twinkles"
DAG_FILE = "desc_it_twinkles.py"


def airflow(env: AirflowEnv, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AIRFLOW), *args], env=env.env, capture_output=True, text=True, timeout=timeout, check=False
    )


def dags_test(
    env: AirflowEnv,
    dag_id: str,
    *,
    history: pathlib.Path,
    logical_date: str | None = None,
    conf: dict[str, object] | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """AirflowEnv.dags_test, plus the run's logical date (`airflow dags test <dag_id> <logical_date>`)."""
    args = ["dags", "test", dag_id]
    if logical_date is not None:
        args.append(logical_date)
    if conf is not None:
        args += ["--conf", json.dumps(conf)]
    run_env = AirflowEnv(env.home, {**env.env, "DESC_HISTORY_JSONL": str(history)})
    return airflow(run_env, *args, timeout=timeout)


def json_output(proc: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    """The JSON list an `-o json` command prints, among the log lines Airflow prints on stdout."""
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    decoder = json.JSONDecoder()
    text = proc.stdout
    for match in re.finditer(r"^\[(?:\]|\{)", text, re.MULTILINE):
        value, _ = decoder.raw_decode(text[match.start() :])
        assert isinstance(value, list)
        return value
    raise AssertionError(f"no JSON list in the output:\n{text[-4000:]}")


def errors_of_our_file(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row.get("filepath", "").endswith(DAG_FILE)]


def test_the_dag_parses_with_the_registered_timetable(airflow_env: AirflowEnv) -> None:
    # Parsing alone: the DAG file imports and its timetable validates.
    local = json_output(airflow(airflow_env, "dags", "list-import-errors", "--local", "-o", "json"))
    assert errors_of_our_file(local) == []
    # Serializing into the metadata DB, as the DAG processor does: an unregistered custom timetable
    # fails here ("timetable not registered").
    reserialize = airflow(airflow_env, "dags", "reserialize")
    assert reserialize.returncode == 0, (reserialize.stdout + reserialize.stderr)[-4000:]
    assert "not registered" not in reserialize.stdout + reserialize.stderr
    stored = json_output(airflow(airflow_env, "dags", "list-import-errors", "-o", "json"))
    assert errors_of_our_file(stored) == []
    # What the UI and the scheduler read back from the serialized DAG.
    [details] = json_output(airflow(airflow_env, "dags", "details", DAG_ID, "-o", "json"))
    assert details["timetable_summary"] == "Survey years 1–3 from 2022-10-01, all at once"
    assert "3 calendar years of survey time" in details["timetable_description"]
    assert details["next_dagrun_data_interval_start"] == "2022-10-01 00:00:00+00:00"
    assert details["next_dagrun_data_interval_end"] == "2023-10-01 00:00:00+00:00"


def test_a_backfill_makes_one_run_per_survey_year(airflow_env: AirflowEnv) -> None:
    assert airflow(airflow_env, "dags", "reserialize").returncode == 0
    proc = airflow(
        airflow_env,
        "backfill", "create", "--dag-id", DAG_ID,
        "--from-date", "2020-01-01", "--to-date", "2030-01-01", "--dry-run",
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    table = proc.stdout.split("Runs to be attempted:", 1)[-1]
    logical_dates = re.findall(r"^\| (\d{4}-\d{2}-\d{2} [\d:]+\+00:00)", table, re.MULTILINE)
    # The three survey years, and nothing after the last one although the range goes on to 2030.
    assert logical_dates == [
        "2022-10-01 00:00:00+00:00",
        "2023-10-01 00:00:00+00:00",
        "2024-10-01 00:00:00+00:00",
    ], proc.stdout[-4000:]


@pytest.mark.parametrize(
    ("logical_date", "interval", "year"),
    [
        ("2023-11-15T08:00:00+00:00", ("2023-10-01T00:00:00+00:00", "2024-10-01T00:00:00+00:00"), 2),
        ("2022-10-01T00:00:00+00:00", ("2022-10-01T00:00:00+00:00", "2023-10-01T00:00:00+00:00"), 1),
        ("2029-06-01T00:00:00+00:00", ("2024-10-01T00:00:00+00:00", "2025-10-01T00:00:00+00:00"), 3),
    ],
    ids=["inside-year-2", "start-of-year-1", "after-the-survey"],
)
def test_a_run_covers_one_survey_year(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, logical_date: str, interval: tuple[str, str], year: int
) -> None:
    out = tmp_path / "year.json"
    proc = dags_test(
        airflow_env,
        DAG_ID,
        history=tmp_path / "history.jsonl",
        logical_date=logical_date,
        conf={"out": str(out)},
    )
    log = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0 and out.exists(), log
    record = json.loads(out.read_text())
    assert record == {
        "data_interval_start": interval[0],
        "data_interval_end": interval[1],
        "logical_date": logical_date,
        "year": year,
        "templated_year": year,
    }, log
