"""Rows upserted through PostgreSQL's ``COPY``: the writer's path for big batches of attempts and streams.

The multi-row ``INSERT ... VALUES ... ON CONFLICT`` of SQLAlchemy costs, for a batch of thousands
of attempts, a client-side rendering of every parameter and a server-side parse of a statement of
tens of thousands of literals, ~70 % of a flusher's batch. Here the rows go instead as one
``COPY ... FROM STDIN`` (PostgreSQL's text format) into a temporary table of the session, then one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE ... RETURNING`` moves them into ``process_instances``
(:class:`CopyUpsert`; streams alike, ``DO NOTHING``): two round trips per 5,000 rows, the same rows
as the multi-row upsert writes
(``tests/unit/history/test_copy_rows.py``, ``tests/integration/test_history_copy.py``).

Rows the writer knows to be new (it has read what its batch's instances hold, under their runs'
locks) skip the temporary table, the conflict check and ``RETURNING``: :class:`CopyInsert` draws
their ids from the table's sequence first and COPYs them straight into the table. A conflict it did
not expect fails the COPY, and the caller takes the upsert instead (a savepoint undoes the part).

Values are written as psycopg2 would bind them: NULL for None, ``t``/``f``, integers, floats
(``repr``: exact, and ``inf``, ``nan`` as PostgreSQL reads them), naive timestamps (aware ones in UTC, as
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
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from airflow_desc.history.schema import process_instances

__all__ = [
    "ATTEMPT_COLUMNS",
    "COPY_CHUNK",
    "CopyInsert",
    "CopyUpsert",
    "copy_field",
    "copy_line",
    "copy_text",
]

#: The columns of an attempt's row the writer gives (all but the ``id`` the database assigns).
ATTEMPT_COLUMNS = tuple(c.name for c in process_instances.columns if c.name != "id")
#: Rows a COPY and its upsert take at once (the multi-row upsert takes 1,000 a statement).
COPY_CHUNK = 5000


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


@dataclass(frozen=True)
class CopyUpsert:
    """An upsert of rows of ``table`` through COPY: its statements, built once.

    A temporary table per session and target (``desc_copy_<table>``), made on a connection's first
    big batch (and again after a rollback undid the transaction that made it); each part's upsert
    moves its rows out of it.

    :param table: the target table.
    :param columns: the columns the rows give, in COPY's order.
    :param key: the unique columns of the conflict.
    :param update: on a conflict, set the other columns to the row's (else: do nothing).
    :param returning: the columns returned of each row inserted or updated.
    """

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    update: bool
    returning: tuple[str, ...]

    @functools.cached_property
    def statements(self) -> tuple[str, str, str]:
        """``CREATE TEMPORARY TABLE``, ``COPY`` and the upsert."""
        batch, columns = f"desc_copy_{self.table}", _quoted(self.columns)
        create = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {batch} AS SELECT {columns} FROM {self.table} WITH NO DATA"
        )
        copy = f"COPY {batch} ({columns}) FROM STDIN"
        updated = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in self.columns if n not in self.key)
        action = f"DO UPDATE SET {updated}" if self.update else "DO NOTHING"
        upsert = (
            f"WITH part AS (DELETE FROM {batch} RETURNING *) "
            f"INSERT INTO {self.table} ({columns}) SELECT {columns} FROM part "
            f"ON CONFLICT ({_quoted(self.key)}) {action} RETURNING {_quoted(self.returning)}"
        )
        return create, copy, upsert

    def __call__(self, dbapi_connection: Any, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Upsert ``rows``; return the :attr:`returning` columns of each row inserted or updated.

        In parts of :data:`COPY_CHUNK` rows, each part's statement well within the history's
        ``statement_timeout`` and reply deadline on a loaded server.

        :param dbapi_connection: the psycopg2 connection of the writer's transaction.
        :param rows: the rows, with every one of :attr:`columns`; no two with the same :attr:`key`.
        """
        create, copy, upsert = self.statements
        done: list[tuple[Any, ...]] = []
        with dbapi_connection.cursor() as cursor:
            cursor.execute(create)
            for start in range(0, len(rows), COPY_CHUNK):
                part = rows[start : start + COPY_CHUNK]
                cursor.copy_expert(copy, io.StringIO(copy_text(part, self.columns)))
                cursor.execute(upsert)
                done.extend(tuple(row) for row in cursor.fetchall())
        return done


