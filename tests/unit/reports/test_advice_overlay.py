"""The advice as a render overlay: what is written is what the renderer reads back."""

from __future__ import annotations

import pathlib

import pandas as pd
import yaml

from airflow_desc.reports.advice import advice_overlay, resource_advice
from airflow_desc.workflow.overlays import load_overlay
from tests.unit.reports.test_advice import MIB, instances, oom_majority, steady


def table() -> pd.DataFrame:
    return resource_advice(
        pd.concat(
            [
                steady(),
                oom_majority(),
                instances("setup", 3, task="taskA", max_rss_bytes=300 * MIB, elapsed_s=90.0),
                instances("setup", 3, task="taskB", max_rss_bytes=600 * MIB, elapsed_s=200.0),
                instances('odd: "name" #1', 2, max_rss_bytes=50 * MIB),
                instances("neverWorked", 4, state="failed", reason="python-exception"),
            ],
            ignore_index=True,
        )
    )


def test_the_overlay_round_trips_every_suggestion(tmp_path: pathlib.Path) -> None:
    (tmp_path / "spec.yaml").write_text("name: x\n")
    advice = table()
    path = tmp_path / "advice.yaml"
    path.write_text(advice_overlay(advice, "spec.yaml", header=["Written by a test.", "Second line."]))
    spec, options = load_overlay(path)
    assert spec == tmp_path / "spec.yaml"
    text = path.read_text()
    assert text.startswith('# Written by a test.\n# Second line.\nextends: "spec.yaml"\n')
    # Two tasks with a process "setup": each is named task/process; the others by their name.
    assert set(options.resources) == {
        "level2MakeTempCoaddExp", "level2AssembleCoadd", "taskA/setup", "taskB/setup", 'odd: "name" #1',
    }  # fmt: skip
    for row in advice.to_dict("records"):
        name = row["Process"] if row["Process"] != "setup" else f"{row['Task']}/setup"
        if name == "neverWorked":
            continue
        asked = options.resources[name]
        assert asked.memory_mb == row["Mem suggested MB"]
        assert asked.walltime_s == row["Walltime suggested min"] * 60
    # The evidence is data, the advice a comment; a process with nothing to learn from is named.
    evidence = yaml.safe_load(text)["resources"]["level2AssembleCoadd"]["evidence"]
    assert evidence["instances"] == 100 and evidence["out_of_memory"] == 90
    assert evidence["memory_is_lower_bound"] is True and evidence["task"] == "level2ProcessFilter"
    assert "ran out of memory: raise memory to at least" in text
    assert "# neverWorked: nothing to learn from yet" in text


def test_no_suggestion_at_all_is_still_an_overlay(tmp_path: pathlib.Path) -> None:
    (tmp_path / "spec.yaml").write_text("name: x\n")
    path = tmp_path / "advice.yaml"
    path.write_text(advice_overlay(resource_advice(instances("p", 2, state="failed")), "spec.yaml"))
    assert load_overlay(path)[1].resources == {}
