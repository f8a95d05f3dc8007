"""The spool: a :class:`Recorder` that keeps records in a local file while the history database is away.

:class:`SpoolingRecorder` is the :class:`Recorder` operators use: when the database cannot be
written, the batch goes to a local JSON-lines spool file, flushed by the next successful write, by
the next poll of a trigger whose write reached the history (:meth:`SpoolingRecorder.flush_pending`),
or by ``airflow-desc history flush`` (``python -m airflow_desc.history flush``). What a flusher read is
removed from the spool only after the database committed it, and rewriting a record only replaces
its row, so nothing is lost and nothing is counted twice.

Two locks, both ``flock``: ``<spool>.lock`` guards the files (held only to append, to read the
spool, and to cut what was written from its head: never across database I/O), and
``<spool>.flush.lock`` lets one process at a time write the spool out. A writer that finds another
one flushing does not wait for it: it appends its batch to the spool, behind what is being written,
so that the records of an attempt still reach the database in the order they were made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_desc.exceptions import HistoryUnavailable
from airflow_desc.history.file_lock import file_lock, try_file_lock
from airflow_desc.history.records import ProcessRecord
from airflow_desc.history.writer import HistoryStore, dedupe

__all__ = ["MAX_LINE_BYTES", "FlushReport", "SpoolingRecorder", "is_data_error"]

log = logging.getLogger(__name__)

#: A spool line longer than this is not a record (a record with its accounting is a few kB): it is
#: set aside without being read into memory whole.
MAX_LINE_BYTES = 16 * 2**20

# What the rejected file keeps of a line over MAX_LINE_BYTES.
_KEPT_BYTES = 64 * 2**10

# How many times record() looks again at a spool that others appended to while it was writing.
_DRAIN_ROUNDS = 5


@dataclass(frozen=True)
class FlushReport:
    """What :meth:`SpoolingRecorder.flush` did.

    :param flushed: records written to the database.
    :param rejected: spool lines that are not records, and records the database refused, moved
        to ``rejected_path``.
    :param rejected_path: the file the rejected lines went to (None when none were).
    """

    flushed: int
    rejected: int
    rejected_path: Path | None


@dataclass
class _Head:
    """The head of the spool a flusher read: its records, and how many bytes of which file they were."""

    records: list[ProcessRecord] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # the spool line of each record
    length: int = 0
    file_id: tuple[int, int] | None = None  # (st_dev, st_ino): a spool replaced meanwhile is not cut
    rejected: int = 0


class SpoolingRecorder:
    """A :class:`Recorder` writing to a :class:`HistoryStore`, spooling to a local file when it cannot.

    A database that cannot be reached (or written: down, locked, read-only, not answering within
    its timeouts, connection id unknown) makes the batch go to ``spool_path`` (JSON lines, the
    format of :class:`JsonLinesRecorder`), with a warning naming the spool and how to flush it; the
    operator's work is not failed by the history, nor held up longer than the database's timeouts
    (:func:`~airflow_desc.history.engine.create_history_engine`, the reply deadline included).
    Every write first flushes the spool, in the same transaction; while another process is
    writing, the batch is appended to the spool instead, and written by that process or the next.
    Whatever cannot be stored is moved to
    ``<spool>.rejected`` (one JSON object per line: the spool line number when it came from the
    spool, the error, the text) and the rest is written: a spool line that is not a record (not
    JSON, not an object, a field of the wrong type, over :data:`MAX_LINE_BYTES`), or a record the
    database refuses as data (:func:`is_data_error`).

    :param store: the history store.
    :param spool_path: the spool file; its directory is created.
    """

    def __init__(self, store: HistoryStore, spool_path: str | os.PathLike[str]) -> None:
        self.store = store
        self.spool_path = Path(spool_path)
        self._background = threading.Lock()  # one flush_pending at a time in this process
        self._last_background = -math.inf

    def __repr__(self) -> str:
        return f"SpoolingRecorder({self.store!r}, spool={str(self.spool_path)!r})"

    @property
    def rejected_path(self) -> Path:
        """Where what cannot be stored is kept: ``<spool>.rejected``."""
        return self.spool_path.with_name(self.spool_path.name + ".rejected")

    @property
    def lock_path(self) -> Path:
        """The lock of the spool's files: ``<spool>.lock``."""
        return self.spool_path.with_name(self.spool_path.name + ".lock")

    @property
    def flush_lock_path(self) -> Path:
        """The lock of the one process writing the spool out: ``<spool>.flush.lock``."""
        return self.spool_path.with_name(self.spool_path.name + ".flush.lock")

    def record(self, records: Sequence[ProcessRecord]) -> None:
        """Write the spool and ``records`` to the store; spool ``records`` if the store is unavailable.

        Never raises for the database, and never waits for another writer.

        :param records: the records to keep.
        """
        self._drain(self._checked(records))

    def _drain(self, batch: list[ProcessRecord]) -> bool | None:
        """Write the spool and ``batch``, or hand them to the writer at it; None when one was at it."""
        written: bool | None = None
        for _ in range(_DRAIN_ROUNDS):
            with try_file_lock(self.flush_lock_path) as flushing:
                if flushing:
                    if not self._write_or_spool(batch):
                        return False
                    batch = []
                    written = True
                elif batch:
                    # Another process is writing: ours goes behind what it writes, to keep the order.
                    self._append_spool(batch)
                    batch = []
                    continue  # it may have let go before our append: try once more
                else:
                    return written  # the writer looks at the spool again after letting go: it sees ours
            if not self._spool_has_data():
                return written
        return written

    def flush(self) -> FlushReport:
        """Write the spooled records to the store, then remove them from the spool.

        Waits for a writer already flushing. Raises the database's error, keeping the spool, when
        the store is unavailable.
        """
        with file_lock(self.flush_lock_path):
            head = self._take_head()
            try:
                refused = self._write(head, [])
            except _Respooled as exc:
                raise exc.error from None
        rejected = head.rejected + refused
        return FlushReport(
            flushed=len(head.records) - refused,
            rejected=rejected,
            rejected_path=self.rejected_path if rejected else None,
        )

    def flush_pending(self, min_interval_s: float = 0.0) -> bool | None:
        """Write the spool out if it holds anything, unless someone is at it; never wait, never raise.

        For callers that reach the history anyway and may notice it is back (the triggers' pollers,
        once per poll): the spool is written without waiting for the next task's write or for
        ``airflow-desc history flush``. A look at the spool costs a ``stat``; the database is asked
        at most once per ``min_interval_s`` of this recorder, and not while another thread of this
        process, or another process (the flush lock), is flushing.

        :param min_interval_s: seconds between two attempts of this recorder.
        :returns: None when nothing was tried (empty spool, too soon, another flusher), else whether
            the spool was written (a failure is logged as a warning, the records stay spooled).
        """
        if not self._spool_has_data() or not self._background.acquire(blocking=False):
            return None
        try:
            now = time.monotonic()
            if now - self._last_background < min_interval_s:
                return None
            written = self._drain([])
            if written is not None:  # tried (another flusher's turn does not count)
                self._last_background = now
            return written
        except Exception as exc:  # noqa: BLE001 - e.g. the spool's directory unreadable: logged, not raised
            log.warning("could not flush the history spool %s: %s", self.spool_path, _one_line(exc))
            return False
        finally:
            self._background.release()

    def pending(self) -> int:
        """How many lines wait in the spool."""
        with file_lock(self.lock_path):
            if not self.spool_path.exists():
                return 0
            with open(self.spool_path, "rb") as f:
                return sum(1 for line in f if line.strip())

    # --- the writer, holding the flush lock --------------------------------------------------------------

    def _write_or_spool(self, batch: list[ProcessRecord]) -> bool:
        """Write the spool's head and ``batch``; on unavailability spool ``batch``, warn, return False."""
        try:
            if self._spool_has_data():
                # Reading the spool costs O(its size): not on every write of a long outage.
                self.store.ping()
            head = self._take_head()
            if not batch and not head.records:
                self._replace_head(head, "")  # blank lines only
                return True
            refused = self._write(head, batch)
        except Exception as exc:
            # Only unavailability gets here (_write handles bad data): keep the batch for later.
            if isinstance(exc, _Respooled):
                exc = exc.error
            elif batch:
                self._append_spool(batch)
            log.warning(
                "history database %r unavailable (%s): %s%s (%d waiting there in all); they are "
                "written by the next successful write or poll, or run `airflow-desc history flush`",
                self.store,
                _one_line(exc),
                f"spooled {len(batch)} record(s) to " if batch else "could not write out ",
                self.spool_path,
                self.pending(),
            )
            return False
        if head.records:
            log.info("flushed %d spooled history record(s) from %s", len(head.records), self.spool_path)
        if refused or head.rejected:
            log.warning(
                "%d history item(s) could not be stored: see %s", refused + head.rejected, self.rejected_path
            )
        return True

    def _write(self, head: _Head, batch: Sequence[ProcessRecord]) -> int:
        """Store the head's records and ``batch``, cut the head; return how many the database refused.

        Raises when the database is unavailable; the spool then still holds what it held.
        """
        records = [*head.records, *batch]
        if records:
            try:
                self.store.record(records)
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                log.warning(
                    "the history database refused a batch of %d record(s) (%s); writing them one by one",
                    len(records),
                    _one_line(exc),
                )
                return self._write_one_by_one(head, records)
        self._replace_head(head, "")
        return 0

    def _write_one_by_one(self, head: _Head, records: Sequence[ProcessRecord]) -> int:
        line_of = {id(r): n for r, n in zip(head.records, head.numbers, strict=True)}
        pending = dedupe(records)
        bad: list[dict[str, Any]] = []
        for done, record in enumerate(pending):
            try:
                self.store.record([record])
            except Exception as exc:
                if is_data_error(exc):
                    bad.append(_rejection(line_of.get(id(record)), _record_line(record), exc))
                    continue
                # Unavailable half way: what was not written waits at the head of the spool, in order.
                with file_lock(self.lock_path):
                    self._append_rejected_unlocked(bad)
                self._replace_head(head, "".join(_record_line(r) for r in pending[done:]))
                raise _Respooled(exc) from exc
        with file_lock(self.lock_path):
            self._append_rejected_unlocked(bad)
        self._replace_head(head, "")
        return len(bad)

    def _take_head(self) -> _Head:
        """Read the spool and parse it (outside the lock); set aside the lines that are not records."""
        with file_lock(self.lock_path):
            lines, length, file_id = self._read_unlocked()
        head = _Head(length=length, file_id=file_id)
        good_lines: list[str] = []
        bad: list[dict[str, Any]] = []
        for number, raw, size in lines:
            text = raw.decode("utf-8", errors="surrogateescape")
            try:
                if size is not None:
                    raise ValueError(
                        f"a line of {size} bytes, over the limit of {MAX_LINE_BYTES}; "
                        f"its first {_KEPT_BYTES} bytes are kept here"
                    )
                if not text.strip():
                    continue
                record = ProcessRecord.from_json(json.loads(text))
            except (ValueError, TypeError, RecursionError) as exc:
                bad.append(_rejection(number, text, exc))
                log.warning(
                    "%s:%d is not a process record (%s); moved to %s",
                    self.spool_path,
                    number,
                    _one_line(exc),
                    self.rejected_path,
                )
                continue
            head.records.append(record)
            head.numbers.append(number)
            good_lines.append(text if text.endswith("\n") else text + "\n")
        if bad:
            # The head now holds only records: a failed write leaves nothing to reject twice.
            with file_lock(self.lock_path):
                self._append_rejected_unlocked(bad)
            self._replace_head(head, "".join(good_lines))
            head.rejected = len(bad)
        return head

    def _replace_head(self, head: _Head, text: str) -> None:
        """Replace the bytes ``head`` was read from by ``text``, keeping what was appended since."""
        if not head.length and not text:
            return
        st: os.stat_result | None
        with file_lock(self.lock_path):
            try:
                st = os.stat(self.spool_path)
            except FileNotFoundError:
                st = None
            if st is None or (st.st_dev, st.st_ino) != head.file_id or st.st_size < head.length:
                # Replaced or cut by someone else meanwhile: leave it; what it still holds is only
                # written again (harmless), and nothing of ours may be lost.
                log.warning("%s changed under its flusher; left as it is", self.spool_path)
                if text:
                    self._append_text_unlocked(text.encode("utf-8", "surrogateescape"))
                head.length, head.file_id = 0, None
                return
            if st.st_size == head.length and not text:
                with open(self.spool_path, "r+b") as f:
                    f.truncate(0)
                    os.fsync(f.fileno())
                head.length = 0
                return
            fd, tmp = tempfile.mkstemp(prefix=self.spool_path.name + ".", dir=self.spool_path.parent)
            try:
                with os.fdopen(fd, "wb") as out, open(self.spool_path, "rb") as old:
                    data = text.encode("utf-8", "surrogateescape")
                    out.write(data)
                    old.seek(head.length)
                    shutil.copyfileobj(old, out)
                    out.flush()
                    os.fsync(out.fileno())
                    st = os.fstat(out.fileno())
                os.replace(tmp, self.spool_path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            head.length, head.file_id = len(data), (st.st_dev, st.st_ino)

    # --- any writer --------------------------------------------------------------------------------------

    def _checked(self, records: Sequence[ProcessRecord]) -> list[ProcessRecord]:
        """Return the records whose fields have their types; the others go to the rejected file."""
        good: list[ProcessRecord] = []
        bad: list[dict[str, Any]] = []
        for record in records:
            try:
                record.check_types()
            except TypeError as exc:
                bad.append(_rejection(None, _record_line(record), exc))
                continue
            good.append(record)
        if bad:
            with file_lock(self.lock_path):
                self._append_rejected_unlocked(bad)
            log.warning("%d history record(s) could not be stored: see %s", len(bad), self.rejected_path)
        return good

    def _spool_has_data(self) -> bool:
        try:
            return self.spool_path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def _append_spool(self, batch: Sequence[ProcessRecord]) -> None:
        # JsonLinesRecorder's format; a value JSON cannot hold (an odd ``extra``) is kept as its text
        # rather than losing the record; fsync'ed, since the task may be reported done right after.
        lines: list[str] = []
        bad: list[dict[str, Any]] = []
        for record in batch:
            line = _record_line(record)
            if len(line.encode("utf-8", "surrogateescape")) > MAX_LINE_BYTES:
                # The reader would refuse it: keep it whole where a human can still get at it.
                bad.append(_rejection(None, line, ValueError(f"a record over {MAX_LINE_BYTES} bytes")))
            else:
                lines.append(line)
        with file_lock(self.lock_path):
            self._append_rejected_unlocked(bad)
            if lines:
                self._append_text_unlocked("".join(lines).encode("utf-8", "surrogateescape"))

    # --- holding the file lock ---------------------------------------------------------------------------

    def _read_unlocked(self) -> tuple[list[tuple[int, bytes, int | None]], int, tuple[int, int] | None]:
        """Return the spool's lines (number, bytes, size when over the limit), its length and identity."""
        try:
            f = open(self.spool_path, "rb")
        except FileNotFoundError:
            return [], 0, None
        lines: list[tuple[int, bytes, int | None]] = []
        with f:
            st = os.fstat(f.fileno())
            length = 0
            number = 0
            while chunk := f.readline(MAX_LINE_BYTES + 1):
                number += 1
                length += len(chunk)
                if len(chunk) <= MAX_LINE_BYTES:
                    lines.append((number, chunk, None))
                    continue
                size, rest = len(chunk), chunk
                while not rest.endswith(b"\n"):  # the rest of an overlong line, never held whole
                    rest = f.readline(2**20)
                    if not rest:
                        break
                    size += len(rest)
                    length += len(rest)
                lines.append((number, chunk[:_KEPT_BYTES], size))
        return lines, length, (st.st_dev, st.st_ino)

    def _append_text_unlocked(self, data: bytes) -> None:
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool_path, "a+b") as f:
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    # A writer died mid-line: start ours on a line of its own, so only that one is lost.
                    data = b"\n" + data
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _append_rejected_unlocked(self, bad: Sequence[Mapping[str, Any]]) -> None:
        if not bad:
            return
        self.rejected_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.rejected_path, "a", encoding="utf-8") as f:
            f.write(
                "".join(json.dumps({"spool": str(self.spool_path), **b}, sort_keys=True) + "\n" for b in bad)
            )
            f.flush()
            os.fsync(f.fileno())


