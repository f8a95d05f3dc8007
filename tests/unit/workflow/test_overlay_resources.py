"""Render overlays that extend overlays, and set each process's memory and walltime (advice applied)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow.overlays import ProcessResources, load_overlay
from airflow_desc.workflow.render import load_workflow_dags, render_dags
from tests.specs import spec_text

MINI = spec_text("mini")
SITE = "extends: spec.yaml\ndag_id_suffix: _small\nvariables: {scale: 3.0}\nresources_cap: {memory_mb: 700}\n"


@pytest.fixture
def chain(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "spec.yaml").write_text(MINI)
    (tmp_path / "site.yaml").write_text(SITE)
    advice = tmp_path / "advice.yaml"
    advice.write_text(
        "# what airflow-desc advice --write writes\n"
        "extends: site.yaml\n"
        "variables: {repo: other}\n"
        "resources:\n"
        "  ingest:\n"
        "    memory_mb: 300\n"
        '    walltime: "0:03:00"\n'
        "    evidence: {task: Mini, instances: 40, out_of_memory: 2, timed_out: 0}\n"
        "  processPatch/warp: {memory_mb: 900}\n"
    )
    return advice


def test_an_overlay_over_an_overlay_sets_each_process_s_requests(chain: pathlib.Path, clusters: Any) -> None:
    spec, options = load_overlay(chain)
    assert spec == chain.parent / "spec.yaml"
    assert options.dag_id_suffix == "_small"  # the site overlay's, kept
    assert dict(options.variables) == {"scale": 3.0, "repo": "other"}  # merged by name
    assert options.resources["ingest"] == ProcessResources(300, 180, where=f"{chain}:5")
    dags = load_workflow_dags(str(chain.parent / "dag.py"), chain.name, clusters=clusters)
    dag = dags["Mini_small"]
    ingest = dag.task_dict["ingest"]
    assert (ingest.mem_mb, ingest.time_limit) == (300, 3)
    warp = dag.task_dict["processPatch.warp"]
    # Advice goes in before the site's caps: 900 MB asked, the site allows 700; the walltime is the spec's.
    assert (warp.partial_kwargs["mem_mb"], warp.partial_kwargs["time_limit"]) == (700, 10)
    assert dag.task_dict["processPatch.assemble"].partial_kwargs["mem_mb"] == 500  # not named: the spec's


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ("  nosuch: {memory_mb: 100}\n", ":5: resources: nosuch: the spec has no such process; name one of"),
        (
            "  wrapup: {memory_mb: 100}\n",
            ":5: resources: wrapup: a script process runs on the Airflow worker",
        ),
        ("  ingest: {memory_mb: 1.5}\n", ":5: resources.ingest.memory_mb: expected a positive whole number"),
        ("  ingest: {walltime: soon}\n", ":5: resources.ingest.walltime: "),
        (
            "  ingest: {cpus: 4}\n",
            ":5: resources.ingest.cpus: unknown key; use memory_mb, walltime, evidence",
        ),
        ("  ingest: 300\n", ":5: resources.ingest: expected a mapping {memory_mb: MB, walltime: H:MM:SS}"),
    ],
)
def test_a_bad_entry_names_the_file_line_and_field(
    tmp_path: pathlib.Path, clusters: Any, resources: str, expected: str
) -> None:
    (tmp_path / "spec.yaml").write_text(MINI)
    overlay = tmp_path / "advice.yaml"
    overlay.write_text("extends: spec.yaml\ndag_id_suffix: _x\n# the advice\nresources:\n" + resources)
    with pytest.raises(WorkflowSpecError) as err:
        render_dags(overlay, clusters=clusters)
    assert f"{overlay}{expected}" in str(err.value)


def test_an_overlay_chain_must_end_at_a_spec(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(
        WorkflowSpecError, match="extends this overlay again: an overlay chain must end at a spec"
    ):
        load_overlay(tmp_path / "a.yaml")
