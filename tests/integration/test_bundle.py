"""SlurmBundleOperator on the local site, through `airflow dags test` of dags/desc_it_bundle.py.

40 heterogeneous instances (visit 5 s -> 3 rafts of 3 s -> 2 sensors each of 1 s) with their
dependencies run in one allocation of perlmutter's node: every process instance is recorded, the
dependencies held (each instance reads its parent's output and starts after it ended), the outputs
exist, and the pilot kept the node's cores busy. A second DAG fails one visit on its first try: the
retry reruns that visit's instances only. Run twice under one run id (a deleted and re-created
run, as a reset metadata DB re-creates a scheduled run), the second run sets the first's task
directory aside and runs and records every stream.
"""

from __future__ import annotations

import collections
import pathlib
import random
import shlex
import uuid
from datetime import datetime, timedelta

import pytest

from airflow_desc.history import JsonLinesRecorder, ProcessRecord
from airflow_desc.operators.job_names import task_dir_for
from airflow_desc.pilot import parse_records
from tests.integration.airflow_env import AirflowEnv, explain
from tests.integration.site import NODES, Site

# A bundle asks for a whole perlmutter node: beside the parallel suite it would wait in SLURM's queue.
pytestmark = pytest.mark.serial

WORK_DIR = "airflow-desc"  # the site's clusters.yaml work_dir, relative to the home directory


def records(path: pathlib.Path) -> list[ProcessRecord]:
    return JsonLinesRecorder(path).read()


def _start(rec: ProcessRecord) -> datetime:
    assert rec.start_time is not None, rec
    return rec.start_time


def _end(rec: ProcessRecord) -> datetime:
    assert rec.end_time is not None, rec
    return rec.end_time


def test_forty_instances_with_dependencies_in_one_allocation(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site
) -> None:
    history = tmp_path / "history.jsonl"
    out = f"it-bundle/{uuid.uuid4().hex[:10]}"
    proc = airflow_env.dags_test("desc_it_bundle", history=history, conf={"out": out}, timeout=240)
    recs = records(history)
    batch = [r for r in recs if r.process_type == "batch"]
    by_process = collections.Counter(r.process for r in batch)
    assert by_process == {"calibrateVisit": 4, "assembleRaft": 12, "processEimage": 24}, explain(proc)
    assert proc.returncode == 0, explain(proc)
    # One allocation ran them all, each a step of its own, accounted by sacct.
    assert len({r.job_id for r in batch}) == 1
    assert len({r.step for r in batch}) == 40
    for rec in batch:
        assert rec.state == "success", rec
        assert rec.node in NODES["perlmutter"] and rec.cluster == "perlmutter"
        assert rec.slurm_state == "COMPLETED", rec
        assert rec.total_cpu_s is not None and rec.max_rss_bytes and rec.elapsed_s is not None, rec
        assert (
            rec.stream.count("/") == {"calibrateVisit": 0, "assembleRaft": 1, "processEimage": 2}[rec.process]
        )
        assert (rec.task, rec.workflow, rec.variant) == (
            {
                "calibrateVisit": "processVisit",
                "assembleRaft": "processRaft",
                "processEimage": "processSensor",
            }[rec.process],
            "desc_it_bundle",
            "",
        )
    # Each instance's log end is kept (its payload's own lines), and the bundle task's log has a line
    # per instance with its state and where its whole log is.
    task_log = proc.stdout + proc.stderr
    for rec in batch:
        assert rec.log_tail and "] done" in rec.log_tail, rec
        assert f"{rec.stream} {rec.process}: success (-); log perlmutter:{rec.log_path}" in task_log, rec
    # Heterogeneous: the CPU each used is what its payload burns (5 s, 3 s, 1 s).
    for process, burn in (("calibrateVisit", 5), ("assembleRaft", 3), ("processEimage", 1)):
        cpu = [r.total_cpu_s or 0 for r in batch if r.process == process]
        assert min(cpu) >= 0.8 * burn, (process, cpu)
    # Dependencies: visit -> its rafts -> their sensors.
    by_stream = {r.stream: r for r in batch}
    for rec in batch:
        if "/" in rec.stream:
            parent = by_stream[rec.stream.rpartition("/")[0]]
            assert _start(rec) >= _end(parent), (rec.stream, parent.stream)
    # Scripts ran on the worker, around the allocation, each recorded once per stream.
    scripts = collections.Counter((r.process, r.state) for r in recs if r.process_type == "script")
    assert scripts == {
        ("setupVisits", "success"): 1,
        ("setupRafts", "success"): 4,
        ("setupSensors", "success"): 12,
        ("wrapupRafts", "success"): 4,
        ("summary", "success"): 1,
    }, scripts
    wrapups = [r for r in recs if r.process == "wrapupRafts"]
    assert min(_start(w) for w in wrapups) >= max(_end(r) for r in batch)
    # Correct results: every sensor's output is there (the spec's output check passed, too).
    listing = site.run(
        "perlmutter", f"cd {WORK_DIR} && find {shlex.quote(out)} -name '*.fits' | wc -l"
    ).stdout
    assert int(listing.strip()) == 24
    # Utilisation: the pilot packed the instances onto both cores.
    line = next(x for x in proc.stdout.splitlines() + proc.stderr.splitlines() if "core-s held of" in x)
    print(line)
    held, allocated = _numbers(line)
    assert held / allocated >= 0.8, line


