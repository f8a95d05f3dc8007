"""Thresholds on sub-task dependencies (``depends_on: {x: {min_success: 0.95}}``) and the run's verdict.

The spec's form and its errors, the graph, the per-stream decision a running task makes against a
fake task instance (tests/unit/workflow/mini_operators.py), and :func:`judge_run` on records.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.history import ProcessRecord, latest_attempts_of
from airflow_desc.operators.verdict import WorkflowVerdictOperator
from airflow_desc.operators.workflow import WorkflowScriptOperator
from airflow_desc.workflow import build_graph, parse_spec
from airflow_desc.workflow.render import render_dags
from airflow_desc.workflow.thresholds import MinSuccess, StreamCounts
from airflow_desc.workflow.verdict import judge_run
from tests.specs import spec_text
from tests.unit.workflow.conftest import RenderMini
from tests.unit.workflow.mini_operators import FakeTI, context

MINI = spec_text("mini")
# Mini's wrapup runs when half of the patches succeeded.
HALF = MINI.replace(
    "  wrapup:\n    type: script\n    depends_on: [processPatch]",
    "  wrapup:\n    type: script\n    depends_on: {processPatch: {min_success: 0.5}}",
)


def test_min_success_is_a_fraction_or_a_count() -> None:
    assert MinSuccess.parse(0.95) == MinSuccess(fraction=0.95)
    assert MinSuccess.parse(150) == MinSuccess(count=150)
    for bad in (0, 0.0, 1.5, -1, True, "95%", None, float("nan")):
        with pytest.raises(ValueError, match=r"expected a fraction in \(0, 1\] or a whole number"):
            MinSuccess.parse(bad)


@pytest.mark.parametrize(
    ("threshold", "counts", "met"),
    [
        (MinSuccess(fraction=0.95), StreamCounts(19, 1), True),  # 19 of 20 is 0.95 exactly
        (MinSuccess(fraction=0.95), StreamCounts(18, 2), False),
        (MinSuccess(fraction=0.75), StreamCounts(3, 1), True),
        (MinSuccess(fraction=1.0), StreamCounts(3, 1), False),
        (MinSuccess(fraction=1.0), StreamCounts(4, 0, 2), True),  # skipped streams are not counted
        (MinSuccess(count=150), StreamCounts(150, 50), True),
        (MinSuccess(count=150), StreamCounts(100, 0), True),  # all of fewer streams
        (MinSuccess(count=150), StreamCounts(149, 1), False),
        (MinSuccess(fraction=0.5), StreamCounts(0, 0), True),  # nothing ran: as an empty sub-task
    ],
)
def test_a_threshold_is_met_in_whole_streams(threshold: MinSuccess, counts: StreamCounts, met: bool) -> None:
    assert threshold.met(counts) is met


def test_the_mapping_form_gives_the_graph_its_thresholds() -> None:
    graph = build_graph(parse_spec(HALF, "half.yaml"))
    wrapup = graph.root.process("wrapup")
    assert wrapup.depends_on == ("processPatch",)
    assert wrapup.min_success == {"processPatch": MinSuccess(fraction=0.5)}
    # A plain list keeps its meaning: all must succeed.
    assert graph.task("processPatch").process("setupFilters").min_success == {}


BAD = textwrap.dedent(
    """\
    name: T
    version: "1"
    processes:
      make:
        type: script
        callable: airflow_desc.emulate.scripts:make_streams
      a:
        type: script
        callable: airflow_desc.emulate.scripts:wrapup
        depends_on: {sub: {min_success: 1.5}, make: {min_success: 0.5}}
      b:
        type: script
        callable: airflow_desc.emulate.scripts:wrapup
        depends_on:
          sub: {min_succes: 0.5}
      c:
        type: script
        callable: airflow_desc.emulate.scripts:wrapup
        after: {sub: {min_success: 0.5}}
    tasks:
      sub:
        streams_from: make
        processes:
          p: {type: script, callable: airflow_desc.emulate.scripts:wrapup}
    """
)


def test_threshold_errors_name_the_file_line_and_field() -> None:
    with pytest.raises(WorkflowSpecError) as raised:
        parse_spec(BAD, "bad.yaml")
    assert str(raised.value).splitlines() == [
        "bad.yaml:10: processes.a.depends_on.sub.min_success: expected a fraction in (0, 1] or a whole "
        "number of streams (at least 1), got 1.5; write e.g. 0.95 or 150",
        "bad.yaml:10: processes.a.depends_on.make.min_success: 'make' is not a sub-task of this task: "
        "min_success counts a sub-task's streams; remove it (a process must succeed)",
        "bad.yaml:15: processes.b.depends_on.sub: expected nothing or {min_success: <fraction or count>}, "
        "got a mapping; write e.g. sub: {min_success: 0.95}",
        "bad.yaml:19: processes.c.after: expected a list of names; thresholds belong under depends_on",
    ]


def test_a_threshold_inside_a_bundle_is_refused() -> None:
    # A bundled sub-task whose process depends on a nested sub-task with a threshold.
    text = textwrap.dedent(
        """\
        name: B
        version: "1"
        defaults:
          resources: {cluster: perlmutter}
        processes:
          visits:
            type: script
            callable: airflow_desc.emulate.scripts:make_streams
        tasks:
          visit:
            streams_from: visits
            stream_var: visit
            bundle: always
            processes:
              rafts:
                type: script
                callable: airflow_desc.emulate.scripts:make_streams
              wrap:
                type: script
                callable: airflow_desc.emulate.scripts:wrapup
                depends_on: {raft: {min_success: 0.5}}
            tasks:
              raft:
                streams_from: rafts
                stream_var: raft
                processes:
                  eimage: {type: batch, command: eimage}
        """
    )
    with pytest.raises(
        WorkflowSpecError,
        match=r"^b.yaml: B/visit/wrap: depends_on raft: min_success is not supported inside",
    ):
        build_graph(parse_spec(text, "b.yaml"))


# --- at run time -----------------------------------------------------------------------------------

PATCHES = [{"patch": "1,1"}, {"patch": "1,2"}]


def _patch_states(warp_1: str) -> FakeTI:
    """processPatch of two patches: patch 1,1 all good; patch 1,2's warp ended ``warp_1``."""
    states = {"setupPatches": "success", "processPatch.streams": "success"}
    for index, warp in enumerate(("success", warp_1)):
        states |= {
            f"processPatch.warp_{index}": warp,
            f"processPatch.assemble_{index}": "success" if warp == "success" else "skipped",
            f"processPatch.setupFilters_{index}": "success" if warp == "success" else "skipped",
            f"processPatch.wrapupPatch_{index}": "success" if warp == "success" else "skipped",
        }
    states["processPatch.processFilter.streams"] = "success"
    return FakeTI(
        task_id="wrapup",
        states=states,
        xcoms={
            ("processPatch.streams", "return_value"): [PATCHES],
            ("processPatch.processFilter.streams", "return_value"): [[]],
        },
    )


