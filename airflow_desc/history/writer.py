"""The history writer: :class:`HistoryStore` upserts :class:`ProcessRecord` batches.

:class:`HistoryStore` writes :class:`ProcessRecord` batches into the tables of
:mod:`airflow_desc.history.schema` (PostgreSQL through psycopg2 in production, SQLite embedded),
one transaction per batch, replacing any attempt already recorded under the same
:meth:`ProcessRecord.key`. In that transaction it reads the attempts already recorded of the
instances it writes (under the lock it takes on their runs) and sets each attempt's ``latest``
flag and moves the instances' counts in ``instance_counts`` (:mod:`airflow_desc.history.latest`).
On PostgreSQL, a batch's attempts and new streams go through ``COPY`` when there are
:data:`COPY_THRESHOLD` of them or more (:mod:`airflow_desc.history.copy_rows`): the ones it knows to
be new (no attempt of that key held, a stream missing) straight into their tables, the others
through a temporary table and an upsert; else through a multi-row upsert (SQLite: always).
The database is the store's own, independent of Airflow's metadata DB: ``airflow db clean``,
deleting a DAG or upgrading Airflow leave it alone. How it is reached and migrated is
:mod:`airflow_desc.history.engine`; the recorder that spools when it is away is
:mod:`airflow_desc.history.spool`. The rows it builds from records are
:mod:`airflow_desc.history.record_rows`' (pure), what it reads in a batch's transaction
:mod:`airflow_desc.history.writer_reads`'.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping, Sequence, Sized
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine

from airflow_desc.history.copy_rows import ATTEMPT_COLUMNS, CopyInsert, CopyUpsert
from airflow_desc.history.engine import (
    connection_url,
    create_history_engine,
    normalize_url,
    schema_revision,
    upgrade_schema,
)
from airflow_desc.history.latest import COUNT_GROUP, plan_batch
from airflow_desc.history.record_rows import (
    ancestors,
    chunks,
    clean,
    dedupe,
    record_row,
    request_for,
    stream_rows,
    workflow_identity,
)
from airflow_desc.history.records import ProcessRecord, RerunRequest, RerunSelection
from airflow_desc.history.schema import (
    instance_counts,
    log_tails,
    process_instances,
    rerun_requests,
    rerun_selections,
    runs,
    streams,
    workflows,
)
from airflow_desc.history.writer_reads import (
    IN_CHUNK,
    KEY_COLUMNS,
    held_attempts,
    rerun_requests_of,
    select_streams,
)

__all__ = ["HistoryStore", "dedupe"]

log = logging.getLogger(__name__)

# Rows per INSERT batch: below SQLite's variable limit.
_INSERT_CHUNK = 1000

#: Batches of at least this many attempts go through COPY on PostgreSQL (benchmarks/README.md).
COPY_THRESHOLD = 100

_KEY_COLUMNS = KEY_COLUMNS
# Big batches of attempts and streams on PostgreSQL (copy_rows.py).
_COPY_ATTEMPTS = CopyUpsert("process_instances", ATTEMPT_COLUMNS, _KEY_COLUMNS, True, ("id", *_KEY_COLUMNS))
_COPY_STREAMS = CopyUpsert(
    "streams", ("run_ref", "path", "parent_ref"), ("run_ref", "path"), False, ("id", "run_ref", "path")
)
_NEW_ATTEMPTS = CopyInsert("process_instances", ATTEMPT_COLUMNS)
_NEW_STREAMS = CopyInsert("streams", ("run_ref", "path", "parent_ref"))
_attempt_key = operator.itemgetter(*_KEY_COLUMNS)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class HistoryStore:
    """The history database: schema migrations and the writer.

    Give either a SQLAlchemy URL or the id of an Airflow connection; the connection is resolved
    (through ``airflow.sdk.BaseHook``) only when the engine is first needed, so this class imports
    no Airflow.

    :param url: a SQLAlchemy URL (``sqlite:////path/history.db``,
        ``postgresql+psycopg2://user:pw@host/db``); ``postgres://`` is accepted.
    :param conn_id: an Airflow connection id (e.g. ``desc_history``) instead of ``url``.
    :param engine_options: keyword arguments for :func:`sqlalchemy.create_engine`
        (e.g. ``{"connect_args": {"options": "-csearch_path=myschema"}}``); the history's
        timeouts are added to ``connect_args`` unless they say otherwise
        (:func:`~airflow_desc.history.engine.connect_arguments`).
    :param auto_upgrade: run the migrations before the first write (idempotent).
    :param copy_threshold: on PostgreSQL, write a batch of at least this many attempts through
        ``COPY`` (:mod:`~airflow_desc.history.copy_rows`); None: never (a multi-row upsert).
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        conn_id: str | None = None,
        engine_options: Mapping[str, Any] | None = None,
        auto_upgrade: bool = True,
        copy_threshold: int | None = COPY_THRESHOLD,
    ) -> None:
        if (url is None) == (conn_id is None):
            raise ValueError("HistoryStore needs exactly one of url or conn_id")
        self.conn_id = conn_id
        self._url = normalize_url(url) if url is not None else None
        self._engine_options = dict(engine_options or {})
        self._engine: Engine | None = None
        self.auto_upgrade = auto_upgrade
        self.copy_threshold = copy_threshold
        self._upgraded = False
        # Workflow rows are never changed or deleted: their ids, once committed, are asked once.
        self._workflow_ids: dict[tuple[str, str, str], int] = {}
        self._statements: dict[str, Any] = {}

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
        """The database URL.

        Resolving a connection id asks Airflow (:func:`~airflow_desc.history.engine.connection_url`),
        which raises :class:`~airflow_desc.exceptions.HistoryUnavailable` when it cannot.
        """
        if self._url is None:
            assert self.conn_id is not None
            self._url = connection_url(self.conn_id)
        return self._url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (created on first use)."""
        if self._engine is None:
            self._engine = create_history_engine(self.url, self._engine_options)
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

    # --- migrations (airflow_desc.history.engine) ---------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (Alembic); a no-op when it is there already.

        :param revision: the target revision.
        """
        upgrade_schema(self.engine, revision)
        self._upgraded = True

    def current_revision(self) -> str | None:
        """Return the schema's revision, or None for a database never upgraded."""
        return schema_revision(self.engine)

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
        kept on the run), ``survey_year`` (else ``run_conf["survey_year"]``), ``workflow_version``
        (the top-level workflow's version; ``version`` is that of the record's task) and
        ``spec_digest`` (what rendered the run's DAG, kept on the run: the latest written wins).

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
            stream_refs, created = self._stream_refs(conn, batch, run_refs)
            requests = rerun_requests_of(conn, batch)
            rows = []
            for r in batch:
                run_ref = run_refs[(r.dag_id, r.run_id)]
                row = record_row(r)
                if r.triggered_by is None and r.rerun_reason is None:
                    asked = request_for(requests, r)
                    if asked is not None:
                        # A clear without a note says who, not why.
                        row.update(triggered_by=asked[0], rerun_reason=asked[1] or None)
                row.update(
                    workflow_ref=workflow_refs[workflow_identity(r)],
                    run_ref=run_ref,
                    stream_ref=stream_refs[(run_ref, r.stream)],
                    extra=clean(r.extra) or None,
                    recorded_at=now,
                )
                rows.append(row)
            held = held_attempts(conn, rows, created)
            plan = plan_batch(held, rows)
            attempt_ids = self._write_attempts(conn, rows, {_attempt_key(h.columns) for h in held})
            for latest, flipped in plan.flips.items():
                for ids in chunks(sorted(flipped), IN_CHUNK):
                    conn.execute(
                        sa.update(process_instances)
                        .where(process_instances.c.id.in_(ids))
                        .values(latest=latest)
                    )
            self._move_counts(conn, plan.counts)
            self._write_log_tails(conn, batch, attempt_ids, now)
        self._workflow_ids.update(workflow_refs)  # committed

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

    def select_reruns(self, selections: Sequence[RerunSelection]) -> list[int]:
        """Keep which process instances a rerun selected in each task instance; return the rows' ids.

        :param selections: one per task instance about to be cleared.
        """
        if not selections:
            return []
        self._ensure_schema()
        rows = [
            {
                **{f: getattr(s, f) for f in RerunSelection.__dataclass_fields__},
                "instances": list(s.instances),
            }
            for s in selections
        ]
        ids: list[int] = []
        with self.engine.begin() as conn:
            for row in rows:
                key = conn.execute(rerun_selections.insert().values(row)).inserted_primary_key
                ids.append(int(key[0]) if key is not None else 0)
        return ids

    def drop_selections(self, ids: Sequence[int]) -> None:
        """Forget selections whose clear did not happen (refused, or failed)."""
        if ids:
            with self.engine.begin() as conn:
                conn.execute(rerun_selections.delete().where(rerun_selections.c.id.in_(list(ids))))

    def _built(self, key: str, build: Callable[[], Any]) -> Any:
        """Return the statement ``key``, built once per store.

        Building an upsert each batch cost a worker's small batch a third of its CPU: SQLAlchemy
        makes a proxy of every column for ``excluded``.
        """
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = build()
        return stmt

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"the history store runs on PostgreSQL or SQLite, not {self.dialect}")

    def _upsert_attempts(self) -> Any:
        stmt = self._insert(process_instances)
        keep = {"id", *_KEY_COLUMNS}
        return stmt.on_conflict_do_update(
            index_elements=list(_KEY_COLUMNS),
            set_={c.name: stmt.excluded[c.name] for c in process_instances.columns if c.name not in keep},
        ).returning(process_instances.c.id, *(process_instances.c[k] for k in _KEY_COLUMNS))

    def _copies(self, rows: Sized) -> bool:
        """Whether ``rows`` go through COPY: on PostgreSQL, :attr:`copy_threshold` of them or more."""
        threshold = self.copy_threshold
        return self.dialect == "postgresql" and threshold is not None and len(rows) >= threshold

    def _copy_new(
        self,
        conn: Connection,
        insert: CopyInsert,
        rows: Sequence[Mapping[str, Any]],
        ids: Sequence[int] | None = None,
    ) -> Sequence[int] | None:
        """COPY ``rows``, new ones, straight into their table; return their ids (None: one was not new).

        ``ids``: theirs, drawn already (:meth:`CopyInsert.ids`); else drawn here.

        The writer knows them new from what it read under its runs' locks; should another writer
        have written one of them anyway, the savepoint undoes the COPY and the caller upserts.
        """
        import psycopg2

        dbapi = conn.connection.dbapi_connection
        try:
            with conn.begin_nested():
                ids = insert.ids(dbapi, len(rows)) if ids is None else ids
                insert(dbapi, rows, ids)
        except psycopg2.IntegrityError as exc:
            log.warning("history: a row thought new was there already (%s); writing the batch by upsert", exc)
            return None
        return ids

    def _write_attempts(
        self, conn: Connection, rows: Sequence[dict[str, Any]], held: set[tuple[Any, ...]]
    ) -> list[int]:
        """Write the batch's attempts; return their ids, in the order of ``rows``.

        ``held``: the keys of the attempts already recorded
        (:func:`~airflow_desc.history.writer_reads.held_attempts`). Through COPY, the attempts of
        other keys are inserted as they are and only those are upserted.
        """
        if self._copies(rows):
            fresh = [row for row in rows if _attempt_key(row) not in held] if held else rows
            ids = self._copy_new(conn, _NEW_ATTEMPTS, fresh) if self._copies(fresh) else None
            if ids is not None:
                if len(fresh) == len(rows):
                    return list(ids)
                by_key = dict(zip(map(_attempt_key, fresh), ids, strict=True))
                rest = [row for row in rows if _attempt_key(row) in held]
                done = self._upsert(conn, rest, _COPY_ATTEMPTS, "attempts", self._upsert_attempts)
                by_key.update((tuple(key), int(id_)) for id_, *key in done)
                return [by_key[_attempt_key(row)] for row in rows]
        done = self._upsert(conn, rows, _COPY_ATTEMPTS, "attempts", self._upsert_attempts)
        written = {tuple(key): int(id_) for id_, *key in done}
        return [written[_attempt_key(row)] for row in rows]

    def _upsert(
        self,
        conn: Connection,
        rows: Sequence[dict[str, Any]],
        copy: CopyUpsert,
        key: str,
        build: Callable[[], Any],
    ) -> list[tuple[Any, ...]]:
        """Upsert ``rows``; return what the statement's ``RETURNING`` gave of each row written.

        On PostgreSQL, :attr:`copy_threshold` rows or more go through COPY (``copy``,
        :mod:`~airflow_desc.history.copy_rows`); else the multi-row statement ``key`` (``build``).
        """
        if self._copies(rows):
            return copy(conn.connection.dbapi_connection, rows)
        stmt = self._built(key, build)
        return [tuple(r) for part in chunks(rows, _INSERT_CHUNK) for r in conn.execute(stmt, list(part))]

    def _write_log_tails(
        self, conn: Connection, batch: Sequence[ProcessRecord], ids: Sequence[int], now: datetime
    ) -> None:
        """Keep the log tail of each attempt that has one (a later tail of the same attempt replaces it)."""
        tails = [
            {"attempt_ref": id_, "tail": clean(r.log_tail), "recorded_at": now}
            for r, id_ in zip(batch, ids, strict=True)
            if r.log_tail
        ]
        if not tails:
            return
        stmt = self._insert(log_tails)
        stmt = stmt.on_conflict_do_update(
            index_elements=["attempt_ref"],
            set_={"tail": stmt.excluded.tail, "recorded_at": stmt.excluded.recorded_at},
        )
        for chunk in chunks(tails, _INSERT_CHUNK):
            conn.execute(stmt, list(chunk))

    def _move_counts(self, conn: Connection, changes: Mapping[tuple[Any, ...], tuple[int, int]]) -> None:
        """Add ``changes`` (instances, attempts by :data:`COUNT_GROUP`) to ``instance_counts``.

        In group order (the rows of one run are written under its run's lock anyway); the rows
        that fall to no instance are deleted.
        """
        if not changes:
            return
        ic = instance_counts
        rows = [
            {**dict(zip(COUNT_GROUP, group, strict=True)), "instances": n, "attempts": a}
            for group, (n, a) in sorted(changes.items())
        ]
        stmt = self._built("counts", self._upsert_counts)
        for chunk in chunks(rows, _INSERT_CHUNK):
            conn.execute(stmt, list(chunk))
        if any(n < 0 for n, _ in changes.values()):
            emptied = sorted({group[0] for group, (n, _) in changes.items() if n < 0})
            conn.execute(ic.delete().where(ic.c.run_ref.in_(emptied), ic.c.instances <= 0))

    def _upsert_counts(self) -> Any:
        ic = instance_counts
        stmt = self._insert(ic)
        return stmt.on_conflict_do_update(
            index_elements=list(COUNT_GROUP),
            set_={
                "instances": ic.c.instances + stmt.excluded.instances,
                "attempts": ic.c.attempts + stmt.excluded.attempts,
            },
        )

    def _upsert_runs(self) -> Any:
        stmt = self._insert(runs)
        stmt = stmt.on_conflict_do_update(
            index_elements=["dag_id", "run_id"],
            set_={
                "conf": sa.func.coalesce(stmt.excluded.conf, runs.c.conf),
                "survey_year": sa.func.coalesce(stmt.excluded.survey_year, runs.c.survey_year),
                "spec_digest": sa.func.coalesce(stmt.excluded.spec_digest, runs.c.spec_digest),
            },
        )
        return stmt.returning(runs.c.id, runs.c.dag_id, runs.c.run_id)

    def _workflow_refs(
        self, conn: Connection, batch: Sequence[ProcessRecord]
    ) -> dict[tuple[str, str, str], int]:
        identities = {workflow_identity(r) for r in batch}
        found = {w: self._workflow_ids[w] for w in identities if w in self._workflow_ids}
        wanted = sorted(identities - set(found))
        if not wanted:
            return found
        stmt = self._built(
            "workflows",
            lambda: self._insert(workflows).on_conflict_do_nothing(
                index_elements=["name", "variant", "version"]
            ),
        )
        names = sorted({n for n, _, _ in wanted})
        # A new workflow's row is committed at once, in a transaction of its own: in the batch's, a
        # long batch would hold every other writer of that workflow at its unique key until commit.
        with self.engine.begin() as own:
            own.execute(stmt, [{"name": n, "variant": va, "version": ve} for n, va, ve in wanted])
        for chunk in chunks(names, IN_CHUNK):
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
            row = wanted.get((r.dag_id, r.run_id))
            if row is None:  # not setdefault: its default would be built for every record
                row = wanted[(r.dag_id, r.run_id)] = {
                    "workflow_ref": workflow_refs[workflow_identity(r)],
                    "dag_id": r.dag_id,
                    "run_id": r.run_id,
                    "conf": None,
                    "survey_year": None,
                    "created_at": now,
                    "spec_digest": None,
                }
            if isinstance(conf, Mapping):
                row["conf"] = dict(conf)
            if isinstance(r.extra.get("spec_digest"), str):
                row["spec_digest"] = r.extra["spec_digest"]
            if year is not None:
                row["survey_year"] = int(year)
        # In key order: the upsert locks each run's row until commit (which serialises writers of the
        # same run, so that they read each other's attempts: held_attempts), never crosswise.
        done = conn.execute(self._built("runs", self._upsert_runs), [wanted[k] for k in sorted(wanted)])
        return {(dag_id, run_id): id_ for id_, dag_id, run_id in done}

    def _stream_refs(
        self, conn: Connection, batch: Sequence[ProcessRecord], run_refs: Mapping[tuple[str, str], int]
    ) -> tuple[dict[tuple[int, str], int], set[int]]:
        """Return the id of each stream of the batch (and its parents), and the ids of those made now.

        A stream made now holds no attempt yet: :func:`~airflow_desc.history.writer_reads.held_attempts`
        need not look there.
        """
        chains = {path: ancestors(path) for path in {r.stream for r in batch}}  # once per stream
        wanted: set[tuple[int, str]] = set()
        for r in batch:
            run_ref = run_refs[(r.dag_id, r.run_id)]
            wanted.update((run_ref, p) for p in chains[r.stream])
        found = select_streams(conn, wanted)
        depths = {path: len(ancestors(path)) for path in {p for _, p in wanted} - chains.keys()}
        depths.update((path, len(chain)) for path, chain in chains.items())
        missing = sorted(wanted - set(found), key=lambda rp: (depths[rp[1]], rp))
        if self._copies(missing) and self._copy_new_streams(conn, missing, found):
            return found, {found[rp] for rp in missing}
        # Parents before children, one depth at a time, so that each row can name its parent.
        by_depth: dict[int, list[tuple[int, str]]] = {}
        for run_ref, path in missing:
            by_depth.setdefault(depths[path], []).append((run_ref, path))
        # No other writer adds streams of these runs meanwhile (the batch holds their locks): the
        # rows inserted are the ones missing, and their ids come back with them.
        for depth in sorted(by_depth):
            level = by_depth[depth]
            rows = stream_rows(level, found)
            done = self._upsert(conn, rows, _COPY_STREAMS, "streams", self._insert_streams)
            found.update({(run_ref, path): id_ for id_, run_ref, path in done})
            if not set(level) <= set(found):
                found.update(select_streams(conn, set(level) - set(found)))
        return found, {found[rp] for rp in missing}

    def _copy_new_streams(
        self, conn: Connection, missing: Sequence[tuple[int, str]], found: dict[tuple[int, str], int]
    ) -> bool:
        """COPY the ``missing`` streams (parents first) in one go, adding their ids to ``found``.

        Their ids are drawn first, so that each row names its parent whatever its depth. False:
        one was there after all (nothing written, ``found`` unchanged).
        """
        ids = _NEW_STREAMS.ids(conn.connection.dbapi_connection, len(missing))
        made = {**found, **dict(zip(missing, ids, strict=True))}
        rows = stream_rows(missing, made)
        if self._copy_new(conn, _NEW_STREAMS, rows, ids) is None:
            return False
        found.update(made)
        return True

    def _insert_streams(self) -> Any:
        return (
            self._insert(streams)
            .on_conflict_do_nothing(index_elements=["run_ref", "path"])
            .returning(streams.c.id, streams.c.run_ref, streams.c.path)
        )
