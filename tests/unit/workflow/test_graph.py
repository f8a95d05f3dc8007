from __future__ import annotations

import copy
import pathlib
import subprocess

import pytest
import yaml

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow import (
    MAX_MAP_LENGTH,
    WorkflowGraph,
    build_graph,
    dag_id_for,
    estimate_task_instances,
    parse_spec,
)
from airflow_desc.workflow.outcomes import Skip

# A three-level pyramid (visit > raft > sensor) beside a patch level, with defaults at two levels.
PYRAMID = """\
name: Mini
version: "2.1"
variables:
  scale: 1.0
  repo: repo
  fail_mode: none
variants:
  a: {repo: repo-a}
  b: {repo: repo-b}
defaults:
  resources: {cluster: perlmutter, cpus: 1, memory_mb: 2000, walltime: "1:00:00"}
  retries: 2
  emulate: {seed: "7"}
bundling: {threshold: 50, max_task_instances: 100}
processes:
  ingest:
    type: batch
    command: ingest {{ repo }}
    dm_command: ingestDriver.py {{ repo }}
  setupVisits:
    type: script
    callable: pkg.setup:visits
    depends_on: [ingest]
    kwargs: {repo: "{{ repo }}", scale: "{{ scale }}"}
  setupPatches:
    type: script
    callable: pkg.setup:patches
    depends_on: [ingest]
  wrapup:
    type: script
    callable: pkg.wrapup:run
    depends_on: [processVisit]
  report:
    type: script
    callable: pkg.report:run
    after: [wrapup]
    skip_if: "repo == 'repo-b'"
tasks:
  processVisit:
    version: "1.0"
    streams_from: setupVisits
    stream_var: visit
    expected_streams: 400 * scale
    processes:
      setupRafts: {type: script, callable: pkg.setup:rafts}
    tasks:
      processRaft:
        streams_from: setupRafts
        stream_var: raft
        expected_streams: 2
        defaults:
          resources: {memory_mb: 3000}
          retries: 0
        processes:
          setupSensors: {type: script, callable: pkg.setup:sensors}
        tasks:
          processSensor:
            streams_from: setupSensors
            stream_var: sensor
            expected_streams: 0.5
            processes:
              processEimage:
                type: batch
                emulate:
                  cpu_seconds: 0.05
                  memory_mb: 10
                  outputs: ["{{ repo }}/calexp-{{ visit }}-{{ raft }}-{{ sensor }}.fits"]
                resources: {cpus: 2, walltime: "0:30:00"}
                escalation: {memory_factor: 1.5}
                checks:
                  - exists: "{{ repo }}/calexp-{{ visit }}-{{ raft }}-{{ sensor }}.fits"
                  - glob: "{{ repo }}/*.fits"
                    min_count: 2
                    message: "too few calexps in {{ repo }}"
  processPatch:
    streams_from: setupPatches
    stream_var: patch
    expected_streams: 20 * scale
    processes:
      makeTempExp:
        type: batch
        command: makeCoaddTempExp.py {{ repo }} --id patch={{ patch }}
      assemble:
        type: batch
        command: assembleCoadd.py {{ repo }} --id patch={{ patch }}
        after: [makeTempExp]
        skip_if: "makeTempExp in ('failed', 'terminated') or patch == '9,9'"
"""


@pytest.fixture
def graph() -> WorkflowGraph:
    return build_graph(parse_spec(PYRAMID, "mini.yaml"), "a")


def test_dag_ids_tags_and_paths(graph: WorkflowGraph) -> None:
    spec = parse_spec(PYRAMID, "mini.yaml")
    assert graph.dag_id == "Mini_a" and dag_id_for(spec, "b") == "Mini_b" and dag_id_for(spec) == "Mini"
    assert graph.tags == ("desc", "Mini", "version:2.1", "variant:a")
    assert [t.path for t in graph.iter_tasks()] == [
        "Mini",
        "Mini/processVisit",
        "Mini/processVisit/processRaft",
        "Mini/processVisit/processRaft/processSensor",
        "Mini/processPatch",
    ]
    raft = graph.task("processRaft")
    assert raft.version == "1.0"  # inherited from processVisit
    assert raft.parent_path == "Mini/processVisit" and raft.depth == 2
    assert graph.task("Mini/processPatch").version == "2.1"
    with pytest.raises(WorkflowSpecError, match="no variant named 'c'"):
        dag_id_for(spec, "c")


