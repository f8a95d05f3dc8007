from __future__ import annotations

import math

import pytest

from airflow_desc.slurm.units import (
    format_memory_mb,
    format_walltime,
    parse_duration,
    parse_memory,
    parse_req_mem,
    walltime_seconds,
)

K, M, G = 1024, 1024**2, 1024**3


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1-02:03:04", 93784.0),
        ("02:03:04", 7384.0),
        ("03:04", 184.0),
        ("1:12", 72.0),
        ("0:05", 5.0),
        ("00:02.352", 2.352),
        ("00:00:07.949", 7.949),
        ("01:00:00", 3600.0),
        ("10-00:00:00", 864000.0),
        ("2-04:06:08", 187568.0),
        ("1-02", 93600.0),  # SLURM input: days-hours
        ("1-02:30", 95400.0),  # days-hours:minutes
        ("  00:00:03 ", 3.0),
        ("00:00:00", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "  ", "UNLIMITED", "INVALID", "Partition_Limit", "NONE", "NOT_SET"])
def test_parse_duration_no_value(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(
    "text", ["abc", "60", "1:2:3:4", "00:61", "00:60:00", "-1:00", "1-", "1.5", "00:02,352"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7 days", 604800.0),
        ("1 day, 6 hours", 108000.0),
        ("12h", 43200.0),
        (".5 min", 30.0),
        ("2w", 1209600.0),
    ],
)
def test_parse_duration_terms(text: str, seconds: float) -> None:
    assert parse_duration(text, forms=("terms",)) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("weekly", "'weekly' is not a duration; say how long"),
        ("1:00:00", "'1:00:00' is not a duration; say how long"),  # clock text is another form
        ("7 parsecs", "'7 parsecs': unknown unit 'parsecs'; say how long"),
        # Says what to do itself: the hint is not added.
        (
            "1 year",
            "'1 year' is in year, which have no fixed length; give wall-clock weeks, days, hours, "
            "minutes or seconds (e.g. '52 weeks')",
        ),
    ],
)
def test_parse_duration_terms_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="duration|unit|length") as caught:
        parse_duration(text, forms=("terms",), hint="say how long")
    assert str(caught.value) == message


def test_parse_duration_minutes_form() -> None:
    assert parse_duration("90", forms=("clock", "minutes")) == 5400.0
    assert parse_duration("1:30", forms=("clock", "minutes")) == 90.0
    with pytest.raises(ValueError, match="bare number"):
        parse_duration("90")


@pytest.mark.parametrize(
    ("value", "seconds"), [("1-00:00:00", 86400), ("2-12", 216000), ("90", 5400), (90, 5400)]
)
def test_walltime_seconds(value: str | int, seconds: int) -> None:
    assert walltime_seconds(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2h", "cannot read '2h' as a walltime"),
        ("UNLIMITED", "'UNLIMITED' is not a finite walltime"),
        ("00:00:01.5", "'00:00:01.5' has fractions of a second"),
        (0, "walltime must be positive, got '0'"),
        (1.5, "expected a walltime (text, or whole minutes), got 1.5"),
    ],
)
def test_walltime_seconds_refuses(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="walltime|fractions") as caught:
        walltime_seconds(value)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "0-00:00:01"),
        (59.2, "0-00:01:00"),
        (90, "0-00:01:30"),
        (3600, "0-01:00:00"),
        (86399, "0-23:59:59"),
        (86400, "1-00:00:00"),
        (93784, "1-02:03:04"),
        (30 * 86400, "30-00:00:00"),
    ],
)
def test_format_walltime(seconds: float, text: str) -> None:
    assert format_walltime(seconds) == text
    assert parse_duration(text) == math.ceil(seconds)


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
def test_format_walltime_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        format_walltime(seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("219756K", 219756 * K),
        ("214.50M", round(214.5 * M)),
        ("4G", 4 * G),
        ("400M", 400 * M),
        ("225173504", 225173504),
        ("0", 0),
        ("4000Mc", 4000 * M),
        ("2Gn", 2 * G),
        ("1T", 1024 * G),
        ("100m", 100 * M),
        (" 984K ", 984 * K),
        ("16?", None),
        ("0?", None),
        ("", None),
    ],
)
def test_parse_memory(text: str, expected: int | None) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    ("text", "scope"),
    [("4000Mc", "cpu"), ("2Gn", "node"), ("400M", None), ("225173504", None), ("100c", "cpu"), ("16?", None)],
)
def test_parse_req_mem_scope(text: str, scope: str | None) -> None:
    assert parse_req_mem(text)[1] == scope


def test_parse_req_mem_bare_number_with_scope_is_megabytes() -> None:
    # pre-21.08 ReqMem: the number is in MB when the unit letter is missing
    assert parse_req_mem("100c") == (100 * M, "cpu")


@pytest.mark.parametrize("text", ["abc", "4X", "4GB", "-1M", "1.2.3M", "K"])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="memory"):
        parse_memory(text)


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [(424460 * K, "415 MB"), (100 * M, "100 MB"), (1236992, "1.2 MB"), (20 * G, "20480 MB"), (0, "0.0 MB")],
)
def test_format_memory_mb(num_bytes: int, text: str) -> None:
    assert format_memory_mb(num_bytes) == text
