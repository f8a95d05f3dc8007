"""The counts the writer keeps (``instance_counts``) equal a full recount of the attempts, on SQLite.

:func:`write_mixed_history` and :func:`assert_counts_are_a_recount` are shared with
``tests/integration/test_history_counts.py``, which runs them on the site's PostgreSQL.
"""

from __future__ import annotations

import collections
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_desc.history import HistoryFilter, HistoryStore, ProcessRecord, SpoolingRecorder
from airflow_desc.history.count_queries import _status_counts_window
from airflow_desc.history.latest import HeldAttempt, plan_batch
from airflow_desc.history.queries import process_instances, status_counts
from airflow_desc.history.schema import instance_counts, runs, workflows
from airflow_desc.history.status_read import summed_counts
from tests.unit.history.test_queries import counts, random_attempts, rec

GroupKey = tuple[Any, ...]
_SINCE = datetime(2018, 1, 1)


def write_mixed_history(store: HistoryStore, spool_dir: Path, seed: int) -> None:
    """Write a random history as workers and flushers do, in an order that stresses the counts.

    Retries (up to 3 tries), resubmissions (up to 3 jobs a try), rewrites of an attempt's key with
    another state (and sometimes another version or workflow version), earlier attempts arriving
    after later ones, batches of 1 to 40 records over several runs, batches written again as they
    were, and records spooled while the database was away, then flushed (a spool replay, some of
    them already written).
    """
    rng = random.Random(seed)
    pending = random_attempts(
        rng, 240,
        lambda: {"version": rng.choice(["1.0", "1.0", "1.1"]),
                 "extra": {"workflow_version": rng.choice(["v1", "v1", "v2"])}},
    )  # fmt: skip
    written: list[list[ProcessRecord]] = []
    away = SpoolingRecorder(HistoryStore(f"sqlite:///{spool_dir}/not-a-dir/x/../h.db"), spool_dir / "spool")
    (spool_dir / "not-a-dir").write_text("a file: no database can be made under it")
    while pending:
        size = rng.randint(1, 40)
        batch, pending = pending[:size], pending[size:]
        if rng.random() < 0.15:
            away.record(batch)  # spooled: the database is away
            if rng.random() < 0.5:
                store.record(batch)  # ... and written by another worker meanwhile
        else:
            store.record(batch)
        written.append(batch)
        if written and rng.random() < 0.1:
            store.record(rng.choice(written))  # replayed as it was
    assert away.pending() > 0
    SpoolingRecorder(store, spool_dir / "spool").flush()
    assert away.pending() == 0


def recount(store: HistoryStore) -> dict[GroupKey, tuple[int, int]]:
    """Count the attempts again from scratch (their ``latest`` flag unused): instances and attempts."""
    frame = process_instances(store.engine)
    by_instance: dict[GroupKey, list[Any]] = collections.defaultdict(list)
    for row in frame.itertuples():
        by_instance[(row.dag_id, row.run_id, row.task_id, row.map_index, row.stream, row.process)].append(row)
    out: dict[GroupKey, list[int]] = collections.defaultdict(lambda: [0, 0])
    for attempts in by_instance.values():
        last = max(attempts, key=lambda r: (r.try_number, r.resubmit))
        key = (last.run_id, last.extra.get("workflow_version") or "", last.task, last.version, last.process,
               last.process_type, last.state)  # fmt: skip
        out[key][0] += 1
        out[key][1] += len(attempts)
    return {k: (n, a) for k, (n, a) in out.items()}


def kept_counts(store: HistoryStore) -> dict[GroupKey, tuple[int, int]]:
    """Return ``instance_counts`` as the writer kept it, by the keys :func:`recount` uses."""
    ic = instance_counts
    query = sa.select(
        runs.c.run_id, workflows.c.version, ic.c.task, ic.c.version, ic.c.process, ic.c.process_type,
        ic.c.state, ic.c.instances, ic.c.attempts,
    ).join(runs, runs.c.id == ic.c.run_ref).join(workflows, workflows.c.id == ic.c.workflow_ref)  # fmt: skip
    with store.engine.connect() as conn:
        return {tuple(row[:-2]): (int(row[-2]), int(row[-1])) for row in conn.execute(query)}


def dbapi_url(store: HistoryStore) -> str:
    """Return the store's URL with the ``options`` (a PostgreSQL test schema) of its engine in it."""
    options = store._engine_options.get("connect_args", {}).get("options")
    url = store.url.update_query_dict({"options": options}) if options else store.url
    return url.render_as_string(hide_password=False)