def test_bundling_decisions(graph: WorkflowGraph) -> None:
    visit, raft, sensor, patch = (
        graph.task(n) for n in ("processVisit", "processRaft", "processSensor", "processPatch")
    )
    assert (
        visit.bundling.state == "bundle"
        and "400 streams in a busy run > threshold 50" in visit.bundling.reason
    )
    assert raft.bundling.state == sensor.bundling.state == "in-bundle"
    assert patch.bundling.state == "none"
    # 20 patches x 2 processes + 5 top-level processes = 45 fixed; 100 - 45 = 55 bundles for 400 visits.
    assert visit.bundling.bundle_size == 8
    assert [p.runs_as for p in graph.root.processes] == ["task"] * 5
    assert {p.runs_as for p in patch.processes} == {"mapped"}
    assert {p.runs_as for t in (visit, raft, sensor) for p in t.processes} == {"in-bundle"}
    assert graph.task("processSensor").streams_per_run == 400.0
    assert sensor.streams_in_busy_run == 800.0  # a fan-out of 0.5 counts as 1 in a busy run


def test_small_scale_changes_what_is_bundled() -> None:
    spec = parse_spec(PYRAMID, "mini.yaml")
    small = build_graph(spec, "a", overrides={"scale": 0.01})
    assert small.task("processVisit").bundling.state == "none"
    assert {p.runs_as for p in small.task("processSensor").processes} == {"mapped"}
    estimate = estimate_task_instances(small)
    assert estimate.busy_run == 5 + 4 * 1 + 8 * 1 + 8 * 1 + 2 * 1


def test_estimate(graph: WorkflowGraph) -> None:
    estimate = estimate_task_instances(graph, runs=3)
    by_path = {t.path: t for t in estimate.tasks}
    assert by_path["Mini/processVisit"].in_busy_run == 50  # ceil(400 / 8)
    assert by_path["Mini/processVisit/processRaft"].in_busy_run == 0  # scripts in a bundle: no task
    assert estimate.busy_run == 5 + 50 + 40 == 95 <= graph.settings.max_task_instances
    assert estimate.total == 3 * 95
    lines = estimate.format().splitlines()
    assert lines[2].startswith("  processVisit ") and "bundle" in lines[2]
    assert lines[-1] == "task instances per run: 95 (busy run: 95); 3 runs: 285"
    other = estimate_task_instances(graph, {"processVisit": 80, "processPatch": 0.5})
    assert other.busy_run == 5 + 10 + 2
    assert other.per_run == pytest.approx(5 + 10 + 2 * 0.5)
    with pytest.raises(ValueError, match="fanout names no sub-task of Mini_a: Mini, nope"):
        estimate_task_instances(graph, {"nope": 1, "Mini": 1})


def test_explicit_bundle_sizes_and_the_map_length_cap() -> None:
    text = PYRAMID.replace(
        "    expected_streams: 400 * scale\n", "    expected_streams: 400 * scale\n    bundle_size: 3\n"
    )
    graph = build_graph(parse_spec(text, "mini.yaml"), "a")
    visit = graph.task("processVisit")
    assert visit.bundling.bundle_size == 3
    assert estimate_task_instances(graph).busy_run == 5 + 134 + 40  # sized by the spec, over budget
    assert [len(b) for b in visit.split_streams(list(range(7)))] == [3, 2, 2]  # dealt out evenly
    many = visit.split_streams(list(range(4000)))
    assert len(many) <= MAX_MAP_LENGTH and sum(map(len, many)) == 4000
    with pytest.raises(ValueError, match="does not run in bundles"):
        graph.task("processPatch").split_streams([1])
    never = build_graph(
        parse_spec(PYRAMID.replace("400 * scale\n", "400 * scale\n    bundle: never\n"), "m"), "a"
    )
    assert never.task("processVisit").bundling.state == "none"
    # 800 rafts in a busy run: the next level down runs in bundles instead.
    assert never.task("processRaft").bundling.state == "bundle"
    assert never.task("processSensor").bundling.state == "in-bundle"


