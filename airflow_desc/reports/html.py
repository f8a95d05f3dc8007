"""A self-contained HTML report: the status table with its "Plot" links, attempts, advice, figures.

:func:`write_report` writes a directory that can be copied anywhere and opened from disk::

    index.html            the tables and the overall figures; no external CSS, JS or fonts
    status.csv            the status table, as :func:`~airflow_desc.reports.status.to_csv`
    status.json           the same, as :func:`~airflow_desc.reports.status.to_json`
    plots/<process>.png   each row's "Plot": CPU vs wall clock of that process
    streams/<process>.png its wall clock, CPU and memory by stream variable (processes with streams)
    figures/<name>.png    the overall figures of :mod:`~airflow_desc.reports.figures` and
                          :mod:`~airflow_desc.reports.streams` (throughput per cluster, failures
                          by reason and stream level)

The markup is in the Jinja2 templates of ``templates/`` (shipped as package data), rendered with
autoescape: every text that comes from data (task, process, reason names, the title) is
HTML-escaped, and every link is a relative, percent-encoded path inside the directory.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import jinja2
import pandas as pd

from airflow_desc.reports import figures
from airflow_desc.reports.advice import resource_advice
from airflow_desc.reports.attempts import attempt_heading
from airflow_desc.reports.status import (
    STATE_COLUMNS,
    attempts_table,
    counts_from_instances,
    plot_path,
    runs_table,
    to_csv,
    to_json,
)
from airflow_desc.reports.streams import failures_by_stream, stream_variables, usage_by_stream

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DRILL_COLUMNS",
    "OVERALL_FIGURES",
    "USAGE_FIGURES",
    "render_html",
    "render_instances_page",
    "render_log_page",
    "render_rerun_page",
    "render_status_page",
    "render_usage_page",
    "stream_plot_path",
    "write_report",
]

#: The overall figures of the report: file stem -> (caption, figure function).
OVERALL_FIGURES: dict[str, tuple[str, Callable[[pd.DataFrame], Figure]]] = {
    "cpu_vs_wall": ("CPU vs wall-clock time, every process", figures.cpu_vs_wall),
    "cpu_efficiency": ("CPU efficiency per process", figures.cpu_efficiency),
    "memory_vs_requested": ("Peak memory vs requested memory", figures.memory_vs_requested),
    "walltime_distribution": (
        "Wall-clock time per process, with the requested walltime",
        figures.walltime_distribution,
    ),
    "throughput": ("Instances running and finished per hour", figures.throughput),
    "throughput_by_cluster": (
        "Instances running and finished per hour, per cluster",
        functools.partial(figures.throughput, by_cluster=True),
    ),
    "failures_by_reason": (
        "Failed, terminated and cancelled instances by reason",
        figures.failures_by_reason,
    ),
    "failures_by_stream_level": (
        "Failed, terminated and cancelled attempts by reason and stream level",
        failures_by_stream,
    ),
    "core_hours_by_cluster": (
        "Core-hours charged per cluster, by final state",
        figures.core_hours_by_cluster,
    ),
}

#: The figures of the status page's usage view (``desc/usage``): name -> caption. The per-process
#: ones take the chosen process (and stream variable); the others the whole selection.
USAGE_FIGURES: dict[str, str] = {
    "usage_by_stream": "Wall clock, CPU and peak memory of the process by stream variable",
    "failures_by_stream": "Failures by reason and stream level (or by the chosen variable's values)",
    "throughput_by_cluster": "Instances running and finished per hour, per cluster",
    "cpu_vs_wall": "CPU vs wall clock, every process (a panel each when there are many)",
    "memory_vs_requested": "Peak memory vs requested memory, every process",
}
#: The status page's columns whose counts link to the list of those instances: the recorded states.
DRILL_COLUMNS: tuple[str, ...] = ("Success", "Failed", "Terminated", "Cancelled", "Skipped")

_BAD_COLUMNS = frozenset({"Failed", "Terminated", "Out of memory", "Timed out", "Other failures"})
_TEXT_COLUMNS = frozenset({"Advice"})


@functools.cache
def _templates() -> jinja2.Environment:
    # autoescape: every text and attribute value from data (names, the title, links) is escaped by
    # the template engine, not by hand. StrictUndefined: a misspelled variable fails the render.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("airflow_desc.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@dataclass(frozen=True)
class _Cell:
    """One ``<td>``: its text, its CSS classes, and (for a "Plot" cell) where it links to."""

    text: str
    classes: str = ""
    href: str = ""


@dataclass(frozen=True)
class _Table:
    """What ``data_table`` in ``templates/macros.html.j2`` lays out."""

    css_class: str
    columns: list[str]
    body: list[list[_Cell]]
    foot: list[_Cell] | None


@dataclass(frozen=True)
class _Figure:
    href: str
    caption: str


def _cell_text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    return str(value)


def _cell(column: str, value: Any, numeric: bool) -> _Cell:
    text = _cell_text(value.item() if hasattr(value, "item") else value)
    classes = []
    if numeric:
        classes.append("n")
        if text in ("0", ""):
            classes.append("zero")
        elif column in _BAD_COLUMNS:
            classes.append("bad")
    if column in _TEXT_COLUMNS:
        classes.append("wrap")
    return _Cell(text, " ".join(classes))


def _repeats(table: pd.DataFrame) -> list[set[str]]:
    """For each row, the columns among Task and Version that repeat the row above (shown blank)."""
    tasks = [str(v) for v in table["Task"]] if "Task" in table.columns else [""] * len(table)
    versions = [str(v) for v in table["Version"]] if "Version" in table.columns else [""] * len(table)
    out: list[set[str]] = [set()]
    for i in range(1, len(table)):
        same_task = bool(tasks[i]) and tasks[i] == tasks[i - 1]
        out.append(
            {"Task", "Version"}
            if same_task and versions[i] == versions[i - 1]
            else {"Task"}
            if same_task
            else set()
        )
    return out[: len(table)]


def _table(
    table: pd.DataFrame,
    *,
    css_class: str,
    links: Sequence[str | None] | None = None,
    link_query: str = "",
    cell_links: Sequence[Mapping[str, str]] | None = None,
) -> _Table:
    """Lay a table out in cells: equal Task / Version cells in a run show once, a Totals row is the footer.

    ``link_query`` (already URL-encoded) is appended to each link of the "Links" column as its query
    string; ``cell_links`` gives, by row, the columns whose cell links somewhere (already encoded).
    """
    query = f"?{link_query}" if link_query else ""
    columns = [str(c) for c in table.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        for c in table.columns
    ]
    body: list[list[_Cell]] = []
    for number, (row, blank) in enumerate(
        zip(table.itertuples(index=False, name=None), _repeats(table), strict=True)
    ):
        cells = []
        for column, value, is_number in zip(columns, row, numeric, strict=True):
            if column == "Links" and links is not None and links[number]:
                cells.append(_Cell(str(value), href=quote(str(links[number])) + query))
            elif column in blank:
                cells.append(_Cell(""))
            elif cell_links is not None and column in cell_links[number]:
                linked = _cell(column, value, is_number)
                cells.append(dataclasses.replace(linked, href=cell_links[number][column]))
            else:
                cells.append(_cell(column, value, is_number))
        body.append(cells)
    foot = None
    if len(table) and str(table.iloc[-1].get("Type", "")) == "Totals":
        foot = body.pop()
    return _Table(css_class=css_class, columns=columns, body=body, foot=foot)


def stream_plot_path(process: str) -> str:
    """Return the relative path of a process's figure by stream: ``streams/<process>.png``."""
    return "streams/" + plot_path(process).partition("/")[2]


