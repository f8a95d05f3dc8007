"""The renderer: specs -> DAGs (ids, tags, params, task groups, dependencies) and its run-time parts.

The run-time parts (streams, per-stream states, scripts, skips) run here against a fake task
instance that answers the Task SDK calls the operators make (task states, XCom).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_desc.emulate import scripts
from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.history import JsonLinesRecorder, ProcessRecord
from airflow_desc.operators.run_states import RunStates
from airflow_desc.operators.workflow import (
    WorkflowBatchOperator,
    WorkflowScriptOperator,
    WorkflowStreamsOperator,
)
from airflow_desc.workflow import parse_spec
from airflow_desc.workflow.overlays import RenderOptions, load_overlay
from airflow_desc.workflow.registry import load_workflow, workflow_for
from airflow_desc.workflow.render import load_workflow_dags, render_dags
from airflow_desc.workflow.scripts import script_feeds
from tests.specs import spec_text
from tests.unit.workflow.conftest import RenderMini
from tests.unit.workflow.mini_operators import FakeTI, context, patch_operator, skipped_setup_filters

ROOT = pathlib.Path(__file__).parents[3]
DC1 = ROOT / "dags" / "workflows" / "dc1.yaml"
DC1_LOCAL = ROOT / "dags" / "workflows" / "dc1-local.yaml"
TWINKLES = ROOT / "dags" / "workflows" / "twinkles.yaml"
SITE = ROOT / "tests" / "data" / "clusters" / "site.yaml"

MINI = spec_text("mini")


@pytest.fixture(scope="module")
def dc1_dags(clusters: Any) -> dict[str, Any]:
    return render_dags(DC1, clusters=clusters)


@pytest.fixture
def mini(render_mini: RenderMini) -> Any:
    return render_mini(MINI, "Mini")


@pytest.fixture
def site_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> pathlib.Path:
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(SITE))
    history = tmp_path / "history.jsonl"
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(history))
    return history


# --- DAGs ------------------------------------------------------------------------------------------


def test_one_dag_per_variant_with_version_and_variant_in_the_tags(dc1_dags: dict[str, Any]) -> None:
    assert sorted(dc1_dags) == [
        "DC1-DM12_imsim-dithered",
        "DC1-DM12_imsim-undithered",
        "DC1-DM12_phosim-dithered",
        "DC1-DM12_phosim-undithered",
    ]
    dag = dc1_dags["DC1-DM12_phosim-undithered"]
    assert {"desc", "DC1-DM12", "version:1.16", "variant:phosim-undithered"} <= set(dag.tags)
    # Every variable is a param (so a run's conf overrides it), with the variant's value.
    assert dag.params["scale"] == 1.0
    assert dag.params["sim"] == "phosim"
    assert dag.params["repo"] == "{{ root }}/repo"  # expanded per run, after overrides
    assert dag.schedule is None


def test_task_groups_mirror_the_task_hierarchy(dc1_dags: dict[str, Any]) -> None:
    dag = dc1_dags["DC1-DM12_imsim-dithered"]
    groups = set(dag.task_group_dict)
    assert {
        "level1",
        "level1.level1ProcessFilter",
        "level1.level1ProcessFilter.level1ProcessPatch",
        "level1.level1ProcessFilter.processimageDifferenceVisit",
        "level2.level2ProcessPatch",
        "level2.processForcedPhotometryVisit.processForcedPhotometryRaft.processForcedPhotometrySensor",
        "processVisit",
    } <= groups
    # A bundled sub-task is its streams and one mapped bundle task; what runs inside is not Airflow's.
    assert sorted(t for t in dag.task_dict if t.startswith("processVisit.")) == [
        "processVisit.bundle",
        "processVisit.streams",
    ]
    assert not any("processSensor" in g or "processRaft" in g for g in groups)
    top = [t for t in dag.task_dict if "." not in t]
    assert top == [
        *("serialingest", "ingestRefCat", "setupEimageVisits", "launchL1L2", "wrapup", "report"),
        "verdict",
    ]


def test_dependencies_wait_with_all_done_and_reach_across_groups(
    dc1_dags: dict[str, Any], clusters: Any
) -> None:
    dag = dc1_dags["DC1-DM12_imsim-dithered"]
    task = dag.task_dict
    assert task["ingestRefCat"].upstream_task_ids == {"serialingest"}
    assert str(task["ingestRefCat"].trigger_rule) in ("all_done", "TriggerRule.ALL_DONE")
    assert task["launchL1L2"].upstream_task_ids == {"processVisit.bundle"}
    assert task["processVisit.streams"].upstream_task_ids == {"setupEimageVisits"}
    assert task["level1.streams"].upstream_task_ids == {"launchL1L2"}
    assert task["level2.streams"].upstream_task_ids == {"launchL1L2"}
    # At full scale level1ProcessPatch runs in bundles; at the local site's scale it does not.
    assert "level1.level1ProcessFilter.level1ProcessPatch.bundle" in task
    task = render_dags(DC1_LOCAL, clusters=clusters)["DC1-DM12_imsim-dithered_local"].task_dict
    assemble = task["level1.level1ProcessFilter.level1ProcessPatch.level1AssembleCoadd"]
    assert (
        "level1.level1ProcessFilter.level1ProcessPatch.level1MakeTempExpCoadd" in assemble.upstream_task_ids
    )
    wrapup = task["level1.level1ProcessFilter.level1WrapupFiber"]
    assert {
        "level1.level1ProcessFilter.level1ProcessPatch.level1WrapupPatch",
        "level1.level1ProcessFilter.processimageDifferenceVisit.bundle",
    } <= wrapup.upstream_task_ids
    # Sub-task processes are mapped over their streams; top-level ones are plain tasks.
    assert type(task["level1.level1MakeDiscreteSkyMap"]).__name__ == "MappedOperator"
    assert isinstance(task["serialingest"], WorkflowBatchOperator)
    assert isinstance(task["launchL1L2"], WorkflowScriptOperator)
    assert task["launchL1L2"].desc_process.task == "DC1-DM12"


def test_a_batch_task_carries_its_process_and_resources(dc1_dags: dict[str, Any]) -> None:
    ingest = dc1_dags["DC1-DM12_imsim-dithered"].task_dict["serialingest"]
    assert (ingest.cluster, ingest.cpus, ingest.mem_mb, ingest.time_limit) == ("perlmutter", 16, 16000, 240)
    assert (ingest.workflow, ingest.workflow_task, ingest.workflow_version, ingest.process) == (
        "DC1-DM12", "DC1-DM12", "1.16", "serialingest",
    )  # fmt: skip
    assert ingest.retries == 2 and ingest.command == ""  # rendered per run, from the spec


def test_the_local_overlay_caps_requests_to_the_site(clusters: Any) -> None:
    dags = render_dags(DC1_LOCAL, clusters=clusters)
    assert list(dags) == ["DC1-DM12_imsim-dithered_local"]
    dag = dags["DC1-DM12_imsim-dithered_local"]
    assert "local" in dag.tags and "version:1.16" in dag.tags
    assert dag.params["scale"] == 0.001 and dag.params["filters"] == "r^i"
    ingest = dag.task_dict["serialingest"]
    assert (ingest.cpus, ingest.mem_mb, ingest.time_limit, ingest.retries) == (2, 4096, 30, 0)
    assert dag.default_args["retry_delay"] == timedelta(seconds=10)
    workflow = workflow_for(str(DC1_LOCAL.resolve()))
    graph = workflow.graph("imsim-dithered")
    assemble = graph.task("level1ProcessPatch").process("level1AssembleCoadd")
    assert assemble.resources is not None and assemble.resources.memory_mb == 8192  # s3df's node
    for process in graph.iter_processes():
        if process.resources is not None:
            profile = clusters.get(process.resources.cluster)
            profile.check_request(
                cpus=process.resources.cpus,
                mem_mb=process.resources.memory_mb,
                time_limit_s=process.resources.walltime_s,
            )
    # At scale 0.001 nothing but the `bundle: always` sub-tasks is bundled.
    bundled = [t.name for t in graph.iter_tasks() if t.bundling.state == "bundle"]
    assert bundled == ["processimageDifferenceVisit", "processVisit"]


def test_overlay_problems_are_reported_with_their_lines(tmp_path: pathlib.Path) -> None:
    (tmp_path / "spec.yaml").write_text(MINI)
    overlay = tmp_path / "site.yaml"
    overlay.write_text("extends: spec.yaml\nlauncher: mpirun\nretries: -1\nfrobnicate: 1\n")
    with pytest.raises(WorkflowSpecError) as err:
        load_overlay(overlay)
    text = str(err.value)
    assert f"{overlay}:2: launcher: expected one of srun, direct" in text
    assert f"{overlay}:3: retries:" in text
    assert f"{overlay}:4: frobnicate: unknown key" in text
    overlay.write_text("extends: nowhere.yaml\n")
    with pytest.raises(WorkflowSpecError, match="nowhere.yaml does not exist"):
        load_overlay(overlay)


def test_an_overlay_with_a_cap_and_options(tmp_path: pathlib.Path, clusters: Any) -> None:
    (tmp_path / "spec.yaml").write_text(MINI)
    overlay = tmp_path / "small.yaml"
    overlay.write_text(
        "extends: spec.yaml\ndag_id_suffix: _small\nvariables: {scale: 3.0}\nlauncher: direct\n"
        "resources_cap: {cpus: 1, memory_mb: 300, walltime: '0:05:00'}\n"
    )
    dags = render_dags(overlay, clusters=clusters)
    dag = dags["Mini_small"]
    assert dag.task_dict["ingest"].mem_mb == 300 and dag.task_dict["ingest"].time_limit == 5
    assert dag.params["scale"] == 3.0
    workflow = workflow_for(str(overlay.resolve()))
    assert workflow.options == RenderOptions(
        dag_id_suffix="_small",
        variables={"scale": 3.0},
        fit_resources=True,
        resources_cap=workflow.options.resources_cap,
        launcher="direct",
        digest=hashlib.sha256(overlay.read_bytes()).hexdigest(),
    )
    spec_sum = hashlib.sha256((tmp_path / "spec.yaml").read_bytes()).hexdigest()
    assert workflow.spec_digest == f"{spec_sum}+{workflow.options.digest}"
    assert f"digest `{workflow.spec_digest}`" in (dag.doc_md or "")


def test_a_process_may_not_take_the_name_of_the_renderers_tasks(clusters: Any) -> None:
    text = MINI.replace("      warp:\n", "      streams:\n").replace("[warp]", "[streams]")
    text = text.replace("warp != 'success'", "streams != 'success'")
    spec = parse_spec(text, "named.yaml")
    with pytest.raises(WorkflowSpecError, match="'streams' is the name of the task the renderer adds"):
        render_dags(spec, clusters=clusters)


def test_the_dag_files_are_one_liners_that_load_the_specs() -> None:
    for name in ("dc1.py", "twinkles.py"):
        code = [
            line for line in (ROOT / "dags" / name).read_text().splitlines() if line and line[0] not in '#"'
        ]
        assert code[-1].startswith("globals().update(load_workflow_dags(__file__, "), code


@pytest.mark.parametrize(
    ("dag_file", "specs", "wanted"),
    [
        ("dc1.py", ("workflows/dc1.yaml", "workflows/dc1-local.yaml"), "DC1-DM12_imsim-dithered_local"),
        ("dc1.py", ("workflows/dc1.yaml", "workflows/dc1-local.yaml"), "DC1-DM12_phosim-undithered"),
        ("twinkles.py", ("workflows/twinkles.yaml", "workflows/twinkles-local.yaml"), "Twinkles_weekly"),
    ],
)
def test_a_task_process_builds_only_the_dag_of_its_task_the_same_as_the_dag_processor(
    clusters: Any, dag_file: str, specs: tuple[str, ...], wanted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.definitions.context import (
        _AIRFLOW_PARSING_CONTEXT_DAG_ID,
        _AIRFLOW_PARSING_CONTEXT_TASK_ID,
    )
    from airflow.serialization.serialized_objects import DagSerialization

    path = str(ROOT / "dags" / dag_file)
    monkeypatch.delenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, raising=False)
    every = load_workflow_dags(path, *specs, clusters=clusters)
    assert wanted in every and len(every) > 1
    # What the task runner sets around its parse of the DAG file (its own context manager does not
    # unset them afterwards).
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_DAG_ID, wanted)
    monkeypatch.setenv(_AIRFLOW_PARSING_CONTEXT_TASK_ID, "verdict")
    only = load_workflow_dags(path, *specs, clusters=clusters)
    assert list(only) == [wanted]
    for spec in specs:  # every spec of the file is still registered for the operators
        assert workflow_for(str(ROOT / "dags" / spec)).spec.name
    assert DagSerialization.to_dict(only[wanted]) == DagSerialization.to_dict(every[wanted])


# --- streams, states ---------------------------------------------------------------------------------


def test_run_variables_take_the_conf_over_the_variant(mini: Any) -> None:
    workflow, _dag = mini
    variables = workflow.run_variables(None, context(FakeTI(), {"scale": 0.5, "repo": "r2", "other": 1}))
    assert variables["scale"] == 0.5 and variables["repo"] == "r2"
    with pytest.raises(WorkflowSpecError, match="scale: expected a number"):
        workflow.run_variables(None, context(FakeTI(), {"scale": "big"}))


# Mini with a dm_command beside each batch process's payload (``warp.py {{ patch }}`` beside
# ``command: warp {{ patch }}``), and the payload dm.
MINI_DM = re.sub(
    r"^( +)(command: (\w+) (.*)|emulate: \{cpu_seconds: 1\})\n",
    lambda m: f"{m[0]}{m[1]}dm_command: {m[3] or 'eimage'}.py {m[4] or '{{ visit }}'}\n",
    spec_text("mini").replace('version: "3.1"\n', 'version: "3.1"\npayload: dm\n', 1),
    flags=re.MULTILINE,
)


def test_the_payload_is_a_dag_param_that_a_run_conf_chooses(mini: Any, render_mini: RenderMini) -> None:
    workflow, dag = mini
    param = dag.params.get_param("desc_payload")
    assert param.value == "emulate" and param.schema["enum"] == ["emulate", "dm"]
    assert workflow.run_payload(None, context(FakeTI())) == "emulate"
    assert workflow.run_payload(None, context(FakeTI(), params={"desc_payload": "emulate"})) == "emulate"
    with pytest.raises(WorkflowSpecError) as lacking:
        workflow.run_payload(None, context(FakeTI(), {"desc_payload": "dm"}))
    assert str(lacking.value).endswith(
        "run conf: desc_payload='dm' runs each batch process's dm_command, and these have none: "
        "Mini/ingest, Mini/processVisit/eimage, Mini/processPatch/warp, Mini/processPatch/assemble, "
        "Mini/processPatch/processFilter/measure; add them to the spec, or run with desc_payload='emulate'"
    )
    refused = r"desc_payload='real' is not a payload; give one of emulate, dm, or leave it out for the spec's"
    with pytest.raises(WorkflowSpecError, match=refused):
        workflow.run_payload(None, context(FakeTI(), {"desc_payload": "real"}))
    dm_workflow, dm_dag = render_mini(MINI_DM, "Mini")
    assert dm_dag.params["desc_payload"] == "dm"
    assert dm_workflow.run_payload(None, context(FakeTI())) == "dm"
    assert dm_workflow.run_payload(None, context(FakeTI(), {"desc_payload": "emulate"})) == "emulate"


def test_a_dm_run_renders_each_dm_command_single_and_bundled(render_mini: RenderMini) -> None:
    from airflow_desc.workflow.bundle_planner import plan_bundle

    workflow, _dag = render_mini(MINI_DM, "Mini")
    warp = workflow.process(None, "Mini/processPatch/warp")
    variables = workflow.spec.variables_for(None)
    assert warp.render_command({"patch": "1,2"}, variables, dm=True) == "warp.py 1,2"
    task = workflow.task(None, "Mini/processVisit")
    plan = plan_bundle(workflow, task, [{"visit": 11}, {"visit": "x y"}], variables, dm=True)
    assert [i.command for i in plan.instances] == ["eimage.py 11", "eimage.py 'x y'"]
    plan = plan_bundle(workflow, task, [{"visit": 11}], variables)
    assert plan.instances[0].command.startswith('python3 "$DESC_PAYLOAD" ')


def test_the_streams_task_adds_each_value_to_its_parents_stream(mini: Any) -> None:
    workflow, dag = mini
    op = dag.task_dict["processPatch.processFilter.streams"]
    outputs = [
        {"stream": {"patch": "1,1"}, "map_index": 0, "feeds": {"processFilter": ["r", "i"]}},
        {"stream": {"patch": "1,2"}, "map_index": 1, "feeds": {"processFilter": ["r"]}},
        None,  # a setupFilters instance that failed: no streams from it
    ]
    ti = FakeTI(xcoms={("processPatch.setupFilters", "return_value"): outputs})
    assert op.execute(context(ti)) == [
        {"patch": "1,1", "filter": "r"},
        {"patch": "1,1", "filter": "i"},
        {"patch": "1,2", "filter": "r"},
    ]


def test_the_streams_task_of_a_bundled_sub_task_returns_bundles(mini: Any) -> None:
    _workflow, dag = mini
    op = dag.task_dict["processVisit.streams"]
    assert isinstance(op, WorkflowStreamsOperator)
    ti = FakeTI(
        xcoms={("setupVisits", "return_value"): [{"stream": {}, "feeds": {"processVisit": [11, 12, 13]}}]}
    )
    assert op.execute(context(ti)) == [[{"visit": 11}, {"visit": 12}], [{"visit": 13}]]
    assert type(dag.task_dict["processVisit.bundle"]).__name__ == "MappedOperator"
    assert dag.task_dict["processVisit.bundle"].partial_kwargs["take_over"] is False  # the spec's default


def test_bundling_take_over_reaches_the_bundle_operator(render_mini: RenderMini) -> None:
    text = MINI.replace('version: "3.1"\n', 'version: "3.1"\nbundling: {take_over: true}\n', 1)
    assert "take_over: true" in text
    _workflow, dag = render_mini(text, "Mini")
    assert dag.task_dict["processVisit.bundle"].partial_kwargs["take_over"] is True


def test_a_bundle_size_the_walltime_lowered_is_fitted_again_from_the_historys_run_times(
    render_mini: RenderMini, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    # eimage asks for 10 minutes: 6 visits fit 2 cores x 30 min (perlmutter), not the 40 of the target.
    text = MINI.replace('version: "3.1"\n', 'version: "3.1"\nbundling: {target_instances: 40}\n', 1)
    text = text.replace("    bundle_size: 2\n", "", 1).replace(
        "emulate: {cpu_seconds: 1}", "command: eimage {{ visit }}"
    )
    _workflow, dag = render_mini(text, "Mini")
    op = dag.task_dict["processVisit.streams"]
    visits = list(range(100, 113))
    ti = FakeTI(xcoms={("setupVisits", "return_value"): [{"stream": {}, "feeds": {"processVisit": visits}}]})
    history = tmp_path / "history.jsonl"
    monkeypatch.setenv("DESC_HISTORY_JSONL", str(history))

    # Nothing recorded yet: the walltime requests' size, 13 visits in bundles of 5, 4 and 4.
    assert [len(b) for b in op.execute(context(ti))] == [5, 4, 4]
    recorder = JsonLinesRecorder(history)

    def ran(workflow: str, *seconds: float) -> None:  # successful attempts, each of a run of its own
        recorder.record([
            ProcessRecord(workflow=workflow, process="eimage", state="success", run_id=f"{workflow}{n}{s}",
                          elapsed_s=s)
            for n, s in enumerate(seconds)
        ])  # fmt: skip

    ran("Mini", 8.0, 10.0, 30.0)  # the median, 10 s, twice over: 20 core-s a visit
    ran("Other", 900.0)
    # Now 180 visits' work fits: the target's 40, so all 13 in one bundle.
    assert [len(b) for b in op.execute(context(ti))] == [13]
    # Another workflow's records count only with run_times_from: any (a BPS label's).
    text = text.replace(
        "bundling: {target_instances: 40}", "bundling: {target_instances: 40, run_times_from: any}"
    )
    _workflow, dag = render_mini(text, "Mini")
    bundles = dag.task_dict["processVisit.streams"].execute(context(ti))
    assert [len(b) for b in bundles] == [13]  # the median of 8, 10, 30, 900 s: 20 s, 40 core-s: 90 fit
    ran("Other", 901.0, 902.0)
    bundles = dag.task_dict["processVisit.streams"].execute(context(ti))
    assert [len(b) for b in bundles] == [5, 4, 4]  # median 465 s: 3 visits fit; never below the 6


@pytest.mark.parametrize(
    ("output", "named"),
    [
        ({"stream": {"patch": ["1,1"]}, "map_index": 0, "feeds": {"processFilter": ["r"]}}, ": stream = "),
        ({"stream": {"patch": "1,1"}, "map_index": "0", "feeds": {"processFilter": ["r"]}}, ": map_index = "),
        ({"stream": {"patch": "1,1"}, "map_index": 0, "feeds": {"processFilter": "r"}}, ": feeds = "),
        ({"stream": {}, "map_index": 0, "feeds": {"processFilter": [{"$(id)": 1}]}}, ": feeds = "),
    ],
)
def test_the_streams_task_refuses_what_no_script_returned(mini: Any, output: Any, named: str) -> None:
    # The feeding script's XCom can be written through the REST API: checked, named, not retried.
    _workflow, dag = mini
    op = dag.task_dict["processPatch.processFilter.streams"]
    ti = FakeTI(xcoms={("processPatch.setupFilters", "return_value"): [output]})
    with pytest.raises(AirflowFailException, match=f"XCom of processPatch.setupFilters{named}"):
        op.execute(context(ti))


@pytest.mark.parametrize(
    ("task", "value"),
    [("processPatch", [[{"patch": ["1,1"]}]]), ("processVisit", [[[{"visit": 11}], {"visit": 12}]])],
)
def test_run_states_refuse_streams_no_streams_task_returned(mini: Any, task: str, value: Any) -> None:
    workflow, _dag = mini
    graph = workflow.graph(None)
    ti = FakeTI(xcoms={(f"{task}.streams", "return_value"): value})
    with pytest.raises(AirflowFailException, match=rf"XCom of {task}.streams(\[\d\])*\[\d\] = "):
        RunStates(context(ti), graph).streams(graph.task(task))


def test_per_stream_states_read_the_streams_own_instances(mini: Any) -> None:
    workflow, dag = mini
    graph = workflow.graph(None)
    patch = graph.task("processPatch")
    streams = [{"patch": "1,1"}, {"patch": "1,2"}]
    filters = [
        {"patch": "1,1", "filter": "r"},
        {"patch": "1,1", "filter": "i"},
        {"patch": "1,2", "filter": "r"},
    ]
    ti = FakeTI(
        states={
            "setupPatches": "success",
            "processPatch.streams": "success",
            "processPatch.warp_0": "success",
            "processPatch.warp_1": "failed",
            "processPatch.setupFilters_0": "success",
            "processPatch.setupFilters_1": "skipped",
            "processPatch.processFilter.streams": "success",
            "processPatch.processFilter.measure_0": "success",
            "processPatch.processFilter.measure_1": "failed",
            "processPatch.processFilter.measure_2": "success",
        },
        xcoms={
            ("processPatch.streams", "return_value"): [streams],
            ("processPatch.processFilter.streams", "return_value"): [filters],
        },
    )
    runs = RunStates(context(ti), graph)
    assert runs.upstream(patch, ["warp"], streams[0], 0) == {"warp": "success"}
    assert runs.upstream(patch, ["warp"], streams[1], 1) == {"warp": "failed"}
    # A sub-task's state for one stream: its instances below that stream only.
    assert runs.upstream(patch, ["processFilter"], streams[0], 0) == {"processFilter": "failed"}
    assert runs.upstream(patch, ["processFilter"], streams[1], 1) == {"processFilter": "skipped"}
    # At the top level, over all streams.
    assert runs.upstream(graph.root, ["processPatch"], {}, -1) == {"processPatch": "failed"}


def test_a_bundled_sub_task_is_judged_from_its_bundle_summaries(mini: Any) -> None:
    workflow, _dag = mini
    graph = workflow.graph(None)
    ti = FakeTI(
        states={"setupVisits": "success", "processVisit.streams": "success"},
        xcoms={
            ("processVisit.streams", "return_value"): [[[{"visit": 11}, {"visit": 12}], [{"visit": 13}]]],
            ("processVisit.bundle", "bundle_summary"): [
                {"streams": {"visit=11": "success", "visit=12": "success"}}
            ],
        },
    )
    runs = RunStates(context(ti), graph)
    assert runs.subtask(graph.task("processVisit"), {"visit": 11}) == "success"
    # visit=13's bundle never reported: it did not succeed.
    assert runs.subtask(graph.task("processVisit"), {}) == "failed"


# --- operators ---------------------------------------------------------------------------------------


def test_a_script_gets_its_kwargs_and_expected_streams_and_returns_the_streams(
    mini: Any, site_env: Any
) -> None:
    workflow, dag = mini
    op = dag.task_dict["setupVisits"]
    ti = FakeTI(task_id="setupVisits", states={"ingest": "success"})
    out = op.execute(context(ti))
    assert out == {"stream": {}, "map_index": -1, "feeds": {"processVisit": [11, 12, 13]}}
    assert op.desc_process.process == "setupVisits"


def test_a_mapped_script_is_skipped_when_its_streams_upstream_failed(mini: Any, site_env: Any) -> None:
    workflow, _dag = mini
    marked = skipped_setup_filters(workflow, None).desc_process
    assert (marked.stream, marked.task, marked.version) == ("patch=1,2", "processPatch", "3.1")


def test_a_skipped_batch_instance_is_recorded(mini: Any, site_env: pathlib.Path) -> None:
    workflow, _dag = mini
    op = patch_operator(WorkflowBatchOperator, workflow, "assemble", cluster="perlmutter")
    ti = FakeTI(task_id="processPatch.assemble", map_index=1, states={"processPatch.warp_1": "failed"})
    with pytest.raises(AirflowSkipException, match="skip_if holds"):
        op.execute(context(ti))
    [rec] = JsonLinesRecorder(site_env).read()
    assert (rec.process, rec.task, rec.version, rec.state, rec.stream, rec.map_index) == (
        "assemble", "processPatch", "3.1", "skipped", "patch=1,2", 1,
    )  # fmt: skip
    assert rec.reason == "skip-condition" and rec.process_type == "batch" and rec.cluster == "perlmutter"


def test_a_batch_instance_runs_its_streams_command(
    mini: Any, site_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow, _dag = mini
    op = patch_operator(WorkflowBatchOperator, workflow, "warp", cluster="perlmutter")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        "airflow_desc.operators.slurm.SlurmOperator.execute", lambda self, ctx: seen.update(cmd=self.command)
    )
    ctx = context(FakeTI(map_index=1))
    op.execute(ctx)
    assert seen["cmd"] == "warp 1,2"
    assert op.stream == "patch=1,2" and ctx["desc_stream"] == "patch=1,2"
    assert op.in_work_dir  # spec paths are relative to work_dir: its job script starts there


def test_script_results_are_checked() -> None:
    spec = parse_spec(MINI, "mini.yaml")
    from airflow_desc.workflow import build_graph

    process = build_graph(spec).root.process("setupVisits")
    assert script_feeds(process, [1, 2]) == {"processVisit": [1, 2]}
    assert script_feeds(process, {"processVisit": ["a"]}) == {"processVisit": ["a"]}
    import dataclasses

    two = dataclasses.replace(process, feeds=("a", "b"))
    with pytest.raises(WorkflowSpecError, match="returned no streams for a, b"):
        script_feeds(two, {})
    with pytest.raises(
        WorkflowSpecError, match=r"returned list; .* \(a mapping by sub-task, as it feeds several\)"
    ):
        script_feeds(two, [1])
    with pytest.raises(WorkflowSpecError, match="must be a list of text or numbers"):
        script_feeds(process, [{"nested": 1}])
    with pytest.raises(WorkflowSpecError, match="returned int"):
        script_feeds(process, 3)


# --- year by year -------------------------------------------------------------------------------------


def test_twinkles_runs_year_by_year(clusters: Any) -> None:
    if not TWINKLES.exists():
        pytest.skip("no twinkles.yaml")
    from airflow_desc.timetables import SurveyYearTimetable

    dags = render_dags(TWINKLES, clusters=clusters)
    dag = dags["Twinkles_all-at-once"]
    assert isinstance(dag.timetable, SurveyYearTimetable) and dag.catchup
    workflow = load_workflow(TWINKLES, clusters=clusters)
    start = datetime(2025, 3, 1, tzinfo=timezone.utc)  # in survey year 3 (from 2022-10-01)
    variables = workflow.run_variables("all-at-once", context(FakeTI(), data_interval_start=start))
    assert variables["year"] == 3 and variables["rerun"] == "year3"
    with pytest.raises(WorkflowSpecError, match="survey year 3"):
        workflow.run_variables("all-at-once", context(FakeTI(), {"year": 5}, data_interval_start=start))


def test_the_local_twinkles_runs_survey_years_1_to_3_and_no_more(clusters: Any) -> None:
    from airflow.timetables.base import TimeRestriction

    from airflow_desc.timetables import SurveyYearTimetable

    overlay = TWINKLES.with_name("twinkles-local.yaml")
    dag = render_dags(overlay, clusters=clusters)["Twinkles_all-at-once_local"]
    timetable = dag.timetable
    assert isinstance(timetable, SurveyYearTimetable) and dag.catchup
    assert timetable.summary == "Survey years 1–3 from 2022-10-01, all at once"
    # What the scheduler asks with catchup, run after run: years 1, 2, 3, then nothing.
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)
    last, starts = None, []
    while info := timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction):
        last = info.data_interval
        starts.append(last.start.date().isoformat())
        assert len(starts) <= 3, starts
    assert starts == ["2022-10-01", "2023-10-01", "2024-10-01"]


# --- the emulated scripts -------------------------------------------------------------------------


def test_make_streams_is_deterministic_and_follows_the_expectation() -> None:
    one = scripts.make_streams("raft", {"processRaft": 2.343}, visit=2201)
    assert one == scripts.make_streams("raft", {"processRaft": 2.343}, visit=2201)
    assert len(one) in (2, 3) and all(r in scripts.RAFTS for r in one)
    counts = [len(scripts.make_streams("sensor", 1.774, visit=v, raft="R22")) for v in range(400)]
    assert abs(sum(counts) / len(counts) - 1.774) < 0.1
    assert scripts.make_streams("visit", 2.0, visits="5^6^7") == [5, 6]
    assert scripts.make_streams("filter", None, filters="u^g^r") == ["u", "g", "r"]
    assert len(scripts.make_streams("visit", {"processVisit": 5114.5 * 0.001})) in (5, 6)
    assert scripts.make_streams("patch", 0.1046) and scripts.stream_count(0.0) == 0
    with pytest.raises(ValueError, match="unknown stream kind"):
        scripts.make_streams("ccd", 1)


def test_launch_wrapup_and_report() -> None:
    assert scripts.launch(True, False) == {"level1": ["level1"], "level2": []}
    assert scripts.launch("true", "false") == {"level1": ["level1"], "level2": []}
    assert scripts.wrapup(visit=1) is None
    assert json.loads(json.dumps(scripts.report(filter="r")))["reported"] is True


def test_one_dag_file_may_render_several_inline_specs(clusters: Any) -> None:
    def spec(name: str, process: str) -> str:
        return f"""
