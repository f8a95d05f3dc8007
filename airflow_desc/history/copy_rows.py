"""A batch of attempts upserted through PostgreSQL's ``COPY``: the writer's path for big batches.

The multi-row ``INSERT ... VALUES ... ON CONFLICT`` of SQLAlchemy costs, for a batch of thousands
of attempts, a client-side rendering of every parameter and a server-side parse of a statement of
tens of thousands of literals, ~70 % of a flusher's batch. Here the rows go instead as one
``COPY ... FROM STDIN`` (PostgreSQL's text format) into a temporary table of the session, then one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE ... RETURNING`` moves them into ``process_instances``:
two round trips per 5,000 rows, the same rows as the upsert writes
(``tests/unit/history/test_copy_rows.py``, ``tests/integration/test_history_copy.py``).

Values are written as psycopg2 would bind them: NULL for None, ``t``/``f``, integers, floats
(``Infinity``, ``NaN``), naive timestamps (aware ones in UTC, as
:class:`~airflow_desc.history.schema.HistoryDateTime` stores them), JSON documents (``json.dumps``,
as SQLAlchemy serialises them), and every text escaped for the format (backslash, tab, newline,
carriage return). The caller has already dropped NUL characters, which PostgreSQL refuses in text.
"""

from __future__ import annotations

import functools
import io
import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

from airflow_desc.history.schema import process_instances

__all__ = ["ATTEMPT_COLUMNS", "COPY_CHUNK", "copy_attempts", "copy_field", "copy_line", "copy_text"]

#: The columns of an attempt's row the writer gives (all but the ``id`` the database assigns).
ATTEMPT_COLUMNS = tuple(c.name for c in process_instances.columns if c.name != "id")

# A temporary table per session, made on a connection's first big batch (and again after a rollback
# undid the transaction that made it); each part's upsert empties it.
_BATCH_TABLE = "desc_attempts_batch"
#: Rows a COPY and its upsert take at once (the multi-row upsert takes 1,000 a statement).
COPY_CHUNK = 5000


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


@functools.cache
def _statements(key: tuple[str, ...]) -> tuple[str, str, str]:
    columns = _quoted(ATTEMPT_COLUMNS)
    create = (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_BATCH_TABLE} AS "
        f"SELECT {columns} FROM process_instances WITH NO DATA"
    )
    copy = f"COPY {_BATCH_TABLE} ({columns}) FROM STDIN"
    updated = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in ATTEMPT_COLUMNS if n not in key)
    # Moved, not copied: the statement empties the table for the next part.
    upsert = (
        f"WITH part AS (DELETE FROM {_BATCH_TABLE} RETURNING *) "
        f"INSERT INTO process_instances ({columns}) SELECT {columns} FROM part "
        f"ON CONFLICT ({_quoted(key)}) DO UPDATE SET {updated} RETURNING id, {_quoted(key)}"
    )
    return create, copy, upsert


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value: str) -> str:
    # Most values hold nothing to escape: four scans in C beat a translate of each.
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_ESCAPES)
    return value


def _timestamp(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat(" ")


def _json(value: Any) -> str:
    return _text(json.dumps(value))


# By exact type (the common ones; a subclass takes copy_field's slower way). repr(float) is
# exact, and PostgreSQL reads its "inf", "-inf" and "nan".
_FORMATS: dict[type, Callable[[Any], str]] = {
    str: _text,
    int: str,
    float: repr,
    bool: lambda value: "t" if value else "f",
    datetime: _timestamp,
    type(None): lambda value: "\\N",
    dict: _json,
    list: _json,
}


def copy_field(value: Any) -> str:
    """Return ``value`` as one field of PostgreSQL's COPY text format.

    :param value: None, a str, bool, int, float, datetime / date, or a JSON document (dict, list).
    """
    exact = _FORMATS.get(type(value))
    if exact is not None:
        return exact(value)
    if value is None:
        return "\\N"
    for kind in (str, bool, int, float, datetime):  # bool before int: it is one
        if isinstance(value, kind):
            return _FORMATS[kind](value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping | list | tuple):
        return _json(value if not isinstance(value, Mapping) else dict(value))
    return _text(str(value))


def copy_line(values: Sequence[Any]) -> str:
    """Return one row of ``COPY ... FROM STDIN``, its newline included.

    :param values: the row's values, in the COPY statement's column order.
    """
    # Most rows hold no text to escape: one probe of their texts, and they pass as they are.
    probe = "".join([v for v in values if isinstance(v, str)])
    if "\\" in probe or "\t" in probe or "\n" in probe or "\r" in probe:
        return "\t".join([copy_field(v) for v in values]) + "\n"
    return "\t".join([v if type(v) is str else _FORMATS.get(type(v), copy_field)(v) for v in values]) + "\n"


def copy_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Return ``rows`` as the data of ``COPY ... (columns) FROM STDIN``: one line per row.

    :param rows: the rows, each with every one of ``columns``.
    :param columns: the columns, in the COPY statement's order.
    """
    values = operator.itemgetter(*columns)
    return "".join([copy_line(values(row)) for row in rows])


def copy_attempts(
    dbapi_connection: Any, rows: Sequence[Mapping[str, Any]], key: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Upsert ``rows`` into ``process_instances`` through COPY; return ``(id, *key)`` of each.

    In parts of :data:`COPY_CHUNK` rows, each part's statement well within the history's
    ``statement_timeout`` and reply deadline on a loaded server.

    :param dbapi_connection: the psycopg2 connection of the writer's transaction.
    :param rows: the attempts, one per ``key`` (no two rows may share one), with every column of
        :data:`ATTEMPT_COLUMNS`.
    :param key: the columns of the attempts' unique constraint.
    """
    create, copy, upsert = _statements(tuple(key))
    done: list[tuple[Any, ...]] = []
    with dbapi_connection.cursor() as cursor:
        cursor.execute(create)
        for start in range(0, len(rows), COPY_CHUNK):
            part = rows[start : start + COPY_CHUNK]
            cursor.copy_expert(copy, io.StringIO(copy_text(part, ATTEMPT_COLUMNS)))
            cursor.execute(upsert)
            done.extend(tuple(row) for row in cursor.fetchall())
    return done
