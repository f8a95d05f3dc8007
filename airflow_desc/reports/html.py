"""A self-contained HTML report: the status table with its "Plot" links, attempts, advice, figures.

:func:`write_report` writes a directory that can be copied anywhere and opened from disk::

    index.html            the tables and the overall figures; no external CSS, JS or fonts
    status.csv            the status table, as :func:`~airflow_desc.reports.status.to_csv`
    status.json           the same, as :func:`~airflow_desc.reports.status.to_json`
    plots/<process>.png   each row's "Plot": CPU vs wall clock of that process
    figures/<name>.png    the overall figures of :mod:`~airflow_desc.reports.figures`

Every text that comes from data (task, process, reason names, the title) is HTML-escaped, and
every link is a relative, percent-encoded path inside the directory.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import pandas as pd

from airflow_desc.reports import figures
from airflow_desc.reports.advice import resource_advice
from airflow_desc.reports.status import (
    STATE_COLUMNS,
    attempts_table,
    counts_from_instances,
    plot_path,
    to_csv,
    to_json,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["OVERALL_FIGURES", "render_html", "render_status_page", "write_report"]

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
    "failures_by_reason": (
        "Failed, terminated and cancelled instances by reason",
        figures.failures_by_reason,
    ),
    "core_hours_by_cluster": (
        "Core-hours charged per cluster, by final state",
        figures.core_hours_by_cluster,
    ),
}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 0.15em 0.6em; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.zero { color: #bbb; }
td.bad { color: #b00; font-weight: bold; }
td.wrap { white-space: normal; min-width: 30em; }
tfoot td { font-weight: bold; border-top: 2px solid #888; }
figure { display: inline-block; margin: 0.5em 1em 1.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
p.note { color: #555; font-size: 0.9em; max-width: 60em; }
"""
_BAD_COLUMNS = frozenset({"Failed", "Terminated", "Out of memory", "Timed out", "Other failures"})
_TEXT_COLUMNS = frozenset({"Advice"})


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(path: str) -> str:
    return _esc(quote(path))


def _cell_text(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    return str(value)


def _td(column: str, value: Any, numeric: bool) -> str:
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
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attr}>{_esc(text)}</td>"


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


def _html_table(
    table: pd.DataFrame, *, css_class: str, links: Sequence[str | None] | None = None, link_query: str = ""
) -> str:
    """Render a table; a run of equal Task / Version cells shows once, a Totals row goes in the footer.

    ``link_query`` (already URL-encoded) is appended to each link as its query string.
    """
    query = f"?{_esc(link_query)}" if link_query else ""
    columns = [str(c) for c in table.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        for c in table.columns
    ]
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body: list[str] = []
    for number, (row, blank) in enumerate(
        zip(table.itertuples(index=False, name=None), _repeats(table), strict=True)
    ):
        cells = []
        for column, value, is_number in zip(columns, row, numeric, strict=True):
            if column == "Links" and links is not None and links[number]:
                cells.append(f'<td><a href="{_href(str(links[number]))}{query}">{_esc(value)}</a></td>')
            elif column in blank:
                cells.append("<td></td>")
            else:
                cells.append(_td(column, value, is_number))
        body.append("<tr>" + "".join(cells) + "</tr>")
    foot = ""
    if len(table) and str(table.iloc[-1].get("Type", "")) == "Totals":
        foot = f"<tfoot>{body.pop()}</tfoot>"
    rows = "\n".join(body)
    return (
        f'<table class="{_esc(css_class)}">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{rows}\n</tbody>\n{foot}</table>"
    )


def _page_start(title: str, css: str = "") -> str:
    """Return the page up to its ``<h1>`` title: no external CSS, JS or fonts."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{_CSS}{css}</style>
</head>
<body>
<h1>{_esc(title)}</h1>"""


