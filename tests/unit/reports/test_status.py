"""The DC1 status table: the golden DC1 numbers, live counts, Totals, state mappings and renderers."""

from __future__ import annotations

import enum
import importlib
import importlib.util
import io
import json
import pathlib

import pandas as pd
import pytest

from airflow_desc import reports
from airflow_desc.history import PROCESS_STATES
from airflow_desc.slurm.states import SlurmState

from .conftest import DATA, STATES, dc1_counts

TSV_STATES = list(STATES)


def counts(*rows: tuple[str, str, str, str, str, int, int]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["task", "version", "process", "process_type", "state", "count", "attempts"]
    )


# --- the golden DC1 table -------------------------------------------------------------------------------


def test_dc1_golden_numbers_and_order(dc1: pd.DataFrame) -> None:
    # Shuffled counts and the slide's order must give back the slide's rows, in its order.
    shuffled = dc1_counts(dc1).sample(frac=1.0, random_state=3).reset_index(drop=True)
    order = list(zip(dc1["task"], dc1["process"], strict=True))
    table = reports.status_table(shuffled, order=order)

    assert tuple(table.columns) == reports.TABLE_COLUMNS
    body = table.iloc[:-1].reset_index(drop=True)
    assert list(body["Task"]) == list(dc1["task"])
    assert list(body["Version"]) == list(dc1["version"])
    assert list(body["Process"]) == list(dc1["process"])
    assert list(body["Type"]) == list(dc1["type"])
    assert TSV_STATES == [column.lower() for column in reports.STATE_COLUMNS]
    for state, column in zip(TSV_STATES, reports.STATE_COLUMNS, strict=True):
        assert list(body[column]) == list(dc1[state]), column
    assert set(body["Links"]) == {"Plot"}


def test_dc1_totals_and_the_one_inconsistent_row_of_the_slide(dc1: pd.DataFrame) -> None:
    table = reports.status_table(dc1_counts(dc1))
    body, totals = table.iloc[:-1].reset_index(drop=True), table.iloc[-1]
    # Total is the sum of the state columns. The slide (and the TSV copied from it) says 5034 for
    # mergeDetections while its own columns add up to 4268 + 765 = 5033: every other row agrees.
    tsv_sum = dc1[TSV_STATES].sum(axis=1)
    inconsistent = dc1.loc[tsv_sum != dc1["total"], "process"].tolist()
    assert inconsistent == ["mergeDetections"]
    assert dc1.loc[dc1["process"] == "mergeDetections", "total"].item() == 5034
    assert list(body["Total"]) == list(tsv_sum)
    assert body.loc[body["Process"] == "mergeDetections", "Total"].item() == 5033

    assert (totals["Task"], totals["Version"], totals["Process"], totals["Type"], totals["Links"]) == (
        "",
        "",
        "",
        "Totals",
        "",
    )
    for state, column in zip(TSV_STATES, reports.STATE_COLUMNS, strict=True):
        assert totals[column] == dc1[state].sum(), column
    assert (totals["Success"], totals["Failed"], totals["Terminated"], totals["Skipped"]) == (
        906354,
        7135,
        23349,
        57000,
    )
    assert totals["Total"] == 993838 == dc1["total"].sum() - 1


def test_dc1_first_seen_order_without_order(dc1: pd.DataFrame) -> None:
    table = reports.status_table(dc1_counts(dc1))
    assert list(table["Process"].iloc[:-1]) == list(dc1["process"])


def test_dc1_text_golden(dc1: pd.DataFrame) -> None:
    text = reports.format_text(reports.status_table(dc1_counts(dc1)))
    assert text == (DATA / "dc1-status-table.txt").read_text()


def test_text_shows_each_task_once_like_the_slide(dc1: pd.DataFrame) -> None:
    lines = reports.format_text(reports.status_table(dc1_counts(dc1))).splitlines()[2:]
    shown = [line.split()[0] if not line.startswith(" ") else "" for line in lines]
    first_of_run = [
        task if i == 0 or dc1["task"][i - 1] != task else "" for i, task in enumerate(dc1["task"])
    ]
    assert shown[:-1] == first_of_run
    assert lines[-1].split()[:2] == ["Totals", "0"]
    widths = {len(line) for line in lines[:-1]}
    assert len(widths) == 1  # every row ends in its Links column, all at the same place


