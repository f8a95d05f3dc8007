"""What the history commands read: their selection, the history's engine, the status counts."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["emit", "history_engine", "selection_of", "table_counts"]


def _when(text: str | None) -> Any:
    from datetime import datetime

    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None


def emit(table: Any, fmt: str) -> None:
    """Print a table in ``fmt`` (table, csv or json)."""
    from airflow_desc.reports.status import format_text, to_csv, to_json

    print(
        {"table": format_text, "csv": to_csv, "json": to_json}[fmt](table), end="" if fmt != "table" else "\n"
    )


def selection_of(args: argparse.Namespace) -> Any:
    """Return the ``HistoryFilter`` of a command's selection arguments (:func:`_history_filters`).

    The status table's commands have no ``--process`` ...: what a command lacks does not narrow.
    """
    from airflow_desc.history import HistoryFilter

    def given(name: str) -> Any:
        return getattr(args, name, None)

    return HistoryFilter(
        workflow=args.workflow, variant=args.variant, version=args.workflow_version, run_id=args.run,
        process=given("process"),
        stream_glob=given("stream"), state=given("state"), reason=given("reason_class"),
        cluster=given("cluster"), node=given("node"), since=_when(args.since), until=_when(args.until),
    )  # fmt: skip


def history_engine(args: argparse.Namespace) -> Any:
    """Return the history's engine for reading; a database without the history's tables is an error."""
    from airflow_desc.history import open_history
    from airflow_desc.status.current import readable_history

    return readable_history(open_history(args.db))


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what is written to stdout meanwhile to stderr, at the file-descriptor level.

    Reading live states sets Airflow up (its ORM, its logging) and migrates nothing, but Airflow's
    logging writes what it logs meanwhile to the stdout it was configured with, which would spoil
    ``status --format json``. A CLI is one thread; the api-server's page never does this.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def table_counts(args: argparse.Namespace, selection: Any) -> Any:
    """Return the history's counts merged with the live ones (``CurrentCounts``): status, report."""
    from airflow_desc.history import open_history
    from airflow_desc.status.current import current_counts

    with _stdout_to_stderr():  # Airflow logs to stdout: not into --format json
        current = current_counts(open_history(args.db), selection, live=not args.no_live)
    if current.warning:
        print(f"airflow-desc: warning: {current.warning} (--no-live hides this warning)", file=sys.stderr)
    for note in current.notes:
        print(f"airflow-desc: note: {note}", file=sys.stderr)
    return current
