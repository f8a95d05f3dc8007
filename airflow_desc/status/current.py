"""The status of a campaign now: the history's counts merged with the live states of runs in progress.

What ``airflow-desc status`` / ``report`` and the UI page show. :func:`current_counts` reads the
history (:func:`~airflow_desc.history.queries.status_counts`), the live process instances of the
queued and running DAG runs (:func:`~airflow_desc.status.live.live_process_instances`, from
Airflow's metadata DB and the process plans and polled SLURM job states of the history), the
latest recorded attempts of those instances, and merges them
(:func:`~airflow_desc.status.merge.merge_live`). Databases only: no DAG file is parsed, no
cluster is asked. When live states cannot be read the history's counts stand alone and
:attr:`CurrentCounts.warning` says why; a time window that ends (``until``) is history only:
live states are now.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_desc.history.filters import INSTANCE_FIELDS, HistoryFilter

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

    from airflow_desc.history import HistoryStore

__all__ = ["CurrentCounts", "current_counts", "merge_with_history", "readable_history", "recorded_of_live"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurrentCounts:
    """The counts behind the status table.

    :param counts: the history's counts, less the attempts that live states supersede.
    :param live: counts of live instances (``None``: none, or not read).
    :param warning: why live states were not merged, if they could not be read.
    :param order: ``(task, process)`` rows in their workflows' order, for
        :func:`~airflow_desc.reports.status.status_table` (``None``: not known here).
    :param notes: what the reader should know of the live states (e.g. SLURM states too old to
        trust, counted as Submitted).
    """

    counts: pd.DataFrame
    live: pd.DataFrame | None
    warning: str | None = None
    order: list[tuple[str, str]] | None = None
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether there is nothing to show."""
        return self.counts.empty and (self.live is None or self.live.empty)


def readable_history(store: HistoryStore) -> Engine:
    """Return the store's engine for reading; a database without the history's tables is an error.

    :raises ValueError: naming the database and where the history is configured.
    """
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its "Context impl" lines are noise here
    if store.current_revision() is None:
        raise ValueError(
            f"{store!r} holds no airflow-desc history: nothing was recorded there yet. Check --db, or "
            "DESC_HISTORY_CONN_ID / [desc] history_conn_id (the default is $AIRFLOW_HOME/desc/history.db)"
        )
    return store.engine


def current_counts(
    store: HistoryStore, selection: HistoryFilter | None = None, *, live: bool = True
) -> CurrentCounts:
    """Return the history's counts and the live counts of the runs in progress.

    :param store: the history store.
    :param selection: which instances, by :data:`~airflow_desc.history.filters.INSTANCE_FIELDS`:
        workflow, variant, version, run, DAGs (a UI user's readable ones), and ``since`` (live instances
        began now) / ``until`` (none live then); ``None``: all.
    :param live: whether to read and merge live states at all.
    :raises ValueError: for unknown names, or a history without its tables, when nothing is live
        either.
    :raises TypeError: when the filter narrows by another field (process, state ...).
    """
    import pandas as pd

    from airflow_desc.history.queries import STATUS_COLUMNS, dag_ids_of, status_counts
    from airflow_desc.status.merge import merge_live

    selection = selection or HistoryFilter()
    selection.require_only(INSTANCE_FIELDS, "current_counts")
    instances, warning, notes = None, None, tuple[str, ...]()
    if live and selection.until is None:
        instances, warning, notes = _live(store, selection)
    try:
        engine = readable_history(store)
        counts = status_counts(engine, selection)
    except ValueError:
        if instances is None or instances.empty:
            raise
        nothing = pd.DataFrame(columns=list(STATUS_COLUMNS))  # in progress, nothing recorded yet
        order = _order(store, set(instances["dag_id"].unique()))
        live_counts = merge_live(nothing, instances, pd.DataFrame())[1]
        return CurrentCounts(nothing, live_counts, warning, order, notes)
    dags = set(dag_ids_of(engine, selection))
    if instances is None or instances.empty:
        return CurrentCounts(counts, None, warning, _order(store, dags) if live else None, notes)
    merged, live_counts = merge_with_history(engine, counts, instances)
    order = _order(store, dags | set(instances["dag_id"].unique()))
    return CurrentCounts(merged, live_counts, warning, order, notes)