def render_html(
    title: str,
    table: pd.DataFrame,
    attempts: pd.DataFrame,
    advice: pd.DataFrame,
    figure_paths: Sequence[tuple[str, str]],
) -> str:
    """Render the report page.

    :param title: the page title (escaped here).
    :param table: the status table (:func:`~airflow_desc.reports.status.status_table`); each
        row's "Plot" links to :func:`~airflow_desc.reports.status.plot_path` of its process.
    :param attempts: the attempts table.
    :param advice: the resource advice table.
    :param figure_paths: ``(relative path, caption)`` of each overall figure, in order.
    :return: the HTML text of ``index.html``.
    """
    links = [
        None if str(kind) == "Totals" else plot_path(str(process))
        for process, kind in zip(table["Process"], table["Type"], strict=True)
    ]
    quantile = advice.attrs.get("quantile")
    headroom = advice.attrs.get("headroom")
    advice_note = (
        f"Suggestions fit {quantile:.0%} of the instances with {headroom:g}x headroom"
        if quantile is not None and headroom is not None
        else "Suggestions"
    )
    figures_html = "\n".join(
        f'<figure><a href="{_href(path)}"><img src="{_href(path)}" alt="{_esc(caption)}"></a>'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
        for path, caption in figure_paths
    )
    states = ", ".join(STATE_COLUMNS)
    return f"""{_page_start(title)}
<h2 id="status">Status</h2>
<p class="note">Process instances by the state of their latest attempt ({_esc(states)}).
"Plot" shows CPU against wall-clock time for each instance of the process.
Also as <a href="status.csv">CSV</a> and <a href="status.json">JSON</a>.</p>
{_html_table(table, css_class="status", links=links)}
<h2 id="attempts">Attempts</h2>
<p class="note">Every attempt, counted per process; retries beyond the first attempt of each instance,
and those that ended in success.</p>
{_html_table(attempts, css_class="attempts")}
<h2 id="advice">Resource advice</h2>
<p class="note">{_esc(advice_note)}, memory rounded up to 100 MB and walltime to the minute.
Instances killed for memory or time count as needing more than they had; where too many were,
a suggestion is only a lower bound.</p>
{_html_table(advice, css_class="advice")}
<h2 id="figures">Figures</h2>
{figures_html}
</body>
</html>
"""


def _options(values: Sequence[str], selected: str | None, everything: str) -> str:
    shown = [f'<option value=""{"" if selected else " selected"}>{_esc(everything)}</option>']
    shown += [
        f'<option value="{_esc(v)}"{" selected" if v == selected else ""}>{_esc(v)}</option>' for v in values
    ]
    return "".join(shown)


def render_status_page(
    table: pd.DataFrame,
    attempts: pd.DataFrame,
    *,
    workflows: Sequence[str],
    variants: Sequence[str],
    selected: dict[str, str | None],
    notes: Sequence[str] = (),
    title: str = "DESC status",
) -> str:
    """Render the UI page: a selection form, the status table with its "Plot" links, the attempts.

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
    :return: the HTML text.
    """
    chosen = {k: v for k, v in selected.items() if v}
    query = urlencode(chosen)
    links = [
        None if str(kind) == "Totals" else plot_path(str(process))
        for process, kind in zip(table["Process"], table["Type"], strict=True)
    ]
    suffix = f"?{_esc(query)}" if query else ""
    notes_html = "".join(f'<p class="note">{_esc(n)}</p>' for n in notes)
    states = ", ".join(STATE_COLUMNS)
    workflow_options = _options(workflows, selected.get("workflow"), "all")
    variant_options = _options(variants, selected.get("variant"), "all")
    run = _esc(selected.get("run") or "")
    return f"""{_page_start(title, "form { margin: 0.5em 0 1em 0; } form label { margin-right: 1em; }")}
<form method="get" action="">
<label>Workflow <select name="workflow">{workflow_options}</select></label>
<label>Variant <select name="variant">{variant_options}</select></label>
<label>Run <input name="run" size="40" value="{run}" placeholder="DAG run id"></label>
<button type="submit">Show</button>
</form>
{notes_html}
<p class="note">Process instances by the state of their latest attempt ({_esc(states)}): the history,
merged with the task-instance states of the DAG runs in progress. "Plot" shows CPU against wall-clock
time for each attempt of the process. Also as <a href="status.csv{suffix}">CSV</a> and
<a href="status.json{suffix}">JSON</a>.</p>
{_html_table(table, css_class="status", links=links, link_query=query)}
<h2 id="attempts">Attempts</h2>
{_html_table(attempts, css_class="attempts")}
</body>
</html>
"""


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
    index.write_text(render_html(title, table, attempts, advice, figure_paths), encoding="utf-8")
    return index
