"""The status table's queries: the latest attempt of each process instance, counted.

* :func:`status_counts`: the DC1 status table, summed from ``instance_counts`` (or, over a time
  window, counted from the attempts);
* :func:`latest_attempts`: the latest attempt of each process instance of some runs, and
  :func:`recorded_instances`: which of their instances have one (what the live merge needs);
  :func:`dag_ids_of` and :func:`known_workflows`: what a selection covers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from airflow_desc.history import schema
from airflow_desc.history.filters import INSTANCE_FIELDS, HistoryFilter
from airflow_desc.history.query_filters import (
    INSTANCE,
    began,
    pi,
    plain_tuples,
    status_filters,
    time_window,
    workflow_conditions,
)
from airflow_desc.history.records import INSTANCE_KEY
from airflow_desc.history.schema import runs, streams, workflows

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LATEST_COLUMNS",
    "STATUS_COLUMNS",
    "dag_ids_of",
    "known_workflows",
    "latest_attempts",
    "recorded_instances",
    "status_counts",
]

# Parameters per IN (...) list: below SQLite's variable limit.
_IN_CHUNK = 500

#: The columns of :func:`status_counts`.
STATUS_COLUMNS = ("task", "version", "process", "process_type", "state", "count", "attempts")
#: The columns of :func:`latest_attempts`.
LATEST_COLUMNS = (
    *INSTANCE_KEY,
    "try_number",
    "state",
    "task",
    "version",
    "process_type",
)


def status_counts(engine: Engine, selection: HistoryFilter | None = None) -> pd.DataFrame:
    """Return the status table: the latest attempt of each process instance, counted.

    One row per (task, version, process, process_type, state) holding at least one instance;
    ``count`` is the number of instances whose latest attempt is in that state, ``attempts`` the
    number of attempts of those instances (all tries). Summed from ``instance_counts``, which the
    writer keeps per run in the transaction of each attempt (a few thousand rows, whatever the
    number of attempts); with a time window (``since`` / ``until``), counted from the attempts
    themselves: the grouped partial index of latest attempts, plus the superseded attempts joined
    to their instance's latest one.

    :param engine: the history store's engine.
    :param selection: which instances, by :data:`~airflow_desc.history.filters.INSTANCE_FIELDS`
        only (``since`` / ``until``: when an instance's latest attempt began); ``None``: all.
    :return: a DataFrame with columns :data:`STATUS_COLUMNS`, sorted by task, version, process, state.
    :raises TypeError: when the filter narrows by another field (process, state ...).
    """
    selection = selection or HistoryFilter()
    selection.require_only(INSTANCE_FIELDS, "status_counts")
    with engine.connect() as conn:
        if selection.since is None and selection.until is None:
            query = _summed_counts(status_filters(conn, selection, schema.instance_counts))
        else:
            query = _counted_attempts(status_filters(conn, selection))
        rows = plain_tuples(conn.execute(query))
    return _status_frame(rows)


def _summed_counts(where: Sequence[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """Return the status table's query on ``instance_counts``."""
    ic = schema.instance_counts
    keys = [ic.c.task, ic.c.version, ic.c.process, ic.c.process_type, ic.c.state]
    query = sa.select(*keys, sa.func.sum(ic.c.instances), sa.func.sum(ic.c.attempts)).where(*where)
    return query.group_by(*keys).having(sa.func.sum(ic.c.instances) > 0).order_by(*keys)


def _counted_attempts(where: Sequence[sa.ColumnElement[bool]]) -> sa.Select[Any]:
    """Return the status table's query on the attempts: latest ones grouped, superseded ones joined."""
    old = pi.alias("superseded")
    same_instance = [getattr(old.c, c.name) == c for c in INSTANCE]
    keys = [pi.c.task, pi.c.version, pi.c.process, pi.c.process_type, pi.c.state]
    latest = sa.select(*keys, sa.func.count().label("count"), sa.func.count().label("attempts"))
    earlier = sa.select(*keys, sa.literal(0).label("count"), sa.func.count().label("attempts"))
    earlier = earlier.select_from(old.join(pi, sa.and_(*same_instance)))
    both = sa.union_all(
        latest.where(pi.c.latest, *where).group_by(*keys),
        earlier.where(sa.not_(old.c.latest), pi.c.latest, *where).group_by(*keys),
    ).subquery("counted")
    out = [both.c[k.name] for k in keys]
    query = sa.select(*out, sa.func.sum(both.c["count"]), sa.func.sum(both.c.attempts))
    return query.group_by(*out).order_by(*out)


def _status_frame(rows: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=list(STATUS_COLUMNS))
    return frame.astype({"count": "int64", "attempts": "int64"})


def _status_counts_window(engine: Engine, selection: HistoryFilter | None = None) -> pd.DataFrame:
    """:func:`status_counts` from the attempts alone (a window over each instance), ignoring ``latest``.

    The reference the tests hold :func:`status_counts` to; ~10x slower at a million attempts.
    """
    instance = list(INSTANCE)
    window: list[sa.ColumnElement[Any]] = [
        pi.c.task,
        pi.c.version,
        pi.c.process,
        pi.c.process_type,
        pi.c.state,
        began().label("began"),
        sa.func.row_number()
        .over(partition_by=instance, order_by=(pi.c.try_number.desc(), pi.c.resubmit.desc()))
        .label("newest"),
        sa.func.count().over(partition_by=instance).label("tries"),
    ]
    selection = selection or HistoryFilter()
    selection.require_only(INSTANCE_FIELDS, "_status_counts_window")
    since, until = selection.since, selection.until
    with engine.connect() as conn:
        # The window applies to each instance's latest attempt, below, not to every attempt.
        where = status_filters(conn, dataclasses.replace(selection, since=None, until=None))
        ranked = sa.select(*window).where(*where).subquery("ranked")
        keys = [ranked.c.task, ranked.c.version, ranked.c.process, ranked.c.process_type, ranked.c.state]
        query = (
            sa.select(*keys, sa.func.count(), sa.func.sum(ranked.c.tries))
            .where(ranked.c.newest == 1, *time_window(ranked.c.began, since, until))
            .group_by(*keys)
            .order_by(*keys)
        )
        rows = plain_tuples(conn.execute(query))
    return _status_frame(rows)


def known_workflows(engine: Engine, *, dag_ids: Collection[str] | None = None) -> pd.DataFrame:
    """Return the workflows the history holds (columns ``name, variant, version``), sorted.

    :param engine: the history store's engine.
    :param dag_ids: only workflows with runs of these DAGs.
    """
    import pandas as pd

    query = sa.select(workflows.c.name, workflows.c.variant, workflows.c.version).distinct()
    if dag_ids is not None:
        with_runs = sa.select(runs.c.workflow_ref).where(runs.c.dag_id.in_(sorted(set(dag_ids))))
        query = query.where(workflows.c.id.in_(with_runs))
    with engine.connect() as conn:
        rows = plain_tuples(
            conn.execute(query.order_by(workflows.c.name, workflows.c.variant, workflows.c.version))
        )
    return pd.DataFrame.from_records(rows, columns=["name", "variant", "version"])


def dag_ids_of(engine: Engine, selection: HistoryFilter | None = None) -> list[str]:
    """Return the DAG ids of the runs a selection covers (as :func:`status_counts` filters), sorted.

    Unknown names give no DAGs here (:func:`status_counts` is the one that says so). The time
    window is not applied: a DAG's runs are all of its runs.

    :param engine: the history store's engine.
    :param selection: as for :func:`status_counts`; ``None``: all.
    """
    selection = selection or HistoryFilter()
    selection.require_only(INSTANCE_FIELDS, "dag_ids_of")
    query = sa.select(runs.c.dag_id).distinct().join(workflows, workflows.c.id == runs.c.workflow_ref)
    query = query.where(*workflow_conditions(selection))
    if selection.run_id is not None:
        query = query.where(runs.c.run_id == selection.run_id)
    if selection.dag_ids is not None:
        query = query.where(runs.c.dag_id.in_(sorted(selection.dag_ids)))
    with engine.connect() as conn:
        return sorted(str(d) for (d,) in conn.execute(query))


def latest_attempts(
    engine: Engine,
    dag_runs: Sequence[tuple[str, str]],
    *,
    task_ids: Sequence[str] | None = None,
    processes: Sequence[str] | None = None,
    task_instances: Collection[tuple[str, str, str, int]] | None = None,
) -> pd.DataFrame:
    """Return the latest recorded attempt of each process instance of some DAG runs.

    What :func:`airflow_desc.status.merge.merge_live` needs to tell which live task instances
    already have a record, and of which try.

    :param engine: the history store's engine.
    :param dag_runs: ``(dag_id, run_id)`` pairs; runs the history does not hold are ignored.
    :param task_ids: only attempts of these Airflow tasks (the live ones).
    :param processes: only these processes (the live ones: a bundle's nested sub-tasks, most of
        a campaign's instances, are not).
    :param task_instances: only those of these ``(dag_id, run_id, task_id, map_index)``: read by
        run and task through ``ix_process_instances_live`` (instead of ``task_ids``).
    :return: a DataFrame with columns :data:`LATEST_COLUMNS`, one row per process instance.
    """
    import pandas as pd

    columns = [
        pi.c.run_ref, pi.c.task_id, pi.c.map_index, streams.c.path, pi.c.process,
        pi.c.try_number, pi.c.state, pi.c.task, pi.c.version, pi.c.process_type,
    ]  # fmt: skip
    with engine.connect() as conn:
        names = _run_names(conn, dag_runs)
        # One statement for every run (a statement per run read the live processes' attempts of
        # every run each time on SQLite), the run's names added here rather than joined per row.
        query = (
            sa.select(*columns)
            .select_from(pi.join(streams, streams.c.id == pi.c.stream_ref))
            .where(pi.c.latest)
        )
        if task_instances is None:
            query = query.where(pi.c.run_ref.in_(sorted(names)))
        if task_ids is not None and task_instances is None:
            query = query.where(pi.c.task_id.in_(sorted(set(task_ids))))
        if processes is not None:
            query = query.where(pi.c.process.in_(sorted(set(processes))))
        if task_instances is not None:
            found = _by_task_instance(conn, query, names, task_instances)
        else:
            found = list(conn.execute(query).fetchall()) if names else []
    rows = [(*names[row[0]], *row[1:]) for row in found]
    return pd.DataFrame.from_records(rows, columns=list(LATEST_COLUMNS))


def recorded_instances(
    engine: Engine,
    dag_runs: Sequence[tuple[str, str]],
    *,
    task_ids: Sequence[str],
    processes: Sequence[str],
    by_stream: bool,
) -> set[tuple[Any, ...]]:
    """Return which process instances of some DAG runs have a recorded attempt.

    What the live merge asks of the live instances whose task instance finished (their record wins
    then, if there is one): ``ix_process_instances_live`` answers without reading the attempts.

    :param engine: the history store's engine.
    :param dag_runs: ``(dag_id, run_id)`` pairs; runs the history does not hold are ignored.
    :param task_ids: only instances of these Airflow tasks.
    :param processes: only these processes.
    :param by_stream: the instances' streams too (bundled instances: a task instance runs many).
    :return: ``(dag_id, run_id, task_id, map_index, process)`` of each instance recorded, plus its
        stream's path with ``by_stream``.
    """
    key = [pi.c.run_ref, pi.c.task_id, pi.c.map_index, pi.c.process]
    with engine.connect() as conn:
        names = _run_names(conn, dag_runs)
        if not names or not task_ids or not processes:
            return set()
        if by_stream:
            query = sa.select(*key, streams.c.path).select_from(
                pi.join(streams, streams.c.id == pi.c.stream_ref)
            )
        else:
            query = sa.select(*key).distinct()
        query = query.where(
            pi.c.latest, pi.c.run_ref.in_(sorted(names)), pi.c.task_id.in_(sorted(set(task_ids))),
            pi.c.process.in_(sorted(set(processes))),
        )  # fmt: skip
        return {(*names[row[0]], *row[1:]) for row in conn.execute(query).fetchall()}


def _run_names(conn: sa.Connection, dag_runs: Sequence[tuple[str, str]]) -> dict[int, tuple[str, str]]:
    """Return the history's id of each of these runs that it holds: id -> (dag_id, run_id)."""
    wanted = set(dag_runs)
    return {
        ref: (dag_id, run_id)
        for ref, dag_id, run_id in conn.execute(sa.select(runs.c.id, runs.c.dag_id, runs.c.run_id))
        if (dag_id, run_id) in wanted
    }


def _by_task_instance(
    conn: sa.Connection,
    query: sa.Select[Any],
    names: dict[int, tuple[str, str]],
    task_instances: Collection[tuple[str, str, str, int]],
) -> list[Any]:
    """Run ``query`` for these task instances: a statement per run and task, their map indexes listed."""
    refs = {run: ref for ref, run in names.items()}
    wanted: dict[tuple[int, str], set[int]] = {}
    for dag_id, run_id, task_id, map_index in task_instances:
        if (dag_id, run_id) in refs:
            wanted.setdefault((refs[dag_id, run_id], task_id), set()).add(int(map_index))
    found: list[Any] = []
    for (ref, task_id), indexes in sorted(wanted.items()):
        for chunk in _chunks(sorted(indexes), _IN_CHUNK):
            part = query.where(pi.c.run_ref == ref, pi.c.task_id == task_id, pi.c.map_index.in_(chunk))
            found.extend(conn.execute(part).fetchall())
    return found


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
