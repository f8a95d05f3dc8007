"""SurveyYearTimetable: one DAG run per survey year, asked the way Airflow's scheduler asks."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowTimetableInvalid
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction

from airflow_desc.timetables import SurveyYearTimetable, parse_cadence, survey_year_of

UTC = pendulum.UTC
START = pendulum.datetime(2022, 10, 1)


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz=UTC)


def schedule(
    timetable: SurveyYearTimetable,
    *,
    catchup: bool = True,
    earliest: pendulum.DateTime | None = START,
    latest: pendulum.DateTime | None = None,
    limit: int = 50,
) -> list[DagRunInfo]:
    """Every run the scheduler would make, one next_dagrun_info call after the other."""
    restriction = TimeRestriction(earliest=earliest, latest=latest, catchup=catchup)
    runs: list[DagRunInfo] = []
    last: DataInterval | None = None
    while (
        info := timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
    ) is not None:
        runs.append(info)
        last = info.data_interval
        assert len(runs) <= limit, "the timetable does not stop"
    return runs


# --- survey time -------------------------------------------------------------------------------------


def test_each_year_is_one_calendar_year_of_survey_time() -> None:
    timetable = SurveyYearTimetable(survey_start="2022-10-01", years=10)
    intervals = [timetable.year_interval(year) for year in range(1, 11)]
    assert intervals[0] == DataInterval(utc(2022, 10, 1), utc(2023, 10, 1))
    assert intervals[9] == DataInterval(utc(2031, 10, 1), utc(2032, 10, 1))
    assert all(a.end == b.start for a, b in zip(intervals, intervals[1:], strict=False))
    assert [timetable.survey_year(i.start) for i in intervals] == list(range(1, 11))
    assert timetable.survey_year(utc(2024, 3, 15)) == 2  # any instant inside the year
    assert timetable.survey_year(utc(2023, 9, 30, 23, 59, 59)) == 1
    with pytest.raises(ValueError, match="survey year 11 is not in 1..10"):
        timetable.year_interval(11)


def test_a_survey_starting_on_29_february() -> None:
    timetable = SurveyYearTimetable(survey_start="2024-02-29", years=5)
    starts = [timetable.year_interval(year).start for year in range(1, 6)]
    # Years end on 28 February, and on 29 February again in a leap year; no gap, no overlap.
    assert starts == [
        utc(2024, 2, 29),
        utc(2025, 2, 28),
        utc(2026, 2, 28),
        utc(2027, 2, 28),
        utc(2028, 2, 29),
    ]
    assert timetable.year_interval(4).end == utc(2028, 2, 29)
    assert timetable.year_interval(5).end == utc(2029, 2, 28)
    assert timetable.survey_year(utc(2025, 2, 27, 23)) == 1
    assert timetable.survey_year(utc(2025, 2, 28)) == 2
    assert timetable.survey_year(utc(2028, 2, 28, 12)) == 4
    assert timetable.survey_year(utc(2028, 2, 29)) == 5


def test_survey_start_forms_are_utc() -> None:
    expected = SurveyYearTimetable(survey_start=utc(2022, 10, 1), years=3)
    assert SurveyYearTimetable(survey_start="2022-10-01", years=3) == expected
    assert SurveyYearTimetable(survey_start="2022-10-01T00:00:00Z", years=3) == expected
    assert SurveyYearTimetable(survey_start=datetime(2022, 10, 1), years=3) == expected  # naive: UTC
    assert SurveyYearTimetable(survey_start=date(2022, 10, 1), years=3) == expected  # unquoted YAML date
    assert SurveyYearTimetable(survey_start=datetime(2022, 10, 1, tzinfo=timezone.utc), years=3) == expected
    paris = SurveyYearTimetable(survey_start="2022-10-01T02:00:00+02:00", years=3)
    assert paris.survey_start == utc(2022, 10, 1)
    assert paris.year_interval(1).start.tzinfo is not None


def test_survey_year_of_for_templates() -> None:
    assert survey_year_of("2023-11-15T08:00:00+00:00", "2022-10-01") == 2
    assert survey_year_of(utc(2022, 10, 1), "2022-10-01") == 1
    assert survey_year_of(datetime(2032, 9, 30), datetime(2022, 10, 1)) == 10
    paris = pendulum.datetime(2023, 10, 1, 1, tz="Europe/Paris")  # 30 September, 23:00 UTC
    assert survey_year_of(paris, "2022-10-01") == 1
    with pytest.raises(ValueError, match="before the survey start"):
        survey_year_of("2022-09-30", "2022-10-01")
    with pytest.raises(ValueError, match="not a date"):
        survey_year_of("yesterday-ish", "2022-10-01")


def test_survey_year_outside_the_survey_is_an_error() -> None:
    timetable = SurveyYearTimetable(survey_start="2022-10-01", years=3)
    with pytest.raises(ValueError, match="outside the survey"):
        timetable.survey_year(utc(2025, 10, 1))
    with pytest.raises(ValueError, match="outside the survey"):
        timetable.survey_year(utc(2021, 1, 1))


# --- real time ---------------------------------------------------------------------------------------


def test_without_a_cadence_every_year_is_due_at_once_with_catchup() -> None:
    runs = schedule(SurveyYearTimetable(survey_start="2022-10-01", years=3))
    assert [r.data_interval for r in runs] == [
        DataInterval(utc(2022, 10, 1), utc(2023, 10, 1)),
        DataInterval(utc(2023, 10, 1), utc(2024, 10, 1)),
        DataInterval(utc(2024, 10, 1), utc(2025, 10, 1)),
    ]
    assert [r.logical_date for r in runs] == [utc(2022, 10, 1), utc(2023, 10, 1), utc(2024, 10, 1)]
    # All due at real_start (default: the survey start), a second apart: distinct run ids, in order.
    assert [r.run_after for r in runs] == [utc(2022, 10, 1, 0, 0, s) for s in range(3)]
    assert all(r.run_after <= pendulum.now("UTC") for r in runs)


def test_all_at_once_from_a_real_start() -> None:
    real_start = utc(2026, 1, 5, 9)
    runs = schedule(SurveyYearTimetable(survey_start="2030-01-01", years=2, real_start=real_start))
    assert [r.run_after for r in runs] == [real_start, real_start + timedelta(seconds=1)]
    assert runs[1].data_interval == DataInterval(utc(2031, 1, 1), utc(2032, 1, 1))


def test_one_survey_year_per_week_of_wall_clock_time() -> None:
    real_start = pendulum.now("UTC").start_of("day") - timedelta(days=17)
    timetable = SurveyYearTimetable(
        survey_start="2022-10-01", years=5, cadence="7 days", real_start=real_start
    )
    runs = schedule(timetable)
    assert [r.run_after for r in runs] == [real_start + timedelta(weeks=k) for k in range(5)]
    assert [timetable.survey_year(r.data_interval.start) for r in runs] == [1, 2, 3, 4, 5]
    assert [r.logical_date for r in runs] == [utc(2022 + k, 10, 1) for k in range(5)]


def test_catchup_off_skips_to_the_latest_year_due() -> None:
    now = pendulum.now("UTC")
    timetable = SurveyYearTimetable(
        survey_start="2022-10-01", years=5, cadence=timedelta(days=7), real_start=now - timedelta(days=17)
    )
    restriction = TimeRestriction(earliest=START, latest=None, catchup=False)
    first = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    assert first is not None and timetable.survey_year(first.data_interval.start) == 3  # due 3 days ago
    assert first.run_after <= now
    after = timetable.next_dagrun_info(
        last_automated_data_interval=first.data_interval, restriction=restriction
    )
    assert after is not None and timetable.survey_year(after.data_interval.start) == 4
    assert after.run_after > now  # the scheduler waits for it
    # The same situation with catchup: every year from 1, in order.
    assert [timetable.survey_year(r.data_interval.start) for r in schedule(timetable)] == [1, 2, 3, 4, 5]


def test_catchup_off_before_anything_is_due() -> None:
    real_start = pendulum.now("UTC") + timedelta(days=3)
    timetable = SurveyYearTimetable(
        survey_start="2022-10-01", years=2, cadence="1 week", real_start=real_start
    )
    runs = schedule(timetable, catchup=False)
    assert [r.run_after for r in runs] == [real_start, real_start + timedelta(weeks=1)]


def test_catchup_off_all_at_once_runs_only_the_last_year() -> None:
    runs = schedule(SurveyYearTimetable(survey_start="2022-10-01", years=3), catchup=False)
    assert [r.data_interval.start for r in runs] == [utc(2024, 10, 1)]


def test_no_run_after_the_last_year() -> None:
    timetable = SurveyYearTimetable(survey_start="2022-10-01", years=3, cadence="1d")
    last_year = timetable.year_interval(3)
    for catchup in (True, False):
        restriction = TimeRestriction(earliest=START, latest=None, catchup=catchup)
        assert (
            timetable.next_dagrun_info(last_automated_data_interval=last_year, restriction=restriction)
            is None
        )
    assert len(schedule(timetable)) == 3


def test_start_and_end_dates_bound_the_survey_years() -> None:
    timetable = SurveyYearTimetable(survey_start="2022-10-01", years=5)
    starts = [r.data_interval.start for r in schedule(timetable, earliest=utc(2023, 6, 1))]
    assert starts == [utc(2023 + k, 10, 1) for k in range(4)]  # year 1 starts before the start date
    starts = [r.data_interval.start for r in schedule(timetable, earliest=utc(2023, 10, 1))]
    assert starts[0] == utc(2023, 10, 1)
    starts = [r.data_interval.start for r in schedule(timetable, earliest=None, latest=utc(2024, 12, 31))]
    assert starts == [utc(2022, 10, 1), utc(2023, 10, 1), utc(2024, 10, 1)]


def test_manual_runs_cover_the_year_their_date_falls_in() -> None:
    timetable = SurveyYearTimetable(survey_start="2022-10-01", years=3, cadence="7 days")

    def year_of_trigger(when: pendulum.DateTime) -> int:
        interval = timetable.infer_manual_data_interval(run_after=when)
        assert interval == timetable.year_interval(timetable.survey_year(interval.start))
        return timetable.survey_year(interval.start)

    assert year_of_trigger(utc(2023, 11, 15, 8)) == 2
    assert year_of_trigger(utc(2023, 10, 1)) == 2
    assert year_of_trigger(utc(2023, 9, 30, 23)) == 1
    assert year_of_trigger(utc(2001, 1, 1)) == 1  # before the survey: year 1
    assert year_of_trigger(utc(2030, 1, 1)) == 3  # after it: the last year


# --- Airflow's side: serialization, UI text, validation ----------------------------------------------------


@pytest.mark.parametrize(
    "timetable",
    [
        SurveyYearTimetable(survey_start="2022-10-01", years=10),
        SurveyYearTimetable(survey_start="2024-02-29T06:30:00", years=3, cadence="1 day 12 hours"),
        SurveyYearTimetable(
            survey_start="2022-10-01", years=10, cadence=timedelta(weeks=1), real_start=utc(2026, 12, 1, 9)
        ),
    ],
    ids=["all-at-once", "cadence", "real-start"],
)
def test_serialize_round_trip(timetable: SurveyYearTimetable) -> None:
    data = json.loads(json.dumps(timetable.serialize()))
    again = SurveyYearTimetable.deserialize(data)
    assert again == timetable and hash(again) == hash(timetable)
    assert again.summary == timetable.summary and again.description == timetable.description
    assert schedule(again) == schedule(timetable)


def test_airflow_serializes_it_as_a_registered_timetable() -> None:
    from airflow.serialization.decoders import decode_timetable
    from airflow.serialization.encoders import encode_timetable

    timetable = SurveyYearTimetable(survey_start="2022-10-01", years=10, cadence="7 days")
    encoded = json.loads(json.dumps(encode_timetable(timetable)))
    assert encoded["__type"] == "airflow_desc.timetables.SurveyYearTimetable"
    assert decode_timetable(encoded) == timetable
    assert timetable.type_name == "airflow_desc.timetables.SurveyYearTimetable"


def test_summary_and_description() -> None:
    assert (
        SurveyYearTimetable(survey_start="2022-10-01", years=10, cadence="7 days").summary
        == "Survey years 1–10 from 2022-10-01, one per 7 days"
    )
    assert (
        SurveyYearTimetable(survey_start="2022-10-01", years=10).summary
        == "Survey years 1–10 from 2022-10-01, all at once"
    )
    assert (
        SurveyYearTimetable(
            survey_start="2022-10-01", years=1, cadence="12h", real_start="2026-12-01"
        ).summary
        == "Survey year 1 from 2022-10-01, one per 12 hours from 2026-12-01"
    )
    timetable = SurveyYearTimetable(survey_start="2022-10-01T12:00:00", years=2, cadence="90 min")
    assert timetable.summary == "Survey years 1–2 from 2022-10-01T12:00:00+00:00, one per 90 minutes"
    assert "2 calendar years of survey time from 2022-10-01T12:00:00+00:00" in timetable.description
    assert "Year k is due at 2022-10-01T12:00:00+00:00 + (k-1) x 90 minutes" in timetable.description
    assert repr(timetable) == f"<SurveyYearTimetable {timetable.summary}>"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"years": 0}, "years must be at least 1, got 0"),
        ({"years": -3}, "years must be at least 1, got -3"),
        ({"years": "10"}, "years must be a whole number of survey years, got '10'"),
        ({"years": True}, "years must be a whole number"),
        (
            {"cadence": "fortnightly"},
            "cadence 'fortnightly' is not a duration; give a duration such as '7 days'",
        ),
        ({"cadence": "7 parsecs"}, "cadence '7 parsecs': unknown unit 'parsecs'"),
        ({"cadence": "3 months"}, "cadence '3 months' is in months, which have no fixed length"),
        ({"cadence": "P1Y"}, "is in months or years"),
        ({"cadence": "0 days"}, "cadence '0 days' is not positive"),
        ({"cadence": timedelta(days=-7)}, "is not positive"),
        ({"cadence": 7}, "cadence must be a timedelta, a text like '7 days' or None, got 7"),
        ({"years": 8000}, "years=8000 runs past the year 9999"),
        ({"cadence": timedelta(days=400_000)}, "the run of year 10 would be due after the year 9999"),
        ({"survey_start": "the first light"}, "survey_start 'the first light' is not a date"),
        ({"real_start": "soon"}, "real_start 'soon' is not a date"),
    ],
)
def test_validation_errors(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"survey_start": "2022-10-01", "years": 10, **kwargs}
    timetable = SurveyYearTimetable(**arguments)  # type: ignore[arg-type]
    with pytest.raises(AirflowTimetableInvalid, match="SurveyYearTimetable is invalid") as caught:
        timetable.validate()
    assert message in str(caught.value)
    assert "invalid" in timetable.summary.lower()  # the UI still gets a line
    with pytest.raises(AirflowTimetableInvalid):  # and nothing is scheduled from bad values
        timetable.next_dagrun_info(
            last_automated_data_interval=None, restriction=TimeRestriction(None, None, True)
        )


def test_every_problem_is_reported_at_once() -> None:
    timetable = SurveyYearTimetable(survey_start="2022-10-01", years=0, cadence="weekly")
    with pytest.raises(AirflowTimetableInvalid) as caught:
        timetable.validate()
    assert str(caught.value).count("\n- ") == 2


def test_a_dag_with_a_bad_timetable_does_not_load() -> None:
    from airflow.sdk import DAG

    dag = DAG("bad_years", schedule=SurveyYearTimetable(survey_start="2022-10-01", years=0), start_date=START)
    with pytest.raises(AirflowTimetableInvalid, match="years must be at least 1"):
        dag.validate()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7 days", timedelta(days=7)),
        ("1 week", timedelta(weeks=1)),
        ("2w", timedelta(weeks=2)),
        ("12h", timedelta(hours=12)),
        ("90 min", timedelta(minutes=90)),
        ("30s", timedelta(seconds=30)),
        ("1.5 days", timedelta(hours=36)),
        ("1 day 6 hours", timedelta(hours=30)),
        ("1 day, 6 hours", timedelta(hours=30)),
        ("P7D", timedelta(days=7)),
        ("P1W", timedelta(weeks=1)),
        ("PT12H", timedelta(hours=12)),
    ],
)
def test_parse_cadence(text: str, expected: timedelta) -> None:
    assert parse_cadence(text) == expected
    assert SurveyYearTimetable(survey_start="2022-10-01", years=2, cadence=text).cadence == expected
