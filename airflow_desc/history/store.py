"""The SQL history store: its writer, and the recorder that spools when the database is away.

:class:`HistoryStore` writes :class:`ProcessRecord` batches into the tables of
:mod:`airflow_desc.history.schema` (PostgreSQL through psycopg2 in production, SQLite embedded),
one transaction per batch, replacing any attempt already recorded under the same
:meth:`ProcessRecord.key`. The database is the store's own, independent of Airflow's metadata DB:
``airflow db clean``, deleting a DAG or upgrading Airflow leave it alone.

:class:`SpoolingRecorder` is the :class:`Recorder` operators use: when the database cannot be
written, the batch goes to a local JSON-lines spool file, flushed by the next successful write or
by ``airflow-desc history flush`` (``python -m airflow_desc.history flush``). The spool is
emptied only after the database committed its records, and rewriting a record only replaces its
row, so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history.records import ProcessRecord, RerunRequest
from airflow_desc.history.schema import process_instances, rerun_requests, runs, streams, workflows

__all__ = [
    "FlushReport",
    "HistoryStore",
    "HistoryUnavailable",
    "SpoolingRecorder",
    "normalize_url",
]

log = logging.getLogger(__name__)

#: Alembic's version table for the history; Airflow's own is ``alembic_version``.
VERSION_TABLE = "desc_history_alembic_version"
# Parameters per IN (...) list and rows per INSERT batch: below SQLite's variable limit.
_IN_CHUNK = 500
_INSERT_CHUNK = 1000

_KEY_COLUMNS = ("run_ref", "stream_ref", "task_id", "map_index", "process", "try_number")
_INSTANCE_COLUMNS = _KEY_COLUMNS[:-1]
# ProcessRecord fields stored as process_instances columns of the same name.
_RECORD_COLUMNS = (
    "task_id",
    "map_index",
    "process",
    "try_number",
    "task",
    "version",
    "process_type",
    "state",
    "cluster",
    "job_id",
    "step",
    "slurm_state",
    "exit_code",
    "signal",
    "reason",
    "message",
    "submit_time",
    "start_time",
    "end_time",
    "elapsed_s",
    "total_cpu_s",
    "max_rss_bytes",
    "req_cpus",
    "req_mem_bytes",
    "req_walltime_s",
    "node",
    "log_path",
    "triggered_by",
    "rerun_reason",
    "extra",
)


def normalize_url(url: str | URL) -> URL:
    """Return a SQLAlchemy URL for ``url``, with ``postgres://`` and ``postgresql://`` through psycopg2.

    :param url: a SQLAlchemy URL, or the URI of an Airflow connection (``postgres://...``).
    """
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    for scheme in ("postgres://", "postgresql://"):
        if text.startswith(scheme):
            text = "postgresql+psycopg2://" + text[len(scheme) :]
    return make_url(text)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _ancestors(path: str) -> list[str]:
    """``a/b/c`` -> ``["", "a", "a/b", "a/b/c"]``: every stream enclosing ``path``, and itself."""
    out = [""]
    parts = [p for p in path.split("/") if p] if path else []
    for i in range(1, len(parts) + 1):
        out.append("/".join(parts[:i]))
    if path and out[-1] != path:
        out.append(path)  # an odd path ("a//b", "/a"): keep it as given, under its cleaned parents
    return out


def _parent(path: str) -> str | None:
    if path == "":
        return None
    chain = _ancestors(path)
    return chain[-2]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def dedupe(records: Iterable[ProcessRecord]) -> list[ProcessRecord]:
    """Keep the last record of each key, in first-seen order (one statement may not hit a row twice)."""
    latest: dict[tuple[str, str, str, int, str, str, int], ProcessRecord] = {}
    for record in records:
        latest[record.key()] = record
    return list(latest.values())


class HistoryStore:
    """The history database: schema migrations and the writer.

    Give either a SQLAlchemy URL or the id of an Airflow connection; the connection is resolved
    (through ``airflow.sdk.BaseHook``) only when the engine is first needed, so this class imports
    no Airflow.

    :param url: a SQLAlchemy URL (``sqlite:////path/history.db``,
        ``postgresql+psycopg2://user:pw@host/db``); ``postgres://`` is accepted.
    :param conn_id: an Airflow connection id (e.g. ``desc_history``) instead of ``url``.
    :param engine_options: keyword arguments for :func:`sqlalchemy.create_engine`
        (e.g. ``{"connect_args": {"options": "-csearch_path=myschema"}}``).
    :param auto_upgrade: run the migrations before the first write (idempotent).
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        conn_id: str | None = None,
        engine_options: Mapping[str, Any] | None = None,
        auto_upgrade: bool = True,
    ) -> None:
        if (url is None) == (conn_id is None):
            raise ValueError("HistoryStore needs exactly one of url or conn_id")
        self.conn_id = conn_id
        self._url = normalize_url(url) if url is not None else None
        self._engine_options = dict(engine_options or {})
        self._engine: Engine | None = None
        self.auto_upgrade = auto_upgrade
        self._upgraded = False

    @classmethod
    def from_conn_id(cls, conn_id: str, **kwargs: Any) -> HistoryStore:
        """Return a store on the database of Airflow connection ``conn_id``.

        :param conn_id: the Airflow connection id.
        :param kwargs: the other arguments of :class:`HistoryStore`.
        """
        return cls(conn_id=conn_id, **kwargs)

    def __repr__(self) -> str:
        where = f"conn_id={self.conn_id!r}" if self.conn_id else repr(self.url.render_as_string())
        return f"HistoryStore({where})"

    @property
    def url(self) -> URL:
        """The database URL; resolving a connection id asks Airflow (raises :class:`HistoryUnavailable`)."""
        if self._url is None:
            assert self.conn_id is not None
            try:
                from airflow.sdk import BaseHook

                uri = BaseHook.get_connection(self.conn_id).get_uri()
            except Exception as exc:  # AirflowNotFoundException, an unreachable secrets backend, ...
                raise HistoryUnavailable(
                    f"cannot resolve the history connection {self.conn_id!r}: {exc}. "
                    f"Define the Airflow connection {self.conn_id!r} (e.g. AIRFLOW_CONN_"
                    f"{self.conn_id.upper()}=postgresql://user:password@host:5432/db)"
                ) from exc
            self._url = normalize_url(uri)
        return self._url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (created on first use)."""
        if self._engine is None:
            self._engine = _create_engine(self.url, self._engine_options)
        return self._engine

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self.url.get_backend_name()

    def dispose(self) -> None:
        """Close the engine's pooled connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # --- migrations --------------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (Alembic); a no-op when it is there already.

        :param revision: the target revision.
        """
        from alembic import command

        config = _alembic_config()
        with self._migration_lock(), self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        self._upgraded = True

    def current_revision(self) -> str | None:
        """Return the schema's revision, or None for a database never upgraded."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        # PostgreSQL serialises concurrent upgrades with an advisory lock (migrations/env.py); SQLite
        # cannot (its DDL is not transactional under pysqlite), so a file lock beside the database does.
        database = self.url.database if self.dialect == "sqlite" else None
        if not database or database == ":memory:" or database.startswith("file:"):
            yield
            return
        with contextlib.ExitStack() as stack:
            # Nowhere to put the lock: the database cannot be opened either; connecting will say so.
            with contextlib.suppress(OSError):
                stack.enter_context(_file_lock(Path(database + ".migrate.lock")))
            yield

    def ping(self) -> None:
        """Check that the database answers (and has its schema); raise its error if not."""
        self._ensure_schema()
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def _ensure_schema(self) -> None:
        if self.auto_upgrade and not self._upgraded:
            self.upgrade()

    # --- writer ------------------------------------------------------------------------------------

    def record(self, records: Sequence[ProcessRecord]) -> None:
        """Write ``records`` in one transaction; an attempt already recorded under the same key is replaced.

        Besides the record's own fields, ``extra`` may carry ``run_conf`` (a dict: the DAG run's conf,
        kept on the run), ``survey_year`` (else ``run_conf["survey_year"]``) and ``workflow_version``
        (the top-level workflow's version; ``version`` is that of the record's task).

        :param records: the records; within the batch the last record of a key wins.
        """
        batch = dedupe(records)
        if not batch:
            return
        self._ensure_schema()
        now = _utcnow()
        with self.engine.begin() as conn:
            workflow_refs = self._workflow_refs(conn, batch)
            run_refs = self._run_refs(conn, batch, workflow_refs, now)
            stream_refs = self._stream_refs(conn, batch, run_refs)
            requests = _rerun_requests(conn, batch)
            rows = []
            for r in batch:
                run_ref = run_refs[(r.dag_id, r.run_id)]
                row: dict[str, Any] = {name: _clean(getattr(r, name)) for name in _RECORD_COLUMNS}
                if r.triggered_by is None and r.rerun_reason is None:
                    asked = _request_for(requests, r)
                    if asked is not None:
                        row.update(triggered_by=asked[0], rerun_reason=asked[1])
                row.update(
                    workflow_ref=workflow_refs[_workflow_identity(r)],
                    run_ref=run_ref,
                    stream_ref=stream_refs[(run_ref, r.stream)],
                    extra=_clean(r.extra) or None,
                    recorded_at=now,
                )
                rows.append(row)
            stmt = self._upsert_attempts()
            written: list[int] = []
            for chunk in _chunks(rows, _INSERT_CHUNK):
                written.extend(int(i) for (i,) in conn.execute(stmt, list(chunk)))
            for ids in _chunks(written, _IN_CHUNK):
                conn.execute(_RELATCH_LATEST, {"ids": list(ids)})

    def request_reruns(self, requests: Sequence[RerunRequest]) -> None:
        """Keep who cleared which task instances and why, for the attempts that follow.

        :param requests: one per task instance cleared.
        """
        if not requests:
            return
        self._ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(
                rerun_requests.insert(),
                [{f: getattr(q, f) for f in RerunRequest.__dataclass_fields__} for q in requests],
            )

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"the history store runs on PostgreSQL or SQLite, not {self.dialect}")

    def _upsert_attempts(self) -> Any:
        stmt = self._insert(process_instances)
        keep = {"id", "latest", *_KEY_COLUMNS}  # latest: set for the whole instance afterwards
        return stmt.on_conflict_do_update(
            index_elements=list(_KEY_COLUMNS),
            set_={c.name: stmt.excluded[c.name] for c in process_instances.columns if c.name not in keep},
        ).returning(process_instances.c.id)

    def _workflow_refs(
        self, conn: Connection, batch: Sequence[ProcessRecord]
    ) -> dict[tuple[str, str, str], int]:
        wanted = sorted({_workflow_identity(r) for r in batch})
        stmt = self._insert(workflows).on_conflict_do_nothing(index_elements=["name", "variant", "version"])
        conn.execute(stmt, [{"name": n, "variant": va, "version": ve} for n, va, ve in wanted])
        names = sorted({n for n, _, _ in wanted})
        found: dict[tuple[str, str, str], int] = {}
        for chunk in _chunks(names, _IN_CHUNK):
            query = sa.select(workflows.c.id, workflows.c.name, workflows.c.variant, workflows.c.version)
            for id_, name, variant, version in conn.execute(query.where(workflows.c.name.in_(chunk))):
                found[(name, variant, version)] = id_
        return found

    def _run_refs(
        self,
        conn: Connection,
        batch: Sequence[ProcessRecord],
        workflow_refs: Mapping[tuple[str, str, str], int],
        now: datetime,
    ) -> dict[tuple[str, str], int]:
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        for r in batch:
            conf = r.extra.get("run_conf")
            year = r.extra.get("survey_year")
            if year is None and isinstance(conf, Mapping):
                year = conf.get("survey_year")
            row = wanted.setdefault(
                (r.dag_id, r.run_id),
                {
                    "workflow_ref": workflow_refs[_workflow_identity(r)],
                    "dag_id": r.dag_id,
                    "run_id": r.run_id,
                    "conf": None,
                    "survey_year": None,
                    "created_at": now,
                },
            )
            if isinstance(conf, Mapping):
                row["conf"] = dict(conf)
            if year is not None:
                row["survey_year"] = int(year)
        stmt = self._insert(runs)
        stmt = stmt.on_conflict_do_update(
            index_elements=["dag_id", "run_id"],
            set_={
                "conf": sa.func.coalesce(stmt.excluded.conf, runs.c.conf),
                "survey_year": sa.func.coalesce(stmt.excluded.survey_year, runs.c.survey_year),
            },
        )
        # In key order: the upsert locks each run's row until commit (which serialises writers of the
        # same run, so that two attempts of an instance never both end up ``latest``), never crosswise.
        conn.execute(stmt, [wanted[k] for k in sorted(wanted)])
        run_ids = sorted({run_id for _, run_id in wanted})
        found: dict[tuple[str, str], int] = {}
        for chunk in _chunks(run_ids, _IN_CHUNK):
            query = sa.select(runs.c.id, runs.c.dag_id, runs.c.run_id).where(runs.c.run_id.in_(chunk))
            for id_, dag_id, run_id in conn.execute(query):
                if (dag_id, run_id) in wanted:
                    found[(dag_id, run_id)] = id_
        return found

    def _stream_refs(
        self, conn: Connection, batch: Sequence[ProcessRecord], run_refs: Mapping[tuple[str, str], int]
    ) -> dict[tuple[int, str], int]:
        wanted: set[tuple[int, str]] = set()
        for r in batch:
            run_ref = run_refs[(r.dag_id, r.run_id)]
            wanted.update((run_ref, p) for p in _ancestors(r.stream))
        found = self._select_streams(conn, wanted)
        missing = sorted(wanted - set(found), key=lambda rp: (len(_ancestors(rp[1])), rp))
        # Parents before children, one depth at a time, so that each row can name its parent.
        by_depth: dict[int, list[tuple[int, str]]] = {}
        for run_ref, path in missing:
            by_depth.setdefault(len(_ancestors(path)), []).append((run_ref, path))
        stmt = self._insert(streams).on_conflict_do_nothing(index_elements=["run_ref", "path"])
        for depth in sorted(by_depth):
            level = by_depth[depth]
            rows = []
            for run_ref, path in level:
                parent = _parent(path)
                rows.append(
                    {
                        "run_ref": run_ref,
                        "path": path,
                        "parent_ref": None if parent is None else found[(run_ref, parent)],
                    }
                )
            for chunk in _chunks(rows, _INSERT_CHUNK):
                conn.execute(stmt, list(chunk))
            found.update(self._select_streams(conn, set(level)))
        return found

    @staticmethod
    def _select_streams(conn: Connection, wanted: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
        by_run: dict[int, list[str]] = {}
        for run_ref, path in wanted:
            by_run.setdefault(run_ref, []).append(path)
        found: dict[tuple[int, str], int] = {}
        for run_ref, paths in by_run.items():
            for chunk in _chunks(sorted(paths), _IN_CHUNK):
                query = sa.select(streams.c.id, streams.c.path).where(
                    streams.c.run_ref == run_ref, streams.c.path.in_(chunk)
                )
                for id_, path in conn.execute(query):
                    found[(run_ref, path)] = id_
        return found


def _relatch_latest() -> sa.Update:
    """Set ``latest`` on every attempt of the instances of the rows ``:ids`` (only where it changes).

    A new attempt supersedes the earlier ones; an earlier attempt arriving late (from a spool) is
    itself superseded. Set-based, so that a batch costs a few statements on both databases.
    """
    pi = process_instances
    written, sibling, other = pi.alias("written"), pi.alias("sibling"), pi.alias("other")
    same_instance = [getattr(sibling.c, k) == getattr(written.c, k) for k in _INSTANCE_COLUMNS]
    siblings = (
        sa.select(sibling.c.id)
        .join(written, sa.and_(*same_instance))
        .where(written.c.id.in_(sa.bindparam("ids", expanding=True)))
    )
    is_latest = ~sa.exists().where(
        *(getattr(other.c, k) == getattr(pi.c, k) for k in _INSTANCE_COLUMNS),
        other.c.try_number > pi.c.try_number,
    )
    return sa.update(pi).where(pi.c.id.in_(siblings), pi.c.latest != is_latest).values(latest=is_latest)


def _clean(value: Any) -> Any:
    """Drop NUL characters (a log tail may hold them): PostgreSQL refuses them in text and JSON."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


_RELATCH_LATEST = _relatch_latest()

_TaskInstanceKey = tuple[str, str, str, int]


def _rerun_requests(conn: Connection, batch: Sequence[ProcessRecord]) -> dict[_TaskInstanceKey, list[Any]]:
    """Return the rerun requests of the batch's DAG runs, by task instance, oldest first."""
    wanted = sorted({(r.dag_id, r.run_id) for r in batch if r.try_number > 1})
    found: dict[_TaskInstanceKey, list[Any]] = {}
    for chunk in _chunks(wanted, _IN_CHUNK):
        query = (
            sa.select(rerun_requests)
            .where(sa.tuple_(rerun_requests.c.dag_id, rerun_requests.c.run_id).in_(list(chunk)))
            .order_by(rerun_requests.c.requested_at, rerun_requests.c.id)
        )
        for row in conn.execute(query):
            found.setdefault((row.dag_id, row.run_id, row.task_id, row.map_index), []).append(row)
    return found


def _request_for(
    requests: Mapping[_TaskInstanceKey, list[Any]], record: ProcessRecord
) -> tuple[str, str] | None:
    """Return (who, why) of the latest request that cleared this attempt's task instance before it ran."""
    asked = [q for q in requests.get((record.dag_id, record.run_id, record.task_id, record.map_index), [])
             if q.after_try < record.try_number]  # fmt: skip
    return (asked[-1].requested_by, asked[-1].reason) if asked else None


def _workflow_identity(record: ProcessRecord) -> tuple[str, str, str]:
    return (record.workflow, record.variant, str(record.extra.get("workflow_version") or ""))


def _create_engine(url: URL, options: Mapping[str, Any]) -> Engine:
    kwargs = dict(options)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            with contextlib.suppress(OSError):  # an unwritable place fails at connect, as a DB error
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", 30)  # wait for another writer's lock instead of failing
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                if database and database != ":memory:":
                    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the UI) never block the writer
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)  # a connection that died with a server restart is replaced
    if url.get_backend_name() == "postgresql":
        connect_args = dict(kwargs.pop("connect_args", {}))
        # An unreachable server fails the write (and spools it) instead of hanging the task.
        connect_args.setdefault("connect_timeout", 10)
        kwargs["connect_args"] = connect_args
    return sa.create_engine(url, **kwargs)


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("airflow_desc.history") / "migrations"))
    config.set_main_option("path_separator", "os")
    return config


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) across processes and threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class FlushReport:
    """What :meth:`SpoolingRecorder.flush` did.

    :param flushed: records written to the database.
    :param rejected: spool lines that are not records, moved to ``rejected_path``.
    :param rejected_path: the file the rejected lines went to (None when none were).
    """

    flushed: int
    rejected: int
    rejected_path: Path | None


