"""Figures by stream: a process's CPU, wall clock and memory by a stream variable; failures by level.

A stream path names the values of the stream variables from the top down
(``visit=2201/raft=R22/sensor=S11``): :func:`stream_values` reads them into columns, so that a
process's usage can be shown by raft or by visit (:func:`usage_by_stream`), and failures by the
level of the stream hierarchy they happened at, or by the values of one variable
(:func:`failures_by_stream`). Both stay readable with thousands of values: one column per value,
its median marked and its range drawn, the tick labels thinned; failures as a table of counts
(a heatmap), not as look-alike colours.

Frames are process instances as :func:`~airflow_desc.history.queries.process_instances` returns
them (``stream``, ``process``, ``state``, ``reason``, ``elapsed_s``, ``total_cpu_s``,
``max_rss_bytes``). seaborn and matplotlib are imported when a figure is made.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from airflow_desc.reports.figures import (
    _FAILURE_STATES,
    _duration_unit,
    _escape,
    _memory_unit,
    _message,
    _numbers,
    _require,
    _style,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["TOP_LEVEL", "failures_by_stream", "stream_values", "stream_variables", "usage_by_stream"]

#: The stream level of an instance at the top of its workflow (an empty stream path).
TOP_LEVEL = "(top level)"
# At most this many values get a tick label each; beyond, the labels are thinned to about this many.
_LABELLED = 40
# At most this many values of a variable are shown in the failures table (the most failing ones).
_FAILING_VALUES = 40
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def stream_values(streams: pd.Series) -> pd.DataFrame:
    """Split stream paths into one column per stream variable (missing where a path lacks it).

    :param streams: paths such as ``visit=2201/raft=R22/sensor=S11`` (``""`` at the top level).
    :return: a frame on the same index, the variables as columns in the order first met.
    """
    parsed = [
        dict(part.split("=", 1) for part in str(path).split("/") if "=" in part)
        if isinstance(path, str)
        else {}
        for path in streams
    ]
    columns = list(dict.fromkeys(name for values in parsed for name in values))
    return pd.DataFrame(parsed, index=streams.index, columns=columns, dtype=object)


def stream_variables(df: pd.DataFrame, process: str | None = None) -> list[str]:
    """Return the stream variables of the instances (of ``process``) that take more than one value."""
    data = df if process is None or "process" not in df.columns else df[df["process"] == process]
    if data.empty or "stream" not in data.columns:
        return []
    values = stream_values(data["stream"])
    return [name for name in values.columns if values[name].nunique(dropna=True) > 1]


def _natural_order(values: pd.Series) -> list[str]:
    """Order values as numbers when they all are, else as text."""
    distinct = [str(v) for v in dict.fromkeys(values.dropna())]
    if distinct and all(_NUMBER.match(v) for v in distinct):
        return sorted(distinct, key=float)
    return sorted(distinct)


def _ticks(ax: Axes, labels: list[str]) -> None:
    """Label the value columns: every one when they are few, about :data:`_LABELLED` evenly otherwise."""
    step = max(1, math.ceil(len(labels) / _LABELLED))
    positions = np.arange(0, len(labels), step)
    ax.set_xticks(positions)
    ax.set_xticklabels([_escape(labels[i]) for i in positions], rotation=90, fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)


def _ranges(ax: Axes, grouped: pd.core.groupby.SeriesGroupBy, order: list[str], label: str) -> None:
    """Draw each value's median as a dot and its range (min to max) as a line."""
    stats = grouped.agg(["min", "median", "max"]).reindex(order)
    x = np.arange(len(order))
    ax.vlines(x, stats["min"], stats["max"], color="tab:blue", alpha=0.5, linewidth=2, label="min to max")
    ax.plot(x, stats["median"], "o", color="tab:blue", markersize=4, label="median")
    ax.set_ylabel(label)
    ax.set_ylim(bottom=0)


