"""The four tables of Airflow's metadata DB that live states need, read through the DBAPI.

``airflow-desc status`` merges the states of runs in progress, which live in Airflow's metadata DB.
Reading them through Airflow's ORM first imports Airflow and its models: over a second of CPU for
four small queries. :class:`MetadataTables` asks the same of the ``dag_tag``, ``dag_run``,
``task_instance``, ``xcom`` and ``trigger`` tables with sqlite3 or psycopg2
(:func:`~airflow_desc.history.status_read.dbapi_connection`), and decodes what Airflow stores there
as Airflow does: XCom values as JSON (``XComModel.deserialize_value``), trigger kwargs decrypted
with the configured Fernet keys and read as JSON (``Trigger._decrypt_kwargs``).

It answers only what it reads as plain data. :func:`open_metadata_tables` gives None when the
metadata DB's URL (``[database] sql_alchemy_conn``) or the Fernet key is not set as plain
configuration (:func:`~airflow_desc.history.desc_config.plain_option`), or names another database
than SQLite or PostgreSQL; a value Airflow would deserialize into an object (``__classname__``,
the older ``__var`` form) raises :class:`NotPlain`. Either way the caller reads through Airflow's
ORM instead (:func:`airflow_desc.status.live.live_process_instances`); a test holds the two
readers equal on a real deployment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history.desc_config import plain_option
from airflow_desc.history.status_read import dbapi_connection

__all__ = ["MetadataTables", "NotPlain", "open_metadata_tables"]

# What Airflow's serializers write for an object (serde's, and BaseSerialization's older form).
_MARKERS = ('"__classname__"', '"__var"')
# Values per IN (...) list: below SQLite's variable limit.
_IN_CHUNK = 500


class NotPlain(ValueError):
    """A value only Airflow's deserializers read (an object, not plain JSON): read through the ORM."""


def _plain_json(text: str) -> Any:
    if any(marker in text for marker in _MARKERS):
        raise NotPlain(f"a value Airflow deserializes into an object: {text[:80]!r}")
    return json.loads(text)


def open_metadata_tables(url: str | None = None, fernet_key: str | None = None) -> MetadataTables | None:
    """Return the metadata DB's tables through the DBAPI, or None: read them through Airflow's ORM.

    :param url: the metadata DB (``[database] sql_alchemy_conn``) when the caller read Airflow's
        configuration already (the api-server); else read here, when it is plain configuration.
    :param fernet_key: ``[core] fernet_key`` with ``url``.
    """
    if url is None:
        url, fernet_key = plain_option("database", "sql_alchemy_conn"), plain_option("core", "fernet_key")
    if url is None:
        return None
    try:
        opened = dbapi_connection(url)
    except HistoryUnavailable:
        return None  # Airflow's own connection says what is wrong, as it did before
    if opened is None:
        return None
    conn, placeholder, _errors = opened
    return MetadataTables(conn, placeholder, fernet_key)


