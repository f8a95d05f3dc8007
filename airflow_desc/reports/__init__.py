"""Reports: the DC1 status table, usage figures, resource advice, and an HTML report.

Pure functions of DataFrames; the queries that make those frames live in
:mod:`airflow_desc.history`. seaborn and matplotlib are imported only when a figure is made.

- :mod:`~airflow_desc.reports.status`: :func:`status_table`, :func:`attempts_table`, the
  Airflow / SLURM state -> column tables, text / CSV / JSON renderers.
- :mod:`~airflow_desc.reports.figures`: ``DataFrame -> Figure``, one per question.
- :mod:`~airflow_desc.reports.streams`: figures by stream variable and stream level.
- :mod:`~airflow_desc.reports.advice`: :func:`resource_advice`, and :func:`advice_overlay` (it as
  a render overlay).
- :mod:`~airflow_desc.reports.html`: :func:`write_report`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_desc.reports.advice import ADVICE_COLUMNS, advice_overlay, resource_advice
    from airflow_desc.reports.figures import (
        core_hours_by_cluster,
        cpu_efficiency,
        cpu_vs_wall,
        failures_by_reason,
        memory_vs_requested,
        throughput,
        walltime_distribution,
    )
    from airflow_desc.reports.html import write_report
    from airflow_desc.reports.status import (
        AIRFLOW_STATE_COLUMN,
        SLURM_STATE_COLUMN,
        STATE_COLUMNS,
        TABLE_COLUMNS,
        airflow_state_column,
        attempts_table,
        counts_from_instances,
        format_text,
        plot_path,
        slurm_state_column,
        status_table,
        to_csv,
        to_json,
    )
    from airflow_desc.reports.streams import failures_by_stream, stream_variables, usage_by_stream

__all__ = [
    "ADVICE_COLUMNS",
    "AIRFLOW_STATE_COLUMN",
    "SLURM_STATE_COLUMN",
    "STATE_COLUMNS",
    "TABLE_COLUMNS",
    "advice_overlay",
    "airflow_state_column",
    "attempts_table",
    "core_hours_by_cluster",
    "counts_from_instances",
    "cpu_efficiency",
    "cpu_vs_wall",
    "failures_by_reason",
    "failures_by_stream",
    "format_text",
    "memory_vs_requested",
    "plot_path",
    "resource_advice",
    "slurm_state_column",
    "status_table",
    "stream_variables",
    "throughput",
    "to_csv",
    "to_json",
    "usage_by_stream",
    "walltime_distribution",
    "write_report",
]

# Each name's module, imported on first use: ``reports.status`` (the CLI's table) needs none of
# the others' jinja2 and figures.
_MODULES = {
    "ADVICE_COLUMNS": "advice", "advice_overlay": "advice", "resource_advice": "advice",
    "write_report": "html",
    **dict.fromkeys(("failures_by_stream", "stream_variables", "usage_by_stream"), "streams"),
    **dict.fromkeys(
        ("core_hours_by_cluster", "cpu_efficiency", "cpu_vs_wall", "failures_by_reason",
         "memory_vs_requested", "throughput", "walltime_distribution"), "figures",
    ),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_MODULES.get(name, 'status')}")
    return getattr(module, name)
