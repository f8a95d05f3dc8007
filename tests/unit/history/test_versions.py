"""Versions side by side in the history (SQLite): selecting by version and variant, each run's spec digest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from airflow_desc.history import HistoryFilter, HistoryStore, ProcessRecord
from airflow_desc.history.migrations import HEAD_REVISION
from airflow_desc.history.queries import dag_ids_of, process_instances, status_counts

OLD, NEW, NEWER = "a" * 64, "b" * 64, "c" * 64


def rec(version: str, run_id: str, state: str = "success", *, variant: str = "", **kw: Any) -> ProcessRecord:
    """An attempt of DC1-DM12 ``version`` (side by side: the DAG id carries it) rendered by a spec."""
    dag_id = f"DC1-DM12_v{version}" + (f"_{variant}" if variant else "")
    extra = {"workflow_version": version, "spec_digest": kw.pop("digest", OLD if version == "1.16" else NEW)}
    values: dict[str, Any] = {
        "workflow": "DC1-DM12", "process": "processEimage", "task": "processSensor", "version": "1.0",
        "variant": variant, "dag_id": dag_id, "run_id": run_id, "task_id": "processEimage",
        "stream": "visit=1",
        "state": state, "extra": extra,
    }  # fmt: skip
    values.update(kw)
    return ProcessRecord(**values)


#: Two versions of DC1-DM12 side by side, the newer with a variant.
SIDE_BY_SIDE = [
    rec("1.16", "r1"),
    rec("1.16", "r2", "failed"),
    rec("1.17", "r3"),
    rec("1.17", "r4", variant="phosim"),
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    s = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    s.record(SIDE_BY_SIDE)
    yield s
    s.dispose()


def states(frame: Any) -> list[tuple[str, str]]:
    return sorted(zip(frame["run_id"], frame["state"], strict=True))


def test_two_versions_of_one_workflow_are_selected_apart(store: HistoryStore) -> None:
    check_selection_by_version(store)


def check_selection_by_version(store: HistoryStore) -> None:
    """What each version selects (the store holds :data:`SIDE_BY_SIDE`); also on PostgreSQL."""
    old = HistoryFilter(workflow="DC1-DM12", version="1.16")
    assert states(process_instances(store.engine, old)) == [("r1", "success"), ("r2", "failed")]
    frame = process_instances(store.engine, HistoryFilter(version="1.17", variant=""))
    assert states(frame) == [("r3", "success")]
    assert (frame["workflow_version"].tolist(), frame["spec_digest"].tolist()) == (["1.17"], [NEW])
    counted = status_counts(store.engine, old)
    assert dict(zip(counted["state"], counted["count"], strict=True)) == {"failed": 1, "success": 1}
    assert dag_ids_of(store.engine, HistoryFilter(version="1.17")) == [
        "DC1-DM12_v1.17",
        "DC1-DM12_v1.17_phosim",
    ]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"version": "2.0"}, "unknown version '2.0'; the history holds: 1.16, 1.17"),
        # Only what the fields before it hold: 1.16 has no phosim variant.
        ({"workflow": "DC1-DM12", "version": "1.16", "variant": "phosim"},
         "unknown version of DC1-DM12 '1.16'; the history holds: 1.17"),
        ({"variant": "imsim"}, "unknown variant 'imsim'; the history holds: '', phosim"),
    ],
)  # fmt: skip
def test_an_unknown_version_names_those_the_history_holds(
    store: HistoryStore, filters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match="^" + message):
        process_instances(store.engine, HistoryFilter(**filters))


def run_digests(store: HistoryStore, **filters: Any) -> dict[str, str | None]:
    frame = process_instances(store.engine, HistoryFilter(**filters))
    return {
        run: (None if pd.isna(d) else d) for run, d in zip(frame["run_id"], frame["spec_digest"], strict=True)
    }


def test_each_run_keeps_the_digest_of_the_spec_that_rendered_it(store: HistoryStore) -> None:
    check_spec_digests(store)


def check_spec_digests(store: HistoryStore) -> None:
    """Each run's digest, then a rerun's (the store holds :data:`SIDE_BY_SIDE`); also on PostgreSQL."""
    assert run_digests(store, workflow="DC1-DM12") == {"r1": OLD, "r2": OLD, "r3": NEW, "r4": NEW}
    # A rerun after the spec changed: the run names the latest spec; each attempt keeps its own.
    store.record([rec("1.16", "r2", try_number=2, digest=NEWER)])
    assert run_digests(store, run_id="r2") == {"r2": NEWER}
    # A record without a digest (a hand-written DAG's) leaves the run's as it was.
    store.record([rec("1.16", "r2", try_number=3, extra={"workflow_version": "1.16"})])
    assert run_digests(store, run_id="r2") == {"r2": NEWER}
    attempts = process_instances(store.engine, HistoryFilter(run_id="r2"))
    assert [e.get("spec_digest") for e in attempts["extra"]] == [OLD, NEWER, None]


def test_the_digest_migration_goes_down_and_up_again(store: HistoryStore) -> None:
    check_digest_migration(store)


def check_digest_migration(store: HistoryStore) -> None:
    """Down to 0004 and up again, the runs kept (the store holds records); also on PostgreSQL."""
    from alembic import command

    from airflow_desc.history.engine import _alembic_config

    config = _alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    assert "spec_digest" not in {c["name"] for c in sa.inspect(store.engine).get_columns("runs")}
    store.upgrade()
    assert store.current_revision() == HEAD_REVISION
    assert set(run_digests(store).values()) == {None}  # the runs recorded before: none known
