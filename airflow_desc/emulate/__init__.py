"""DM-like payloads for demos and tests (real CPU, memory, files and failures)."""

from __future__ import annotations

import shlex
from importlib import resources

__all__ = ["payload_command", "payload_source"]

_EOF_MARK = "DESC_PAYLOAD_EOF"


def payload_source() -> str:
    """Return the source of the stdlib-only payload program (``airflow_desc/emulate/payload.py``)."""
    return resources.files(__package__).joinpath("payload.py").read_text()


def payload_command(*args: str, python: str = "python3") -> str:
    """Shell text that runs the payload with ``args`` on a cluster where airflow-desc is not installed.

    The program travels in a quoted here-document, so nothing in it is expanded by the shell;
    every argument is shell-quoted.

    :param args: payload arguments, e.g. ``("--cpu-seconds", "2", "--memory-mb", "200")``.
    :param python: the Python interpreter on the cluster.
    """
    argv = " ".join(shlex.quote(a) for a in args)
    return f"{shlex.quote(python)} - {argv} <<'{_EOF_MARK}'\n{payload_source()}{_EOF_MARK}\n"