def test_resources_retries_and_escalation_resolve_from_defaults(graph: WorkflowGraph) -> None:
    eimage = graph.task("processSensor").process("processEimage")
    assert eimage.resources is not None
    assert (eimage.resources.cpus, eimage.resources.memory_mb, eimage.resources.walltime_s) == (2, 3000, 1800)
    assert eimage.resources.cluster == "perlmutter"
    assert eimage.retries == 0  # processRaft's defaults win over the top-level ones
    assert (eimage.escalation.memory_factor, eimage.escalation.walltime_factor) == (1.5, 2.0)
    ingest = graph.root.process("ingest")
    assert ingest.retries == 2 and ingest.resources is not None and ingest.resources.memory_mb == 2000
    assert graph.root.process("setupVisits").resources is None
    assert eimage.type_label == "Batch" and graph.root.process("wrapup").type_label == "Script"


def test_streams_feeds_and_status_rows(graph: WorkflowGraph) -> None:
    assert graph.root.process("setupVisits").feeds == ("processVisit",)
    assert graph.task("processVisit").streams_from == "setupVisits"
    assert graph.task("processSensor").stream_vars == ("visit", "raft", "sensor")
    assert graph.status_rows()[:2] == [
        ("Mini", "2.1", "ingest", "Batch"),
        ("Mini", "2.1", "setupVisits", "Script"),
    ]
    assert len(graph.status_rows()) == 10


def test_commands_render_per_variant_and_stream(graph: WorkflowGraph) -> None:
    ingest = graph.root.process("ingest")
    assert ingest.command == "ingest repo-a"
    assert ingest.dm_command == "ingestDriver.py repo-a"
    assert ingest.render_command(dm=True) == "ingestDriver.py repo-a"
    assert ingest.render_command(variables={"repo": "/scratch/x"}) == "ingest /scratch/x"
    patch = graph.task("processPatch").process("makeTempExp")
    assert patch.command == "makeCoaddTempExp.py repo-a --id patch={{ patch }}"
    assert patch.render_command({"patch": "1,2"}) == "makeCoaddTempExp.py repo-a --id patch=1,2"
    with pytest.raises(
        WorkflowSpecError, match=r"Mini/processPatch/makeTempExp: no value for \{\{ patch \}\}"
    ):
        patch.render_command()
    with pytest.raises(WorkflowSpecError, match="has no dm_command"):
        patch.render_command({"patch": "1"}, dm=True)
    with pytest.raises(WorkflowSpecError, match="a script process has no command; call pkg.setup:visits"):
        graph.root.process("setupVisits").render_command()
    assert graph.root.process("setupVisits").render_kwargs() == {"repo": "repo-a", "scale": 1.0}
    assert graph.root.process("setupVisits").render_kwargs(variables={"repo": "r", "scale": 2}) == {
        "repo": "r",
        "scale": 2,
    }


def test_an_emulated_process_runs_and_passes_its_checks(graph: WorkflowGraph, tmp_path: pathlib.Path) -> None:
    eimage = graph.task("processSensor").process("processEimage")
    assert (
        eimage.emulated
        and eimage.command is not None
        and "--name 'processEimage-{{ visit }}" in eimage.command
    )
    values = {**graph.variables, "visit": 2201, "raft": "R22", "sensor": "S11"}
    for sensor in ("S11", "S12"):
        command = eimage.render_command({"visit": 2201, "raft": "R22", "sensor": sensor})
        assert "--seed 7" in command and "--name processEimage-2201-R22-" in command
        subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, capture_output=True)
    exists, glob = eimage.checks
    assert exists.kind == "exists" and (tmp_path / exists.target(values)).is_file()
    assert exists.failure_message(values) == "output repo-a/calexp-2201-R22-S11.fits does not exist"
    assert (glob.kind, glob.min_count, glob.target(values)) == ("glob", 2, "repo-a/*.fits")
    assert len(list(tmp_path.glob(glob.target(values)))) == 2
    assert glob.failure_message(values) == "too few calexps in repo-a"


