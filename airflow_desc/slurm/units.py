"""Durations and memory sizes as SLURM prints and reads them.

``sacct`` prints durations as ``[DD-[HH:]]MM:SS`` and, for CPU fields only, with
milliseconds (``00:02.352``); see https://slurm.schedmd.com/sacct.html. Memory fields
carry a unit letter (``219756K``, ``214.50M``) unless ``--noconvert`` is given, in which
case MaxRSS is plain bytes while ReqMem keeps its ``M``. Before slurm 21.08, ReqMem
ended with ``n`` (per node) or ``c`` (per CPU). SLURM's K, M, G, T, P are powers of 1024.

:func:`parse_duration` is the one duration reader of airflow-desc: SLURM's clock forms,
sbatch's bare minutes and "7 days"-style terms are forms of it that a caller turns on;
:func:`walltime_seconds` is its front end for ``--time``-like walltimes.
"""

from __future__ import annotations

import math
import re
from typing import Literal

__all__ = [
    "WALLTIME_FORMS",
    "DurationForm",
    "MemoryScope",
    "format_memory_mb",
    "format_walltime",
    "parse_duration",
    "parse_memory",
    "parse_req_mem",
    "walltime_seconds",
]

#: Whether a ReqMem value is per node or per CPU (``n`` / ``c`` suffix), when SLURM says.
MemoryScope = Literal["node", "cpu"]

# Values SLURM prints where a duration is not set or not meaningful.
_NO_DURATION = frozenset({"", "UNLIMITED", "INVALID", "PARTITION_LIMIT", "NONE", "NOT_SET", "N/A"})
_DURATION_RE = re.compile(
    r"^(?:(?P<days>\d+)-)?(?P<clock>\d+(?::\d+){0,2})(?:\.(?P<frac>\d+))?$",
)
_MEMORY_RE = re.compile(r"^(?P<num>\d+(?:\.\d+)?)(?P<unit>[KMGTP]?)(?P<scope>[nc]?)$", re.IGNORECASE)
_UNIT_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_MIB = 1024 * 1024


#: How a duration may be written: ``clock``, SLURM's ``[D-]HH:MM:SS`` family; ``minutes``, a
#: bare whole number of minutes (sbatch's ``--time=90``); ``terms``, number-unit terms such as
#: ``7 days``, ``12h`` or ``1 day 6 hours``.
DurationForm = Literal["clock", "minutes", "terms"]
#: The walltime forms :func:`walltime_seconds` reads, for messages.
WALLTIME_FORMS = "D-HH:MM:SS, HH:MM:SS, MM:SS or whole minutes"

_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 7 * 86400),
}
# Refused by name: a month or a year is no fixed number of seconds.
_CALENDAR_UNITS = frozenset({"mo", "month", "months", "y", "yr", "yrs", "year", "years"})
_TERM_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]+)")


def parse_duration(
    text: str, *, forms: tuple[DurationForm, ...] = ("clock",), hint: str | None = None
) -> float | None:
    """Read a duration into seconds.

    The ``clock`` form understands the output formats of ``sacct`` and ``squeue``:
    ``1-02:03:04``, ``02:03:04``, ``03:04``, ``1:12``, ``00:02.352`` (TotalCPU), and, as
    SLURM's own input does, ``D-HH`` and ``D-HH:MM`` after a day count. A bare number is
    refused unless ``minutes`` is among the forms: SLURM would read it as minutes while
    ``ElapsedRaw`` prints seconds. The ``terms`` form reads ``7 days``, ``1 week``, ``12h``,
    ``1 day, 6 hours`` (units s, m(in), h(our), d(ay), w(eek), singular or plural); months
    and years are refused, having no fixed length.

    :param text: the duration as written or printed.
    :param forms: the forms accepted (see :data:`DurationForm`); default: SLURM's clock only.
    :param hint: what to do, appended to the message of a :class:`ValueError` as ``; <hint>``.
    :return: seconds, or ``None`` (``clock`` form) for an empty field, ``UNLIMITED``,
        ``INVALID``, ``Partition_Limit`` and the like.
    :raises ValueError: if the text is none of the forms.
    """
    value = text.strip()
    try:
        if "minutes" in forms and value.isdigit():
            return float(int(value) * 60)
        if "clock" in forms and (value.upper() in _NO_DURATION or _DURATION_RE.match(value)):
            return _clock_seconds(value, text)
        if "terms" in forms:
            return _term_seconds(value, text)
        raise ValueError(
            f"not a SLURM duration: {text!r}" if "clock" in forms else f"{text!r} is not a duration"
        )
    except _Advised:
        raise
    except ValueError as exc:
        if hint is None:
            raise
        raise ValueError(f"{exc}; {hint}") from None


class _Advised(ValueError):
    """A duration error whose message already says what to do: no hint is added."""


