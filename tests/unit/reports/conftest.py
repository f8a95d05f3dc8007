from __future__ import annotations

import pathlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

DATA = pathlib.Path(__file__).parents[2] / "data" / "reports"
DC1_TSV = DATA / "dc1-status-table.tsv"
# The TSV's state columns, between its type and total columns, in the slide's order.
STATES = tuple(DC1_TSV.read_text().partition("\n")[0].split("\t")[4:-1])
GIB = 1024**3
MIB = 1024**2


def read_dc1() -> pd.DataFrame:
    """The DC1 status table of the slides, as the TSV fixture holds it (versions kept as text)."""
    frame = pd.read_csv(DC1_TSV, sep="\t", dtype={"task": str, "version": str, "process": str, "type": str})
    return frame


def dc1_counts(dc1: pd.DataFrame) -> pd.DataFrame:
    """Counts equivalent to the DC1 table: one row per (process, state) with a non-zero count."""
    rows = []
    for row in dc1.to_dict("records"):
        for state in STATES:
            if row[state]:
                rows.append(
                    {
                        "task": row["task"],
                        "version": row["version"],
                        "process": row["process"],
                        "process_type": row["type"].lower(),
                        "state": state,
                        "count": row[state],
                        "attempts": row[state],
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def dc1() -> pd.DataFrame:
    return read_dc1()


def instances_frame(
    n_per_process: int = 12,
    processes: tuple[str, ...] = ("processEimage", "level2MakeTempCoaddExp"),
    seed: int = 7,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    t0 = pd.Timestamp("2017-06-01T00:00:00Z")
    for k, process in enumerate(processes):
        n = n_per_process
        elapsed = rng.uniform(600, 3600, n)
        start = t0 + pd.to_timedelta(rng.uniform(0, 6 * 3600, n), unit="s")
        states = np.array(["success"] * n, dtype=object)
        states[: max(1, n // 6)] = "failed"
        states[max(1, n // 6) : max(2, n // 6) + 1] = "terminated"
        reasons = np.where(
            states == "success", None, np.where(states == "failed", "python-exception", "out-of-memory")
        )
        frames.append(
            pd.DataFrame(
                {
                    "workflow": "DC1-DM12",
                    "task": f"task{k}",
                    "version": "1.0",
                    "process": process,
                    "process_type": "batch",
                    "state": states,
                    "cluster": np.where(np.arange(n) % 2 == 0, "nersc", "s3df"),
                    "job_id": [str(1000 + i) for i in range(n)],
                    "try_number": 1,
                    "reason": reasons,
                    "elapsed_s": elapsed,
                    "total_cpu_s": elapsed * rng.uniform(0.5, 0.95, n),
                    "max_rss_bytes": rng.uniform(0.2, 1.5, n) * GIB,
                    "req_cpus": 1,
                    "req_mem_bytes": 2 * GIB,
                    "req_walltime_s": 7200.0,
                    "node": "nid001",
                    "start_time": start,
                    "end_time": start + pd.to_timedelta(elapsed, unit="s"),
                    "stream": [f"visit={i}" for i in range(n)],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture
def make_instances() -> Callable[..., pd.DataFrame]:
    """Process instances shaped as history.queries.process_instances returns them."""
    return instances_frame
