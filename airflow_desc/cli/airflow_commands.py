"""``airflow desc <command>``: every ``airflow-desc`` command declared for the Airflow CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from airflow_desc.cli.main import run_command
from airflow_desc.cli.parser import build_parser

__all__ = ["airflow_cli_commands"]


def _airflow_arg(action: argparse.Action) -> Any:
    """Return the Airflow CLI ``Arg`` that declares the same argument as an argparse action."""
    from airflow.cli.cli_config import Arg

    kwargs: dict[str, Any] = {"help": action.help}
    if isinstance(action, argparse._StoreTrueAction):
        kwargs["action"] = "store_true"
    else:
        for name in ("default", "nargs", "type", "choices", "metavar"):
            if getattr(action, name) is not None:
                kwargs[name] = getattr(action, name)
        if action.option_strings and action.required:
            kwargs["required"] = True
    if action.option_strings:
        kwargs["dest"] = action.dest
    return Arg(tuple(action.option_strings) or (action.dest,), **kwargs)  # type: ignore[no-untyped-call]


def _exits(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], None]:
    """Wrap a command for the Airflow CLI, which ignores return values: a failure exits non-zero."""

    def command(args: argparse.Namespace) -> None:
        status = run_command(func, args)
        if status:
            sys.exit(status)

    command.__name__ = getattr(func, "__name__", "command")
    return command


def _airflow_command(name: str, parser: argparse.ArgumentParser, help_text: str) -> Any:
    from airflow.cli.cli_config import ActionCommand, GroupCommand

    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subparsers:
        helps = {choice.dest: choice.help or "" for choice in subparsers[0]._choices_actions}
        return GroupCommand(
            name=name, help=help_text, description=parser.description,
            subcommands=[_airflow_command(n, p, helps.get(n, "")) for n, p in subparsers[0].choices.items()],
        )  # fmt: skip
    args = [
        _airflow_arg(a)
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
    ]
    return ActionCommand(
        name=name, help=help_text, description=parser.description, func=_exits(parser.get_default("func")),
        args=args,
    )  # fmt: skip


def airflow_cli_commands() -> list[Any]:
    """Return ``airflow desc ...``: every ``airflow-desc`` command as an Airflow CLI command.

    Listed under ``cli`` in :func:`airflow_desc.get_provider_info`, so that ``airflow desc status``
    runs ``airflow-desc status`` with the same arguments and ``--help``.
    """
    parser = build_parser()
    command = _airflow_command(
        "desc", parser, "LSST DESC campaigns: status table, reports, history, clusters"
    )
    return [command]
