"""The ``[desc]`` options of Airflow's configuration, read without importing Airflow where it can be.

Importing Airflow to read its configuration costs a history-only command (``airflow-desc status
--db ...``, ``history``) seconds of start-up. For the ``[desc]`` options, none of them sensitive
(so neither ``_cmd`` nor ``_secret`` variants apply) and none with a default in Airflow, Airflow's
lookup is: the environment variable ``AIRFLOW__DESC__<OPTION>``, else the option in the
configuration file (``$AIRFLOW_CONFIG``, else ``$AIRFLOW_HOME/airflow.cfg``, ``~/airflow`` by
default), each with environment variables and ``~`` expanded. :func:`desc_option` does the same,
and asks Airflow itself when Airflow is imported already (it is then free) or the file cannot be
read as plain INI.

:func:`plain_option` reads an option of another section (``[database] sql_alchemy_conn``, ``[core]
fernet_key``) the same way when it is set as plain text, and says it cannot when Airflow would run
a command or ask a secrets backend for it (the ``_cmd`` / ``_secret`` variants).

Likewise :func:`connection_uri_from_environment` reads an Airflow connection given as a URI in
``AIRFLOW_CONN_<ID>``, which is where Airflow looks first unless a secrets backend is configured.
"""

from __future__ import annotations

import configparser
import logging
import os
import sys

__all__ = ["connection_uri_from_environment", "desc_option", "plain_option"]

log = logging.getLogger(__name__)

_UNREAD = object()


def _expand(value: str) -> str:
    """Expand environment variables and ``~`` until nothing changes, as Airflow's ``expand_env_var``."""
    while True:
        expanded = os.path.expanduser(os.path.expandvars(value))
        if expanded == value:
            return expanded
        value = expanded


def _config_file() -> str:
    given = os.environ.get("AIRFLOW_CONFIG")
    if given is not None:
        return _expand(given)
    return os.path.join(_expand(os.environ.get("AIRFLOW_HOME", "~/airflow")), "airflow.cfg")


def _from_file(section: str, option: str) -> object:
    """Return the option in the configuration file (None: not there), or ``_UNREAD``."""
    parser = configparser.ConfigParser(strict=False)  # Airflow's: ``%(name)s`` and ``%%`` interpolated
    try:
        with open(_config_file(), encoding="utf-8") as f:
            parser.read_file(f)
        if not parser.has_option(section, option):
            return None
        return _expand(parser.get(section, option))
    except FileNotFoundError:
        return None  # Airflow writes a default one, which has no [desc] section
    except (OSError, UnicodeError, configparser.Error) as exc:
        log.debug("reading [%s] %s from %s ourselves failed: %s", section, option, _config_file(), exc)
        return _UNREAD


def _from_airflow(section: str, option: str) -> str | None:
    try:
        from airflow.sdk.configuration import conf

        value = conf.get(section, option, fallback=None)
    except Exception as exc:  # an Airflow without a readable config: the caller's default holds
        log.debug("cannot read [%s] %s: %s", section, option, exc)
        return None
    return None if value is None else str(value)


def desc_option(option: str, section: str = "desc") -> str | None:
    """Return the configured value of ``[section] option``, or None when it is not set.

    :param option: the option, e.g. ``history_conn_id``.
    :param section: the configuration section.
    """
    if "airflow.sdk.configuration" in sys.modules:
        return _from_airflow(section, option)
    env = f"AIRFLOW__{section.replace('.', '_').upper()}__{option.upper()}"
    if env in os.environ:
        return _expand(os.environ[env])
    found = _from_file(section, option)
    if found is _UNREAD:
        return _from_airflow(section, option)
    return found if isinstance(found, str) else None


def plain_option(section: str, option: str) -> str | None:
    """Return ``[section] option`` as Airflow would, when it is set as plain text; else None (ask Airflow).

    None too when it is not set (Airflow's default applies), when Airflow is imported already, or
    when Airflow would read it from a command or a secret (``AIRFLOW__<S>__<O>_CMD`` / ``_SECRET``,
    ``<option>_cmd`` / ``<option>_secret`` in the file), which only Airflow does.

    :param section: the configuration section, e.g. ``database``.
    :param option: the option, e.g. ``sql_alchemy_conn``.
    """
    if "airflow.sdk.configuration" in sys.modules:
        return None
    env = f"AIRFLOW__{section.replace('.', '_').upper()}__{option.upper()}"
    if env in os.environ:
        return _expand(os.environ[env])
    if any(f"{env}{suffix}" in os.environ for suffix in ("_CMD", "_SECRET")):
        return None
    found = _from_file(section, option)
    return found if isinstance(found, str) else None


def connection_uri_from_environment(conn_id: str) -> str | None:
    """Return the URI of connection ``conn_id`` from ``AIRFLOW_CONN_<ID>``, or None to ask Airflow.

    None also when the variable holds JSON (Airflow's other form) or a secrets backend is
    configured (Airflow asks it before the environment).

    :param conn_id: the connection id.
    """
    value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}", "").strip()
    if not value or value.startswith("{") or "://" not in value:
        return None
    if desc_option("backend", "secrets"):
        return None
    return value