class MetadataTables:
    """Reads of Airflow's metadata DB as :mod:`airflow_desc.status.live` needs them, plain tuples out.

    :param conn: a DBAPI connection to the metadata DB (sqlite3 or psycopg2).
    :param placeholder: its parameter placeholder (``?`` or ``%s``).
    :param fernet_key: ``[core] fernet_key`` (comma-separated keys), None if not set.
    """

    def __init__(self, conn: Any, placeholder: str, fernet_key: str | None) -> None:
        self.conn = conn
        self.placeholder = placeholder
        self.fernet_key = fernet_key
        if placeholder == "%s":  # JSONB as its text: decoded here, after the check for objects
            import psycopg2.extras

            psycopg2.extras.register_default_jsonb(conn, loads=lambda text: text)
            psycopg2.extras.register_default_json(conn, loads=lambda text: text)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> MetadataTables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql.replace("?", self.placeholder), args)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def _in(self, column: str, values: Sequence[Any]) -> str:
        return f"{column} IN ({', '.join('?' for _ in values)})"

    def active_runs(
        self, tag: str, dag_ids: Iterable[str] | None, run_id: str | None
    ) -> list[tuple[str, str]]:
        """Return ``(dag_id, run_id)`` of the queued and running runs of the DAGs tagged ``tag``."""
        where = [
            "dr.state IN ('queued', 'running')",
            "dr.dag_id IN (SELECT dag_id FROM dag_tag WHERE name = ?",
        ]
        args: list[Any] = [tag]
        if dag_ids is not None:
            wanted = sorted(set(dag_ids))
            if not wanted:
                return []
            where[-1] += " AND " + self._in("dag_id", wanted)
            args += wanted
        where[-1] += ")"
        if run_id is not None:
            where.append("dr.run_id = ?")
            args.append(run_id)
        return self._rows(f"SELECT dr.dag_id, dr.run_id FROM dag_run dr WHERE {' AND '.join(where)}", *args)

    def xcom_values(
        self, dag_id: str, runs: Sequence[str], task_ids: Sequence[str]
    ) -> list[tuple[str, str, Any]]:
        """Return ``(run_id, task_id, value)`` of the return values of these (unmapped) tasks in these runs.

        :raises NotPlain: for a value Airflow would deserialize into an object.
        """
        out = []
        for start in range(0, len(runs), _IN_CHUNK):
            part = list(runs[start : start + _IN_CHUNK])
            rows = self._rows(
                "SELECT run_id, task_id, value FROM xcom WHERE dag_id = ? AND map_index = -1 AND \"key\" = "
                f"'return_value' AND {self._in('run_id', part)} AND {self._in('task_id', task_ids)}",
                dag_id, *part, *task_ids,
            )  # fmt: skip
            for run_id, task_id, stored in rows:
                if stored is None:
                    continue
                value = _plain_json(stored)  # the JSON column's document ...
                if isinstance(value, str):  # ... holding serialize_value's JSON text
                    value = _plain_json(value)
                out.append((run_id, task_id, value))
        return out

    def task_instances(self, dag_id: str, runs: Sequence[str]) -> list[tuple[str, str, int, Any, Any, Any]]:
        """Return these runs' task instances: ``(run_id, task_id, map_index, state, try_number, trigger)``."""
        out = []
        for start in range(0, len(runs), _IN_CHUNK):
            part = list(runs[start : start + _IN_CHUNK])
            out += self._rows(
                "SELECT run_id, task_id, map_index, state, try_number, trigger_id FROM task_instance "
                f"WHERE dag_id = ? AND {self._in('run_id', part)}",
                dag_id, *part,
            )  # fmt: skip
        return out

    def trigger_kwargs(
        self, dag_ids: Sequence[str], runs: Sequence[str], classpath: str
    ) -> list[tuple[int, dict[str, Any]]]:
        """Return ``(id, kwargs)`` of the triggers of ``classpath`` that these runs' task instances wait on.

        :raises NotPlain: for kwargs Airflow would deserialize into an object, or encrypted ones
            when no Fernet key is set as plain configuration.
        """
        if not dag_ids or not runs:
            return []
        rows = self._rows(
            "SELECT t.id, t.kwargs FROM \"trigger\" t JOIN task_instance ti ON ti.trigger_id = t.id "
            f"WHERE t.classpath = ? AND {self._in('ti.dag_id', dag_ids)} AND {self._in('ti.run_id', runs)}",
            classpath, *dag_ids, *runs,
        )  # fmt: skip
        return [(int(id_), self._kwargs(stored)) for id_, stored in rows]

    def _kwargs(self, stored: str) -> dict[str, Any]:
        """Decrypt and read a trigger's kwargs as ``Trigger._decrypt_kwargs`` does."""
        if not stored.startswith("{"):  # encrypted (Airflow stores them plain where it could not)
            if not self.fernet_key:
                raise NotPlain("encrypted trigger kwargs and no [core] fernet_key set as plain configuration")
            from cryptography.fernet import Fernet, MultiFernet

            fernet = MultiFernet([Fernet(key.encode("utf-8")) for key in self.fernet_key.split(",")])
            stored = fernet.decrypt(stored.encode("utf-8")).decode("utf-8")
        kwargs = _plain_json(stored)
        if not isinstance(kwargs, dict):
            raise NotPlain(f"trigger kwargs that are no mapping: {stored[:80]!r}")
        return {str(k): v for k, v in kwargs.items()}