def test_skip_reasons(graph: WorkflowGraph) -> None:
    assemble = graph.task("processPatch").process("assemble")
    patch = {"patch": "1,2"}
    assert assemble.skip_reason({"makeTempExp": "success"}, patch) is None
    for state in ("failed", "terminated"):
        reason = assemble.skip_reason({"makeTempExp": state}, patch)
        assert reason == Skip(
            "skip-condition", "skip_if holds: makeTempExp in ('failed', 'terminated') or patch == '9,9'"
        )
    assert assemble.skip_reason({"makeTempExp": "success"}, {"patch": "9,9"}) is not None
    wrapup = graph.root.process("wrapup")
    assert wrapup.skip_reason({"processVisit": "failed"}) == Skip(
        "upstream-failed", "upstream processVisit failed"
    )
    assert wrapup.skip_reason({"processVisit": "skipped"}) == Skip(
        "upstream-failed", "upstream processVisit skipped"
    )
    with pytest.raises(WorkflowSpecError, match="no state given for upstream 'processVisit'"):
        wrapup.skip_reason({})
    report = graph.root.process("report")
    assert report.skip_reason({"wrapup": "failed"}) is None  # `after`: runs whatever wrapup became
    assert report.skip_reason({"wrapup": "success"}, variables={"repo": "repo-b"}) == Skip(
        "skip-condition", "skip_if holds: repo == 'repo-b'"
    )


def test_a_bundle_is_one_cluster() -> None:
    text = PYRAMID.replace("resources: {cpus: 2, walltime", "resources: {cluster: s3df, cpus: 2, walltime")
    text = text.replace(
        "    processes:\n      setupRafts:",
        "    processes:\n      fetch: {type: batch, command: x}\n      setupRafts:",
    )
    with pytest.raises(WorkflowSpecError) as raised:
        build_graph(parse_spec(text, "mini.yaml"), "a")
    assert str(raised.value) == (
        "mini.yaml: Mini/processVisit: runs in bundles (400 streams in a busy run > threshold 50; size for "
        "<= 100 task instances per run), but its batch processes use several clusters (perlmutter: fetch; "
        "s3df: processEimage); a bundle is one SLURM allocation on one cluster: give them the same cluster "
        "and fallback_clusters, or set bundle: never"
    )


def test_negative_fanouts_are_refused() -> None:
    spec = parse_spec(PYRAMID, "mini.yaml")
    with pytest.raises(
        WorkflowSpecError, match="expected_streams: 400 \\* scale gives -400.0; it must be 0 or more"
    ):
        build_graph(spec, "a", overrides={"scale": -1.0})


def _paths(data: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def test_any_wrong_value_gives_a_spec_error_never_a_crash() -> None:
    base = yaml.safe_load(PYRAMID)
    wrong: list[object] = [None, 5, -1, 2.5, "x", "{{ nope }}", [1], {"k": 1}, True, []]
    messages: list[str] = []
    for index, path in enumerate(_paths(base)):
        data = copy.deepcopy(base)
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = wrong[index % len(wrong)]
        try:
            spec = parse_spec(yaml.safe_dump(data, sort_keys=False), "fuzz.yaml")
            build_graph(spec, spec.variant_names[0] if spec.variant_names else None)
        except WorkflowSpecError as exc:
            messages.append(str(exc))
    assert len(messages) > 50
    assert all(line.startswith("fuzz.yaml") for message in messages for line in message.splitlines())
