"""``status``, ``report``, ``history`` and ``logs``: what the history holds (and runs in progress)."""

from __future__ import annotations

import argparse
import sys

from airflow_desc.cli.selection import emit, history_engine, selection_of, table_counts

__all__ = ["cmd_history", "cmd_logs", "cmd_report", "cmd_status"]

_NOTHING = "no process instance recorded or in progress for this selection"


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status table (without pandas or SQLAlchemy when it can, live merge or not)."""
    if not args.attempts and _status_without_pandas(args):
        return 0
    from airflow_desc.reports.status import attempts_table, status_table

    current = table_counts(args, selection_of(args))
    if current.empty:  # said to a person; csv and json still print their (all-zero) tables
        print(_NOTHING, file=sys.stderr)
        if args.format == "table":
            return 0
    table = status_table(current.counts, current.live, order=current.order)
    attempts = attempts_table(current.counts, order=current.order) if args.attempts else None
    if args.format == "json" and attempts is not None:  # one JSON document, not two
        import json

        from airflow_desc.reports.status import to_json

        print(json.dumps({"status": json.loads(to_json(table)), "attempts": json.loads(to_json(attempts))}))
        return 0
    emit(table, args.format)
    if attempts is not None:
        emit(attempts, args.format)
    return 0


def _status_without_pandas(args: argparse.Namespace) -> bool:
    """Print the history's status table read through the DBAPI, as :func:`cmd_status` would; False: it must.

    A tenth of a second of CPU instead of three quarters: neither SQLAlchemy nor pandas is imported
    (:mod:`~airflow_desc.history.status_read`, :mod:`~airflow_desc.reports.status_rows`; with the
    live merge :mod:`~airflow_desc.status.current_rows`).
    """
    from airflow_desc.reports.status_rows import TABLE_COLUMNS, csv_text, json_text, status_rows, status_text

    if args.no_live:
        from airflow_desc.history.status_read import summed_counts

        counts = summed_counts(args.db, selection_of(args))
        if counts is None:
            return False
        counted, order = [row[:6] for row in counts], None
    else:
        from airflow_desc.status.current_rows import current_rows

        current = current_rows(args.db, selection_of(args))
        if current is None:
            return False
        for note in current.notes:
            print(f"airflow-desc: note: {note}", file=sys.stderr)
        counted, order = [*current.counts, *current.live], current.order
    if not counted:
        print(_NOTHING, file=sys.stderr)
        if args.format == "table":
            return True
    rows = status_rows(counted, order)
    if args.format == "table":
        print(status_text(rows))
    else:
        print((csv_text if args.format == "csv" else json_text)(TABLE_COLUMNS, rows), end="")
    return True


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML report."""
    import pandas as pd

    from airflow_desc.history.queries import process_instances
    from airflow_desc.reports.html import write_report
    from airflow_desc.reports.status import status_table

    selection = selection_of(args)
    current = table_counts(args, selection)
    if current.empty:
        print("no process instance recorded or in progress for this selection: no report written")
        return 1
    try:
        instances = process_instances(history_engine(args), selection)
    except ValueError:  # in progress, nothing recorded yet: the table alone
        from airflow_desc.history.queries import PROCESS_INSTANCE_COLUMNS

        instances = pd.DataFrame(columns=list(PROCESS_INSTANCE_COLUMNS))
    table = status_table(current.counts, current.live, order=current.order)
    index = write_report(args.out, table, instances, title=args.title)
    print(f"wrote {index}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """List process instances, or write out the spool (``history flush``)."""
    from airflow_desc.history import default_spooling_recorder
    from airflow_desc.history.queries import process_instances

    if args.action == "flush":
        report = default_spooling_recorder().flush()
        print(f"flushed {report.flushed} spooled record(s) to the history")
        if report.rejected:
            print(
                f"{report.rejected} corrupt spool line(s) kept aside in {report.rejected_path}: "
                "fix or delete them"
            )
            return 1
        return 0
    frame = process_instances(
        history_engine(args), selection_of(args), latest_only=args.latest, limit=args.limit
    )
    columns = [c for c in args.columns.split(",") if c in frame.columns] if args.format == "table" else None
    shown = frame[columns] if columns else frame.drop(columns=[c for c in ("extra",) if c in frame.columns])
    if args.format == "json":
        print(shown.to_json(orient="records", date_format="iso"))
    elif args.format == "csv":
        print(shown.to_csv(index=False), end="")
    else:
        print(shown.to_string(index=False) if len(shown) else "no process instance matches")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """Print the log tails the history keeps of a process's instances (``--full``: whole logs)."""
    from airflow_desc.history import HistoryFilter
    from airflow_desc.logs import print_logs

    if args.try_number is not None and args.try_number < 1:
        raise ValueError(f"--try {args.try_number}: a try number is 1 or more")
    selection = HistoryFilter(
        workflow=args.workflow, run_id=args.run, process=args.process, stream_glob=args.stream
    )
    shown = print_logs(
        history_engine(args), selection, try_number=args.try_number, full=args.full, out=sys.stdout
    )
    if not shown:
        which = f"try {args.try_number} of " if args.try_number is not None else ""
        print(f"no {which}{args.process} instance matches", file=sys.stderr)
        return 1
    return 0
