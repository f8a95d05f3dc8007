"""The history's timeouts as DBAPI connect keywords, without SQLAlchemy (a reader's start-up).

What they are, and what wins over what, is described in :mod:`airflow_desc.history.engine`, which
makes its engines with :func:`connect_keywords`; the CLI's reads through the DBAPI alone
(:mod:`~airflow_desc.history.status_read`) use the same keywords.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from airflow_desc.history.deadline import bounded_connection_class
from airflow_desc.history.desc_config import desc_option

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_REPLY_TIMEOUT_S",
    "DEFAULT_STATEMENT_TIMEOUT_S",
    "connect_keywords",
]

log = logging.getLogger(__name__)

#: Seconds to connect to a PostgreSQL history, login included (``[desc] history_connect_timeout``).
DEFAULT_CONNECT_TIMEOUT_S = 3.0
#: Seconds one statement may take (``[desc] history_statement_timeout``): PostgreSQL's
#: ``statement_timeout``, SQLite's ``timeout``.
DEFAULT_STATEMENT_TIMEOUT_S = 5.0
#: Seconds the client waits for any one answer of a PostgreSQL history (``[desc]
#: history_reply_timeout``); unless set, at least the statement timeout plus a second.
DEFAULT_REPLY_TIMEOUT_S = 6.0

# PostgreSQL's time units for statement_timeout (a bare number is milliseconds).
_PG_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def connect_keywords(
    backend: str, query: Mapping[str, Any], connect_args: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a URL's query and the DBAPI's ``connect_args`` with the history's timeouts.

    What the query (the connection's extra) or ``connect_args`` already say wins over the
    ``[desc]`` settings, which win over the defaults.

    :param backend: ``sqlite`` or ``postgresql`` (any other is left as it is).
    :param query: the URL's query (a value may be a tuple of values); desc's ``statement_timeout``
        and ``reply_timeout`` are taken out of it, since libpq does not know them.
    :param connect_args: the caller's ``connect_args`` (e.g. ``options`` with a ``search_path``).
    """
    args = dict(connect_args)
    query = dict(query)
    if backend == "sqlite":
        if "timeout" not in query:
            # Wait this long for another writer's lock, then fail (and spool) rather than hang.
            args.setdefault("timeout", _setting("history_statement_timeout", DEFAULT_STATEMENT_TIMEOUT_S))
        return query, args
    if backend != "postgresql":
        return query, args
    packed = query.pop("__extra__", None)
    if isinstance(packed, str):
        # Airflow packs an extra holding a non-string ({"connect_timeout": 5}) as JSON: unpack it.
        with contextlib.suppress(ValueError):
            extra = json.loads(packed)
            if isinstance(extra, dict):
                for key, value in extra.items():
                    query.setdefault(str(key), str(value))
    if "connect_timeout" not in query:
        # libpq takes whole seconds, treats 1 as 2 and 0 as no limit.
        seconds = _setting("history_connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)
        args.setdefault("connect_timeout", max(2, math.ceil(seconds)) if seconds else 0)
    statement = query.pop("statement_timeout", None)
    # connect_args replace the URL's keywords: keep an ``options`` of the extra by moving it here.
    options = str(args.get("options", query.pop("options", ""))).strip()
    query.pop("options", None)
    if "statement_timeout" not in options:
        if isinstance(statement, tuple):
            statement = statement[-1]
        if statement is None:
            statement = str(round(_setting("history_statement_timeout", DEFAULT_STATEMENT_TIMEOUT_S) * 1000))
        options = f"{options} -c statement_timeout={statement}".strip()
    args["options"] = options
    seconds = _reply_seconds(query.pop("reply_timeout", None), options)
    if seconds:
        args.setdefault("connection_factory", bounded_connection_class(seconds))
    return query, args


def _reply_seconds(given: str | tuple[str, ...] | None, options: str) -> float:
    """Return the reply deadline: the extra's, else ``[desc] history_reply_timeout``, else the default."""
    if isinstance(given, tuple):
        given = given[-1]
    if given is not None:
        try:
            seconds = float(given)
            if seconds < 0 or math.isnan(seconds):
                raise ValueError("not a number of seconds >= 0")
            return seconds
        except ValueError:
            log.warning("the history connection's reply_timeout=%r is not a number of seconds", given)
    default = DEFAULT_REPLY_TIMEOUT_S
    found = re.search(r"statement_timeout\s*=\s*'?(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?'?", options)
    if found:
        statement = float(found.group(1)) * _PG_UNITS[found.group(2) or "ms"]
        # By default a statement the server would finish in time is never cut by the client.
        default = max(default, statement + 1.0)
    return _setting("history_reply_timeout", default)


def _setting(name: str, default: float) -> float:
    """Return ``[desc] <name>`` in seconds (a number >= 0), else ``default``."""
    text = desc_option(name)
    if text is None or not str(text).strip():
        return default
    try:
        value = float(text)
        if value < 0 or math.isnan(value):
            raise ValueError("not a number of seconds >= 0")
    except ValueError:
        log.warning("[desc] %s = %r is not a number of seconds; using %s", name, text, default)
        return default
    return value