# --- live counts, order, Totals --------------------------------------------------------------------------


def test_live_counts_are_added_and_new_processes_follow() -> None:
    history = counts(
        ("level2", "1.0", "mergeDetections", "batch", "success", 4, 5),
        ("level2", "1.0", "mergeDetections", "batch", "failed", 1, 3),
        ("level2", "1.0", "wrapup", "script", "success", 2, 2),
    )
    live = pd.DataFrame(
        {
            "task": ["level2", "level2", "level2"],
            "version": ["1.0", "1.0", "1.0"],
            "process": ["mergeDetections", "wrapup", "report"],
            "process_type": ["batch", "script", "script"],
            "state": ["running", "success", "waiting"],
            "count": [3, 1, 1],
        }
    )
    table = reports.status_table(history, live=live)
    assert list(table["Process"]) == ["mergeDetections", "wrapup", "report", ""]
    merge = table.iloc[0]
    assert (merge["Success"], merge["Failed"], merge["Running"], merge["Total"]) == (4, 1, 3, 8)
    assert table.iloc[1]["Success"] == 3
    assert (table.iloc[2]["Waiting"], table.iloc[2]["Type"]) == (1, "Script")
    assert table.iloc[-1]["Total"] == 8 + 3 + 1


def test_state_names_are_read_case_insensitively() -> None:
    table = reports.status_table(counts(("t", "1", "p", "Batch", "Success", 2, 2)))
    assert (table.iloc[0]["Success"], table.iloc[0]["Type"]) == (2, "Batch")


def test_order_puts_listed_rows_first_zero_rows_for_unseen_and_keeps_the_rest() -> None:
    history = counts(
        ("a", "1", "p1", "batch", "success", 1, 1),
        ("b", "1", "p2", "script", "failed", 2, 2),
        ("c", "1", "p3", "batch", "skipped", 3, 3),
    )
    table = reports.status_table(history, order=[("b", "p2"), ("z", "not-started"), ("a", "p1")])
    assert list(zip(table["Task"], table["Process"], strict=True)) == [
        ("b", "p2"),
        ("z", "not-started"),
        ("a", "p1"),
        ("c", "p3"),
        ("", ""),
    ]
    unseen = table.iloc[1]
    assert (unseen["Version"], unseen["Type"], unseen["Total"], unseen["Links"]) == ("", "", 0, "Plot")
    assert table.iloc[-1]["Total"] == 6


def test_two_versions_of_a_process_are_two_rows_at_its_place_in_order() -> None:
    history = counts(
        ("t", "1.0", "p", "batch", "success", 1, 1),
        ("u", "1", "q", "batch", "success", 1, 1),
        ("t", "1.1", "p", "batch", "success", 2, 2),
    )
    table = reports.status_table(history, order=[("u", "q"), ("t", "p")])
    assert list(zip(table["Process"], table["Version"], strict=True))[:3] == [
        ("q", "1"),
        ("p", "1.0"),
        ("p", "1.1"),
    ]


def test_empty_counts_give_a_zero_totals_row() -> None:
    table = reports.status_table(counts())
    assert tuple(table.columns) == reports.TABLE_COLUMNS
    assert len(table) == 1 and table.iloc[0]["Type"] == "Totals" and table.iloc[0]["Total"] == 0
    assert table.attrs["plot_links"] == [None]


def test_plot_links_follow_rows() -> None:
    table = reports.status_table(
        counts(("t", "1", "p1", "batch", "success", 1, 1), ("t", "1", "p2", "batch", "success", 1, 1))
    )
    assert table.attrs["plot_links"] == ["plots/p1.png", "plots/p2.png", None]


def test_unknown_state_and_missing_columns_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown state\(s\) scheduled"):
        reports.status_table(counts(("t", "1", "p", "batch", "scheduled", 1, 1)))
    with pytest.raises(ValueError, match=r"missing column\(s\) attempts"):
        reports.status_table(counts(("t", "1", "p", "batch", "success", 1, 1)).drop(columns="attempts"))
    with pytest.raises(ValueError, match="negative"):
        reports.status_table(counts(("t", "1", "p", "batch", "success", -1, 1)))