def _plot_links(table: pd.DataFrame) -> list[str | None]:
    return [
        None if str(kind) == "Totals" else plot_path(str(process))
        for process, kind in zip(table["Process"], table["Type"], strict=True)
    ]


def _advice_note(advice: pd.DataFrame) -> str:
    quantile = advice.attrs.get("quantile")
    headroom = advice.attrs.get("headroom")
    if quantile is None or headroom is None:
        return "Suggestions"
    return f"Suggestions fit {quantile:.0%} of the instances with {headroom:g}x headroom"


def _drill_links(table: pd.DataFrame, selected: Mapping[str, str | None]) -> list[dict[str, str]]:
    """For each row, its non-zero counts of recorded states, linked to the list of those instances."""
    base = {k: v for k, v in selected.items() if v}
    out: list[dict[str, str]] = []
    for row in table.to_dict("records"):
        links: dict[str, str] = {}
        if str(row.get("Type")) != "Totals":
            for column in DRILL_COLUMNS:
                if row.get(column):
                    query = urlencode({**base, "process": row["Process"], "state": column.lower()})
                    links[column] = f"instances?{query}"
        out.append(links)
    return out


def render_html(
    title: str,
    table: pd.DataFrame,
    attempts: pd.DataFrame,
    advice: pd.DataFrame,
    figure_paths: Sequence[tuple[str, str]],
    runs: pd.DataFrame | None = None,
    stream_paths: Sequence[tuple[str, str]] = (),
) -> str:
    """Render the report page (``templates/report.html.j2``).

    :param title: the page title (escaped here).
    :param table: the status table (:func:`~airflow_desc.reports.status.status_table`); each
        row's "Plot" links to :func:`~airflow_desc.reports.status.plot_path` of its process.
    :param attempts: the attempts table.
    :param advice: the resource advice table.
    :param figure_paths: ``(relative path, caption)`` of each overall figure, in order.
    :param runs: the runs and the specs that produced them (:func:`~airflow_desc.reports.status.runs_table`);
        ``None``: no such section.
    :param stream_paths: ``(relative path, caption)`` of each process's figure by stream.
    :return: the HTML text of ``index.html``.
    """
    advice_note = _advice_note(advice)
    return (
        _templates()
        .get_template("report.html.j2")
        .render(
            title=title,
            states=", ".join(STATE_COLUMNS),
            status=_table(table, css_class="status", links=_plot_links(table)),
            attempts=_table(attempts, css_class="attempts"),
            advice=_table(advice, css_class="advice"),
            advice_note=advice_note,
            runs=None if runs is None else _table(runs, css_class="runs"),
            figures=[_Figure(href=quote(path), caption=caption) for path, caption in figure_paths],
            stream_figures=[_Figure(href=quote(path), caption=caption) for path, caption in stream_paths],
        )
    )


