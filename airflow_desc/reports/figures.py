"""Figures of process-instance usage: ``DataFrame -> matplotlib Figure``.

Every function takes a frame of process instances, whose columns are named as the fields of
:class:`~airflow_desc.history.records.ProcessRecord` (``history.queries.process_instances`` /
``process_usage``), and returns a :class:`matplotlib.figure.Figure` with a title and labelled
axes. An empty frame, or one without the values a figure needs, gives a figure that says so
instead of an error. A frame that lacks a needed column raises :class:`ValueError`.

Figures are made with the object-oriented API (``Figure()``, never ``pyplot``): nothing is
shown, no global state is kept, and a figure is freed when dropped, as a long-running web
server needs. Save with ``fig.savefig(path)`` (Agg). seaborn and matplotlib are imported
when a figure is made, not when this module is.

Times are in seconds in the frame and shown in seconds, minutes or hours, whichever reads
best; memory is in bytes and shown in SLURM's MB or GB (powers of 1024).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "STATE_COLORS",
    "core_hours_by_cluster",
    "cpu_efficiency",
    "cpu_vs_wall",
    "failures_by_reason",
    "memory_vs_requested",
    "throughput",
    "walltime_distribution",
]

#: One colour per process state, the same in every figure.
STATE_COLORS: Mapping[str, str] = MappingProxyType(
    {
        "success": "tab:green",
        "failed": "tab:red",
        "terminated": "tab:orange",
        "cancelled": "tab:gray",
        "cancelling": "tab:brown",
        "skipped": "tab:olive",
        "running": "tab:blue",
        "submitted": "tab:cyan",
        "queued": "tab:purple",
        "ready": "tab:pink",
        "waiting": "lightgray",
    }
)
_MIB = 1024 * 1024
_FAILURE_STATES = ("failed", "terminated", "cancelled")
_LEGEND_OUTSIDE = 8
# More processes than this and colours no longer tell them apart: one small panel each.
_FACETED_FROM = 9
_FACET_COLUMNS = 6


@contextmanager
def _style() -> Iterator[None]:
    import seaborn as sns

    # A context, not sns.set_theme(): a report must not change the rcParams of its caller.
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        yield


def _escape(text: str) -> str:
    """Show ``$`` as itself: matplotlib would read ``$...$`` in a name as math (and may fail to)."""
    return text.replace("$", r"\$")


def _text(values: pd.Series) -> pd.Series:
    """Return names as labels: text, with ``$`` escaped."""
    return values.astype(str).str.replace("$", r"\$", regex=False)


def _figure(title: str, *, width: float = 8.0, height: float = 5.0) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.subplots()
    ax.set_title(_escape(title))
    return fig, ax


def _message(title: str, message: str) -> Figure:
    """Make a figure that says why there is nothing to plot."""
    fig, ax = _figure(title, height=3.0)
    ax.set_axis_off()
    ax.text(
        0.5, 0.5, _escape(message), ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=12
    )
    return fig


def _require(df: pd.DataFrame, columns: Sequence[str], figure: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{figure}: the frame lacks column(s) {', '.join(missing)}; "
            "pass process instances as history.queries.process_instances returns them"
        )


def _numbers(df: pd.DataFrame, column: str) -> pd.Series:
    if column not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    return pd.to_numeric(df[column], errors="coerce").astype("float64")


def _cpus(df: pd.DataFrame) -> pd.Series:
    """Return the requested CPUs, 1 where unknown."""
    return _numbers(df, "req_cpus").fillna(1.0).clip(lower=1.0)


def _duration_unit(seconds: float) -> tuple[float, str]:
    """Pick the unit that keeps durations up to ``seconds`` readable: (seconds per unit, name)."""
    if seconds < 120:
        return 1.0, "s"
    if seconds < 2 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _memory_unit(num_bytes: float) -> tuple[float, str]:
    return (_MIB * 1024.0, "GB") if num_bytes >= 2 * 1024 * _MIB else (float(_MIB), "MB")


def _outside_legend(ax: Axes) -> None:
    import seaborn as sns

    legend = ax.get_legend()
    if legend is not None and len(legend.get_texts()) > _LEGEND_OUTSIDE:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _boxplot(plot: pd.DataFrame, x: str, order: list[str], ax: Axes) -> None:
    """Draw horizontal boxes of ``x`` per process."""
    import seaborn as sns

    with warnings.catch_warnings():
        # seaborn 0.13 passes matplotlib 3.11 the deprecated ``vert``; nothing a caller can act on.
        warnings.filterwarnings("ignore", message=r"vert: bool was deprecated", category=DeprecationWarning)
        sns.boxplot(data=plot, x=x, y="process", order=order, ax=ax, color="tab:blue", fliersize=2)


def _first_seen(values: pd.Series) -> list[str]:
    return [str(v) for v in dict.fromkeys(values)]


def _state_order(states: pd.Series) -> list[str]:
    """Order the states present as :data:`STATE_COLORS` lists them, unknown ones last."""
    present = set(_first_seen(states))
    known = [s for s in STATE_COLORS if s in present]
    return known + [s for s in _first_seen(states) if s not in known]


def _state_palette(states: Sequence[str]) -> dict[str, str]:
    return {s: STATE_COLORS.get(s, "black") for s in states}


def cpu_vs_wall(df: pd.DataFrame, process: str | None = None) -> Figure:
    """Scatter total CPU time against wall-clock time, one point per instance (the DC1 slide's figure).

    The dashed line ``CPU = wall`` is what a process keeping one core busy lies on; points
    well below it wait on I/O, points above it use several cores. When the instances asked for
    more than one CPU, a second line shows ``CPU = wall x CPUs``.

    :param df: process instances: ``process``, ``state``, ``elapsed_s``, ``total_cpu_s`` (and
        ``req_cpus`` if known). Rows without both times are left out.
    :param process: plot only this process, coloured by state; ``None``: every process, coloured
        by process.
    :return: the figure.
    """
    title = f"{process} CPU/Wall Clock" if process is not None else "CPU/Wall Clock, all processes"
    if df.empty:
        return _message(title, "No process instances to plot.")
    _require(df, ("process", "state", "elapsed_s", "total_cpu_s"), "cpu_vs_wall")
    data = df[df["process"] == process] if process is not None else df
    data = data.assign(elapsed=_numbers(data, "elapsed_s"), cpu=_numbers(data, "total_cpu_s"))
    data = data[data["elapsed"].notna() & data["cpu"].notna()]
    if data.empty:
        what = f"instances of {process}" if process is not None else "instances"
        return _message(title, f"No {what} with both CPU and wall-clock times recorded.")

    scale, unit = _duration_unit(float(max(data["elapsed"].max(), data["cpu"].max())))
    plot = pd.DataFrame(
        {
            "wall": data["elapsed"] / scale,
            "cpu": data["cpu"] / scale,
            "process": _text(data["process"]),
            "state": data["state"].astype(str),
        }
    )
    labels = (f"wall clock ({unit})", f"total CPU time ({unit})")
    if process is None and plot["process"].nunique() >= _FACETED_FROM:
        return _facet_scatter(
            plot, ("wall", "cpu"), labels, f"{title} (n = {len(plot)})", "1 core (CPU = wall)"
        )
    with _style():
        fig, ax = _figure(f"{title} (n = {len(plot)})")
        top = float(max(plot["wall"].max(), plot["cpu"].max(), 1e-9)) * 1.05
        ax.plot([0, top], [0, top], "--", color="0.4", linewidth=1, label="1 core (CPU = wall)")
        cores = float(_numbers(data, "req_cpus").median())
        if not math.isnan(cores) and cores > 1:
            ax.plot([0, top / cores], [0, top], ":", color="0.4", linewidth=1, label=f"{cores:g} cores")
        if process is not None:
            states = _state_order(plot["state"])
            _scatter_up_to(ax, plot, ("wall", "cpu"), "state", states, top, labels, _state_palette(states))
        else:
            _scatter_up_to(ax, plot, ("wall", "cpu"), "process", _first_seen(plot["process"]), top, labels)
    return fig


def memory_vs_requested(df: pd.DataFrame) -> Figure:
    """Scatter peak memory (MaxRSS) against requested memory, one point per instance.

    Points above the dashed ``used = requested`` line went over their request (an out-of-memory
    kill where the limit is enforced); points far below it asked for more than they needed.

    :param df: process instances: ``process``, ``max_rss_bytes``, ``req_mem_bytes``. Rows without
        both are left out.
    :return: the figure.
    """
    title = "Peak memory vs requested"
    if df.empty:
        return _message(title, "No process instances to plot.")
    _require(df, ("process", "max_rss_bytes", "req_mem_bytes"), "memory_vs_requested")
    data = df.assign(used=_numbers(df, "max_rss_bytes"), requested=_numbers(df, "req_mem_bytes"))
    data = data[data["used"].notna() & data["requested"].notna()]
    if data.empty:
        return _message(title, "No instances with both peak memory (MaxRSS) and requested memory recorded.")

    scale, unit = _memory_unit(float(max(data["used"].max(), data["requested"].max())))
    plot = pd.DataFrame(
        {
            "requested": data["requested"] / scale,
            "used": data["used"] / scale,
            "process": _text(data["process"]),
            "state": data["state"].astype(str) if "state" in data.columns else "unknown",
        }
    )
    labels = (f"requested memory ({unit})", f"peak memory, MaxRSS ({unit})")
    if plot["process"].nunique() >= _FACETED_FROM:
        return _facet_scatter(
            plot, ("requested", "used"), labels, f"{title} (n = {len(plot)})", "used = requested"
        )
    with _style():
        fig, ax = _figure(f"{title} (n = {len(plot)})")
        top = float(max(plot["used"].max(), plot["requested"].max(), 1e-9)) * 1.05
        ax.plot([0, top], [0, top], "--", color="0.4", linewidth=1, label="used = requested")
        _scatter_up_to(ax, plot, ("requested", "used"), "process", _first_seen(plot["process"]), top, labels)
    return fig


def _scatter_up_to(
    ax: Any,
    plot: pd.DataFrame,
    xy: tuple[str, str],
    hue: str,
    order: list[str],
    top: float,
    labels: tuple[str, str],
    palette: Any = None,
) -> None:
    """Scatter one point per instance on square axes from 0 to ``top``, the legend outside."""
    import seaborn as sns

    sns.scatterplot(data=plot, x=xy[0], y=xy[1], hue=hue, hue_order=order, palette=palette, ax=ax,
                    s=18, alpha=0.7, linewidth=0)  # fmt: skip
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    _outside_legend(ax)


def _facet_scatter(
    plot: pd.DataFrame, xy: tuple[str, str], labels: tuple[str, str], title: str, diagonal: str
) -> Figure:
    """Scatter each process in a panel of its own (coloured by state), each on its own square scale.

    What many processes need: 40 colours cannot be told apart, 40 small panels can.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    processes = _first_seen(plot["process"])
    columns = min(_FACET_COLUMNS, len(processes))
    rows = math.ceil(len(processes) / columns)
    states = _state_order(plot["state"])
    palette = _state_palette(states)
    x, y = xy
    with _style():
        fig = Figure(figsize=(2.4 * columns + 2.4, 2.2 * rows + 1.0), layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False).flat
        # The processes first: zip stops at their end without taking a panel from the iterator.
        for process, ax in zip(processes, axes, strict=False):
            part = plot[plot["process"] == process]
            top = float(max(part[x].max(), part[y].max(), 1e-9)) * 1.05
            ax.plot([0, top], [0, top], "--", color="0.4", linewidth=1)
            for state in states:
                points = part[part["state"] == state]
                ax.scatter(points[x], points[y], s=10, color=palette[state], alpha=0.7, linewidths=0)
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.set_title(f"{process} ({len(part)})", fontsize=9)
            ax.tick_params(labelsize=7)
        for ax in list(axes):
            ax.set_axis_off()  # the panels left over in the last row
        fig.suptitle(_escape(title))
        fig.supxlabel(labels[0])
        fig.supylabel(labels[1])
        handles = [Line2D([], [], linestyle="--", color="0.4", label=diagonal)]
        handles += [Line2D([], [], marker="o", linestyle="", color=palette[s], label=s) for s in states]
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
    return fig


def cpu_efficiency(df: pd.DataFrame) -> Figure:
    """Show the distribution of CPU efficiency per process: ``total CPU / (wall clock x requested CPUs)``.

    1 means every requested core was busy all the time; a process at 0.25 on 4 CPUs would run
    as well on 1.

    :param df: process instances: ``process``, ``elapsed_s``, ``total_cpu_s``, ``req_cpus``
        (1 where unknown). Rows without times, or with no wall-clock time, are left out.
    :return: the figure, one box per process.
    """
    title = "CPU efficiency per process"
    if df.empty:
        return _message(title, "No process instances to plot.")
    _require(df, ("process", "elapsed_s", "total_cpu_s"), "cpu_efficiency")
    elapsed = _numbers(df, "elapsed_s")
    cpus = _cpus(df)
    efficiency = _numbers(df, "total_cpu_s") / (elapsed * cpus)
    keep = efficiency.notna() & (elapsed > 0)
    if not keep.any():
        return _message(title, "No instances with both CPU and wall-clock times recorded.")

    plot = pd.DataFrame({"efficiency": efficiency[keep], "process": _text(df.loc[keep, "process"])})
    order = _first_seen(plot["process"])
    with _style():
        fig, ax = _figure(f"{title} (n = {len(plot)})", height=max(3.0, 1.2 + 0.35 * len(order)))
        _boxplot(plot, "efficiency", order, ax)
        ax.axvline(1.0, linestyle="--", color="0.4", linewidth=1, label="all requested cores busy")
        ax.legend(loc="best")
        ax.set_xlabel("CPU efficiency: total CPU / (wall clock x requested CPUs)")
        ax.set_ylabel("process")
    return fig


def walltime_distribution(df: pd.DataFrame) -> Figure:
    """Show the distribution of wall-clock time per process, with the requested walltime marked.

    :param df: process instances: ``process``, ``elapsed_s`` (and ``req_walltime_s`` for the
        red marks, the median request of each process). Rows without wall-clock time are left out.
    :return: the figure, one box per process; a logarithmic axis when times span more than
        a factor of 100.
    """
    title = "Wall-clock time per process"
    if df.empty:
        return _message(title, "No process instances to plot.")
    _require(df, ("process", "elapsed_s"), "walltime_distribution")
    elapsed = _numbers(df, "elapsed_s")
    keep = elapsed.notna()
    if not keep.any():
        return _message(title, "No instances with a wall-clock time recorded.")

    requested = _numbers(df, "req_walltime_s")
    largest = float(np.nanmax([elapsed[keep].max(), requested.max()]))
    scale, unit = _duration_unit(largest)
    plot = pd.DataFrame({"elapsed": elapsed[keep] / scale, "process": _text(df.loc[keep, "process"])})
    order = _first_seen(plot["process"])
    with _style():
        fig, ax = _figure(f"{title} (n = {len(plot)})", height=max(3.0, 1.2 + 0.35 * len(order)))
        _boxplot(plot, "elapsed", order, ax)
        medians = (requested / scale).groupby(_text(df["process"])).median().reindex(order)
        marked = medians.notna().to_numpy()
        if marked.any():
            ax.scatter(
                medians.to_numpy()[marked],
                np.arange(len(order))[marked],
                marker="|",
                s=400,
                color="tab:red",
                linewidths=2,
                zorder=5,
                label="requested walltime (median)",
            )
            ax.legend(loc="best")
        positive = plot["elapsed"][plot["elapsed"] > 0]
        if not positive.empty and positive.max() > 100 * positive.min():
            ax.set_xscale("log")
        ax.set_xlabel(f"wall clock ({unit})")
        ax.set_ylabel("process")
    return fig


def _bins(
    start: pd.Series, end: pd.Series, step: pd.Timedelta
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Find each instance's first and last bin of width ``step``; bins begin at the first start, floored."""
    origin = start.min().floor(step)
    first = ((start - origin) // step).to_numpy(dtype=np.int64)
    last = ((end - origin) // step).to_numpy(dtype=np.int64)
    last = np.maximum(first, last)
    count = int(last.max()) + 1
    return pd.date_range(origin, periods=count, freq=step), first, last


def _times(series: pd.Series) -> pd.Series:
    times = pd.to_datetime(series, errors="coerce")
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC")
    return times


def _throughput_counts(
    start: pd.Series, end: pd.Series, state: pd.Series, step: pd.Timedelta
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray]:
    """Count per interval: instances running, finished, and finished failed or terminated."""
    finished = end.notna().to_numpy()
    latest = max(start.max(), end.max()) if finished.any() else start.max()
    edges, first, last = _bins(start, end.fillna(latest), step)
    running = np.zeros(len(edges) + 1, dtype=np.int64)
    np.add.at(running, first, 1)
    np.add.at(running, last + 1, -1)
    done = np.bincount(last[finished], minlength=len(edges))
    failing = finished & state.isin(_FAILURE_STATES).to_numpy()
    failed = np.bincount(last[failing], minlength=len(edges))
    return edges, np.cumsum(running)[:-1], done, failed


def _throughput_lines(ax: Axes, edges: pd.DatetimeIndex, counts: Sequence[np.ndarray]) -> None:
    marker = "o" if len(edges) <= 48 else None
    for values, label, color in zip(
        counts,
        ("running", "finished", "failed or terminated"),
        ("tab:blue", "tab:orange", "tab:red"),
        strict=True,
    ):
        ax.plot(edges, values, drawstyle="steps-post", marker=marker, label=label, color=color)


def throughput(df: pd.DataFrame, freq: str = "1h", *, by_cluster: bool = False) -> Figure:
    """Plot how many instances ran, and how many finished, in each interval of ``freq``.

    An instance counts as running in every interval its ``[start, end]`` touches; one with no
    end yet runs until the last time in the frame. It counts as finished in the interval of its
    end, and also as "failed or terminated" when its state is failed, terminated or cancelled.

    :param df: process instances: ``start_time``, ``end_time`` (datetimes, naive or aware; aware
        ones are shown in UTC) and ``state`` (and ``cluster`` with ``by_cluster``). Rows without
        a start are left out.
    :param freq: the interval, a fixed length as pandas reads it: ``"1h"``, ``"15min"``, ``"1D"``.
    :param by_cluster: one panel per cluster (missing: ``unknown``), over the same time axis.
    :return: the figure: lines ``running``, ``finished``, ``failed or terminated``.
    :raises ValueError: if ``freq`` is not a fixed length of time.
    """
    step = pd.Timedelta(freq)
    if step <= pd.Timedelta(0):
        raise ValueError(f"throughput: freq must be a positive length of time, got {freq!r}")
    title = f"Throughput per {freq}" + (" per cluster" if by_cluster else "")
    if df.empty:
        return _message(title, "No process instances to plot.")
    _require(df, ("start_time", "end_time", "state", *(("cluster",) if by_cluster else ())), "throughput")
    start, end = _times(df["start_time"]), _times(df["end_time"])
    keep = start.notna()
    if not keep.any():
        return _message(title, "No instances with a start time recorded.")
    start, end, state = start[keep], end[keep], df.loc[keep, "state"].astype(str)
    finished = int(end.notna().sum())
    if by_cluster:
        clusters = df.loc[keep, "cluster"].astype(object).where(df.loc[keep, "cluster"].notna(), "unknown")
        groups = [(str(c), clusters == c) for c in _first_seen(clusters)]
    else:
        groups = [("", pd.Series(True, index=start.index))]
    from matplotlib.figure import Figure

    with _style():
        fig = Figure(figsize=(8.0, 5.0 if not by_cluster else 1.2 + 2.2 * len(groups)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0])
        for ax, (cluster, rows) in zip(axes, groups, strict=True):
            edges, *counts = _throughput_counts(start[rows], end[rows], state[rows], step)
            _throughput_lines(ax, edges, counts)
            ax.set_ylabel(f"instances per {freq}" if by_cluster else f"process instances per {freq}")
            if cluster:
                ax.set_title(_escape(cluster), fontsize=10, loc="left")
        axes[0].legend(loc="upper left")
        fig_title = f"{title} ({finished} finished of {len(start)})"
        if by_cluster:
            fig.suptitle(_escape(fig_title))
        else:
            axes[0].set_title(_escape(fig_title))
        utc = isinstance(start.dtype, pd.DatetimeTZDtype)
        axes[-1].set_xlabel("interval start (UTC)" if utc else "interval start")
        fig.autofmt_xdate()
    return fig


def failures_by_reason(df: pd.DataFrame) -> Figure:
    """Count failed, terminated and cancelled instances by the reason the diagnosis gave.

    :param df: process instances: ``state`` and ``reason`` (``out-of-memory``, ``time-limit``,
        ``python-exception`` ...; a missing reason counts as ``not recorded``). With every attempt
        in the frame, every failed attempt counts.
    :return: the figure, one bar per reason and state, the commonest reason first.
    """
    title = "Failures by reason"
    if df.empty:
        return _message(title, "No process instances to plot.")
    _require(df, ("state", "reason"), "failures_by_reason")
    data = df[df["state"].isin(_FAILURE_STATES)]
    if data.empty:
        return _message(title, f"No failed, terminated or cancelled instances among {len(df)}.")
    import seaborn as sns

    plot = pd.DataFrame(
        {
            "reason": _text(data["reason"].astype(object).where(data["reason"].notna(), "not recorded")),
            "state": data["state"].astype(str),
        }
    )
    order = [str(r) for r in plot["reason"].value_counts().index]
    states = [s for s in _FAILURE_STATES if s in set(plot["state"])]
    with _style():
        fig, ax = _figure(f"{title} (n = {len(plot)})", height=max(3.0, 1.5 + 0.4 * len(order)))
        sns.countplot(
            data=plot,
            y="reason",
            hue="state",
            order=order,
            hue_order=states,
            palette=_state_palette(states),
            ax=ax,
        )
        ax.set_xlabel("process instances (attempts)")
        ax.set_ylabel("reason")
    return fig


def core_hours_by_cluster(df: pd.DataFrame) -> Figure:
    """Stack the core-hours charged on each cluster by the state the instances ended in.

    Charged core-hours are ``wall clock x requested CPUs`` (1 where unknown): what the cluster
    accounts. The black marks are the CPU-hours actually used (``total CPU``); the gap between
    mark and bar top is idle allocation, the failed and terminated parts are work to redo.

    :param df: process instances: ``cluster`` (missing: ``unknown``), ``state``, ``elapsed_s``,
        ``req_cpus``, ``total_cpu_s``.
    :return: the figure, one stacked bar per cluster.
    """
    title = "Core-hours by cluster"
    if df.empty:
        return _message(title, "No process instances to plot.")
    _require(df, ("cluster", "state", "elapsed_s"), "core_hours_by_cluster")
    elapsed = _numbers(df, "elapsed_s")
    keep = elapsed.notna()
    if not keep.any():
        return _message(title, "No instances with a wall-clock time recorded.")
    cpus = _cpus(df)
    used = _numbers(df, "total_cpu_s")
    data = pd.DataFrame(
        {
            "cluster": _text(df["cluster"].astype(object).where(df["cluster"].notna(), "unknown")),
            "state": df["state"].astype(str),
            "charged": elapsed * cpus / 3600.0,
            "used": used / 3600.0,
        }
    )[keep]
    clusters = _first_seen(data["cluster"])
    states = _state_order(data["state"])
    charged = (
        data.groupby(["cluster", "state"], sort=False)["charged"]
        .sum()
        .unstack("state", fill_value=0.0)
        .reindex(index=clusters, columns=states, fill_value=0.0)
    )
    with _style():
        fig, ax = _figure(f"{title} (total {data['charged'].sum():,.1f} core-hours)")
        bottom = np.zeros(len(clusters))
        for state in states:
            heights = charged[state].to_numpy(dtype=float)
            color = STATE_COLORS.get(state, "black")
            ax.bar(clusters, heights, bottom=bottom, label=state, color=color, width=0.6)
            bottom += heights
        used_by_cluster = data.groupby("cluster")["used"].sum(min_count=1).reindex(clusters)
        if used_by_cluster.notna().any():
            ax.scatter(
                clusters,
                used_by_cluster.to_numpy(),
                marker="_",
                s=900,
                color="black",
                linewidths=2,
                zorder=5,
                label="CPU-hours used",
            )
        handles, labels = ax.get_legend_handles_labels()
        # States in stacking order, then the CPU-hours mark (matplotlib lists collections first).
        order = sorted(range(len(labels)), key=lambda i: labels[i] == "CPU-hours used")
        ax.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
        ax.set_xlabel("cluster")
        ax.set_ylabel("core-hours (wall clock x requested CPUs)")
    return fig
