"""The rows the writer COPYs into PostgreSQL (copy_rows.py): every value as PostgreSQL's text format reads it.

:func:`read_copy_line` reads a line back as PostgreSQL does (``COPY ... FROM STDIN``, text format:
tab-separated, ``\\N`` for NULL, backslash escapes); the same rows through a real PostgreSQL, next to
the multi-row upsert, are in ``tests/integration/test_history_copy.py``.
"""

from __future__ import annotations

import enum
import json
import random
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_desc.history.copy_rows import ATTEMPT_COLUMNS, CopyUpsert, copy_field, copy_line, copy_text
from airflow_desc.history.schema import process_instances

# What a message or a log tail may hold: the format's separators and escapes, quotes, non-ASCII.
HOSTILE = ["\t", "\n", "\r", "\\", "\\N", "\\t", "'", '"', "\\.", ",", " ", "é", "日本", "\x01", "\x7f", "a"]

_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}


def read_copy_line(line: str) -> list[str | None]:
    """Split one line of COPY's text format into its fields, as PostgreSQL reads it."""
    assert line.endswith("\n") and "\n" not in line[:-1] and "\r" not in line
    fields: list[str | None] = []
    for raw in line[:-1].split("\t"):
        if raw == "\\N":
            fields.append(None)
            continue
        assert not re.search(r"(?<!\\)(\\\\)*\\$", raw), f"a field ends in a lone backslash: {raw!r}"
        fields.append(re.sub(r"\\(.)", lambda m: _UNESCAPES.get(m.group(1), m.group(1)), raw))
    return fields


def hostile_text(rng: random.Random) -> str:
    return "".join(rng.choice(HOSTILE) for _ in range(rng.randint(0, 12)))


def test_texts_come_back_as_they_were_whatever_they_hold() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        values = [hostile_text(rng) for _ in range(5)] + [None, ""]
        rng.shuffle(values)
        assert read_copy_line(copy_line(values)) == values


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        (True, "t"),
        (False, "f"),
        (0, "0"),
        (-7, "-7"),
        (2**62, str(2**62)),
        (0.1, "0.1"),
        (1e300, "1e+300"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        (datetime(2018, 1, 8, 8, 0), "2018-01-08 08:00:00"),
        (datetime(2018, 1, 8, 8, 0, 0, 5), "2018-01-08 08:00:00.000005"),
        # Aware: in UTC, as HistoryDateTime stores it (PostgreSQL's timestamp would drop the offset).
        (datetime(2018, 1, 8, 10, 0, tzinfo=timezone(timedelta(hours=2))), "2018-01-08 08:00:00"),
        (date(2018, 1, 8), "2018-01-08"),
        ({"a": "tab\there", "b": [1, None]}, '{"a": "tab\\there", "b": [1, null]}'),
        ([], "[]"),
        ("", ""),
    ],
)
def test_each_type_as_postgresql_reads_it(value: Any, text: str | None) -> None:
    assert read_copy_line(copy_field(value) + "\n") == [text]
    assert read_copy_line(copy_line([value, "x"])) == [text, "x"]  # the line's fast way, the same


def test_a_nan_and_subclasses_take_the_slow_way_to_the_same_text() -> None:
    assert copy_field(float("nan")) == "nan"

    class Name(str):
        pass

    class Count(int):
        pass

    class Level(enum.IntEnum):
        HIGH = 2

    class Seconds(float):
        def __repr__(self) -> str:
            return f"Seconds({float(self)})"

    assert copy_line([Name("a\tb"), Count(3), "c"]) == "a\\tb\t3\tc\n"
    assert copy_line([Level.HIGH, Seconds(1.5)]) == "2\t1.5\n"  # the number, not the subclass's repr
    assert copy_field(("x", 1)) == '["x", 1]'


def test_json_documents_come_back_as_documents() -> None:
    rng = random.Random(5)
    for _ in range(300):
        doc = {hostile_text(rng): [hostile_text(rng), rng.random(), None, {"k": hostile_text(rng)}]}
        (text,) = read_copy_line(copy_line([doc]))
        assert text is not None and json.loads(text) == doc


def test_rows_are_lines_in_the_columns_order() -> None:
    rows = [{"a": 1, "b": "x\ny", "c": None}, {"a": 2, "b": "", "c": True}]
    assert copy_text(rows, ["c", "a", "b"]) == "\\N\t1\tx\\ny\nt\t2\t\n"
    assert copy_text([], ["a"]) == ""
    assert copy_text([{"a": "xy"}, {"a": None}], ["a"]) == "xy\n\\N\n"  # one column: its values, whole


def test_the_attempts_upsert_sets_every_column_but_its_key() -> None:
    key = ("run_ref", "stream_ref", "task_id", "map_index", "process", "try_number", "resubmit")
    create, copy, upsert = CopyUpsert(
        "process_instances", ATTEMPT_COLUMNS, key, True, ("id", *key)
    ).statements
    assert set(ATTEMPT_COLUMNS) == {c.name for c in process_instances.columns} - {"id"}
    assert "CREATE TEMPORARY TABLE IF NOT EXISTS desc_copy_process_instances AS SELECT" in create
    assert copy.startswith("COPY desc_copy_process_instances (") and copy.endswith(") FROM STDIN")
    assert "DELETE FROM desc_copy_process_instances RETURNING *" in upsert  # emptied for the next part
    updated = re.findall(r'"(\w+)" = EXCLUDED\."\1"', upsert)
    assert set(updated) == set(ATTEMPT_COLUMNS) - set(key)
    assert upsert.endswith('RETURNING "id", "run_ref", "stream_ref", "task_id", "map_index", "process", '
                           '"try_number", "resubmit"')  # fmt: skip
    streams = CopyUpsert("streams", ("run_ref", "path", "parent_ref"), ("run_ref", "path"), False, ("id",))
    assert 'ON CONFLICT ("run_ref", "path") DO NOTHING RETURNING "id"' in streams.statements[2]