def _clock_seconds(value: str, text: str) -> float | None:
    if value.upper() in _NO_DURATION:
        return None
    match = _DURATION_RE.match(value)
    assert match is not None  # checked by parse_duration
    days = int(match.group("days") or 0)
    parts = [int(p) for p in match.group("clock").split(":")]
    if match.group("days") is not None:
        # After "D-" SLURM reads HH, HH:MM or HH:MM:SS.
        parts = parts + [0] * (3 - len(parts))
        hours, minutes, seconds = parts
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, (minutes, seconds) = 0, parts
    else:
        raise ValueError(f"not a SLURM duration (a bare number is ambiguous): {text!r}")
    if minutes >= 60 or seconds >= 60:
        raise ValueError(f"not a SLURM duration (minutes or seconds >= 60): {text!r}")
    frac = match.group("frac")
    fraction = float(f"0.{frac}") if frac else 0.0
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds) + fraction


def _term_seconds(value: str, text: str) -> float:
    terms = _TERM_RE.findall(value)
    # Whatever is not a term may only be the commas between terms.
    if not terms or _TERM_RE.sub("", value).replace(",", "").strip():
        raise ValueError(f"{text!r} is not a duration")
    seconds = 0.0
    for number, unit in terms:
        unit = unit.lower()
        if unit in _CALENDAR_UNITS:
            raise _Advised(
                f"{text!r} is in {unit}, which have no fixed length; "
                "give wall-clock weeks, days, hours, minutes or seconds (e.g. '52 weeks')"
            )
        if unit not in _UNIT_SECONDS:
            raise ValueError(f"{text!r}: unknown unit {unit!r}")
        seconds += float(number) * _UNIT_SECONDS[unit]
    return seconds


def walltime_seconds(value: str | int) -> int:
    """Read a walltime as SLURM's ``--time`` does, into whole seconds.

    :param value: ``"D-HH:MM:SS"``, ``"D-HH"``, ``"HH:MM:SS"``, ``"MM:SS"``, or minutes
        (an int, or a string of digits).
    :return: seconds, always positive.
    :raises ValueError: for anything else, ``UNLIMITED``, fractions of a second and zero.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a walltime (text, or whole minutes), got {value!r}")
    text = str(value).strip()
    try:
        seconds = parse_duration(text, forms=("clock", "minutes"))
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a walltime") from None
    if seconds is None:
        raise ValueError(f"{text!r} is not a finite walltime")
    if seconds != int(seconds):
        raise ValueError(f"{text!r} has fractions of a second")
    if seconds <= 0:
        raise ValueError(f"walltime must be positive, got {text!r}")
    return int(seconds)


def format_walltime(seconds: float) -> str:
    """Format a time limit for ``sbatch --time`` as ``D-HH:MM:SS``.

    Fractions of a second round up, so a limit is never shorter than asked for.

    :param seconds: the limit, in seconds; must be positive (``--time=0`` means no limit).
    :return: e.g. ``"1-02:03:04"``.
    :raises ValueError: for a non-positive or non-finite value.
    """
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a time limit must be a positive number of seconds, got {seconds!r}")
    total = math.ceil(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def parse_req_mem(text: str) -> tuple[int | None, MemoryScope | None]:
    """Read a memory field, keeping the per-node / per-CPU suffix of old ReqMem values.

    :param text: e.g. ``"225173504"``, ``"219756K"``, ``"214.50M"``, ``"4000Mc"``, ``"2Gn"``.
    :return: ``(bytes, scope)``; bytes is ``None`` for an empty field or for the garbage
        that slurm 22.05 prints for a pending job (``16?``); scope is ``None`` unless the
        value ended in ``n`` or ``c``.
    :raises ValueError: if the text is not a memory size.
    """
    value = text.strip()
    if not value or value.endswith("?"):
        return None, None
    match = _MEMORY_RE.match(value)
    if match is None:
        raise ValueError(f"not a SLURM memory size: {text!r}")
    number = float(match.group("num"))
    unit = match.group("unit").upper()
    scope_letter = match.group("scope").lower()
    scope: MemoryScope | None = "node" if scope_letter == "n" else "cpu" if scope_letter == "c" else None
    # A bare number with a scope letter was printed in MB (ReqMem's base unit).
    if not unit and scope is not None:
        unit = "M"
    return round(number * 1024 ** _UNIT_POWER[unit]), scope


def parse_memory(text: str) -> int | None:
    """Read a memory field into bytes.

    A bare number is bytes (what ``sacct --noconvert`` prints for MaxRSS).

    :param text: e.g. ``"219756K"``, ``"214.50M"``, ``"4G"``, ``"225173504"``, ``"4000Mc"``.
    :return: bytes, or ``None`` for an empty field or pending-job garbage such as ``16?``.
    :raises ValueError: if the text is not a memory size.
    """
    return parse_req_mem(text)[0]


def format_memory_mb(num_bytes: int | float) -> str:
    """Format a size in SLURM megabytes (MiB), for messages: ``"414 MB"``.

    :param num_bytes: the size in bytes.
    :return: the size rounded to whole MB, or to a tenth below 10 MB.
    """
    mb = num_bytes / _MIB
    if mb < 10:
        return f"{mb:.1f} MB"
    return f"{round(mb)} MB"