def render_status_page(
    table: pd.DataFrame,
    attempts: pd.DataFrame,
    *,
    workflows: Sequence[str],
    variants: Sequence[str],
    selected: dict[str, str | None],
    notes: Sequence[str] = (),
    title: str = "DESC status",
    rerun_states: Sequence[str] = (),
) -> str:
    """Render the UI page (``templates/status_page.html.j2``): a selection form, the tables, the Rerun form.

    Every link is relative (the page is served under a URL prefix, and in an iframe of the Airflow
    UI): ``plots/<process>.png``, ``status.csv`` and ``status.json``, each with the selection as
    its query string.

    :param table: the status table (:func:`~airflow_desc.reports.status.status_table`).
    :param attempts: the attempts table.
    :param workflows: the workflow names to choose from.
    :param variants: the variant names to choose from.
    :param selected: the selection: ``workflow``, ``run``, ``variant`` (``None``: all).
    :param notes: lines shown above the table (e.g. how many runs are in progress).
    :param title: the page title.
    :param rerun_states: the states the Rerun form offers.
    :return: the HTML text.
    """
    query = urlencode({k: v for k, v in selected.items() if v})
    processes = [str(p) for p, t in zip(table["Process"], table["Type"], strict=True) if str(t) != "Totals"]
    return (
        _templates()
        .get_template("status_page.html.j2")
        .render(
            title=title,
            states=", ".join(STATE_COLUMNS),
            selected={k: selected.get(k) for k in ("workflow", "run", "variant")},
            workflows=list(workflows),
            variants=list(variants),
            notes=list(notes),
            query_suffix=f"?{query}" if query else "",
            status=_table(
                table,
                css_class="status",
                links=_plot_links(table),
                link_query=query,
                cell_links=_drill_links(table, selected),
            ),
            attempts=_table(attempts, css_class="attempts"),
            processes=list(dict.fromkeys(processes)),
            rerun_states=list(rerun_states),
        )
    )