def usage_by_stream(df: pd.DataFrame, process: str, variable: str | None = None) -> Figure:
    """Show a process's wall clock, CPU time and peak memory by the values of one stream variable.

    Three panels over the same columns, one column per value of ``variable`` (numbers in numeric
    order): the median of the value's instances as a dot, their range as a line. A raft that is
    slower, a visit that needs more memory, stand out; with hundreds of visits the labels thin out.

    :param df: process instances: ``process``, ``stream``, ``elapsed_s``, ``total_cpu_s``,
        ``max_rss_bytes``.
    :param process: the process.
    :param variable: the stream variable; ``None``: the outermost one that takes several values.
    :return: the figure (a message figure when the process has no such variable or no values).
    """
    title = f"{process} by stream"
    if df.empty:
        return _message(title, "No process instances to plot.")
    _require(df, ("process", "stream", "elapsed_s", "total_cpu_s", "max_rss_bytes"), "usage_by_stream")
    data = df[df["process"] == process]
    if data.empty:
        return _message(title, f"No instances of {process}.")
    values = stream_values(data["stream"])
    if variable is None:
        varying = [name for name in values.columns if values[name].nunique(dropna=True) > 1]
        if not varying:
            return _message(title, f"The streams of {process} differ by no stream variable.")
        variable = varying[0]
    if variable not in values.columns:
        known = ", ".join(values.columns) or "none"
        return _message(title, f"{process} has no stream variable {variable!r}; its variables: {known}.")
    frame = pd.DataFrame(
        {
            "value": values[variable],
            "wall": _numbers(data, "elapsed_s"),
            "cpu": _numbers(data, "total_cpu_s"),
            "rss": _numbers(data, "max_rss_bytes"),
        }
    ).dropna(subset=["value"])
    order = _natural_order(frame["value"])
    seconds, unit = _duration_unit(float(np.nanmax([frame["wall"].max(), frame["cpu"].max(), 0.0])))
    mem_scale, mem_unit = _memory_unit(float(np.nan_to_num(frame["rss"].max())))
    panels = (
        ("wall", seconds, f"wall clock ({unit})"),
        ("cpu", seconds, f"CPU time ({unit})"),
        ("rss", mem_scale, f"peak memory ({mem_unit})"),
    )
    from matplotlib.figure import Figure

    with _style():
        fig = Figure(figsize=(min(16.0, max(7.0, 0.22 * len(order) + 2)), 8.0), layout="constrained")
        axes = fig.subplots(3, 1, sharex=True)
        fig.suptitle(_escape(f"{title}: {variable} ({len(order)} values, n = {len(frame)})"))
        for ax, (column, scale, label) in zip(axes, panels, strict=True):
            measured = frame[frame[column].notna()]
            if measured.empty:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
                ax.set_ylabel(label)
                continue
            _ranges(ax, (measured[column] / scale).groupby(measured["value"].astype(str)), order, label)
        axes[0].legend(loc="upper right", fontsize=8)
        _ticks(axes[-1], order)
        axes[-1].set_xlabel(_escape(variable))
    return fig


def _levels(df: pd.DataFrame, variable: str | None) -> tuple[pd.Series, list[str], str]:
    """Return each instance's column of the failures table, the columns' order, and their name."""
    if variable is None:
        # The level of a stream is its innermost variable: the sub-task's stream_var.
        level = (
            df["stream"]
            .fillna("")
            .astype(str)
            .map(lambda path: path.rsplit("/", 1)[-1].split("=", 1)[0] if "=" in path else TOP_LEVEL)
        )
        depth = df["stream"].fillna("").astype(str).str.count("=")
        order = list(dict.fromkeys(level.iloc[np.argsort(depth.to_numpy(), kind="stable")]))
        return level, order, "stream level"
    values = stream_values(df["stream"])
    column = values[variable] if variable in values.columns else pd.Series(None, index=df.index, dtype=object)
    return column, _natural_order(column), variable


def failures_by_stream(df: pd.DataFrame, variable: str | None = None) -> Figure:
    """Count failed, terminated and cancelled attempts by reason and stream level (or variable value).

    A heatmap: one row per reason (the commonest first), one column per stream level, from the top
    of the workflow down (``visit``, ``raft``, ``sensor``: the sub-task that failed), or, with
    ``variable``, per value of that variable (at most the 40 values with the most failures):
    which visits fail, and why.

    :param df: process instances: ``stream``, ``state``, ``reason`` (missing: ``not recorded``).
    :param variable: a stream variable; ``None``: by stream level.
    :return: the figure.
    """
    what = "stream level" if variable is None else variable
    title = f"Failures by reason and {what}"
    if df.empty:
        return _message(title, "No process instances to plot.")
    _require(df, ("stream", "state", "reason"), "failures_by_stream")
    data = df[df["state"].isin(_FAILURE_STATES)]
    if data.empty:
        return _message(title, f"No failed, terminated or cancelled instances among {len(df)}.")
    level, order, name = _levels(data, variable)
    data, level = data[level.notna()], level[level.notna()]  # a variable's: the streams that have it
    if data.empty:
        return _message(
            title, f"No failed, terminated or cancelled instance has a stream variable {variable!r}."
        )
    reason = data["reason"].astype(object).where(data["reason"].notna(), "not recorded").astype(str)
    counts = pd.crosstab(reason, level.astype(object))
    if variable is not None:
        busiest = counts.sum().sort_values(ascending=False, kind="stable").index[:_FAILING_VALUES]
        order = [v for v in order if v in set(busiest)]
        if counts.shape[1] > _FAILING_VALUES:
            title += f" (the {_FAILING_VALUES} of {counts.shape[1]} values with most failures)"
    columns = [c for c in order if c in counts.columns] + [c for c in counts.columns if c not in order]
    if variable is not None:
        columns = [c for c in columns if c in order]
    counts = counts.reindex(index=counts.sum(axis=1).sort_values(ascending=False).index, columns=columns)
    import seaborn as sns
    from matplotlib.figure import Figure

    with _style():
        width = min(16.0, max(6.0, 0.45 * len(columns) + 3.5))
        fig = Figure(figsize=(width, max(3.0, 1.5 + 0.45 * len(counts))), layout="constrained")
        ax = fig.subplots()
        sns.heatmap(
            counts.rename(index=_escape, columns=_escape), annot=len(columns) <= _LABELLED, fmt="d",
            cmap="Reds", linewidths=0.5, cbar_kws={"label": "attempts"}, ax=ax,
        )  # fmt: skip
        ax.set_title(_escape(f"{title} (n = {len(data)})"))
        ax.set_xlabel(_escape(name))
        ax.set_ylabel("reason")
    return fig
