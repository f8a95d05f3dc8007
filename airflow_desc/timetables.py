"""Year-by-year processing (Twinkles): one DAG run per survey year.

"For Twinkles we realize that what we really need is a workflow which simulates year-by-year
processing" (DC1 slides). :class:`SurveyYearTimetable` makes one DAG run per year of a
survey; the plugin registers it, so a DAG (or a rendered workflow spec) just says::

    from airflow_desc.timetables import SurveyYearTimetable

    DAG(
        "Twinkles",
        schedule=SurveyYearTimetable(survey_start="2022-10-01", years=10, cadence="7 days",
                                     real_start="2026-12-01"),
        start_date=datetime(2022, 10, 1, tzinfo=timezone.utc),   # <= survey_start: see below
        catchup=True,
    )

**Survey time** (the data). Run *k* (k = 1 .. ``years``) has the data interval
``[survey_start + (k-1) years, survey_start + k years)``: calendar years, added with
pendulum's arithmetic, always from ``survey_start`` (a survey starting on 29 February has
years ending on 28 February, and on 29 February again in leap years; the intervals are
contiguous). Everything is UTC. The run's logical date is its interval start.

**Real time** (when runs are made). With a ``cadence`` (``timedelta`` or text such as
``"7 days"``, ``"1 week"``, ``"12h"``, ``"P7D"``), the run of year *k* is due at
``real_start + (k-1) * cadence`` of wall-clock time: "one survey year per week".
``real_start`` defaults to ``survey_start``. Without a cadence every year is due at once, at
``real_start`` (the years one second apart, which keeps Airflow's run ids distinct and in
year order); the scheduler then creates them all, as catchup does. No run after ``years``.

**Airflow's restrictions.** A DAG's ``start_date`` / ``end_date`` bound *logical dates*, and
Airflow creates no task instance for a logical date before a task's ``start_date``: so the
DAG's ``start_date`` must be at or before ``survey_start`` (years starting earlier than it
are not scheduled), and its ``end_date``, if any, in survey time too. ``catchup=True`` runs
every year whose time has come, in order; with ``catchup=False`` (Airflow 3's default)
missed years are skipped as for any Airflow schedule: only the latest year already due is
made, then each later year when it falls due. Twinkles wants ``catchup=True``.

**Manual runs.** A triggered run covers the survey year that the date Airflow hands to
:meth:`~SurveyYearTimetable.infer_manual_data_interval` falls in (year 1 before the survey,
the last year after it). The UI, the REST API and ``airflow dags test <dag> <date>`` hand
it the run's logical date: trigger with a logical date inside the year to rerun (the REST
API also takes an explicit data interval). A run triggered without a logical date (allowed
in Airflow 3) has no data interval at all.

**Where the year number lives.** In the data interval, nowhere else: a run's survey year
is its data interval start read against the survey start,
``timetable.survey_year(data_interval_start)``, or in a template
``survey_year_of(data_interval_start, survey_start)`` (a function to hand to a DAG's
``user_defined_macros``). Runs made by the timetable have an empty ``conf``, so the
renderer of workflow specs computes ``year`` from the data interval and passes it to every
process as the spec variable ``year``, overriding its default. A ``year`` in a run's conf
is only for a run without a data interval; one that disagrees with the interval is an
error for the renderer to report, not a second source. The history keeps each process
instance's survey year (its run's ``survey_year``), read the same way by
:func:`run_survey_year`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

import pendulum
from airflow.sdk.exceptions import AirflowTimetableInvalid
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable
from pendulum import DateTime

from airflow_desc.slurm.units import parse_duration

__all__ = ["SurveyYearTimetable", "parse_cadence", "run_survey_year", "survey_year_of"]

#: Without a cadence, the years are due this far apart at ``real_start`` ("all at once").
ALL_AT_ONCE_STEP = timedelta(seconds=1)
_LAST_YEAR = 9999  # datetime's limit

_CADENCE_HINT = "give a duration such as '7 days', '1 week', '12h', '1 day 6 hours' or 'P7D'"


def parse_cadence(text: str) -> timedelta:
    """Return the wall-clock duration that ``text`` names.

    Accepted: number-unit terms (``7 days``, ``1 week``, ``12h``, ``1 day 6 hours``; units
    s, m(in), h(our), d(ay), w(eek), singular or plural) and ISO 8601 durations (``P7D``,
    ``PT12H``, ``P1W``). Months and years are refused: a cadence is a fixed duration.

    :param text: the cadence.
    :raises ValueError: for anything else, or a cadence that is not positive.
    """
    stripped = text.strip()
    if stripped[:1] in ("P", "p"):
        cadence = _parse_iso_duration(stripped)
    else:
        try:
            seconds = parse_duration(text, forms=("terms",), hint=_CADENCE_HINT)
        except ValueError as exc:
            raise ValueError(f"cadence {exc}") from None
        cadence = timedelta(seconds=seconds or 0.0)  # the terms form never gives None
    if cadence <= timedelta(0):
        raise ValueError(f"cadence {text!r} is not positive; {_CADENCE_HINT}, or no cadence for all at once")
    return cadence


def _parse_iso_duration(text: str) -> timedelta:
    try:
        parsed = pendulum.parse(text.upper())
    except ValueError:  # pendulum's ParserError is one
        raise ValueError(f"cadence {text!r} is not a duration; {_CADENCE_HINT}") from None
    if not isinstance(parsed, pendulum.Duration):
        raise ValueError(f"cadence {text!r} is not a duration; {_CADENCE_HINT}")
    if parsed.years or parsed.months:
        raise ValueError(
            f"cadence {text!r} is in months or years, which have no fixed length; "
            "give wall-clock weeks, days, hours, minutes or seconds (e.g. 'P364D')"
        )
    return timedelta(seconds=parsed.total_seconds())


def _instant(value: date | str, what: str) -> DateTime:
    """Return ``value`` as an aware UTC DateTime (a naive datetime or date-only text is UTC)."""
    if isinstance(value, str):
        try:
            parsed = pendulum.parse(value.strip(), tz="UTC")
        except ValueError:
            parsed = None
        if not isinstance(parsed, DateTime):
            raise ValueError(f"{what} {value!r} is not a date or date-time; write e.g. '2022-10-01'")
        return parsed.in_timezone("UTC")
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return pendulum.instance(value, tz="UTC")
        return pendulum.instance(value).in_timezone("UTC")
    if isinstance(value, date):  # e.g. an unquoted YAML date
        return pendulum.datetime(value.year, value.month, value.day)
    raise ValueError(f"{what} must be a datetime or an ISO date text, got {type(value).__name__}")


def _whole_years(start: DateTime, when: DateTime) -> int:
    """Return the most ``n`` with ``start + n years <= when`` (negative before ``start``)."""
    n = when.year - start.year
    while start.year + n > 1 and start.add(years=n) > when:
        n -= 1
    while start.year + n < _LAST_YEAR and start.add(years=n + 1) <= when:
        n += 1
    return n


def _exact(delta: timedelta) -> timedelta:
    """Return ``delta`` as a plain ``timedelta`` (pendulum's durations do not divide by one)."""
    return timedelta(microseconds=round(delta.total_seconds() * 1_000_000))


def survey_year_of(when: date | str, survey_start: date | str) -> int:
    """Return the survey year (1 for the first) that contains ``when``.

    Made for templates: ``{{ survey_year_of(data_interval_start, "2022-10-01") }}`` with
    ``user_defined_macros={"survey_year_of": survey_year_of}``; works as well on a logical date
    anywhere inside the year. Years are calendar years from ``survey_start`` (UTC).

    :param when: a run's data interval start or logical date; a naive one is UTC.
    :param survey_start: the first instant of the survey.
    :raises ValueError: if ``when`` is before the survey or a text is not a date.
    """
    start = _instant(survey_start, "survey_start")
    instant = _instant(when, "the date")
    if instant < start:
        raise ValueError(
            f"{instant.isoformat()} is before the survey start {start.isoformat()}: no survey year"
        )
    return _whole_years(start, instant) + 1


def run_survey_year(context: Mapping[str, Any]) -> int | None:
    """Return the survey year of a running task's DAG run, for the history; ``None`` if it has none.

    ``None`` when the run's DAG is not scheduled by :class:`SurveyYearTimetable`, the run has no
    data interval, or the interval lies outside the survey: recording a process never fails on it.

    :param context: a task's template context (``dag`` and ``data_interval_start`` are read).
    """
    timetable = getattr(context.get("dag"), "timetable", None)
    start = context.get("data_interval_start")
    if not isinstance(timetable, SurveyYearTimetable) or start is None:
        return None
    try:
        return timetable.survey_year(start)
    except (ValueError, AirflowTimetableInvalid):
        return None


def _format_instant(value: DateTime) -> str:
    if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
        return value.to_date_string()
    return value.isoformat()


def _format_cadence(cadence: timedelta) -> str:
    seconds = cadence.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    count_text = f"{seconds:g}"
    return f"{count_text} second{'' if seconds == 1 else 's'}"


class SurveyYearTimetable(Timetable):
    """One DAG run per survey year; see the module docstring for the full semantics.

    :param survey_start: the first instant of the survey (UTC; a naive datetime or date text
        is UTC), e.g. ``"2022-10-01"``.
    :param years: how many survey years to process (runs 1 .. years).
    :param cadence: wall-clock time between the runs of successive years (``timedelta`` or
        text, see :func:`parse_cadence`); ``None``: every year due at once.
    :param real_start: when the run of year 1 is due; default ``survey_start``.

    Bad values do not raise here: :meth:`validate` (which Airflow calls when it loads the
    DAG) raises ``AirflowTimetableInvalid`` listing them all.
    """

    periodic = True
    can_be_scheduled = True

    def __init__(
        self,
        survey_start: datetime | date | str,
        years: int,
        cadence: timedelta | str | None = None,
        real_start: datetime | date | str | None = None,
    ) -> None:
        self._problems: list[str] = []
        self.survey_start = self._checked_instant(survey_start, "survey_start")
        self.years = self._checked_years(years)
        self.cadence = self._checked_cadence(cadence)
        self._real_start_given = (
            None if real_start is None else self._checked_instant(real_start, "real_start")
        )
        self.real_start = self._real_start_given or self.survey_start
        try:
            self.real_start + (self.years - 1) * self._step
        except OverflowError:
            self._problems.append(f"the run of year {self.years} would be due after the year {_LAST_YEAR}")
        self._summary = self._describe_briefly(survey_start, years, cadence)
        self.description = self._describe()

    @classmethod
    def from_variables(cls, variables: Mapping[str, Any]) -> SurveyYearTimetable:
        """Build the timetable that a workflow spec's variables describe (the renderer's side).

        A spec has no ``schedule:`` section; a year-by-year spec (``dags/workflows/twinkles.yaml``)
        says ``survey_start``, ``survey_years``, ``cadence_days`` (0: all at once) and
        ``real_start`` (``""``: the survey start) among its variables.

        :param variables: e.g. ``spec.variables_for(variant)``.
        :raises ValueError: if ``survey_start`` or ``survey_years`` is missing.
        """
        missing = [name for name in ("survey_start", "survey_years") if name not in variables]
        if missing:
            raise ValueError(
                f"no {' or '.join(missing)} among the variables; a year-by-year workflow declares "
                "survey_start, survey_years, cadence_days and real_start (see dags/workflows/twinkles.yaml)"
            )
        days = variables.get("cadence_days") or 0
        cadence: Any = None  # a value of the wrong type is left for validate() to report
        if isinstance(days, str):
            cadence = f"{days} days"
        elif days:
            cadence = timedelta(days=days) if isinstance(days, (int, float)) and days is not True else days
        return cls(
            survey_start=variables["survey_start"],
            years=variables["survey_years"],
            cadence=cadence,
            real_start=variables.get("real_start") or None,
        )

    # --- construction --------------------------------------------------------------------------

    def _checked_instant(self, value: date | str, what: str) -> DateTime:
        try:
            return _instant(value, what)
        except ValueError as exc:
            self._problems.append(str(exc))
            return pendulum.datetime(1970, 1, 1)

    def _checked_years(self, years: int) -> int:
        if isinstance(years, bool) or not isinstance(years, int):
            self._problems.append(f"years must be a whole number of survey years, got {years!r}")
            return 1
        if years < 1:
            self._problems.append(f"years must be at least 1, got {years}; give how many survey years to run")
            return 1
        if self.survey_start.year + years > _LAST_YEAR:
            self._problems.append(f"years={years} runs past the year {_LAST_YEAR}")
            return 1
        return years

    def _checked_cadence(self, cadence: timedelta | str | None) -> timedelta | None:
        if cadence is None:
            return None
        if isinstance(cadence, str):
            try:
                return parse_cadence(cadence)
            except ValueError as exc:
                self._problems.append(str(exc))
                return None
        if isinstance(cadence, timedelta):
            if cadence <= timedelta(0):
                self._problems.append(
                    f"cadence {cadence} is not positive; give e.g. timedelta(days=7), or None for all at once"
                )
                return None
            return _exact(cadence)
        self._problems.append(f"cadence must be a timedelta, a text like '7 days' or None, got {cadence!r}")
        return None

    def _describe_briefly(self, survey_start: object, years: object, cadence: object) -> str:
        if self._problems:
            return (
                f"Survey years (invalid): survey_start={survey_start!r}, years={years!r}, cadence={cadence!r}"
            )
        span = "Survey year 1" if self.years == 1 else f"Survey years 1–{self.years}"
        text = f"{span} from {_format_instant(self.survey_start)}"
        if self.cadence is None:
            text += ", all at once"
        else:
            text += f", one per {_format_cadence(self.cadence)}"
        if self._real_start_given is not None:
            text += f" from {_format_instant(self._real_start_given)}"
        return text

    def _describe(self) -> str:
        if self._problems:
            return "Invalid survey-year timetable: " + " / ".join(self._problems)
        end = self.survey_start.add(years=self.years)
        text = (
            f"One run per survey year: {self.years} calendar year{'s' if self.years > 1 else ''} of survey "
            f"time from {self.survey_start.isoformat()} to {end.isoformat()} (UTC), each run's data "
            "interval one year. "
        )
        real_start = self.real_start.isoformat()
        if self.cadence is None:
            return f"{text}Every year is due at {real_start}: all at once (catchup=True makes them all)."
        cadence = _format_cadence(self.cadence)
        return f"{text}Year k is due at {real_start} + (k-1) x {cadence} of wall-clock time."

    def validate(self) -> None:
        """Raise if the timetable was given bad values.

        :raises AirflowTimetableInvalid: listing every problem (years below 1, a cadence that is
            not a positive duration, a start that is not a date).
        """
        if self._problems:
            raise AirflowTimetableInvalid(
                "SurveyYearTimetable is invalid:\n" + "\n".join(f"- {problem}" for problem in self._problems)
            )

    # --- the years ----------------------------------------------------------------------------

    def year_interval(self, year: int) -> DataInterval:
        """Return the data interval of survey year ``year`` (1-based).

        :raises ValueError: if ``year`` is not in 1 .. years.
        """
        self.validate()
        if not 1 <= year <= self.years:
            raise ValueError(f"survey year {year} is not in 1..{self.years}")
        return DataInterval(self.survey_start.add(years=year - 1), self.survey_start.add(years=year))

    def due_at(self, year: int) -> DateTime:
        """Return the wall-clock time at which the run of survey year ``year`` is due.

        :raises ValueError: if ``year`` is not in 1 .. years.
        """
        self.validate()
        if not 1 <= year <= self.years:
            raise ValueError(f"survey year {year} is not in 1..{self.years}")
        return self.real_start + (year - 1) * self._step

    def survey_year(self, data_interval_start: date | str) -> int:
        """Return the survey year (1-based) of a run from its data interval start.

        Any instant inside a year gives that year, so a logical date works too.

        :raises ValueError: if the instant is outside the survey's ``years``.
        """
        self.validate()
        instant = _instant(data_interval_start, "data_interval_start")
        year = _whole_years(self.survey_start, instant) + 1
        if not 1 <= year <= self.years:
            end = self.survey_start.add(years=self.years)
            raise ValueError(
                f"{instant.isoformat()} is outside the survey ({self.survey_start.isoformat()} to "
                f"{end.isoformat()}, {self.years} years)"
            )
        return year

    @property
    def _step(self) -> timedelta:
        return ALL_AT_ONCE_STEP if self.cadence is None else self.cadence

    def _year_index(self, instant: DateTime) -> int:
        """Return the survey year containing ``instant``, unbounded (0 or less before the survey)."""
        return _whole_years(self.survey_start, instant) + 1

    def _first_year_from(self, earliest: DateTime) -> int:
        """Return the first year whose interval starts at or after ``earliest``."""
        if earliest <= self.survey_start:
            return 1
        year = self._year_index(earliest)
        return year if self.survey_start.add(years=year - 1) == earliest else year + 1

    def _latest_due_year(self, now: DateTime) -> int:
        """Return the last year due at ``now`` (0 if none is)."""
        if now < self.real_start:
            return 0
        return min(self.years, _exact(now - self.real_start) // self._step + 1)

    # --- Airflow's timetable protocol --------------------------------------------------------------

    @property
    def summary(self) -> str:
        """One line for the UI: ``Survey years 1–10 from 2022-10-01, one per 7 days``."""
        return self._summary

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        restriction: TimeRestriction,
    ) -> DagRunInfo | None:
        """Return the next survey year's run, or ``None`` after the last year.

        ``restriction.earliest`` / ``latest`` (the DAG's start and end dates) bound the years'
        interval starts; without ``restriction.catchup``, years already due are skipped but the
        latest.
        """
        self.validate()
        year = 1
        if last_automated_data_interval is not None:
            year = max(1, self._year_index(pendulum.instance(last_automated_data_interval.start)) + 1)
        if restriction.earliest is not None:
            year = max(year, self._first_year_from(pendulum.instance(restriction.earliest)))
        if not restriction.catchup:
            year = max(year, self._latest_due_year(pendulum.now("UTC")))
        if year > self.years:
            return None
        interval = self.year_interval(year)
        if restriction.latest is not None and interval.start > restriction.latest:
            return None
        return DagRunInfo(run_after=self.due_at(year), data_interval=interval)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        """Return the interval of the survey year that ``run_after`` falls in.

        The UI, the REST API and ``airflow dags test`` pass a triggered run's logical date.
        Before the survey: year 1; after it: the last year.
        """
        self.validate()
        year = min(max(self._year_index(pendulum.instance(run_after)), 1), self.years)
        return self.year_interval(year)

    def serialize(self) -> dict[str, Any]:
        """Return the JSON-able form stored with the serialized DAG (see :meth:`deserialize`)."""
        self.validate()
        return {
            "survey_start": self.survey_start.isoformat(),
            "years": self.years,
            "cadence_seconds": None if self.cadence is None else self.cadence.total_seconds(),
            "real_start": None if self._real_start_given is None else self._real_start_given.isoformat(),
        }

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> SurveyYearTimetable:
        """Rebuild a timetable from :meth:`serialize`'s output."""
        seconds = data.get("cadence_seconds")
        return cls(
            survey_start=data["survey_start"],
            years=data["years"],
            cadence=None if seconds is None else timedelta(seconds=seconds),
            real_start=data.get("real_start"),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SurveyYearTimetable):
            return NotImplemented
        return (self.survey_start, self.years, self.cadence, self._real_start_given, self._problems) == (
            other.survey_start,
            other.years,
            other.cadence,
            other._real_start_given,
            other._problems,
        )

    def __hash__(self) -> int:
        return hash((self.survey_start, self.years, self.cadence, self._real_start_given))

    def __repr__(self) -> str:
        return f"<SurveyYearTimetable {self._summary}>"