class _Respooled(Exception):
    """The database went away while records were written one by one; the spool holds the rest."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database refusing the data (as opposed to being unavailable).

    The database's own refusals (``DataError``, ``IntegrityError``), a value that cannot be bound
    (a ``StatementError`` raised before reaching the database), and a ``ValueError`` or
    ``TypeError`` of the writer working on the record's values (``extra["survey_year"]`` that is
    not a number). Anything else (the server down or not answering in time, a connection id
    Airflow does not know) is unavailability: the records are spooled and written later.

    :param exc: an exception raised by :meth:`HistoryStore.record`.
    """
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return True
    if isinstance(exc, sa.exc.SQLAlchemyError | HistoryUnavailable | OSError):
        # Failed before reaching the database (a value that cannot be bound), not a DBAPI error.
        return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)
    return isinstance(exc, ValueError | TypeError)


def _record_line(record: ProcessRecord) -> str:
    """One line of the spool: :meth:`ProcessRecord.to_json`, as :class:`JsonLinesRecorder` writes it."""
    return json.dumps(record.to_json(), sort_keys=True, default=str) + "\n"


def _rejection(line: int | None, text: str, exc: BaseException) -> dict[str, Any]:
    return {
        "line": line,
        "error": _one_line(exc),
        "text": text.rstrip("\n").encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
        "rejected_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(),
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
