"""The launcher in ``direct`` mode, run as a real process on tiny shell commands."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import resource
import signal
import subprocess

import pytest

from airflow_desc.pilot import RECORD_FIELDS, parse_records, parse_summary
from tests.unit.pilot.pilot_process import (
    UTILISATION,
    PilotRun,
    Runner,
    children_of,
    clean_env,
    instance,
    pilot_argv,
    python_3_8,
    ts,
    write_manifest,
)
from tests.waiting import wait_for

BURN = "python3 -c 'import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass'"
HOLD = "python3 -c 'x = \"x\" * ({mb} << 20)\nimport time\ntime.sleep({s})'"


def test_dependencies_run_in_order_and_failures_skip_downstream(run_pilot: Runner) -> None:
    run = run_pilot([
        instance("v1:visit", BURN.format(s=0.3)),
        instance("v1/s1:sensor", "echo sensor one", depends_on=["v1:visit"]),
        instance("v1/s2:sensor", "echo 'PSF failed' >&2; exit 3", depends_on=["v1:visit"]),
        instance("v1/s2:coadd", "echo never", depends_on=["v1/s2:sensor"]),
        instance("v1:summary", "echo never", depends_on=["v1/s1:sensor", "v1/s2:coadd"]),
    ])  # fmt: skip
    recs = run.by_id
    assert run.returncode == 1, run.explain()
    assert {k: v["state"] for k, v in recs.items()} == {
        "v1:visit": "success",
        "v1/s1:sensor": "success",
        "v1/s2:sensor": "failed",
        "v1/s2:coadd": "skipped",
        "v1:summary": "skipped",
    }
    assert len(run.records) == 5 and all(list(r) == list(RECORD_FIELDS) for r in run.records)
    visit = recs["v1:visit"]
    assert visit["stream"] == "v1" and visit["process"] == "visit" and visit["bundle"] == "b"
    assert visit["reason"] is None and visit["exit_code"] == 0 and visit["log_tail"] is None
    assert visit["total_cpu_s"] >= 0.25 and visit["launcher"] == "direct" and visit["node"]
    for sensor in ("v1/s1:sensor", "v1/s2:sensor"):
        assert ts(recs[sensor]["start"]) >= ts(visit["end"])
    failed = recs["v1/s2:sensor"]
    assert failed["reason"] == "non-zero-exit" and failed["exit_code"] == 3 and failed["signal"] is None
    assert "PSF failed" in failed["log_tail"] and failed["message"] == "exited with code 3"
    for skipped in ("v1/s2:coadd", "v1:summary"):
        rec = recs[skipped]
        assert rec["reason"] == "upstream-failed" and rec["start"] is None and rec["log_path"] is None
    assert "v1/s2:sensor" in recs["v1/s2:coadd"]["message"]
    assert "sensor one" in pathlib.Path(recs["v1/s1:sensor"]["log_path"]).read_text()


def test_four_one_core_jobs_pack_onto_two_cores_in_two_rounds(run_pilot: Runner) -> None:
    run = run_pilot([instance(f"s{i}", "sleep 1") for i in range(4)], cores=2)
    assert run.returncode == 0, run.explain()
    recs = run.records
    assert [r["state"] for r in recs] == ["success"] * 4
    starts = sorted(ts(r["start"]) for r in recs)
    ends = sorted(ts(r["end"]) for r in recs)
    # Never more than two at once, and the second pair starts as soon as the first ends.
    assert starts[2] >= ends[0] - datetime.timedelta(milliseconds=50)
    assert (starts[2] - ends[0]).total_seconds() < 0.3
    span = (ends[-1] - starts[0]).total_seconds()
    assert 1.9 <= span < 3.0, span
    held, allocated, pct = map(float, UTILISATION.search(run.stdout).groups())  # type: ignore[union-attr]
    assert held == pytest.approx(4.0, abs=0.5) and allocated >= held and pct > 60
    summary = parse_summary(run.stdout)
    assert summary and summary["cores"] == 2 and summary["states"] == {"success": 4}


def test_scheduling_prefers_the_critical_path_then_the_biggest(run_pilot: Runner) -> None:
    run = run_pilot(
        [
            instance("small", "sleep 0.1", memory_mb=10),
            instance("big", "sleep 0.1", memory_mb=900),
            instance("visit", "sleep 0.1", memory_mb=10),
            instance("sensor", "sleep 0.1", memory_mb=10, depends_on=["visit"]),
        ],
        cores=1,
    )
    assert run.returncode == 0, run.explain()
    order = [r["id"] for r in sorted(run.records, key=lambda r: r["start"])]
    assert order[0] == "visit"  # it unlocks more work
    assert order.index("big") < order.index("small")


def test_with_estimates_the_longest_starts_first_and_a_freed_core_starts_before_the_record(
    run_pilot: Runner,
) -> None:
    run = run_pilot(
        [instance(f"t{i}", "true", estimate_s=s) for i, s in enumerate((1.0, 3.0, 2.0, 5.0))], cores=1
    )
    assert run.returncode == 0, run.explain()
    by_start = sorted(run.records, key=lambda r: r["start"])
    assert [r["id"] for r in by_start] == ["t3", "t1", "t2", "t0"]
    # One core: each instance started after the one before it ended (its end is when it was reaped,
    # not when its record was written, which now comes after the next start).
    for before, after in zip(by_start, by_start[1:], strict=False):
        assert ts(after["start"]) >= ts(before["end"]), (before, after)
    lines = run.records_path.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["t3", "t1", "t2", "t0"]


@pytest.mark.parametrize(("reserve_after", "big_before_small"), [("0", True), ("60", False)])
def test_a_big_instance_is_not_starved_by_backfill(
    run_pilot: Runner, reserve_after: str, big_before_small: bool
) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = run_pilot(
        [
            instance("first", "sleep 1"),
            instance("after-first", "true", depends_on=["first"]),
            instance("big", "sleep 0.1", cpus=2),
            instance("small", "sleep 0.1"),
        ],
        "--reserve-after",
        reserve_after,
        cores=2,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert run.returncode == 0, run.explain()
    recs = run.by_id
    assert (recs["big"]["start"] < recs["small"]["start"]) is big_before_small
    # While the cores drain for "big" the pilot sleeps until a child ends; it does not spin.
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 0.6


def test_memory_over_the_limit_is_killed_as_out_of_memory(run_pilot: Runner) -> None:
    run = run_pilot([
        instance("hog", HOLD.format(mb=300, s=10) + "; echo after", memory_mb=100),
        instance("after-hog", "true", depends_on=["hog"]),
    ])  # fmt: skip
    recs = run.by_id
    hog = recs["hog"]
    assert hog["state"] == "terminated" and hog["reason"] == "out-of-memory", run.explain()
    assert hog["max_rss_bytes"] > 100 * 2**20 and hog["elapsed_s"] < 5
    assert "over its 100 MB" in hog["message"] and "out-of-memory" in hog["log_tail"]
    assert recs["after-hog"]["state"] == "skipped" and recs["after-hog"]["reason"] == "upstream-failed"


def test_walltime_sends_sigterm_then_sigkill(run_pilot: Runner) -> None:
    run = run_pilot([
        instance("polite", "sleep 30", walltime_s=0.5),
        instance("stubborn", "trap '' TERM; sleep 30; echo done", walltime_s=0.5),
        instance("quick", "true", walltime_s=5),
    ])  # fmt: skip
    recs = run.by_id
    polite, stubborn = recs["polite"], recs["stubborn"]
    for rec in (polite, stubborn):
        assert rec["state"] == "terminated" and rec["reason"] == "time-limit", run.explain()
        assert "walltime of 0.5 s" in rec["message"]
    assert polite["signal"] == signal.SIGTERM and polite["elapsed_s"] < 2.5
    # SIGTERM was ignored: SIGKILL came --kill-grace (0.5 s) later.
    assert signal.SIGKILL in (stubborn["signal"], (stubborn["exit_code"] or 0) - 128)
    assert 0.9 <= stubborn["elapsed_s"] < 4
    assert recs["quick"]["state"] == "success"
    assert run.wall < 8


def test_instance_bigger_than_the_allocation_is_a_launch_error(run_pilot: Runner) -> None:
    run = run_pilot([
        instance("huge", "true", cpus=3),
        instance("needs-huge", "true", depends_on=["huge"]),
        instance("fine", "true"),
    ], cores=2)  # fmt: skip
    recs = run.by_id
    assert recs["huge"]["state"] == "failed" and recs["huge"]["reason"] == "launch-error"
    assert "needs 3 cpus" in recs["huge"]["message"]
    assert recs["needs-huge"]["reason"] == "upstream-failed"
    assert recs["fine"]["state"] == "success"


def test_memory_defaults_to_the_cores_share_and_children_see_their_resources(run_pilot: Runner) -> None:
    run = run_pilot([
        {"id": "x:p", "command": "echo $DESC_PILOT_INSTANCE $DESC_PILOT_CPUS $DESC_PILOT_MEMORY_MB $OMP_NUM_THREADS"},  # noqa: E501
    ], cores=2)  # fmt: skip
    rec = run.by_id["x:p"]
    assert rec["state"] == "success" and rec["memory_mb"] == 2000  # 4000 MB / 2 cores
    assert "x:p 1 2000 1" in pathlib.Path(rec["log_path"]).read_text()


def test_sigterm_stops_launching_and_records_every_instance(tmp_path: pathlib.Path) -> None:
    write_manifest(tmp_path, [
        instance("a", "sleep 30"),
        instance("b", "trap '' TERM; sleep 30"),
        instance("c", "sleep 30"),
        instance("after-a", "true", depends_on=["a"]),
    ])  # fmt: skip
    proc = subprocess.Popen(pilot_argv(tmp_path), stdout=subprocess.PIPE, text=True, env=clean_env())
    try:
        logs = tmp_path / "logs"
        wait_for(
            lambda: len(list(logs.glob("*.log"))),
            until=lambda n: n == 2,
            timeout=60,  # hang guards: a loaded machine is slow
            interval=0.05,
            what="two instance logs",
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out
    recs = {r["id"]: r for r in parse_records((tmp_path / "records.jsonl").read_text())}
    started = {i for i in recs if recs[i]["start"]}
    assert len(started) == 2 and started <= {"a", "b", "c"}
    for iid in started:
        assert recs[iid]["state"] == "terminated" and recs[iid]["reason"] == "time-limit"
        assert "SIGTERM" in recs[iid]["message"]
    for iid in set(recs) - started:
        assert recs[iid]["state"] == "skipped" and recs[iid]["reason"] == "allocation-ended"
    assert set(recs) == {"a", "b", "c", "after-a"}
    assert '"stopped_by":"SIGTERM"' in out and "utilisation" in out


def test_children_signalled_by_slurm_at_the_job_end_are_terminated_not_failed(tmp_path: pathlib.Path) -> None:
    """Without ``--signal=B:...`` SLURM sends SIGTERM to every process of the job at once."""
    write_manifest(tmp_path, [instance("a", "sleep 30"), instance("b", "sleep 30")])
    proc = subprocess.Popen(pilot_argv(tmp_path), stdout=subprocess.DEVNULL, env=clean_env())
    try:
        wait_for(
            lambda: children_of(proc.pid),
            until=lambda pids: len(pids) == 2,
            timeout=10,
            interval=0.05,
            what="the pilot's two children",
        )
        for pid in [proc.pid, *children_of(proc.pid)]:
            # The pilot may have passed SIGTERM on and reaped a child already, as SLURM's own
            # signalling races the same way.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    recs = parse_records((tmp_path / "records.jsonl").read_text())
    assert [(r["state"], r["reason"]) for r in recs] == [("terminated", "time-limit")] * 2, recs


def test_records_are_on_disk_while_the_pilot_still_runs(tmp_path: pathlib.Path) -> None:
    write_manifest(tmp_path, [instance("quick", "true"), instance("slow", "sleep 30")])
    proc = subprocess.Popen(pilot_argv(tmp_path), stdout=subprocess.DEVNULL, env=clean_env())
    records = tmp_path / "records.jsonl"
    try:
        wait_for(
            lambda: records.exists() and records.read_text().endswith("\n"),
            timeout=10,
            interval=0.05,
            what="a whole line in the records file",
        )
        assert proc.poll() is None
        [rec] = [json.loads(line) for line in records.read_text().splitlines()]
        assert rec["id"] == "quick" and rec["state"] == "success"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_skip_done_reruns_only_what_did_not_succeed(run_pilot: Runner, tmp_path: pathlib.Path) -> None:
    counter = tmp_path / "runs.txt"
    flag = tmp_path / "fixed"
    count = f"echo $DESC_PILOT_INSTANCE >> {counter}"
    manifest = [
        instance("v:visit", count),
        instance("v/s1:sensor", count, depends_on=["v:visit"]),
        instance("v/s2:sensor", f"{count}; test -e {flag}", depends_on=["v:visit"]),
        instance("v/s2:coadd", count, depends_on=["v/s2:sensor"]),
    ]
    first = run_pilot(manifest, name="first")
    assert [first.by_id[i]["state"] for i in ("v:visit", "v/s1:sensor", "v/s2:sensor", "v/s2:coadd")] == [
        "success", "success", "failed", "skipped",
    ]  # fmt: skip
    flag.touch()
    # A crash left half a line at the end of the first records file: it counts as not done.
    with first.records_path.open("a") as f:
        f.write('{"id": "v/s1:sens')
    second = run_pilot(manifest, "--skip-done", str(first.records_path), name="second")
    assert second.returncode == 0, second.explain()
    assert {r["id"]: r["state"] for r in second.records} == {
        "v/s2:sensor": "success",
        "v/s2:coadd": "success",
    }
    runs = counter.read_text().split()
    assert sorted(runs) == ["v/s1:sensor", "v/s2:coadd", "v/s2:sensor", "v/s2:sensor", "v:visit"]
    assert runs[-2:] == ["v/s2:sensor", "v/s2:coadd"]  # only these ran the second time
    assert "2 instances already succeeded" in second.stdout
    assert parse_summary(second.stdout)["already_done"] == 2  # type: ignore[index]


def test_a_manifest_rerun_runs_those_again_though_they_succeeded(
    run_pilot: Runner, tmp_path: pathlib.Path
) -> None:
    counter = tmp_path / "runs.txt"
    count = f"echo $DESC_PILOT_INSTANCE >> {counter}"
    manifest = [
        instance("v:visit", count),
        instance("v/s1:sensor", count, depends_on=["v:visit"]),
        instance("v/s2:sensor", count, depends_on=["v:visit"]),
    ]
    first = run_pilot(manifest, name="first")
    assert first.returncode == 0, first.explain()
    second = run_pilot(manifest, "--skip-done", str(first.records_path), name="second", rerun=["v/s2:sensor"])
    assert second.returncode == 0, second.explain()
    assert {r["id"]: r["state"] for r in second.records} == {"v/s2:sensor": "success"}
    assert counter.read_text().split()[-1] == "v/s2:sensor"
    assert parse_summary(second.stdout)["already_done"] == 2  # type: ignore[index]


def test_appending_after_a_torn_line_starts_a_new_line(run_pilot: Runner, tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "records.jsonl").write_text('{"id": "old", "state": "success"}\n{"id": "torn", "sta')
    run = run_pilot([instance("new", "true")])
    assert [r["id"] for r in run.records] == ["old", "new"]


@pytest.mark.parametrize(("iid", "edge"), [("v/s1:sensor", "depends_on"), ("v:report", "after")])
def test_skip_done_accepts_an_upstream_no_longer_in_the_manifest(
    run_pilot: Runner, tmp_path: pathlib.Path, iid: str, edge: str
) -> None:
    previous = tmp_path / "previous.jsonl"
    previous.write_text(json.dumps({"id": "v:visit", "state": "success"}) + "\n")
    run = run_pilot([instance(iid, "true", **{edge: ["v:visit"]})], "--skip-done", str(previous))
    assert run.returncode == 0 and run.by_id[iid]["state"] == "success", run.explain()


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([instance("a", "true"), instance("a", "true")], "appears twice"),
        ([instance("a", "true", depends_on=["nope"])], "(a): depends_on names 'nope'"),
        ([instance("a", "true", depends_on=["b"]), instance("b", "true", depends_on=["a"])], "cycle"),
        ([{"id": "a"}], "has no command"),
        ([instance("a", "true", cpus=0)], "cpus=0"),
    ],
)
def test_a_bad_manifest_runs_nothing_and_says_why(
    run_pilot: Runner, instances: list[dict[str, object]], message: str
) -> None:
    run = run_pilot(instances)
    assert run.returncode == 2 and message in run.stderr and run.records == []


def test_the_launcher_runs_on_python_3_8(run_pilot: Runner) -> None:
    python38 = python_3_8()
    if python38 is None:
        pytest.skip("no Python 3.8 here")
    run = run_pilot(
        [
            instance("a", "exit 4"),
            instance("b", "true", depends_on=["a"]),
            instance("c", "sleep 30", walltime_s=0.3),
        ],
        python=python38,
    )
    assert run.returncode == 1, run.explain()
    assert [run.by_id[i]["reason"] for i in "abc"] == ["non-zero-exit", "upstream-failed", "time-limit"]


def test_outside_slurm_srun_is_refused(tmp_path: pathlib.Path) -> None:
    write_manifest(tmp_path, [instance("a", "true")])
    argv = [a if a != "direct" else "srun" for a in pilot_argv(tmp_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), timeout=30)
    assert proc.returncode == 2 and "inside a SLURM allocation" in proc.stderr


def _cpus(text: str) -> set[int]:
    """The CPUs of a ``Cpus_allowed_list`` value, ``0-1,3``."""
    found: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def test_direct_children_get_cpus_of_their_own_unless_told_not_to_bind(run_pilot: Runner) -> None:
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("one CPU: pinned and not pinned look the same")
    show = "grep Cpus_allowed_list /proc/self/status"
    two = [instance("a:p", show), instance("b:p", show)]

    def cpus_of(run: PilotRun) -> list[set[int]]:
        assert run.returncode == 0, run.explain()
        logs = [pathlib.Path(run.by_id[i]["log_path"]).read_text() for i in ("a:p", "b:p")]
        return [_cpus(log.split("Cpus_allowed_list:")[1].split()[0]) for log in logs]

    # The pool is exactly the CPUs the pilot may use: each instance gets one of them.
    pinned = cpus_of(run_pilot(two, cores=len(allowed), name="pinned"))
    assert all(len(cpus) == 1 and cpus <= allowed for cpus in pinned), pinned
    # --no-bind (a profile's pilot_binding: none): the kernel places them anywhere allowed.
    free = cpus_of(run_pilot(two, "--no-bind", cores=len(allowed), name="free"))
    assert free == [allowed, allowed], free
