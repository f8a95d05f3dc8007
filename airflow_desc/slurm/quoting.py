"""Shell quoting: how a value reaches a shell as one word, never as shell code.

Every value that goes into shell text (job scripts, remote commands, manifests) passes here or
through ``shlex.quote``: :func:`quote_path` quotes a path keeping a leading ``~/`` meaning the
home directory, :func:`check_text` refuses what no shell word or script line can carry.
"""

from __future__ import annotations

import shlex

__all__ = ["check_text", "quote_path"]


def check_text(what: str, value: str, *, allow_newline: bool = False) -> str:
    """Refuse text that no shell word or script line can carry.

    :param what: how to name the value in the error, e.g. ``"JobSpec.workdir"``.
    :param value: the text.
    :param allow_newline: whether newlines are allowed (only the payload command).
    :return: the value, unchanged.
    :raises ValueError: for a NUL byte, or a newline / carriage return unless allowed.
    """
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{what} contains a NUL byte, which no shell can pass: {value!r}")
    if not allow_newline and ("\n" in value or "\r" in value):
        raise ValueError(f"{what} contains a line break, which is not allowed here: {value!r}")
    return value


def quote_path(path: str) -> str:
    """Quote a path for the shell, keeping a leading ``~/`` meaning the home directory.

    ``shlex.quote`` alone would turn ``~/runs`` into the literal directory ``~``.

    :param path: an absolute path, a relative one, or one starting with ``~/``.
    :return: one shell word.
    """
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:]) if path[2:] else '"$HOME"/'
    return shlex.quote(path)