def test_state_columns_are_the_process_states() -> None:
    assert [c.lower() for c in reports.STATE_COLUMNS] == list(PROCESS_STATES)


# --- Airflow and SLURM states ----------------------------------------------------------------------------


def airflow_task_instance_states() -> type[enum.Enum]:
    """Airflow's TaskInstanceState, without the second it takes to import airflow.

    ``airflow/utils/state.py`` only imports ``enum``: load that file alone, and fall back to the
    real import should it ever need more.
    """
    spec = importlib.util.find_spec("airflow")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("airflow is not installed")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "utils" / "state.py"
    module_spec = importlib.util.spec_from_file_location("_airflow_utils_state", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except ImportError:
        module = importlib.import_module("airflow.utils.state")
    states: type[enum.Enum] = module.TaskInstanceState
    return states


def test_every_airflow_task_instance_state_has_a_column() -> None:
    task_instance_state = airflow_task_instance_states()
    airflow_states = {s.value for s in task_instance_state} | {None}
    assert "deferred" in airflow_states and len(airflow_states) > 10
    assert set(reports.AIRFLOW_STATE_COLUMN) == airflow_states
    assert set(reports.AIRFLOW_STATE_COLUMN.values()) - {None} <= set(reports.STATE_COLUMNS)
    assert reports.airflow_state_column(task_instance_state("deferred")) == "Submitted"


@pytest.mark.parametrize(
    ("state", "column"),
    [
        (None, "Waiting"),
        ("scheduled", "Ready"),
        ("queued", "Queued"),
        ("running", "Running"),
        ("deferred", "Submitted"),
        ("up_for_retry", "Waiting"),
        ("upstream_failed", "Skipped"),
        ("SUCCESS", "Success"),
        ("removed", None),
    ],
)
def test_airflow_state_column(state: str | None, column: str | None) -> None:
    assert reports.airflow_state_column(state) == column


def test_unknown_airflow_state_is_an_error() -> None:
    with pytest.raises(ValueError, match="AIRFLOW_STATE_COLUMN"):
        reports.airflow_state_column("hibernating")


def test_every_slurm_state_has_a_column() -> None:
    assert set(reports.SLURM_STATE_COLUMN) == {s.value for s in SlurmState}
    assert set(reports.SLURM_STATE_COLUMN.values()) <= set(reports.STATE_COLUMNS)


@pytest.mark.parametrize(
    ("text", "job_uid", "column"),
    [
        ("PENDING", None, "Submitted"),
        ("PD", None, "Submitted"),
        ("REQUEUE_HOLD", None, "Submitted"),
        ("R", None, "Running"),
        ("COMPLETING", None, "Running"),
        ("COMPLETED", None, "Success"),
        ("FAILED", None, "Failed"),
        ("TIMEOUT+", None, "Terminated"),
        ("OUT_OF_MEMORY", None, "Terminated"),
        ("NODE_FAIL", None, "Terminated"),
        ("PREEMPTED", None, "Terminated"),
        ("CANCELLED by 1000", 1000, "Cancelled"),
        ("CANCELLED by 0", 1000, "Terminated"),
        ("CANCELLED by 0", None, "Cancelled"),
        ("CANCELLED", 1000, "Cancelled"),
        ("what?", None, "Failed"),
    ],
)
def test_slurm_state_column(text: str, job_uid: int | None, column: str) -> None:
    assert reports.slurm_state_column(text, job_uid=job_uid) == column


# --- attempts ----------------------------------------------------------------------------------------------


def test_attempts_table_counts_retries_and_those_that_paid_off() -> None:
    history = counts(
        ("t", "1", "p", "batch", "success", 10, 13),
        ("t", "1", "p", "batch", "terminated", 2, 6),
        ("t", "1", "q", "script", "success", 5, 5),
    )
    table = reports.attempts_table(history)
    assert list(table.columns) == [
        "Task",
        "Version",
        "Process",
        "Type",
        "Instances",
        "Attempts",
        "Retries",
        "Retries (now Success)",
    ]
    p, q, totals = (table.iloc[i] for i in range(3))
    assert (p["Instances"], p["Attempts"], p["Retries"], p["Retries (now Success)"]) == (12, 19, 7, 3)
    assert (q["Instances"], q["Attempts"], q["Retries"]) == (5, 5, 0)
    assert (totals["Type"], totals["Instances"], totals["Attempts"], totals["Retries"]) == (
        "Totals",
        17,
        24,
        7,
    )


def test_attempts_below_instances_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one attempt"):
        reports.attempts_table(counts(("t", "1", "p", "batch", "success", 3, 2)))


def test_counts_from_instances_counts_latest_attempts() -> None:
    instances = pd.DataFrame(
        {
            "task": ["t"] * 5,
            "version": ["1"] * 5,
            "process": ["p"] * 5,
            "process_type": ["batch"] * 5,
            "stream": ["s1", "s1", "s2", "s3", "s1"],
            "try_number": [1, 2, 1, 1, 3],
            "state": ["terminated", "failed", "success", "failed", "success"],
        }
    )
    result = reports.counts_from_instances(instances)
    assert result.to_dict("records") == [
        {
            "task": "t",
            "version": "1",
            "process": "p",
            "process_type": "batch",
            "state": "success",
            "count": 2,
            "attempts": 4,
        },
        {
            "task": "t",
            "version": "1",
            "process": "p",
            "process_type": "batch",
            "state": "failed",
            "count": 1,
            "attempts": 1,
        },
    ]
    table = reports.status_table(result)
    assert (table.iloc[0]["Success"], table.iloc[0]["Failed"], table.iloc[0]["Terminated"]) == (2, 1, 0)
    assert reports.counts_from_instances(instances.iloc[:0]).empty


# --- renderers ---------------------------------------------------------------------------------------------


def test_csv_round_trips(dc1: pd.DataFrame) -> None:
    table = reports.status_table(dc1_counts(dc1))
    text = reports.to_csv(table)
    assert text.splitlines()[0] == ",".join(reports.TABLE_COLUMNS)
    back = pd.read_csv(
        io.StringIO(text),
        dtype={c: str for c in ("Task", "Version", "Process", "Type", "Links")},
        keep_default_na=False,
    )
    counted = [*reports.STATE_COLUMNS, "Total"]
    assert back[counted].equals(table[counted])
    assert list(back["Version"].iloc[:2]) == ["1.16", "1.16"]
    assert back.iloc[-1]["Type"] == "Totals"


def test_json_is_records_with_integer_counts(dc1: pd.DataFrame) -> None:
    table = reports.status_table(dc1_counts(dc1))
    records = json.loads(reports.to_json(table))
    assert len(records) == len(dc1) + 1
    assert all(list(r) == list(reports.TABLE_COLUMNS) for r in records)
    assert records[0]["Process"] == "serialingest" and records[0]["Terminated"] == 1
    assert isinstance(records[-1]["Total"], int) and records[-1]["Total"] == 993838


def test_json_writes_missing_values_as_null() -> None:
    table = pd.DataFrame({"a": [1.5, float("nan")], "b": ["x", None]})
    assert json.loads(reports.to_json(table)) == [{"a": 1.5, "b": "x"}, {"a": None, "b": None}]


def test_text_aligns_numbers_right_and_text_left() -> None:
    table = reports.status_table(
        counts(
            ("t", "1", "long-process-name", "batch", "success", 123456, 123456),
            ("t", "1", "p", "script", "failed", 7, 7),
        )
    )
    lines = reports.format_text(table).splitlines()
    header = lines[0]
    end_success = header.index("Success") + len("Success")
    assert lines[2][:end_success].endswith("123456")
    assert lines[3][:end_success].endswith("0")
    assert lines[3][header.index("Process") :].startswith("p ")
    assert lines[3].startswith(" ")  # the task is not repeated


def test_plot_path_is_safe_and_unique() -> None:
    assert reports.plot_path("processEimage") == "plots/processEimage.png"
    odd = [reports.plot_path(name) for name in ("a<b", "a>b", "../../etc/passwd", ".hidden", "x y")]
    assert len(set(odd)) == len(odd)
    for path in odd:
        name = pathlib.PurePosixPath(path)
        assert name.parent == pathlib.PurePosixPath("plots") and name.suffix == ".png"
        assert not name.name.startswith(".") and "/" not in name.name[:-4] and ".." not in name.parts