def _numbers(line: str) -> tuple[float, float]:
    text = line.split("core-s held of")
    held = float(text[0].split()[-1])
    allocated = float(text[1].split()[0])
    return held, allocated


def test_a_retried_bundle_reruns_only_what_did_not_succeed(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    name = uuid.uuid4().hex[:10]
    conf = {"out": f"it-bundle-rerun/{name}", "marker": f"it-bundle-rerun/{name}.flaky"}
    proc = airflow_env.dags_test("desc_it_bundle_rerun", history=history, conf=conf, timeout=240)
    recs = records(history)
    tries = collections.defaultdict(list)
    for rec in recs:
        if rec.process_type == "batch":
            tries[rec.try_number].append((rec.stream, rec.process, rec.state))
    first = sorted(tries[1])
    assert ("visit=202", "calibrateVisit", "failed") in first, explain(proc)
    assert [s for s in first if s[0].startswith("visit=202/")] and all(
        s[2] == "skipped" for s in first if s[0].startswith("visit=202/")
    )
    assert all(s[2] == "success" for s in first if not s[0].startswith("visit=202")), first
    # The retry ran visit 202's instances only: the rest was done (--skip-done).
    second = sorted(tries[2])
    assert second and all(s[0].startswith("visit=202") and s[2] == "success" for s in second), second
    assert len(second) == 1 + len([s for s in first if s[0].startswith("visit=202/")])
    assert proc.returncode == 0, explain(proc)
    failed = next(r for r in recs if r.process == "calibrateVisit" and r.state == "failed")
    assert failed.reason == "non-zero-exit" and failed.exit_code == 3
    assert "flaky: the first try of visit 202 fails" in (failed.message or "") + str(failed.log_tail)
    assert all(
        r.extra["pilot"]["launcher"] == "direct"
        for r in recs
        if r.process_type == "batch" and r.state != "skipped"
    )


def test_a_skip_if_on_a_sibling_is_decided_inside_the_allocation(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    """The 1/10-scale DC1's bug: level1AssembleCoadd ran after failed level1MakeTempExpCoadds in bundles."""
    history = tmp_path / "history.jsonl"
    proc = airflow_env.dags_test("desc_it_bundle_skip", history=history, timeout=240)
    recs = {(r.stream, r.process): r for r in records(history) if r.try_number == 1}
    batch = [r for r in recs.values() if r.process_type == "batch"]
    assert len({r.job_id for r in batch if r.state != "skipped"}) == 1, explain(proc)  # one allocation
    made = {stream: r.state for (stream, process), r in recs.items() if process == "makeTempExp"}
    sensors: dict[str, list[str]] = collections.defaultdict(list)
    for (stream, process), r in recs.items():
        if process == "eimage":
            sensors[stream.partition("/")[0]].append(r.state)
    # The draw (seed 5) fails some of each, so that both outcomes are seen.
    assert sorted(set(made.values())) == ["failed", "success"], (made, explain(proc))
    assert {"failed" in s for s in sensors.values()} == {True, False}, sensors

    def outcome(stream: str, process: str) -> tuple[str, str | None, str | None]:
        rec = recs[(stream, process)]
        return rec.state, rec.reason, rec.message if rec.state == "skipped" else None

    for visit, state in made.items():
        if state == "success":
            expected = {"assembleCoadd": ("success", None, None), "measure": ("success", None, None),
                        "wrapupVisit": ("success", None, None)}  # fmt: skip
        else:
            expected = {
                "assembleCoadd": ("skipped", "skip-condition",
                                  "skip_if holds: makeTempExp in ('failed', 'terminated', 'skipped')"),
                "measure": ("skipped", "upstream-failed", "not run: upstream "
                            f"{visit}:assembleCoadd did not succeed"),
                "wrapupVisit": ("skipped", "skip-condition", "skip_if holds: makeTempExp != 'success'"),
            }  # fmt: skip
        assert {p: outcome(visit, p) for p in expected} == expected, (visit, explain(proc))
        summary = outcome(visit, "summarizeSensors")
        if "failed" in sensors[visit]:
            assert summary == ("skipped", "skip-condition", "skip_if holds: processSensor == 'failed'")
        else:
            assert summary == ("success", None, None), visit


@pytest.mark.parametrize("payload", ["emulate", "dm"])
def test_a_hostile_run_conf_stays_data_on_the_cluster(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site, payload: str
) -> None:
    """Issue 11's reproduction: a run conf whose value is shell code, into a job, a check and a bundle.

    Through each payload: the spec's command lines, and (conf desc_payload=dm) its dm_command lines.
    """
    canary = f"/tmp/desc-it-canary-{uuid.uuid4().hex[:10]}"
    parts = [f"x; touch {canary}", f"$(touch {canary})", f"`touch {canary}`", "q'uo\"te && | > <"]
    label = "^".join(parts)
    out = f"it-hostile/{uuid.uuid4().hex[:10]}"
    history = tmp_path / "history.jsonl"
    conf = {"label": label, "out": out, "desc_payload": payload}
    proc = airflow_env.dags_test("desc_it_hostile", history=history, conf=conf)
    assert proc.returncode == 0, explain(proc)
    where = shlex.quote(f"{WORK_DIR}/{out}")
    suffix = ".dm.txt" if payload == "dm" else ".txt"
    assert site.run("perlmutter", f"cat {where}/label{suffix}").stdout == label
    assert site.run("perlmutter", f"cat {where}/check.txt").stdout == label  # the output check ran
    recs = records(history)
    made = sorted(r.stream.removeprefix("part=") for r in recs if r.process == "printPart")
    assert made and set(made) <= set(parts), made
    assert all(r.state == "success" for r in recs if r.process_type == "batch"), recs
    assert all(r.extra.get("payload") == payload for r in recs if r.process_type == "batch"), recs
    printed = site.run("perlmutter", f'for f in {where}/part-*{suffix}; do cat "$f"; echo; done').stdout
    assert sorted(printed.splitlines()) == made
    assert not pathlib.Path(canary).exists()
    assert site.run("perlmutter", f"test ! -e {shlex.quote(canary)}", check=False).returncode == 0


def test_a_run_id_run_again_by_another_airflow_runs_and_records_every_stream(
    airflow_env: AirflowEnv, tmp_path: pathlib.Path, site: Site
) -> None:
    # `dags test` deletes the run of the same logical date and creates it anew: the same run id, so
    # the same task directory on the cluster, but none of the first run's state (as after a reset
    # metadata DB, where a scheduled run comes back under its id).
    logical = datetime(2001, 1, 1) + timedelta(seconds=random.randrange(10**8))
    run_id = f"manual__{logical.isoformat()}+00:00"
    task_dir = task_dir_for(WORK_DIR, "desc_it_bundle_rerun", run_id, "processVisit.bundle", 0)
    conf = {"out": f"it-bundle-again/{uuid.uuid4().hex[:10]}", "flaky_visit": 0}  # no visit fails
    batch: dict[str, list[ProcessRecord]] = {}
    for run in ("first", "second"):
        history = tmp_path / f"{run}.jsonl"
        proc = airflow_env.dags_test(
            "desc_it_bundle_rerun", history=history, conf=conf, logical_date=logical.isoformat(), timeout=240
        )
        assert proc.returncode == 0, explain(proc)
        batch[run] = [r for r in records(history) if r.process_type == "batch" and r.run_id == run_id]
    output = proc.stdout + proc.stderr  # the whole output: the warning is near its start
    assert f"directory ~/{task_dir} set aside as ~/{task_dir}.stale-" in output, output
    assert "nothing to run" not in output
    # Each run ran and recorded all nine instances itself, in an allocation of its own.
    for run in ("first", "second"):
        assert len(batch[run]) == 9, (run, batch[run])
        assert all(r.state == "success" and r.try_number == 1 for r in batch[run]), batch[run]
    jobs = {run: {r.job_id for r in recs} for run, recs in batch.items()}
    assert len(jobs["first"]) == len(jobs["second"]) == 1 and jobs["first"] != jobs["second"], jobs
    # The first run's directory is kept, records and all, beside the second's.
    listing = site.run("perlmutter", f"ls -d {shlex.quote(task_dir)}.stale-*").stdout.split()
    assert len(listing) == 1, listing
    kept = parse_records(site.run("perlmutter", f"cat {shlex.quote(listing[0])}/records.jsonl").stdout)
    assert {str(r.get("job_id")) for r in kept} == jobs["first"]