def assert_counts_are_a_recount(store: HistoryStore) -> None:
    """``instance_counts`` (no row at 0), and the status table from it, equal full recounts.

    The status table's query through the DBAPI alone (the CLI's, ``summed_counts``) equals it too.
    """
    assert kept_counts(store) == recount(store)
    for selection in (None, HistoryFilter(run_id="run2"), HistoryFilter(dag_ids={"dc1"})):
        assert status_counts(store.engine, selection).equals(_status_counts_window(store.engine, selection))
    selections = (
        None, HistoryFilter(run_id="run2"), HistoryFilter(dag_ids={"dc1"}), HistoryFilter(dag_ids=set()),
        HistoryFilter(version="v2", run_id="run1"),
        HistoryFilter(workflow="DC1-DM12", dag_ids={"dc1", "other"}),
    )  # fmt: skip
    for selection in selections:
        table = status_counts(store.engine, selection)
        assert summed_counts(dbapi_url(store), selection) == list(table.itertuples(index=False, name=None))
    assert status_counts(store.engine).shape[0] > 4  # the selections above are not all empty
    for unknown in (HistoryFilter(workflow="DC2"), HistoryFilter(run_id="nope"), HistoryFilter(since=_SINCE)):
        assert summed_counts(dbapi_url(store), unknown) is None  # status_counts says what is wrong


def test_counts_equal_a_recount_after_mixed_writes(tmp_path: Path) -> None:
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    write_mixed_history(store, tmp_path, seed=11)
    assert_counts_are_a_recount(store)
    store.dispose()


def test_the_migration_counts_what_was_recorded_before_it(tmp_path: Path) -> None:
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    write_mixed_history(store, tmp_path, seed=5)
    before = kept_counts(store)
    from alembic import command

    from airflow_desc.history.engine import _alembic_config

    config = _alembic_config()
    with store.engine.begin() as conn:  # down to before the counts, which the upgrade then fills
        config.attributes["connection"] = conn
        command.downgrade(config, "0007")
    assert "instance_counts" not in sa.inspect(store.engine).get_table_names()
    store.upgrade()
    assert kept_counts(store) == before == recount(store)
    store.dispose()


def test_a_time_window_counts_from_the_attempts(tmp_path: Path) -> None:
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    store.record([rec("s=1", "failed", 1), rec("s=1", "success", 2, hours=30), rec("s=2", hours=60)])
    since = HistoryFilter(since=rec("s", hours=20).start_time)
    assert counts(status_counts(store.engine, since)) == {("processEimage", "success"): (2, 3)}
    with store.engine.begin() as conn:  # the window reads the attempts, not the kept counts
        conn.execute(instance_counts.delete())
    assert counts(status_counts(store.engine, since)) == {("processEimage", "success"): (2, 3)}
    assert status_counts(store.engine).empty
    store.dispose()


def _row(stream: int, try_number: int, resubmit: int = 0, state: str = "success") -> dict[str, Any]:
    return {
        "run_ref": 1, "stream_ref": stream, "task_id": "t", "map_index": 0, "process": "p",
        "try_number": try_number, "resubmit": resubmit, "workflow_ref": 1, "task": "T", "version": "1",
        "process_type": "batch", "state": state,
    }  # fmt: skip


def test_plan_moves_an_instance_from_its_old_latest_attempt_to_its_new_one() -> None:
    held = [
        HeldAttempt(10, False, _row(1, 1, state="failed")),
        HeldAttempt(11, True, _row(1, 2, state="failed")),
    ]
    new = [_row(1, 2, 1), _row(2, 1, state="running")]
    plan = plan_batch(held, new)
    assert [r["latest"] for r in new] == [True, True]
    assert plan.flips == {True: [], False: [11]}
    group = (1, 1, "T", "1", "p", "batch")
    assert plan.counts == {
        (*group, "failed"): (-1, -2), (*group, "success"): (1, 3), (*group, "running"): (1, 1),
    }  # fmt: skip


def test_plan_supersedes_an_earlier_attempt_arriving_late_and_counts_a_replay_as_nothing() -> None:
    held = [HeldAttempt(11, True, _row(1, 2))]
    late = [_row(1, 1, state="failed")]
    plan = plan_batch(held, late)
    assert late[0]["latest"] is False and plan.flips == {True: [], False: []}
    assert plan.counts == {(1, 1, "T", "1", "p", "batch", "success"): (0, 1)}
    replay = [_row(1, 2)]
    plan = plan_batch([*held, HeldAttempt(12, False, _row(1, 1, state="failed"))], replay)
    assert replay[0]["latest"] is True and plan.counts == {} and plan.flips == {True: [], False: []}
