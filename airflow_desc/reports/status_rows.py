"""The DC1 status table as plain rows, and its text, CSV and JSON, without pandas.

:func:`~airflow_desc.reports.status.status_table` builds its DataFrame from :func:`status_rows`,
and its renderers lay text out with :func:`text_table`; ``airflow-desc status --no-live`` prints
the rows directly (:func:`csv_text`, :func:`json_text`), pandas' import being most of its
start-up. A test holds both ways of printing equal. See :mod:`airflow_desc.reports.status` for
what the columns count.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from airflow_desc.history.records import PROCESS_STATES

__all__ = [
    "STATE_COLUMNS",
    "TABLE_COLUMNS",
    "TOTALS",
    "TYPE_LABELS",
    "blank_repeats",
    "csv_text",
    "json_text",
    "plot_path",
    "row_keys",
    "status_rows",
    "status_text",
    "text_table",
    "type_label",
]

#: The state columns of the table, in the order of the DC1 slides.
STATE_COLUMNS: tuple[str, ...] = (
    "Waiting",
    "Ready",
    "Queued",
    "Submitted",
    "Running",
    "Success",
    "Failed",
    "Terminated",
    "Cancelling",
    "Cancelled",
    "Skipped",
)
#: The columns of the status table, exactly.
TABLE_COLUMNS: tuple[str, ...] = ("Task", "Version", "Process", "Type", *STATE_COLUMNS, "Total", "Links")
#: How process types are shown.
TYPE_LABELS: Mapping[str, str] = MappingProxyType({"batch": "Batch", "script": "Script"})
#: The ``Type`` of the last row, which sums every count column.
TOTALS = "Totals"

RowKey = tuple[str, str, str, str]  # task, version, process, process_type
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_COLUMN_OF_STATE = dict(zip(PROCESS_STATES, range(len(STATE_COLUMNS)), strict=True))


def plot_path(process: str) -> str:
    """Return the relative path of a process's "Plot" link: ``plots/<process>.png``.

    A name with characters other than letters, digits, ``.``, ``_`` and ``-`` has them replaced
    and a short hash of the real name appended, so that the path is safe and still unique.

    :param process: the process name.
    """
    name = str(process)
    safe = _SAFE_NAME.sub("_", name)
    if safe != name or safe.startswith(".") or not safe:
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f"plots/{safe}.png"


def type_label(process_type: str) -> str:
    """Return how a process type is shown (:data:`TYPE_LABELS`, else title case)."""
    return TYPE_LABELS.get(process_type, process_type.title())


def row_keys(keys: Iterable[RowKey], order: Sequence[tuple[str, str]] | None) -> list[RowKey]:
    """Rows in ``order`` first (a listed process without counts gets a row of zeros), then first-seen.

    :param keys: ``(task, version, process, process_type)`` of each count, repeats allowed.
    :param order: ``(task, process)`` pairs, or None: first-seen order.
    """
    seen: list[RowKey] = list(dict.fromkeys(keys))
    if order is None:
        return seen
    by_name: dict[tuple[str, str], list[RowKey]] = {}
    for key in seen:
        by_name.setdefault((key[0], key[2]), []).append(key)
    rows: list[RowKey] = []
    for task, process in dict.fromkeys((str(t), str(p)) for t, p in order):
        rows.extend(by_name.pop((task, process), [(task, "", process, "")]))
    rows.extend(key for key in seen if (key[0], key[2]) in by_name)
    return rows


def status_rows(
    counts: Iterable[tuple[str, str, str, str, str, int]], order: Sequence[tuple[str, str]] | None = None
) -> list[list[Any]]:
    """Return the status table's rows, in :data:`TABLE_COLUMNS`, the Totals row last.

    :param counts: ``(task, version, process, process_type, state, count)``: text keys (the
        process type lower case), a state of :data:`~airflow_desc.history.records.PROCESS_STATES`.
    :param order: as for :func:`~airflow_desc.reports.status.status_table`.
    :raises ValueError: for a state the table has no column for.
    """
    sums: dict[RowKey, list[int]] = {}
    for task, version, process, process_type, state, count in counts:
        key = (task, version, process, process_type)
        if state not in _COLUMN_OF_STATE:
            raise ValueError(f"counts: unknown state {state!r}; states are {', '.join(PROCESS_STATES)}")
        sums.setdefault(key, [0] * len(STATE_COLUMNS))[_COLUMN_OF_STATE[state]] += int(count)
    rows: list[list[Any]] = []
    for key in row_keys(sums, order):
        numbers = sums.get(key, [0] * len(STATE_COLUMNS))
        rows.append([key[0], key[1], key[2], type_label(key[3]), *numbers, sum(numbers), "Plot"])
    totals = [sum(row[i] for row in rows) for i in range(4, 4 + len(STATE_COLUMNS) + 1)]
    rows.append(["", "", "", TOTALS, *totals, ""])
    return rows


def blank_repeats(names: Sequence[str], cells: list[list[str]], columns: Iterable[str]) -> list[list[str]]:
    """Blank a run of equal Task (and Version under it), shown once as the DC1 slides do; in place.

    :param names: the column names.
    :param cells: the rows' cells as text.
    :param columns: the columns to blank, outermost first (e.g. ``("Task", "Version")``).
    """
    blanked = [list(names).index(c) for c in columns if c in names]
    if not blanked:
        return cells
    previous: list[str] | None = None
    for row in cells:
        current = [row[i] for i in blanked]
        if previous is not None and current[:1] == previous[:1] and current[0]:
            for i, j in enumerate(blanked):
                if current[: i + 1] == previous[: i + 1]:
                    row[j] = ""
        previous = current
    return cells


def text_table(names: Sequence[str], cells: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    """Lay a table out as aligned text: a header line, a rule, one line per row; numbers right.

    :param names: the column names.
    :param cells: the rows' cells as text.
    :param numeric: per column, whether it is right-aligned.
    """
    widths = [max([len(n), *(len(row[i]) for row in cells)]) for i, n in enumerate(names)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w) for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip() + "\n"

    out = [line(names), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "".join(out)


def status_text(rows: Sequence[Sequence[Any]]) -> str:
    """Render :func:`status_rows` as aligned text, as ``format_text`` renders the status table."""
    cells = blank_repeats(TABLE_COLUMNS, [[str(v) for v in row] for row in rows], ("Task", "Version"))
    numeric = [isinstance(v, int) for v in rows[-1]] if rows else [False] * len(TABLE_COLUMNS)
    return text_table(TABLE_COLUMNS, cells, numeric)


def csv_text(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Render rows of text and integers as CSV: a header line, one line per row, Unix line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(rows)
    return out.getvalue()


def json_text(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Render rows of plain values as a JSON list of records, one object per row, keyed by column."""
    records = [dict(zip(names, row, strict=True)) for row in rows]
    return json.dumps(records, ensure_ascii=False, default=str)