name: {name}
version: "1.0"
processes:
  {process}:
    type: script
    callable: airflow_desc.emulate.scripts:report
"""

    first = render_dags(parse_spec(spec("inline_a", "alpha"), source="/dags/two.py"), clusters=clusters)
    second = render_dags(parse_spec(spec("inline_b", "beta"), source="/dags/two.py"), clusters=clusters)
    for dags, process in ((first, "alpha"), (second, "beta")):
        [dag] = dags.values()
        task = dag.get_task(process)
        assert workflow_for(task.workflow_key).process(None, f"{dag.dag_id}/{process}").name == process


def test_batch_and_bundle_tasks_run_in_their_clusters_pool(
    tmp_path: pathlib.Path, clusters: Any, render_mini: RenderMini
) -> None:
    _workflow, dag = render_mini(MINI, "Mini")
    slurm_tasks = {
        *("ingest", "processVisit.bundle", "processPatch.warp", "processPatch.assemble"),
        "processPatch.processFilter.measure",
    }
    for task in dag.tasks:
        expected = "slurm_perlmutter" if task.task_id in slurm_tasks else "default_pool"
        assert (task.task_id, task.pool) == (task.task_id, expected)
        assert task.max_active_tis_per_dag is None
    # A profile may bound each task's queued allocations across the DAG's runs.
    text = SITE.read_text().replace(
        "    partition: regular\n", "    partition: regular\n    max_queued_per_task: 3\n"
    )
    bounded = tmp_path / "bounded.yaml"
    bounded.write_text(text)
    spec = tmp_path / "mini.yaml"
    spec.write_text(MINI)
    from airflow_desc.clusters import load_cluster_profiles

    profiles = load_cluster_profiles(bounded)
    assert profiles.get("perlmutter").max_queued_per_task == 3
    dag = render_dags(spec, clusters=profiles)["Mini"]
    assert {t.task_id for t in dag.tasks if t.max_active_tis_per_dag == 3} == slurm_tasks


def test_fallback_clusters_reach_batch_tasks_and_bundles(render_mini: RenderMini) -> None:
    text = MINI.replace(
        "resources: {cluster: perlmutter,", "resources: {cluster: perlmutter, fallback_clusters: [s3df],"
    )
    assert text != MINI
    _, dag = render_mini(text, "Mini")
    ingest = dag.task_dict["ingest"]
    assert (ingest.cluster, ingest.fallback_clusters) == ("perlmutter", ("s3df",))
    bundles = [t for t in dag.task_dict.values() if "fallback_clusters" in getattr(t, "partial_kwargs", {})]
    assert bundles and {b.partial_kwargs["fallback_clusters"] for b in bundles} == {("s3df",)}
