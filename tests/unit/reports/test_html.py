"""The HTML report: files exist, every link resolves inside the report, data is escaped."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest

from airflow_desc.reports.html import OVERALL_FIGURES, render_html, render_status_page, write_report
from airflow_desc.reports.status import attempts_table, counts_from_instances, plot_path, status_table

from .conftest import instances_frame

ODD = 'a<b>&"c'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Collects links, images, table rows and text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.tags: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.text: list[str] = []
        self.values: list[str] = []

    @classmethod
    def of(cls, html: str) -> Page:
        page = cls()
        page.feed(html)
        return page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append(tag)
        if tag == "a" and values.get("href"):
            self.links.append(str(values["href"]))
        if tag == "img":
            self.images.append(str(values["src"]))
        if tag in ("option", "input"):
            self.values.append(str(values.get("value")))
        if tag == "table":
            self._table = str(values.get("class"))
            self.rows[self._table] = []
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        if tag == "tr" and self._table is not None and self._row is not None:
            self.rows[self._table].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pd.DataFrame, Page]:
    instances = instances_frame(n_per_process=6, processes=("processEimage", ODD))
    instances.loc[0, "try_number"] = 2
    instances = pd.concat(
        [instances, instances.iloc[[0]].assign(try_number=1, state="terminated")], ignore_index=True
    )
    order = [("task0", "processEimage"), ("task1", ODD), ("later", "notStarted")]
    table = status_table(counts_from_instances(instances), order=order)
    out = tmp_path_factory.mktemp("report") / "dc1"
    index = write_report(out, table, instances, title="DC1 <imsim> & friends")
    page = Page()
    page.feed(index.read_text(encoding="utf-8"))
    return index, table, page


def test_files_exist(report: tuple[pathlib.Path, pd.DataFrame, Page]) -> None:
    index, _, _ = report
    out = index.parent
    assert index.name == "index.html"
    for name in OVERALL_FIGURES:
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    assert len(list((out / "plots").glob("*.png"))) == 3
    assert json.loads((out / "status.json").read_text())[0]["Process"] == "processEimage"
    assert (out / "status.csv").read_text().startswith("Task,Version,Process,Type,Waiting")


def test_every_link_and_image_resolves_inside_the_report(
    report: tuple[pathlib.Path, pd.DataFrame, Page],
) -> None:
    index, _, page = report
    out = index.parent.resolve()
    targets = page.links + page.images
    by_stream = list((out / "streams").glob("*.png"))
    assert by_stream  # the processes of the fixture run per visit
    assert len(page.images) == len(OVERALL_FIGURES) + len(by_stream)
    for target in targets:
        parts = urlsplit(target)
        assert not parts.scheme and not parts.netloc, target
        path = (out / unquote(parts.path)).resolve()
        assert path.is_file() and out in path.parents, target


def test_each_status_row_has_its_plot_link(report: tuple[pathlib.Path, pd.DataFrame, Page]) -> None:
    index, table, page = report
    rows = page.rows["status"]
    assert rows[0][:4] == ["Task", "Version", "Process", "Type"] and rows[0][-1] == "Links"
    assert len(rows) == 1 + len(table)
    assert [r[2] for r in rows[1:]] == [ODD if p == ODD else p for p in table["Process"]]
    assert rows[-1][3] == "Totals" and rows[-1][-2] == str(table.iloc[-1]["Total"])
    plot_links = [link for link in page.links if link.startswith("plots/")]
    assert [unquote(link) for link in plot_links] == [plot_path(p) for p in table["Process"].iloc[:-1]]
    assert [r[-1] for r in rows[1:-1]] == ["Plot"] * (len(table) - 1)
    # A process with no instance yet still gets a plot: one that says so.
    assert (index.parent / plot_path("notStarted")).stat().st_size > 0


def test_counts_in_the_page_are_the_table_s(report: tuple[pathlib.Path, pd.DataFrame, Page]) -> None:
    _, table, page = report
    rows = page.rows["status"]
    header = rows[0]
    for html_row, (_, table_row) in zip(rows[1:], table.iterrows(), strict=True):
        assert html_row[header.index("Total")] == str(table_row["Total"])
        assert html_row[header.index("Terminated")] == str(table_row["Terminated"])


def test_data_is_escaped(report: tuple[pathlib.Path, pd.DataFrame, Page]) -> None:
    index, _, page = report
    text = index.read_text(encoding="utf-8")
    # Jinja2's autoescape (MarkupSafe) spells the double quote &#34; (html.escape spelled it &quot;).
    assert ODD not in text and "a&lt;b&gt;&amp;&#34;c" in text
    assert "<title>DC1 &lt;imsim&gt; &amp; friends</title>" in text
    assert "<b>" not in text and "<imsim>" not in text
    assert set(page.tags) <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "p",
        "a",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "th",
        "td",
        "figure",
        "img",
        "figcaption",
    }


def test_attempts_and_advice_are_shown(report: tuple[pathlib.Path, pd.DataFrame, Page]) -> None:
    _, _, page = report
    attempts = page.rows["attempts"]
    assert attempts[0][4:] == ["Instances", "Attempts", "Retries", "Retries (now Success)"]
    eimage = [r for r in attempts if r[2] == "processEimage"][0]
    assert eimage[4:6] == ["6", "7"]  # one instance was tried twice
    advice = page.rows["advice"]
    assert advice[0][-1] == "Advice" and {r[1] for r in advice[1:]} == {"processEimage", ODD}


def test_given_tables_are_used_as_they_are(
    make_instances: Callable[..., pd.DataFrame], tmp_path: pathlib.Path
) -> None:
    instances = make_instances(n_per_process=3, processes=("p",))
    counts = pd.DataFrame(
        [("task0", "1.0", "p", "batch", "success", 3, 9)],
        columns=["task", "version", "process", "process_type", "state", "count", "attempts"],
    )
    advice = pd.DataFrame({"Task": ["task0"], "Process": ["p"], "Advice": ["ask Tony"]})
    index = write_report(
        tmp_path, status_table(counts), instances.iloc[:0], attempts=attempts_table(counts), advice=advice
    )
    page = Page()
    page.feed(index.read_text(encoding="utf-8"))
    assert page.rows["attempts"][1][4:6] == ["3", "9"]
    assert page.rows["advice"][1] == ["task0", "p", "ask Tony"]


HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


def test_a_hostile_name_is_text_in_the_report_and_in_the_page() -> None:
    """A name that tries to close a tag or an attribute stays text, in the report and the UI page."""
    counts = pd.DataFrame(
        [(f"task{HOSTILE}", "1.0", f"process{HOSTILE}", "batch", "success", 2, 3)],
        columns=["task", "version", "process", "process_type", "state", "count", "attempts"],
    )
    table, attempts = status_table(counts), attempts_table(counts)
    report = render_html(f"title{HOSTILE}", table, attempts, pd.DataFrame({"Process": []}), [])
    page = render_status_page(
        table,
        attempts,
        workflows=[f"workflow{HOSTILE}"],
        variants=[f"variant{HOSTILE}"],
        selected={"workflow": f"workflow{HOSTILE}", "run": f"run{HOSTILE}", "variant": None},
        notes=[f"note{HOSTILE}"],
    )
    for html in (report, page):
        assert "<script>" not in html and "<img src=x" not in html
        parsed = Page.of(html)
        assert "script" not in parsed.tags and "img" not in parsed.tags
        assert f"process{HOSTILE}" in parsed.text and f"task{HOSTILE}" in parsed.text
    assert f"title{HOSTILE}" in Page.of(report).text
    shown = Page.of(page)
    assert {f"workflow{HOSTILE}", f"variant{HOSTILE}", f"note{HOSTILE}"} <= set(shown.text)
    assert shown.values[:5] == ["", f"workflow{HOSTILE}", "", f"variant{HOSTILE}", f"run{HOSTILE}"]
    # The Rerun form: the selection again (hidden), each row's process as a checkbox's value.
    assert {f"workflow{HOSTILE}", f"run{HOSTILE}", f"process{HOSTILE}"} <= set(shown.values[5:])


def test_the_report_names_the_spec_of_each_run(tmp_path: pathlib.Path) -> None:
    """Two versions side by side: each run's row says its version and the spec digest that rendered it."""
    old = instances_frame(n_per_process=2, processes=("processEimage",)).assign(
        dag_id="DC1-DM12_v1.16", run_id="r1", workflow_version="1.16", variant="", spec_digest="a" * 64
    )
    new = old.assign(
        dag_id="DC1-DM12_v1.17", run_id="r2", workflow_version="1.17", spec_digest="b" * 64 + "+c"
    )
    instances = pd.concat([old, new, new.iloc[[0]].assign(spec_digest=None, run_id="r0")], ignore_index=True)
    table = status_table(counts_from_instances(instances))
    page = Page.of(write_report(tmp_path, table, instances).read_text(encoding="utf-8"))
    assert page.rows["runs"] == [
        ["Workflow", "Version", "Variant", "DAG", "Run", "Spec digest", "Attempts"],
        ["DC1-DM12", "1.16", "", "DC1-DM12_v1.16", "r1", "a" * 64, "2"],
        ["DC1-DM12", "1.17", "", "DC1-DM12_v1.17", "r2", "b" * 64 + "+c", "2"],
        ["DC1-DM12", "1.17", "", "DC1-DM12_v1.17", "r0", "", "1"],  # recorded before digests were kept
    ]