class SpoolingRecorder:
    """A :class:`Recorder` writing to a :class:`HistoryStore`, spooling to a local file when it cannot.

    A database that cannot be reached (or written: down, locked, read-only, connection id
    unknown) makes the batch go to ``spool_path`` (JSON lines, the format of
    :class:`JsonLinesRecorder`), with a warning naming the spool and how to flush it; the
    operator's work is not failed by the history. Every write first flushes the spool, in the same
    transaction. Whatever cannot be stored is moved to ``<spool>.rejected`` (one JSON object per
    line: the spool line number when it came from the spool, the error, the text) and the rest is
    written: a spool line that is not a record, or a record the database refuses as data. An
    exclusive ``flock`` on ``<spool>.lock`` serialises writers and flushers across processes.

    :param store: the history store.
    :param spool_path: the spool file; its directory is created.
    """

    def __init__(self, store: HistoryStore, spool_path: str | os.PathLike[str]) -> None:
        self.store = store
        self.spool_path = Path(spool_path)

    def __repr__(self) -> str:
        return f"SpoolingRecorder({self.store!r}, spool={str(self.spool_path)!r})"

    @property
    def rejected_path(self) -> Path:
        """Where what cannot be stored is kept: ``<spool>.rejected``."""
        return self.spool_path.with_name(self.spool_path.name + ".rejected")

    @property
    def lock_path(self) -> Path:
        """The lock file: ``<spool>.lock``."""
        return self.spool_path.with_name(self.spool_path.name + ".lock")

    def record(self, records: Sequence[ProcessRecord]) -> None:
        """Write the spool and ``records`` to the store; spool ``records`` if the store is unavailable.

        :param records: the records to keep.
        """
        batch = list(records)
        with _file_lock(self.lock_path):
            try:
                if self._spool_has_data():
                    # Reading the spool costs O(its size): not on every write of a long outage.
                    self.store.ping()
                spooled, rejected = self._take_spool()
                if not batch and not spooled:
                    return
                rejected += self._write(spooled, batch)
            except Exception as exc:
                # Only unavailability gets here (_write handles bad data): keep the batch for later.
                if isinstance(exc, _Respooled):
                    exc = exc.error
                elif batch:
                    self._append_spool(batch)
                log.warning(
                    "history database %r unavailable (%s): spooled %d record(s) to %s (%d waiting there "
                    "in all); they are written by the next successful write, or run "
                    "`airflow-desc history flush`",
                    self.store,
                    _one_line(exc),
                    len(batch),
                    self.spool_path,
                    self._pending_unlocked(),
                )
                return
        if spooled:
            log.info("flushed %d spooled history record(s) from %s", len(spooled), self.spool_path)
        if rejected:
            log.warning("%d history item(s) could not be stored: see %s", rejected, self.rejected_path)

    def flush(self) -> FlushReport:
        """Write the spooled records to the store, then empty the spool.

        Raises the database's error, keeping the spool, when the store is unavailable.
        """
        with _file_lock(self.lock_path):
            spooled, rejected = self._take_spool()
            try:
                refused = self._write(spooled, [])
            except _Respooled as exc:
                raise exc.error from None
            rejected += refused
        return FlushReport(
            flushed=len(spooled) - refused,
            rejected=rejected,
            rejected_path=self.rejected_path if rejected else None,
        )

    def pending(self) -> int:
        """How many lines wait in the spool."""
        with _file_lock(self.lock_path):
            return self._pending_unlocked()

    # --- with the lock held ------------------------------------------------------------------------

    def _spool_has_data(self) -> bool:
        try:
            return self.spool_path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def _pending_unlocked(self) -> int:
        if not self.spool_path.exists():
            return 0
        with open(self.spool_path, "rb") as f:
            return sum(1 for line in f if line.strip())

    def _write(self, spooled: Sequence[ProcessRecord], batch: Sequence[ProcessRecord]) -> int:
        """Store ``spooled + batch``, empty the spool; return how many records the database refused.

        Raises when the database is unavailable; the spool then still holds what it held.
        """
        if spooled or batch:
            try:
                self.store.record([*spooled, *batch])
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                log.warning(
                    "the history database refused a batch of %d record(s) (%s); writing them one by one",
                    len(spooled) + len(batch),
                    _one_line(exc),
                )
                return self._write_one_by_one([*spooled, *batch])
        self._truncate_spool()
        return 0

    def _write_one_by_one(self, records: Sequence[ProcessRecord]) -> int:
        pending = dedupe(records)
        bad: list[dict[str, Any]] = []
        for done, record in enumerate(pending):
            try:
                self.store.record([record])
            except Exception as exc:
                if is_data_error(exc):
                    bad.append(_rejection(None, _record_line(record), exc))
                    continue
                # Unavailable half way: what was not written waits in the spool, in order.
                self._append_rejected(bad)
                _replace_text(self.spool_path, "".join(_record_line(r) for r in pending[done:]))
                raise _Respooled(exc) from exc
        self._append_rejected(bad)
        self._truncate_spool()
        return len(bad)

    def _take_spool(self) -> tuple[list[ProcessRecord], int]:
        """Parse the spool; move lines that are not records aside, rewriting the spool without them."""
        if not self.spool_path.exists():
            return [], 0
        good: list[ProcessRecord] = []
        good_lines: list[str] = []
        bad: list[dict[str, Any]] = []
        with open(self.spool_path, encoding="utf-8", errors="surrogateescape") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    if not isinstance(data, dict):
                        raise ValueError(f"a JSON {type(data).__name__}, not an object")
                    good.append(ProcessRecord.from_json(data))
                    good_lines.append(line if line.endswith("\n") else line + "\n")
                except (ValueError, TypeError) as exc:
                    bad.append(_rejection(number, line, exc))
                    log.warning(
                        "%s:%d is not a process record (%s); moved to %s",
                        self.spool_path,
                        number,
                        _one_line(exc),
                        self.rejected_path,
                    )
        if bad:
            self._append_rejected(bad)
            # The spool now holds only records: a failed write leaves nothing to reject twice.
            _replace_text(self.spool_path, "".join(good_lines))
        return good, len(bad)

    def _append_spool(self, batch: Sequence[ProcessRecord]) -> None:
        # JsonLinesRecorder's format; a value JSON cannot hold (an odd ``extra``) is kept as its text
        # rather than losing the record; fsync'ed, since the task may be reported done right after.
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(_record_line(r) for r in batch)
        with open(self.spool_path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def _append_rejected(self, bad: Sequence[Mapping[str, Any]]) -> None:
        if not bad:
            return
        with open(self.rejected_path, "a", encoding="utf-8") as f:
            f.write(
                "".join(json.dumps({"spool": str(self.spool_path), **b}, sort_keys=True) + "\n" for b in bad)
            )
            f.flush()
            os.fsync(f.fileno())

    def _truncate_spool(self) -> None:
        if self.spool_path.exists() and self.spool_path.stat().st_size:
            with open(self.spool_path, "w", encoding="utf-8") as f:
                f.flush()
                os.fsync(f.fileno())


class _Respooled(Exception):
    """The database went away while records were written one by one; the spool holds the rest."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing the data (as opposed to being unavailable).

    :param exc: an exception raised by :meth:`HistoryStore.record`.
    """
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return True
    # Failed before reaching the database (a value that cannot be bound), not a DBAPI error.
    return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)


def _record_line(record: ProcessRecord) -> str:
    """One line of the spool: :meth:`ProcessRecord.to_json`, as :class:`JsonLinesRecorder` writes it."""
    return json.dumps(record.to_json(), sort_keys=True, default=str) + "\n"


def _rejection(line: int | None, text: str, exc: BaseException) -> dict[str, Any]:
    return {
        "line": line,
        "error": _one_line(exc),
        "text": text.rstrip("\n").encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
        "rejected_at": _utcnow().isoformat(),
    }


def _replace_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
