"""The live merge reading less (status.current.merge_with_history) gives the table the full read gives.

``merge_with_history`` reads only whether a record exists for live instances whose task instance
finished, and the latest attempts of the other task instances only: on random histories and random
live states (every task-instance state, retries, bundles whose streams moved to another map index,
task instances of their own recorded under several streams, instances not recorded yet), its
merged counts, live counts and status table equal ``merge_live`` with every latest attempt of the
live tasks (``recorded_of_live``), the path it replaced.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airflow_desc.history import HistoryStore, ProcessRecord
from airflow_desc.history.queries import status_counts
from airflow_desc.reports.status import AIRFLOW_STATE_COLUMN, status_table
from airflow_desc.status.current import merge_with_history, recorded_of_live
from airflow_desc.status.live import LIVE_COLUMNS
from airflow_desc.status.merge import merge_live
from tests.unit.history.test_queries import rec

STATES = [s for s in AIRFLOW_STATE_COLUMN if s != "removed"] + ["removed"]
# (task id, bundled?, processes): tasks of their own have one process, bundles several.
TASKS = [("ingest", False, ["ingestVisit"]), ("calibrate", False, ["calibrateVisit"]),
         ("processVisit.bundle", True, ["processEimage", "imageDifference"])]  # fmt: skip
RUNS = ["run1", "run2"]


def random_history(rng: random.Random) -> list[ProcessRecord]:
    records = []
    for task_id, bundled, processes in TASKS:
        for run_id in RUNS:
            for map_index in range(6):
                for visit in range(4 if bundled else rng.choice([1, 1, 2])):  # alone: sometimes 2 streams
                    for process in processes:
                        if rng.random() < 0.2:
                            continue  # not recorded (yet)
                        state = rng.choice(["success", "failed", "terminated"])
                        for try_number in range(1, rng.choice([1, 1, 2, 3]) + 1):
                            records.append(rec(
                                f"visit={map_index * 10 + visit}", state, try_number, task_id=task_id,
                                run_id=run_id, map_index=map_index, process=process,
                                task=task_id.split(".")[0], version=rng.choice(["1.0", "1.1"]),
                            ))  # fmt: skip
    rng.shuffle(records)
    return records


def random_live(rng: random.Random) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for task_id, bundled, processes in TASKS:
        for run_id in RUNS:
            for map_index in range(7):  # one more than recorded: nothing of it recorded
                state = rng.choice(STATES)
                try_number = rng.randint(0, 4)
                job = rng.choice([None, "RUNNING", "PENDING"]) if state == "deferred" else None
                hold = rng.choice([None, None, "waiting for maintenance"]) if state == "deferred" else None
                shift = rng.choice([0, 0, 0, 1])  # a bundle whose streams moved to the next map index
                visits = range(4) if bundled else [None]
                for visit in visits:
                    stream = None if visit is None else f"visit={(map_index + shift) * 10 + visit}"
                    for process in processes:
                        rows.append({
                            "dag_id": "dc1", "run_id": run_id, "task_id": task_id, "map_index": map_index,
                            "stream": stream, "process": process, "task": task_id.split(".")[0],
                            "version": rng.choice(["1.0", "1.1"]), "process_type": "batch", "ti_state": state,
                            "try_number": try_number, "bundled": bundled, "slurm_state": job, "hold": hold,
                        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(LIVE_COLUMNS))


def _live_counts(frame: pd.DataFrame) -> dict[tuple[Any, ...], int]:
    out: dict[tuple[Any, ...], int] = {}
    for *key, count in frame.itertuples(index=False, name=None):
        out[tuple(key)] = out.get(tuple(key), 0) + int(count)
    return {k: v for k, v in out.items() if v}


@pytest.mark.parametrize("seed", range(6))
def test_reading_less_merges_the_same_table(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    history = random_history(rng)
    for start in range(0, len(history), 50):
        store.record(history[start : start + 50])
    counts = status_counts(store.engine)
    live = random_live(rng)
    old_counts, old_live = merge_live(counts, live, recorded_of_live(store.engine, live))
    new_counts, new_live = merge_with_history(store.engine, counts, live)
    assert old_live["count"].sum() > 0 and (old_counts["count"] < counts["count"]).any()  # both ways used
    pd.testing.assert_frame_equal(new_counts, old_counts)
    assert _live_counts(new_live) == _live_counts(old_live)
    pd.testing.assert_frame_equal(status_table(new_counts, new_live), status_table(old_counts, old_live))
    store.dispose()


def test_nothing_live_finished_or_not(tmp_path: Path) -> None:
    store = HistoryStore(f"sqlite:///{tmp_path / 'h.db'}")
    store.record(random_history(random.Random(1)))
    counts = status_counts(store.engine)
    live = random_live(random.Random(2))
    for part in (live.iloc[:0], live[live["ti_state"] == "success"], live[live["ti_state"] != "success"]):
        old = merge_live(counts, part, recorded_of_live(store.engine, part))
        new = merge_with_history(store.engine, counts, part)
        pd.testing.assert_frame_equal(new[0], old[0])
        assert _live_counts(new[1]) == _live_counts(old[1])
    store.dispose()