def merge_with_history(
    engine: Engine, counts: pd.DataFrame, instances: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``merge_live(counts, instances, recorded_of_live(engine, instances))``, reading less.

    A live instance whose task instance finished (success, failed, skipped ...) counts live only
    when nothing of it is recorded, and changes nothing otherwise (its record wins): of those, most
    of a campaign in progress, only whether a record exists is read, from the history's index
    (:func:`~airflow_desc.history.queries.recorded_instances`). The latest attempts of the others'
    task instances are read whole and merged as :func:`~airflow_desc.status.merge.merge_live` does.
    ``tests/unit/status/test_merge_with_history.py`` holds the two equal.

    :param engine: the history's engine.
    :param counts: the history's counts.
    :param instances: live process instances (:data:`~airflow_desc.status.live.LIVE_COLUMNS`).
    """
    import numpy as np
    import pandas as pd

    from airflow_desc.history.queries import recorded_instances
    from airflow_desc.status.merge import RUNS_AGAIN, UNDER_WAY, merge_live, summed_live

    state = instances["ti_state"]
    finished = (state.notna() & ~state.isin([*RUNS_AGAIN - {None}, *UNDER_WAY])).to_numpy()
    done, rest = instances[finished], instances[~finished]
    merged, live_rest = merge_live(counts, rest, recorded_of_live(engine, rest, by_task_instance=True))
    if done.empty:
        return merged, live_rest
    bundled = done["bundled"].astype(bool).to_numpy()
    key = ["dag_id", "run_id", "task_id", "map_index", "process"]
    recorded = np.zeros(len(done), dtype=bool)
    for part, by_stream in ((~bundled, False), (bundled, True)):
        rows = done[part]
        if rows.empty:
            continue
        found = recorded_instances(
            engine, _dag_runs(rows), task_ids=sorted(rows["task_id"].unique()),
            processes=sorted(rows["process"].unique()), by_stream=by_stream,
        )  # fmt: skip
        columns = [rows[c].tolist() for c in key]
        columns[3] = [int(m) for m in columns[3]]  # map_index: plain ints, as the history's
        if by_stream:  # as merge_live matches them: no stream is the top-level one, ""
            columns.append([s if isinstance(s, str) else "" for s in rows["stream"].tolist()])
        recorded[part] = [row_key in found for row_key in zip(*columns, strict=True)]
    unrecorded = done[~recorded]
    live_done = merge_live(merged.iloc[:0], unrecorded, pd.DataFrame())[1]  # no record: nothing superseded
    return merged, summed_live([live_rest, live_done])


def _dag_runs(instances: pd.DataFrame) -> list[tuple[str, str]]:
    # unique() on the columns: iterating a quarter of a million pandas cells into a set costs seconds.
    return sorted(instances[["dag_id", "run_id"]].drop_duplicates().itertuples(index=False, name=None))


def recorded_of_live(
    engine: Engine, instances: pd.DataFrame, *, by_task_instance: bool = False
) -> pd.DataFrame:
    """Return the latest recorded attempts of the live instances' task instances and processes.

    :param engine: the history's engine.
    :param instances: live process instances (:data:`~airflow_desc.status.live.LIVE_COLUMNS`).
    :param by_task_instance: read those of the live task instances only (else of their tasks, every
        map index: one statement, the cheaper when most of them are live).
    """
    from airflow_desc.history.queries import LATEST_COLUMNS, latest_attempts

    if instances.empty:
        import pandas as pd

        return pd.DataFrame(columns=list(LATEST_COLUMNS))
    task_instances = None
    if by_task_instance:
        frame = instances[["dag_id", "run_id", "task_id", "map_index"]].drop_duplicates()
        task_instances = list(frame.itertuples(index=False, name=None))
    return latest_attempts(
        engine, _dag_runs(instances), task_ids=sorted(instances["task_id"].unique()),
        processes=sorted(instances["process"].unique()), task_instances=task_instances,
    )  # fmt: skip


def _order(store: HistoryStore, dag_ids: Collection[str]) -> list[tuple[str, str]] | None:
    """Return the rows' order from the DAGs' stored plans; ``None`` when the history has none."""
    if not dag_ids:
        return None
    try:
        from airflow_desc.status.live import process_order

        return process_order(store.engine, dag_ids) or None
    except Exception:  # noqa: BLE001 - without plans the table keeps the history's order
        log.debug("no process order from the history's plans", exc_info=True)
        return None


def _live(
    store: HistoryStore, selection: HistoryFilter
) -> tuple[pd.DataFrame | None, str | None, tuple[str, ...]]:
    notes: list[str] = []
    try:
        from airflow_desc.status.live import live_process_instances

        instances = live_process_instances(
            store.engine,
            workflow=selection.workflow,
            run_id=selection.run_id,
            variant=selection.variant,
            version=selection.version,
            dag_ids=selection.dag_ids,
            problems=notes,
        )
    except Exception as exc:  # noqa: BLE001 - any failure to read them leaves the history's table
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.debug("live states not read", exc_info=True)
        return (
            None,
            (
                f"live task-instance states not merged (Airflow's metadata DB or the history: {first}); "
                "the table counts recorded attempts only"
            ),
            (),
        )
    return instances, None, tuple(notes)
