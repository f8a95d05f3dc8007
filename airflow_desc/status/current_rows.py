"""The status table's counts with the live merge, as plain rows: ``airflow-desc status`` without pandas.

:func:`current_rows` gives what :func:`~airflow_desc.status.current.current_counts` gives (the
history's counts less what live states supersede, the live counts, the rows' order, the notes) for
the usual question (:func:`~airflow_desc.history.status_read.summed_counts` answers the counts;
Airflow's metadata DB named by plain configuration), reading both databases through the DBAPI:
:mod:`~airflow_desc.status.metadata_db`, :class:`~airflow_desc.history.live_records.LiveRecords`
and :func:`~airflow_desc.status.merge_rows.merge_rows`. Neither SQLAlchemy nor pandas is imported,
which was most of what the live merge added to ``status --no-live`` (issue #13 item 3). Anything
else, and any failure to read, gives None: the caller takes ``current_counts``' path, which says
what is wrong (a warning, or an error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from airflow_desc.history.filters import INSTANCE_FIELDS, HistoryFilter
from airflow_desc.status.merge_rows import CountRow

__all__ = ["CurrentRows", "current_rows"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurrentRows:
    """The rows behind the status table, as :class:`~airflow_desc.status.current.CurrentCounts` has them.

    :param counts: the history's counts less what live states supersede.
    :param live: the live counts.
    :param order: ``(task, process)`` in the workflows' order, or None (first-seen order).
    :param notes: what the reader should know of the live states.
    """

    counts: list[CountRow]
    live: list[CountRow]
    order: list[tuple[str, str]] | None
    notes: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """Whether there is nothing to show."""
        return not self.counts and not self.live


def current_rows(
    url_or_conn_id: str | None,
    selection: HistoryFilter | None = None,
    metadata: tuple[str, str | None] | None = None,
) -> CurrentRows | None:
    """Return the status table's rows with live states merged, or None: ask ``current_counts`` instead.

    :param url_or_conn_id: the history, as for :func:`~airflow_desc.history.open_history`.
    :param selection: which instances, by :data:`~airflow_desc.history.filters.INSTANCE_FIELDS`.
    :param metadata: Airflow's metadata DB and fernet key, where the caller read its configuration
        (the api-server); else read from plain configuration
        (:func:`~airflow_desc.status.metadata_db.open_metadata_tables`).
    """
    from airflow_desc.history.status_read import open_dbapi
    from airflow_desc.status.merge_rows import collector_paused
    from airflow_desc.status.metadata_db import open_metadata_tables

    selection = selection or HistoryFilter()
    selection.require_only(INSTANCE_FIELDS, "current_rows")
    if selection.since is not None or selection.until is not None:
        return None
    tables = open_metadata_tables(*metadata) if metadata else open_metadata_tables()
    if tables is None:
        return None
    try:
        with tables:
            opened = open_dbapi(url_or_conn_id)
            if opened is None:
                return None
            conn, placeholder, _errors = opened
            try:
                with collector_paused():  # the live rows are many dicts, kept
                    return _read(conn, placeholder, tables, selection)
            finally:
                conn.close()
    except Exception:  # noqa: BLE001 - current_counts' path reads again and says what is wrong
        log.debug("status rows not read through the DBAPI", exc_info=True)
        return None


def _read(conn: object, placeholder: str, tables: object, selection: HistoryFilter) -> CurrentRows | None:
    from airflow_desc.history.live_records import LiveRecords
    from airflow_desc.history.status_read import counts_of
    from airflow_desc.status.live import live_rows, order_of, plans_of
    from airflow_desc.status.merge_rows import merge_rows

    counts = counts_of(conn.cursor(), placeholder, selection)  # type: ignore[attr-defined]
    if counts is None:
        return None
    records = LiveRecords(conn, placeholder)
    wanted = {
        "workflow": selection.workflow,
        "variant": selection.variant,
        "workflow_version": selection.version,
    }
    notes: list[str] = []
    rows = live_rows(tables, records, wanted, selection.dag_ids, selection.run_id, True, notes)
    dags = set(records.dag_ids(selection)) | {row["dag_id"] for row in rows}
    order = order_of(plans_of(records.process_plans(dags), dags)) or None if dags else None
    if not rows:
        return CurrentRows([row[:6] for row in counts], [], order, tuple(notes))
    merged, live = merge_rows(counts, rows, records)
    return CurrentRows(merged, live, order, tuple(notes))