def render_usage_page(
    advice: pd.DataFrame,
    *,
    processes: Sequence[str],
    variables: Sequence[str],
    selected: Mapping[str, str | None],
    title: str = "DESC usage and resource advice",
) -> str:
    """Render the UI's usage view (``templates/usage_page.html.j2``): figures by stream, advice.

    A form chooses the process and its stream variable (one process at a time: readable with 40);
    each figure is ``figures/<name>.png`` with the selection as its query string.

    :param advice: the resource advice table of the selection.
    :param processes: the processes to choose from.
    :param variables: the chosen process's stream variables.
    :param selected: ``workflow``, ``run``, ``variant``, ``process``, ``variable`` (``None``: all / default).
    :param title: the page title.
    :return: the HTML text.
    """
    keys = ("workflow", "run", "variant", "process", "variable")
    query = urlencode({k: v for k in keys if (v := selected.get(k))})
    status_query = urlencode({k: v for k in keys[:3] if (v := selected.get(k))})
    names = [n for n in USAGE_FIGURES if selected.get("process") or n != "usage_by_stream"]
    return (
        _templates()
        .get_template("usage_page.html.j2")
        .render(
            title=title,
            selected={k: selected.get(k) for k in keys},
            processes=list(processes),
            variables=list(variables),
            status_href="./" + (f"?{status_query}" if status_query else ""),
            figures=[
                _Figure(
                    href=f"figures/{name}.png" + (f"?{query}" if query else ""), caption=USAGE_FIGURES[name]
                )
                for name in names
            ],
            advice=_table(advice, css_class="advice"),
            advice_note=_advice_note(advice),
        )
    )


def render_instances_page(
    attempts: pd.DataFrame,
    *,
    process: str,
    state: str,
    selected: Mapping[str, str | None],
    notes: Sequence[str] = (),
) -> str:
    """Render the drill-down of one count of the status page (``templates/instances_page.html.j2``).

    One row per process instance: stream, try, state, reason, message, node, CPU, wall, MaxRSS, and
    its log: a link to the tail the history keeps (``log/<attempt id>``), else where the log is.

    :param attempts: rows of :func:`~airflow_desc.history.queries.attempt_logs`.
    :param process: the process listed.
    :param state: the state listed (lower case).
    :param selected: the status page's selection (``workflow``, ``run``, ``variant``).
    :param notes: lines shown above the list.
    """
    columns = ["Stream", "Try", "State", "Reason", "Message", "Node", "CPU (s)", "Wall (s)", "MaxRSS (MB)"]
    body: list[list[_Cell]] = []
    for row in attempts.to_dict("records"):
        rss = row["max_rss_bytes"]
        numbers = (row["total_cpu_s"], row["elapsed_s"], None if pd.isna(rss) else int(rss) / 2**20)
        attempt = f"{row['try_number']}" + (f".{row['resubmit']}" if row["resubmit"] else "")
        log = (
            _Cell("tail", href=f"log/{int(row['attempt_id'])}")
            if row["has_tail"]
            else _Cell(f"{row['cluster']}:{row['log_path']}" if row["log_path"] else "")
        )
        body.append([
            _Cell(str(row["stream"]) or "(top level)"), _Cell(attempt, "n"), _Cell(str(row["state"])),
            _Cell(_cell_text(row["reason"])), _Cell(_cell_text(row["message"]), "wrap"),
            _Cell(_cell_text(row["node"])), *(_cell("n", v, True) for v in numbers), log,
        ])  # fmt: skip
    back = urlencode({k: v for k, v in selected.items() if v})
    return (
        _templates()
        .get_template("instances_page.html.j2")
        .render(
            title=f"{process}: {state}",
            notes=list(notes),
            back=f"./?{back}" if back else "./",
            instances=_Table(css_class="instances", columns=[*columns, "Log"], body=body, foot=None),
        )
    )


