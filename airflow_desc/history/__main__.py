"""``python -m airflow_desc.history``: migrate the history database, flush the spool, print the status table.

::

    python -m airflow_desc.history upgrade [--db URL_OR_CONN_ID]
    python -m airflow_desc.history flush   [--db URL_OR_CONN_ID] [--spool PATH]
    python -m airflow_desc.history status  [--db URL_OR_CONN_ID] [--workflow NAME] [--run-id RUN]

Without ``--db``, the history configured for this installation (see :mod:`airflow_desc.history`).
``airflow-desc history flush`` does the same as ``flush`` here.
"""

from __future__ import annotations

import argparse
import logging
import sys

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history import HistoryFilter, SpoolingRecorder, default_spool_path, open_history


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    :param argv: the arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m airflow_desc.history", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("upgrade", "flush", "status"))
    parser.add_argument("--db", default=None, help="SQLAlchemy URL or Airflow connection id of the history")
    parser.add_argument(
        "--spool",
        default=None,
        help="the spool file (default: history-spool.jsonl in $DESC_SPOOL_DIR, "
        "[desc] spool_dir or $AIRFLOW_HOME/desc)",
    )
    parser.add_argument("--workflow", default=None)
    parser.add_argument("--run-id", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    store = open_history(args.db)
    try:
        if args.command == "upgrade":
            store.upgrade()
            print(f"{store!r} at revision {store.current_revision()}")
        elif args.command == "flush":
            recorder = SpoolingRecorder(store, args.spool or default_spool_path())
            report = recorder.flush()
            print(f"flushed {report.flushed} record(s) from {recorder.spool_path} to {store!r}")
            if report.rejected:
                print(f"{report.rejected} line(s) could not be stored: kept in {report.rejected_path}")
                return 2
        else:
            from airflow_desc.history.queries import status_counts

            store.upgrade()
            table = status_counts(store.engine, HistoryFilter(workflow=args.workflow, run_id=args.run_id))
            print(table.to_string(index=False))
    except (HistoryUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if exc.__class__.__module__.startswith("sqlalchemy"):
            print(f"error: the history database {store!r} cannot be used: {exc}", file=sys.stderr)
            return 1
        raise
    finally:
        store.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
