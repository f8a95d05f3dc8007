"""Figures by stream, per cluster, and with many processes: readable at DC1's size."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from airflow_desc.reports import figures
from airflow_desc.reports.streams import (
    TOP_LEVEL,
    failures_by_stream,
    stream_values,
    stream_variables,
    usage_by_stream,
)

GIB = 1024**3


def sensors(visits: int = 12, failing_every: int = 5) -> pd.DataFrame:
    """processEimage per visit, raft and sensor (raft R22 twice as slow), and processVisit per visit."""
    rows = []
    for v in range(visits):
        for raft in ("R01", "R22", "R43"):
            for sensor in ("S00", "S11"):
                n = len(rows)
                failed = n % failing_every == 0
                rows.append({
                    "process": "processEimage", "stream": f"visit={v * 10}/raft={raft}/sensor={sensor}",
                    "state": "terminated" if failed else "success",
                    "reason": "out-of-memory" if failed else None,
                    "elapsed_s": 200.0 * (2 if raft == "R22" else 1) + n % 7, "total_cpu_s": 150.0 + n % 5,
                    "max_rss_bytes": GIB * (1 + (n % 3) / 10), "cluster": "perlmutter",
                })  # fmt: skip
        rows.append({
            "process": "processVisit", "stream": f"visit={v * 10}",
            "state": "failed" if v == 3 else "success",
            "reason": "missing-input" if v == 3 else None, "elapsed_s": 50.0, "total_cpu_s": 40.0,
            "max_rss_bytes": GIB / 2, "cluster": "s3df",
        })  # fmt: skip
    rows.append({"process": "ingest", "stream": "", "state": "failed", "reason": None, "elapsed_s": 5.0,
                 "total_cpu_s": 1.0, "max_rss_bytes": GIB / 8, "cluster": "s3df"})  # fmt: skip
    return pd.DataFrame(rows)


def test_stream_paths_become_one_column_per_variable() -> None:
    values = stream_values(pd.Series(["visit=2201/raft=R22/sensor=S11", "visit=7", "", None]))
    assert list(values.columns) == ["visit", "raft", "sensor"]
    assert values.iloc[0].tolist() == ["2201", "R22", "S11"]
    assert values.iloc[1].tolist()[0] == "7" and values.iloc[1].isna().tolist() == [False, True, True]
    assert values.iloc[2].isna().all() and values.iloc[3].isna().all()
    assert stream_variables(sensors(), "processEimage") == ["visit", "raft", "sensor"]
    assert stream_variables(sensors(), "ingest") == []


def test_usage_by_a_variable_shows_wall_cpu_and_memory_per_value(tmp_path: pathlib.Path) -> None:
    fig = usage_by_stream(sensors(), "processEimage", "raft")
    wall, cpu, memory = fig.axes
    assert [t.get_text() for t in memory.get_xticklabels()] == ["R01", "R22", "R43"]
    assert wall.get_ylabel() == "wall clock (min)" and memory.get_ylabel() == "peak memory (MB)"
    assert memory.get_xlabel() == "raft"
    medians = [line for line in wall.get_lines() if line.get_label() == "median"][0].get_ydata()
    assert medians[1] == pytest.approx(2 * medians[0], rel=0.05)  # R22 is the slow raft
    assert "raft (3 values, n = 72)" in fig._suptitle.get_text()  # type: ignore[union-attr]
    fig.savefig(tmp_path / "raft.png")


def test_the_default_variable_is_the_outermost_that_varies_and_numbers_sort_as_numbers() -> None:
    frame = sensors(visits=12)
    fig = usage_by_stream(frame, "processEimage")
    labels = [t.get_text() for t in fig.axes[-1].get_xticklabels()]
    assert fig.axes[-1].get_xlabel() == "visit"
    assert labels == [str(v * 10) for v in range(12)]  # 0, 10, 20 ... 110, not "0", "10", "100", "110", "20"


def test_hundreds_of_values_keep_their_labels_readable() -> None:
    fig = usage_by_stream(sensors(visits=300), "processEimage", "visit")
    axis = fig.axes[-1]
    assert len(axis.get_lines()) and len(axis.get_xticklabels()) <= 40
    assert fig.get_size_inches()[0] <= 16


def test_an_unknown_variable_or_process_says_so() -> None:
    fig = usage_by_stream(sensors(), "processEimage", "patch")
    assert (
        "has no stream variable 'patch'; its variables: visit, raft, sensor"
        in fig.axes[0].texts[0].get_text()
    )
    assert "No instances of nope." in usage_by_stream(sensors(), "nope").axes[0].texts[0].get_text()
    assert "differ by no stream variable" in usage_by_stream(sensors(), "ingest").axes[0].texts[0].get_text()


def heatmap(fig: Figure) -> tuple[list[str], list[str], np.ndarray]:
    ax = fig.axes[0]
    mesh = ax.collections[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    return rows, columns, np.asarray(mesh.get_array()).reshape(len(rows), len(columns))


def test_failures_by_stream_level_from_the_top_down() -> None:
    frame = sensors()
    rows, columns, counts = heatmap(failures_by_stream(frame))
    assert columns == [TOP_LEVEL, "visit", "sensor"]
    assert rows[0] == "out-of-memory"  # the commonest first
    assert counts.sum() == frame["state"].isin(("failed", "terminated")).sum()
    assert counts[rows.index("missing-input"), columns.index("visit")] == 1
    assert counts[rows.index("not recorded"), columns.index(TOP_LEVEL)] == 1


def test_failures_by_the_values_of_a_variable_keep_the_most_failing() -> None:
    frame = sensors(visits=100, failing_every=2)
    rows, columns, counts = heatmap(failures_by_stream(frame, "visit"))
    assert len(columns) == 40 and columns == sorted(columns, key=float)
    fig = failures_by_stream(frame, "visit")
    assert "the 40 of 100 values with most failures" in fig.axes[0].get_title()  # ingest has no visit
    assert "has a stream variable 'patch'" in failures_by_stream(frame, "patch").axes[0].texts[0].get_text()


def test_throughput_per_cluster_has_a_panel_each_over_one_time_axis(
    make_instances: Callable[..., pd.DataFrame],
) -> None:
    frame = make_instances()
    fig = figures.throughput(frame, by_cluster=True)
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["nersc", "s3df"]
    finished = [line for ax in fig.axes for line in ax.get_lines() if line.get_label() == "finished"]
    assert sum(int(np.sum(line.get_ydata())) for line in finished) == len(frame)
    assert fig.axes[0].get_shared_x_axes().joined(fig.axes[0], fig.axes[1])


@pytest.mark.parametrize("make", [figures.cpu_vs_wall, figures.memory_vs_requested])
def test_forty_processes_get_a_panel_each_not_forty_colours(
    make: Callable[[pd.DataFrame], Figure], make_instances: Callable[..., pd.DataFrame]
) -> None:
    frame = make_instances(n_per_process=4, processes=tuple(f"p{i:02d}" for i in range(40)))
    fig = make(frame)
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == 40 and [ax.get_title() for ax in shown][:2] == ["p00 (4)", "p01 (4)"]
    assert all(ax.get_legend() is None for ax in fig.axes)
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()][1:] == [
        "success",
        "failed",
        "terminated",
    ]  # states, not processes
    assert sum(len(c.get_offsets()) for ax in shown for c in ax.collections) == len(frame)
