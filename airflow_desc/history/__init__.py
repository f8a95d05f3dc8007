"""The permanent history of process instances: records, recorders, the SQL store and its queries.

Operators hand :class:`ProcessRecord` batches to a :class:`Recorder`; :func:`default_recorder` picks
the one configured for this installation:

1. ``DESC_HISTORY_JSONL`` set: a :class:`JsonLinesRecorder` on that file (a debugging aid: one file
   per host, no spool; the status page and the CLI read only the database);
2. else a :class:`SpoolingRecorder` over a :class:`HistoryStore` on the Airflow connection named
   by ``DESC_HISTORY_CONN_ID`` or the Airflow option ``[desc] history_conn_id`` (PostgreSQL in
   production, e.g. ``desc_history``);
3. else the same over the embedded SQLite database ``$AIRFLOW_HOME/desc/history.db``.

The spool of (2) and (3) is ``history-spool.jsonl`` in :func:`spool_dir`: ``$DESC_SPOOL_DIR``, else
``[desc] spool_dir``, else ``$AIRFLOW_HOME/desc``. Every write flushes the spool first, so with a
spool directory every worker shares (a volume with ``flock``: NFSv4, CephFS, Lustre mounted with
``flock``), what a worker spooled before it was lost is written by the next task on any host; the
triggers' pollers also write it out once their poll's write reached the history
(:meth:`SpoolingRecorder.flush_pending`). A PostgreSQL history that stops answering is cut off by
the client's reply deadline (:mod:`~airflow_desc.history.deadline`).
``python -m airflow_desc.history flush`` writes it out; queries are in
:mod:`airflow_desc.history.queries`.
What the status page reads of runs in progress (process plans, polled SLURM job states:
:mod:`~airflow_desc.history.live`) always goes to the database of (2) or (3), :func:`default_history_store`.

Modules: :mod:`~airflow_desc.history.records` (records and the simple recorders),
:mod:`~airflow_desc.history.schema` (tables), :mod:`~airflow_desc.history.engine` (URL, engine,
migrations), :mod:`~airflow_desc.history.writer` (:class:`HistoryStore`, with the rows it builds in
:mod:`~airflow_desc.history.record_rows` and what it reads in :mod:`~airflow_desc.history.writer_reads`;
its big batches on PostgreSQL go through :mod:`~airflow_desc.history.copy_rows`),
:mod:`~airflow_desc.history.spool` (:class:`SpoolingRecorder`), :mod:`~airflow_desc.history.queries`
and what they select (and through the DBAPI alone: :mod:`~airflow_desc.history.status_read`, the
counts; :mod:`~airflow_desc.history.live_records`, what the live merge reads),
:mod:`~airflow_desc.history.filters` (:class:`HistoryFilter`).
A database that cannot be reached or named raises :class:`airflow_desc.exceptions.HistoryUnavailable`.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_desc.history.desc_config import desc_option
from airflow_desc.history.filters import HistoryFilter
from airflow_desc.history.records import (
    PROCESS_STATES,
    JsonLinesRecorder,
    ProcessRecord,
    Recorder,
    process_state,
)

if TYPE_CHECKING:
    from airflow_desc.history.spool import FlushReport, SpoolingRecorder
    from airflow_desc.history.writer import HistoryStore

__all__ = [
    "PROCESS_STATES",
    "FlushReport",
    "HistoryFilter",
    "HistoryStore",
    "JsonLinesRecorder",
    "ProcessRecord",
    "Recorder",
    "SpoolingRecorder",
    "default_history_store",
    "default_recorder",
    "default_spool_path",
    "default_spooling_recorder",
    "default_sqlite_url",
    "history_conn_id",
    "latest_records_of_run",
    "open_history",
    "process_state",
    "rerun_selection_of",
    "spool_dir",
    "typical_elapsed_of",
]

log = logging.getLogger(__name__)

# Imported when first named: SQLAlchemy's import is most of a reader's start-up (the CLI's status
# table reads through the DBAPI alone, :mod:`~airflow_desc.history.status_read`).
_LAZY = {
    "FlushReport": "airflow_desc.history.spool",
    "SpoolingRecorder": "airflow_desc.history.spool",
    "HistoryStore": "airflow_desc.history.writer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Environment variable naming the Airflow connection of the history database.
CONN_ID_ENV = "DESC_HISTORY_CONN_ID"

#: Environment variable naming the spool directory (wins over ``[desc] spool_dir``).
SPOOL_DIR_ENV = "DESC_SPOOL_DIR"

_cache_lock = threading.Lock()
_recorders: dict[tuple[int, str, str], SpoolingRecorder] = {}
_stores: dict[tuple[int, str], HistoryStore] = {}


def _desc_home() -> Path:
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / "desc"


def _setting(env: str, option: str) -> str | None:
    """Return ``$env``, else the Airflow option ``[desc] option``; None when neither says anything.

    Airflow's configuration is read only when the environment does not decide, without importing
    Airflow where it can be (:func:`~airflow_desc.history.desc_config.desc_option`), and counts as
    unset when it cannot be read.
    """
    value: str | None = os.environ.get(env, "").strip()
    if value:
        return value
    value = desc_option(option)
    return value.strip() if value and value.strip() else None


def history_conn_id() -> str | None:
    """Return the history connection id: ``$DESC_HISTORY_CONN_ID``, else ``[desc] history_conn_id``.

    None when neither names one (or Airflow's configuration cannot be read).
    """
    return _setting(CONN_ID_ENV, "history_conn_id")


def spool_dir() -> Path:
    """Return the spool directory: ``$DESC_SPOOL_DIR``, else ``[desc] spool_dir``, else $AIRFLOW_HOME/desc.

    On a deployment whose workers may be lost (several hosts, short-lived pods), point it at a
    volume every worker mounts, so that the next task on any host flushes what a lost one spooled.
    """
    configured = _setting(SPOOL_DIR_ENV, "spool_dir")
    return Path(configured).expanduser() if configured else _desc_home()


def default_sqlite_url() -> str:
    """Return the URL of the embedded history: ``sqlite:///$AIRFLOW_HOME/desc/history.db``."""
    return f"sqlite:///{_desc_home() / 'history.db'}"


def default_spool_path() -> Path:
    """Return the spool file of the default recorder: ``history-spool.jsonl`` in :func:`spool_dir`."""
    return spool_dir() / "history-spool.jsonl"


def open_history(url_or_conn_id: str | None = None) -> HistoryStore:
    """Return a :class:`HistoryStore`.

    :param url_or_conn_id: a SQLAlchemy URL (anything with ``://``), an Airflow connection id, or
        None for the configured history (:func:`history_conn_id`, else the embedded SQLite).
    """
    from airflow_desc.history.writer import HistoryStore

    target = url_or_conn_id or history_conn_id()
    if target is None:
        return HistoryStore(default_sqlite_url())
    if "://" in target:
        return HistoryStore(target)
    return HistoryStore.from_conn_id(target)


def default_history_store() -> HistoryStore:
    """Return the configured history's :class:`HistoryStore`, one per process and configuration.

    What the process plans and the polled SLURM job states (:mod:`airflow_desc.history.live`) are
    written to and read from: always the database (``DESC_HISTORY_JSONL`` redirects process
    records only), so that the status page finds them. One store, one engine and its pool, for
    the life of the process.
    """
    target = history_conn_id() or default_sqlite_url()
    key = (os.getpid(), target)
    with _cache_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = open_history(target)
    return store


def default_spooling_recorder() -> SpoolingRecorder:
    """Return the :class:`SpoolingRecorder` over the configured history (one per process and config)."""
    from airflow_desc.history.spool import SpoolingRecorder

    conn_id = history_conn_id()
    target = conn_id or default_sqlite_url()
    spool = default_spool_path()
    key = (os.getpid(), target, str(spool))
    with _cache_lock:
        recorder = _recorders.get(key)
        if recorder is None:
            recorder = SpoolingRecorder(open_history(target), spool)
            _recorders[key] = recorder
    return recorder


def default_recorder() -> Recorder:
    """Return the recorder operators use unless given one.

    ``DESC_HISTORY_JSONL`` names a JSON-lines file (it wins; a debugging aid); otherwise
    :func:`default_spooling_recorder`: the history database configured by ``DESC_HISTORY_CONN_ID`` /
    ``[desc] history_conn_id``, else SQLite at ``$AIRFLOW_HOME/desc/history.db``, spooling to
    :func:`default_spool_path` when the database cannot be written.
    """
    path = os.environ.get("DESC_HISTORY_JSONL")
    if path:
        return JsonLinesRecorder(path)
    return default_spooling_recorder()


def latest_records_of_run(dag_id: str, run_id: str) -> list[ProcessRecord]:
    """Return the latest recorded attempt of each process instance of one DAG run.

    Read where :func:`default_recorder` writes: the ``DESC_HISTORY_JSONL`` file, else the
    configured history store, after flushing this host's spool into it (records spooled on
    another host are not seen until that host flushes). A run the history does not hold has no
    records.

    :raises HistoryUnavailable: when the history store cannot be reached.
    """
    path = os.environ.get("DESC_HISTORY_JSONL")
    if path:
        records = [r for r in JsonLinesRecorder(path).read() if (r.dag_id, r.run_id) == (dag_id, run_id)]
        return latest_attempts_of(records)
    import sqlalchemy as sa

    from airflow_desc.exceptions import HistoryUnavailable
    from airflow_desc.history.queries import process_instances

    recorder = default_spooling_recorder()
    try:
        recorder.flush()
        frame = process_instances(
            recorder.store.engine, HistoryFilter(run_id=run_id, dag_ids={dag_id}), latest_only=True
        )
    except ValueError:  # the history holds no record of this run
        return []
    except sa.exc.SQLAlchemyError as exc:
        raise HistoryUnavailable(f"the history cannot be read: {exc}".splitlines()[0]) from exc
    wanted = (
        *("workflow", "process", "state", "dag_id", "run_id", "task_id", "map_index", "try_number"),
        "resubmit",
        *("task", "version", "variant", "stream", "process_type", "cluster", "job_id", "reason", "message"),
    )
    return [ProcessRecord(**{name: _plain(row[name]) for name in wanted}) for row in frame.to_dict("records")]


def typical_elapsed_of(processes: Collection[str], *, workflow: str | None = None) -> dict[str, float]:
    """Return the median wall clock (s) of each process's recent successful attempts, where records go.

    Read where :func:`default_recorder` writes: the ``DESC_HISTORY_JSONL`` file, else the configured
    history store (:func:`~airflow_desc.history.queries.typical_elapsed`). A process never recorded
    as successful is left out.

    :raises HistoryUnavailable: when the history store cannot be reached.
    """
    path = os.environ.get("DESC_HISTORY_JSONL")
    if path:
        by_process: dict[str, list[float]] = {}
        for r in JsonLinesRecorder(path).read():
            if r.process in processes and r.state == "success" and r.elapsed_s is not None:
                if workflow is None or r.workflow == workflow:
                    by_process.setdefault(r.process, []).append(float(r.elapsed_s))
        return {p: statistics.median(v[-200:]) for p, v in by_process.items()}
    from airflow_desc.history.queries import typical_elapsed

    return typical_elapsed(default_history_store().engine, processes, workflow=workflow)


def rerun_selection_of(
    dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int
) -> frozenset[str]:
    """Return the process instances a rerun selected for this try of a task instance, from the history.

    Read from the configured history store (:func:`default_history_store`); with
    ``DESC_HISTORY_JSONL`` (a debugging aid, no reruns) nothing is selected.

    :raises HistoryUnavailable: when the history store cannot be reached.
    """
    if os.environ.get("DESC_HISTORY_JSONL"):
        return frozenset()
    from airflow_desc.history.queries import rerun_selection

    store = default_history_store()
    store.ping()  # its migrations first
    return rerun_selection(store.engine, dag_id, run_id, task_id, map_index, try_number)


def latest_attempts_of(records: list[ProcessRecord]) -> list[ProcessRecord]:
    """Keep the latest attempt (highest (try, resubmit), then last given) of each process instance."""
    latest: dict[tuple[object, ...], ProcessRecord] = {}
    for record in records:
        key = record.key()[:-2]
        held = latest.get(key)
        if held is None or record.attempt() >= held.attempt():
            latest[key] = record
    return list(latest.values())


def _plain(value: Any) -> Any:
    """A DataFrame cell as a record field: pandas' missing values as None, numpy numbers as Python's."""
    import pandas as pd

    if value is None or (not isinstance(value, str | dict | list) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value
