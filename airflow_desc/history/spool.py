"""The spool: a :class:`Recorder` that keeps records in a local file while the history database is away.

:class:`SpoolingRecorder` is the :class:`Recorder` operators use: when the database cannot be
written, the batch goes to a local JSON-lines spool file, flushed by the next successful write or
by ``airflow-desc history flush`` (``python -m airflow_desc.history flush``). The spool is
emptied only after the database committed its records, and rewriting a record only replaces its
row, so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_desc.history.file_lock import file_lock
from airflow_desc.history.records import ProcessRecord
from airflow_desc.history.writer import HistoryStore, dedupe

__all__ = ["FlushReport", "SpoolingRecorder", "is_data_error"]

log = logging.getLogger(__name__)


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
        with file_lock(self.lock_path):
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
        with file_lock(self.lock_path):
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
        with file_lock(self.lock_path):
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
        "rejected_at": datetime.now(timezone.utc).replace(tzinfo=None).isoformat(),
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