@dataclass(frozen=True)
class CopyInsert:
    """A plain insert of new rows of ``table`` through COPY, their ids drawn from its sequence first.

    :param table: the target table, whose ``id`` is a serial column.
    :param columns: the columns the rows give besides ``id``, in COPY's order.
    """

    table: str
    columns: tuple[str, ...]

    @functools.cached_property
    def statements(self) -> tuple[str, str]:
        """The ids' ``SELECT nextval(...)`` (its parameter: how many) and the ``COPY``."""
        sequence = f"pg_get_serial_sequence('{self.table}', 'id')::regclass"
        ids = f"SELECT nextval(seq) FROM (SELECT {sequence} AS seq) s CROSS JOIN generate_series(1, %s)"
        return ids, f"COPY {self.table} (id, {_quoted(self.columns)}) FROM STDIN"

    def ids(self, dbapi_connection: Any, count: int) -> list[int]:
        """Return ``count`` new ids of the table (none is used by another session, ever)."""
        if not count:
            return []
        with dbapi_connection.cursor() as cursor:
            cursor.execute(self.statements[0], (count,))
            return [int(row[0]) for row in cursor.fetchall()]

    def __call__(self, dbapi_connection: Any, rows: Sequence[Mapping[str, Any]], ids: Sequence[int]) -> None:
        """Insert ``rows`` with ``ids`` (from :meth:`ids`), in parts of :data:`COPY_CHUNK` rows.

        :raises psycopg2.IntegrityError: when a row's key is taken already (nothing is written then
            if the caller rolls back to a savepoint taken before).
        """
        copy = self.statements[1]
        with dbapi_connection.cursor() as cursor:
            for start in range(0, len(rows), COPY_CHUNK):
                end = start + COPY_CHUNK
                text = copy_text(rows[start:end], self.columns, ids[start:end])
                cursor.copy_expert(copy, io.StringIO(text))


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


# By exact type (the common ones; a subclass takes copy_field's slower way). A float's repr is
# exact, and PostgreSQL reads its "inf", "-inf" and "nan"; the base classes' own repr, so that a
# subclass (an IntEnum, numpy's float64) is written as its number.
_FORMATS: dict[type, Callable[[Any], str]] = {
    str: _text,
    int: int.__repr__,
    float: float.__repr__,
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
    probe = "".join([v for v in values if type(v) is str])  # a subclass of str takes copy_field's way
    if "\\" in probe or "\t" in probe or "\n" in probe or "\r" in probe:
        return "\t".join([copy_field(v) for v in values]) + "\n"
    return "\t".join([v if type(v) is str else _FORMATS.get(type(v), copy_field)(v) for v in values]) + "\n"


def copy_text(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], ids: Iterable[int] | None = None
) -> str:
    """Return ``rows`` as the data of ``COPY ... (columns) FROM STDIN``: one line per row.

    :param rows: the rows, each with every one of ``columns``.
    :param columns: the columns, in the COPY statement's order.
    :param ids: if given, each row's id, written first (``COPY ... (id, columns)``).
    """
    if len(columns) == 1:  # itemgetter of one name returns the value, not a tuple
        one = columns[0]
        lines = [[row[one]] for row in rows]
    else:
        values = operator.itemgetter(*columns)
        lines = [values(row) for row in rows]
    if ids is not None:
        return "".join([copy_line((id_, *line)) for id_, line in zip(ids, lines, strict=True)])
    return "".join([copy_line(line) for line in lines])