def _wrapup(workflow: Any) -> WorkflowScriptOperator:
    return WorkflowScriptOperator(
        task_id="wrapup", workflow_key=workflow.key, variant=None, process_path="Mini/wrapup"
    )


def test_at_the_threshold_the_dependent_runs(
    render_mini: RenderMini, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow, _dag = render_mini(HALF, "Mini")
    try:
        result = _wrapup(workflow).execute(context(_patch_states("failed")))  # 1 of 2 patches: 0.5
    except AirflowSkipException as exc:
        pytest.fail(f"skipped at its threshold (1 of 2 streams succeeded, min_success 0.5): {exc}")
    assert result is None  # the script process ran: it returns nothing


def test_below_the_threshold_the_dependent_is_skipped_with_the_counts(render_mini: RenderMini) -> None:
    workflow, _dag = render_mini(HALF.replace("min_success: 0.5", "min_success: 0.75"), "Mini")
    op = _wrapup(workflow)
    with pytest.raises(AirflowSkipException) as raised:
        op.execute(context(_patch_states("failed")))
    assert str(raised.value) == ("upstream processPatch below its min_success 0.75: 1 of 2 streams succeeded")
    # Without a threshold, one failed patch is enough to skip it.
    workflow, _dag = render_mini(MINI, "Mini")
    with pytest.raises(AirflowSkipException, match="^upstream processPatch failed$"):
        _wrapup(workflow).execute(context(_patch_states("failed")))


# --- the verdict ------------------------------------------------------------------------------------


def _record(process: str, state: str, stream: str = "", try_number: int = 1, **fields: Any) -> ProcessRecord:
    task = fields.pop("task", "Mini")
    fields = {"dag_id": "Mini", "run_id": "r1", "task_id": process, **fields}
    return ProcessRecord(
        workflow="Mini",
        process=process,
        state=state,
        task=task,
        stream=stream,
        try_number=try_number,
        **fields,
    )


def test_the_verdict_fails_on_a_failure_and_lists_it(render_mini: RenderMini) -> None:
    workflow, _dag = render_mini(MINI, "Mini")
    graph = workflow.graph(None)
    records = [
        _record("ingest", "success"),
        _record("warp", "failed", "patch=1,2", task="processPatch", reason="payload", message="exit 3"),
        _record("wrapup", "skipped", reason="upstream-failed"),
    ]
    verdict = judge_run(graph, records)
    assert verdict.failed
    assert verdict.summary().splitlines() == [
        "run FAILED: 3 process instances (failed 1, skipped 1, success 1)",
        "1 failed (first 1):",
        "  processPatch/warp [patch=1,2]: failed, payload: exit 3",
    ]


def test_skips_alone_do_not_fail_a_run_and_the_latest_attempt_counts(render_mini: RenderMini) -> None:
    workflow, _dag = render_mini(MINI, "Mini")
    graph = workflow.graph(None)
    records = latest_attempts_of(
        [
            _record("ingest", "terminated", reason="timeout"),
            _record("ingest", "success", try_number=2),
            _record("wrapup", "skipped", reason="skip-condition"),
        ]
    )
    verdict = judge_run(graph, records)
    assert not verdict.failed
    assert verdict.summary() == "run SUCCESS: 2 process instances (skipped 1, success 1)"


def test_failures_within_a_met_threshold_are_tolerated_and_listed(render_mini: RenderMini) -> None:
    workflow, _dag = render_mini(HALF, "Mini")
    graph = workflow.graph(None)
    records = [
        _record("warp", "success", "patch=1,1", task="processPatch"),
        _record("measure", "success", "patch=1,1/filter=r", task="processFilter"),
        _record("warp", "failed", "patch=1,2", task="processPatch", reason="payload"),
        _record("wrapup", "success"),
    ]
    verdict = judge_run(graph, records)
    assert not verdict.failed
    assert verdict.summary().splitlines()[1:] == [
        "1 tolerated, within a met min_success (first 1):",
        "  processPatch/warp [patch=1,2]: failed, payload (processPatch: 1 of 2 streams succeeded, "
        "min_success 0.5 met)",
    ]
    # Below it, the same failure fails the run.
    records[1] = _record("measure", "failed", "patch=1,1/filter=r", task="processFilter")
    assert judge_run(graph, records).failed


def test_a_task_that_failed_without_a_record_fails_the_run(render_mini: RenderMini) -> None:
    workflow, _dag = render_mini(MINI, "Mini")
    verdict = judge_run(workflow.graph(None), [_record("ingest", "success")], ["processPatch.streams"])
    assert verdict.failed
    assert "  processPatch.streams" in verdict.summary().splitlines()


def test_the_verdict_task_closes_every_dag(render_mini: RenderMini) -> None:
    _workflow, dag = render_mini(MINI, "Mini")
    verdict = dag.task_dict["verdict"]
    assert verdict.trigger_rule == "all_done"
    assert not verdict.downstream_list
    leaves = {t.task_id for t in dag.tasks if not t.downstream_list} - {"verdict"}
    assert leaves == set()  # every other task leads to it
    assert {"wrapup", "processVisit.bundle"} <= set(verdict.upstream_task_ids)


def test_no_top_level_process_may_be_named_verdict(clusters: Any) -> None:
    text = MINI.replace("  wrapup:\n", "  verdict:\n")
    with pytest.raises(WorkflowSpecError, match="'verdict' is the name of the run's last task"):
        render_dags(parse_spec(text, "v.yaml"), clusters=clusters)


def test_the_verdict_operator_fails_the_run_with_the_summary(
    render_mini: RenderMini, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from airflow_desc.history import JsonLinesRecorder

    workflow, _dag = render_mini(MINI, "Mini")
    history = tmp_path / "h.jsonl"
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(history))
    warp = {"task": "processPatch", "task_id": "processPatch.warp", "map_index": 0}
    JsonLinesRecorder(history).record(
        [
            _record("ingest", "failed", reason="payload"),
            _record("ingest", "success", try_number=2),
            _record("warp", "failed", "patch=1,1", **warp),
            _record("warp", "failed", "patch=1,1", run_id="other", **warp),  # another run's
        ]
    )
    op = WorkflowVerdictOperator(workflow_key=workflow.key, variant=None)
    ti = FakeTI(task_id="verdict", states={"processPatch.warp_0": "failed", "ingest": "success"})
    ti.dag_id = "Mini"
    with pytest.raises(AirflowFailException, match=r"(?s)run FAILED: 2 process instances.*processPatch/warp"):
        op.execute(context(ti))
    # Cleared and fixed: the rerun's attempt is the latest.
    JsonLinesRecorder(history).record([_record("warp", "success", "patch=1,1", try_number=2, **warp)])
    ti.states["processPatch.warp_0"] = "success"
    assert op.execute(context(ti)) == {"counts": {"success": 2}, "tolerated": 0}
