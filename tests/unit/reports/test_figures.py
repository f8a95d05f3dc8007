"""Figures: each renders to a PNG with labelled axes and the expected series; empty frames say so."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from airflow_desc.reports import figures

FIGURES: dict[str, Callable[[pd.DataFrame], Figure]] = {
    "cpu_vs_wall": figures.cpu_vs_wall,
    "memory_vs_requested": figures.memory_vs_requested,
    "cpu_efficiency": figures.cpu_efficiency,
    "walltime_distribution": figures.walltime_distribution,
    "throughput": figures.throughput,
    "failures_by_reason": figures.failures_by_reason,
    "core_hours_by_cluster": figures.core_hours_by_cluster,
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def only_axes(fig: Figure) -> Axes:
    assert len(fig.axes) == 1
    return fig.axes[0]


def legend_texts(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def points(ax: Axes) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections)


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_renders_to_png_with_title_and_axis_labels(
    name: str, make_instances: Callable[..., pd.DataFrame], tmp_path: pathlib.Path
) -> None:
    fig = FIGURES[name](make_instances())
    ax = only_axes(fig)
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert ax.has_data()
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


@pytest.mark.parametrize("name", list(FIGURES))
@pytest.mark.parametrize("empty", ["no rows", "no columns"])
def test_empty_frame_gives_a_message_figure(
    name: str, empty: str, make_instances: Callable[..., pd.DataFrame], tmp_path: pathlib.Path
) -> None:
    frame = make_instances().iloc[:0] if empty == "no rows" else pd.DataFrame()
    fig = FIGURES[name](frame)
    ax = only_axes(fig)
    assert not ax.has_data() and not ax.axison
    assert [t.get_text() for t in ax.texts] == ["No process instances to plot."]
    assert ax.get_title()
    if name == "cpu_vs_wall":
        fig.savefig(tmp_path / "empty.png")
        assert (tmp_path / "empty.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("name", [n for n in FIGURES if n != "failures_by_reason"])
def test_missing_column_is_a_clear_error(name: str, make_instances: Callable[..., pd.DataFrame]) -> None:
    frame = make_instances().drop(columns=["elapsed_s", "max_rss_bytes", "start_time"])
    with pytest.raises(ValueError, match=rf"{name}: the frame lacks column\(s\)"):
        FIGURES[name](frame)


def test_cpu_vs_wall_one_point_per_instance_one_legend_entry_per_process(
    make_instances: Callable[..., pd.DataFrame],
) -> None:
    frame = make_instances(processes=("a", "b", "c"))
    frame.loc[0, "total_cpu_s"] = np.nan  # not plotted
    ax = only_axes(figures.cpu_vs_wall(frame))
    assert points(ax) == len(frame) - 1
    assert legend_texts(ax) == ["1 core (CPU = wall)", "a", "b", "c"]
    assert "(n = 35)" in ax.get_title()
    assert ax.get_xlabel() == "wall clock (min)" and ax.get_ylabel() == "total CPU time (min)"
    [line] = [line for line in ax.get_lines() if line.get_label() == "1 core (CPU = wall)"]
    assert line.get_xdata()[1] == pytest.approx(line.get_ydata()[1])  # CPU = wall


def test_cpu_vs_wall_of_one_process_is_coloured_by_state(make_instances: Callable[..., pd.DataFrame]) -> None:
    frame = make_instances(processes=("a", "b"))
    ax = only_axes(figures.cpu_vs_wall(frame, process="b"))
    assert points(ax) == (frame["process"] == "b").sum()
    assert legend_texts(ax) == ["1 core (CPU = wall)", "success", "failed", "terminated"]
    assert ax.get_title().startswith("b CPU/Wall Clock")


def test_cpu_vs_wall_marks_several_cores(make_instances: Callable[..., pd.DataFrame]) -> None:
    frame = make_instances().assign(req_cpus=4)
    ax = only_axes(figures.cpu_vs_wall(frame))
    assert "4 cores" in legend_texts(ax)
    slope = [line for line in ax.get_lines() if line.get_label() == "4 cores"][0]
    assert slope.get_ydata()[1] / slope.get_xdata()[1] == pytest.approx(4)


def test_cpu_vs_wall_of_an_unknown_process_says_so(make_instances: Callable[..., pd.DataFrame]) -> None:
    ax = only_axes(figures.cpu_vs_wall(make_instances(), process="nope"))
    assert ax.texts[0].get_text() == "No instances of nope with both CPU and wall-clock times recorded."


def test_names_with_dollars_are_not_read_as_math(
    make_instances: Callable[..., pd.DataFrame], tmp_path: pathlib.Path
) -> None:
    frame = make_instances(processes=(r"a$\notacommand$",))
    fig = figures.cpu_vs_wall(frame, process=r"a$\notacommand$")
    fig.savefig(tmp_path / "dollar.png")  # would raise ValueError if parsed as mathtext
    fig = figures.cpu_vs_wall(frame)
    fig.savefig(tmp_path / "dollar-all.png")
    assert (tmp_path / "dollar.png").stat().st_size > 0
    assert (tmp_path / "dollar-all.png").stat().st_size > 0


def test_memory_vs_requested_points_and_units(make_instances: Callable[..., pd.DataFrame]) -> None:
    frame = make_instances(processes=("a", "b"))
    frame.loc[3, "max_rss_bytes"] = np.nan
    ax = only_axes(figures.memory_vs_requested(frame))
    assert points(ax) == len(frame) - 1
    assert legend_texts(ax) == ["used = requested", "a", "b"]
    assert ax.get_xlabel() == "requested memory (GB)"
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])
    assert set(np.round(xs, 6)) == {2.0}


def test_cpu_efficiency_one_box_per_process(make_instances: Callable[..., pd.DataFrame]) -> None:
    frame = make_instances(processes=("a", "b", "c")).assign(req_cpus=2)
    frame.loc[0, "elapsed_s"] = 0.0  # no efficiency for an instance that took no time
    ax = only_axes(figures.cpu_efficiency(frame))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert len(ax.patches) == 3
    assert "(n = 35)" in ax.get_title()
    efficiency = frame["total_cpu_s"] / (frame["elapsed_s"] * 2)
    low, high = ax.get_xlim()
    assert low <= efficiency[1:].min() and efficiency[1:].max() <= 0.5 < high


def test_walltime_distribution_marks_the_median_request(make_instances: Callable[..., pd.DataFrame]) -> None:
    frame = make_instances(processes=("a", "b"))
    frame.loc[frame["process"] == "b", "req_walltime_s"] = np.nan
    ax = only_axes(figures.walltime_distribution(frame))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    [marks] = ax.collections
    assert marks.get_offsets().tolist() == [[2.0, 0.0]]  # 7200 s in hours, on the row of "a"
    assert ax.get_xlabel() == "wall clock (h)" and ax.get_xscale() == "linear"


def test_walltime_distribution_goes_logarithmic_for_wide_spreads(
    make_instances: Callable[..., pd.DataFrame],
) -> None:
    frame = make_instances()
    frame.loc[0, "elapsed_s"] = 1.0
    assert only_axes(figures.walltime_distribution(frame)).get_xscale() == "log"


def test_throughput_counts_running_and_finished_per_interval() -> None:
    t0 = pd.Timestamp("2017-06-01T00:10:00Z")
    frame = pd.DataFrame(
        {
            "start_time": [
                t0,
                t0 + pd.Timedelta("30min"),
                t0 + pd.Timedelta("2h"),
                t0 + pd.Timedelta("2h"),
                pd.NaT,
            ],
            "end_time": [
                t0 + pd.Timedelta("20min"),
                t0 + pd.Timedelta("2h5min"),
                t0 + pd.Timedelta("2h10min"),
                pd.NaT,
                pd.NaT,
            ],
            "state": ["success", "failed", "terminated", "running", "queued"],
        }
    )
    ax = only_axes(figures.throughput(frame, freq="1h"))
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["running", "finished", "failed or terminated"]
    # Hours 00:00, 01:00, 02:00: the first instance runs in hour 0, the second from 0 to 2, the last two in 2.
    assert list(lines["running"].get_ydata()) == [2, 1, 3]
    assert list(lines["finished"].get_ydata()) == [1, 0, 2]
    assert list(lines["failed or terminated"].get_ydata()) == [0, 0, 2]
    assert lines["running"].get_xdata()[0] == pd.Timestamp("2017-06-01T00:00:00Z")
    assert ax.get_xlabel() == "interval start (UTC)"
    assert "3 finished of 4" in ax.get_title()


def test_throughput_total_finished_equals_instances(make_instances: Callable[..., pd.DataFrame]) -> None:
    frame = make_instances()
    ax = only_axes(figures.throughput(frame, freq="30min"))
    finished = [line for line in ax.get_lines() if line.get_label() == "finished"][0]
    assert sum(finished.get_ydata()) == len(frame)


def test_throughput_refuses_a_calendar_frequency(make_instances: Callable[..., pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match="freq"):
        figures.throughput(make_instances(), freq="-1h")


def test_failures_by_reason_counts_each_failure_once() -> None:
    frame = pd.DataFrame(
        {
            "state": ["failed", "failed", "terminated", "terminated", "terminated", "success", "cancelled"],
            "reason": [
                "python-exception",
                None,
                "out-of-memory",
                "out-of-memory",
                "time-limit",
                None,
                "cancelled-by-user",
            ],
        }
    )
    ax = only_axes(figures.failures_by_reason(frame))
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "out-of-memory"
    assert set(t.get_text() for t in ax.get_yticklabels()) == {
        "out-of-memory",
        "python-exception",
        "not recorded",
        "time-limit",
        "cancelled-by-user",
    }
    assert sum(p.get_width() for p in ax.patches) == 6
    assert legend_texts(ax) == ["failed", "terminated", "cancelled"]


def test_failures_by_reason_without_failures_says_so() -> None:
    frame = pd.DataFrame({"state": ["success"] * 3, "reason": [None] * 3})
    ax = only_axes(figures.failures_by_reason(frame))
    assert ax.texts[0].get_text() == "No failed, terminated or cancelled instances among 3."


def test_core_hours_by_cluster_stacks_charged_hours_by_state() -> None:
    frame = pd.DataFrame(
        {
            "cluster": ["nersc", "nersc", "s3df", None],
            "state": ["success", "terminated", "success", "failed"],
            "elapsed_s": [3600.0, 1800.0, 7200.0, 3600.0],
            "req_cpus": [4, 2, None, 1],
            "total_cpu_s": [3 * 3600.0, 1800.0, 3600.0, 600.0],
        }
    )
    ax = only_axes(figures.core_hours_by_cluster(frame))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["nersc", "s3df", "unknown"]
    assert sum(p.get_height() for p in ax.patches) == pytest.approx(4 + 1 + 2 + 1)
    assert legend_texts(ax) == ["success", "failed", "terminated", "CPU-hours used"]
    [used] = ax.collections
    assert used.get_offsets()[:, 1].tolist() == pytest.approx([3.5, 1.0, 600 / 3600])
    assert "total 8.0 core-hours" in ax.get_title()


def test_frames_from_a_bare_history_work(make_instances: Callable[..., pd.DataFrame]) -> None:
    # Times may arrive as ISO text and numbers as objects (a JSON-lines history read without dtypes).
    frame = make_instances().astype(object)
    frame["start_time"] = frame["start_time"].map(lambda t: t.isoformat())
    frame["end_time"] = frame["end_time"].map(lambda t: t.isoformat())
    for name, make in FIGURES.items():
        assert only_axes(make(frame)).has_data(), name
