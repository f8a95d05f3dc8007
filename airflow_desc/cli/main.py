"""Running a command of ``airflow-desc``: a failure is a message and an exit status, not a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from airflow_desc.cli.parser import build_parser

__all__ = ["main", "run_command"]


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a ``DescError``, ``ValueError`` or ``OSError`` is a message and exit status 2."""
    try:
        return int(func(args))
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not dump tracebacks on operators
        from airflow_desc.exceptions import DescError

        if not isinstance(exc, (DescError, ValueError, OSError)):
            raise
        print(f"airflow-desc: error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``airflow-desc``; return its exit status."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)