def render_rerun_page(
    *,
    message: str,
    rows: Sequence[Mapping[str, object]],
    fields: Mapping[str, Sequence[str]],
    user: str,
    confirm: bool,
    back: str = "",
    title: str = "DESC rerun",
) -> str:
    """Render the status page's Rerun answer (``templates/rerun_page.html.j2``).

    :param message: what was done, or what would be.
    :param rows: the task instances (``dag_id, run_id, task_id, map_index, state, try_number, selected``).
    :param fields: the form's values, sent again with the confirmation.
    :param user: who clears.
    :param confirm: show the button that clears them (after a dry run).
    :param back: the status page's query string (with its ``?``).
    :param title: the page title.
    """
    return (
        _templates()
        .get_template("rerun_page.html.j2")
        .render(
            title=title,
            message=message,
            rows=list(rows),
            fields={k: list(v) for k, v in fields.items()},
            user=user,
            confirm=confirm,
            back=back,
        )  # fmt: skip
    )


def render_log_page(attempt: Mapping[str, Any]) -> str:
    """Render one attempt's log tail as the history keeps it (``templates/log_page.html.j2``).

    :param attempt: a row of :func:`~airflow_desc.history.queries.attempt_logs` with its ``tail``.
    """
    return (
        _templates()
        .get_template("log_page.html.j2")
        .render(
            title=f"{attempt['process']} {attempt['stream']}",
            heading=attempt_heading(attempt),
            tail=attempt["tail"] or "",
        )
    )


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def write_report(
    out_dir: str | os.PathLike[str],
    table: pd.DataFrame,
    instances: pd.DataFrame,
    title: str = "airflow-desc status report",
    *,
    attempts: pd.DataFrame | None = None,
    advice: pd.DataFrame | None = None,
) -> Path:
    """Write the HTML report and its figures into ``out_dir``.

    :param out_dir: the directory; created if missing. Files of an earlier report are overwritten.
    :param table: the status table (:func:`~airflow_desc.reports.status.status_table`).
    :param instances: the process instances the figures and the advice are made of (columns named
        as :class:`~airflow_desc.history.records.ProcessRecord` fields); may be empty.
    :param title: the page title.
    :param attempts: the attempts table; ``None``: counted from ``instances``
        (:func:`~airflow_desc.reports.status.counts_from_instances`), which then must hold every
        attempt, not only the latest.
    :param advice: the advice table; ``None``: :func:`~airflow_desc.reports.advice.resource_advice`
        of ``instances`` with its defaults.
    :return: the path of ``index.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processes = [str(p) for p, t in zip(table["Process"], table["Type"], strict=True) if str(t) != "Totals"]
    for process in dict.fromkeys(processes):
        _save(figures.cpu_vs_wall(instances, process=process), out / plot_path(process))
    stream_paths: list[tuple[str, str]] = []
    for process in dict.fromkeys(processes):
        variables = stream_variables(instances, process)
        if variables:
            _save(usage_by_stream(instances, process, variables[0]), out / stream_plot_path(process))
            stream_paths.append((stream_plot_path(process), f"{process} by {variables[0]}"))
    figure_paths: list[tuple[str, str]] = []
    for name, (caption, make) in OVERALL_FIGURES.items():
        relative = f"figures/{name}.png"
        _save(make(instances), out / relative)
        figure_paths.append((relative, caption))
    if attempts is None:
        attempts = attempts_table(counts_from_instances(instances))
    if advice is None:
        advice = resource_advice(instances)
    (out / "status.csv").write_text(to_csv(table), encoding="utf-8")
    (out / "status.json").write_text(to_json(table), encoding="utf-8")
    index = out / "index.html"
    runs = runs_table(instances)
    index.write_text(
        render_html(title, table, attempts, advice, figure_paths, runs, stream_paths), encoding="utf-8"
    )
    return index
