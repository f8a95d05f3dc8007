"""The checks of values read back from the task state store, XCom and trigger events (pure)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from airflow_desc.exceptions import UntrustedState
from airflow_desc.operators.trusted import (
    own_log_path,
    trusted_bundle_state,
    trusted_event_accounting,
    trusted_event_job_id,
    trusted_feeds,
    trusted_job_id,
    trusted_map_index,
    trusted_path,
    trusted_script_outcome,
    trusted_slurm_state,
    trusted_stream,
    trusted_streams,
)
from airflow_desc.slurm import accounting_to_payload, group_accounting, parse_sacct
from airflow_desc.workflow.bundle_plan import RaisedRequest
from airflow_desc.workflow.scripts import ScriptOutcome

TASK_DIR = "airflow-desc/dc1/manual__2026-11-28T01_00_00_00_00/group.processEimage.3"


# --- job ids ---


@pytest.mark.parametrize("job_id", ["1", "123_4", "123.batch"])
def test_a_job_id_passes(job_id: str) -> None:
    assert trusted_job_id("f", job_id) == job_id


@pytest.mark.parametrize("job_id", ["1; touch /tmp/x", "$(id)", "1\n", "", 12, None, ["1"]])
def test_anything_else_is_refused_naming_the_field_and_the_value(job_id: Any) -> None:
    with pytest.raises(UntrustedState, match=re.escape(f"task state store 'slurm': job_id = {job_id!r}")):
        trusted_job_id("task state store 'slurm': job_id", job_id)


def test_a_long_value_is_shown_cut_short() -> None:
    with pytest.raises(UntrustedState) as caught:
        trusted_job_id("f", "1;" + "x" * 10_000)
    assert len(str(caught.value)) < 500 and "xxx..." in str(caught.value)


# --- paths ---


@pytest.mark.parametrize(
    "path",
    [
        f"{TASK_DIR}/t1-900.out",  # as SlurmOperator._submit writes it
        f"~/{TASK_DIR}/records.jsonl",  # as the bundle writes its paths: the same place
        f"{TASK_DIR}/logs/visit=1:calibrate.log",
        f"{TASK_DIR}/./t1-900.out",
    ],
)
def test_a_path_inside_the_task_dir_passes(path: str) -> None:
    assert trusted_path("log_path", path, TASK_DIR) == path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../../etc/passwd", "climbs"),
        (f"{TASK_DIR}/../../other/x.log", "climbs"),
        ("~/other/task/dir/x.log", "not inside this task instance's directory"),
        ("/etc/passwd", "not inside"),
        (f"/{TASK_DIR}/t1-900.out", "not inside"),  # absolute: another place than ~/airflow-desc
        (TASK_DIR, "not inside"),  # the directory itself is no file of it
        (f"{TASK_DIR}.4/t1-900.out", "not inside"),  # the next map index's directory
        (f"{TASK_DIR}/t1-900.out\0/etc/passwd", "NUL byte or line break"),
        (f"{TASK_DIR}/t1-900.out\n/etc/passwd", "NUL byte or line break"),
        (["/etc/passwd"], "a path is a string"),
    ],
)
def test_a_path_elsewhere_is_refused(path: Any, why: str) -> None:
    with pytest.raises(UntrustedState, match=rf"log_path = .*{re.escape(why)}"):
        trusted_path("log_path", path, TASK_DIR)


def test_an_absolute_task_dir_takes_only_absolute_paths_under_it() -> None:
    task_dir = "/scratch/desc/d/r/t"
    assert trusted_path("p", "/scratch/desc/d/r/t/t1-5.out", task_dir)
    with pytest.raises(UntrustedState, match="not inside"):
        trusted_path("p", "scratch/desc/d/r/t/t1-5.out", task_dir)


# --- the SlurmOperator's saved state ---

HONEST = {
    "job_id": "900",
    "job_name": "processEimage.3f9a0c1e2b4d.t1",
    "try_number": 1,
    "log_pattern": f"{TASK_DIR}/t1-%j.out",
    "log_path": f"{TASK_DIR}/t1-900.out",
    "recorded": ["899"],
    "resources": {"cpus": 1},
    "claimed_at": "2026-12-06T09:00:00+00:00",
}


def test_an_honest_slurm_state_passes_unchanged() -> None:
    assert trusted_slurm_state(HONEST, TASK_DIR, source="s") == HONEST
    assert trusted_slurm_state({"recorded": ["1"]}, TASK_DIR, source="s") == {"recorded": ["1"]}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"job_id": "1; touch /tmp/x"}, "job_id"),
        ({"recorded": ["900", {"x": 1}]}, "recorded"),
        ({"recorded": "900"}, "recorded"),
        ({"log_path": "../../etc/passwd"}, "log_path"),
        ({"log_pattern": "~/other/task/dir/%j.out"}, "log_pattern"),
        ({"try_number": "2"}, "try_number"),
        ({"try_number": True}, "try_number"),
        ({"claimed_at": 1765000000}, "claimed_at"),
    ],
)
def test_a_bad_field_of_the_slurm_state_is_named(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(UntrustedState, match=rf"^task state store 'slurm': {field} = "):
        trusted_slurm_state({**HONEST, **changes}, TASK_DIR, source="task state store 'slurm'")


def test_a_slurm_state_that_is_no_mapping_is_refused() -> None:
    with pytest.raises(UntrustedState, match=r"^task state store 'slurm' = \['900'\]: the saved state"):
        trusted_slurm_state(["900"], TASK_DIR, source="task state store 'slurm'")


# --- the bundle's saved state ---

OUTCOME = ScriptOutcome(
    "success", {"processRaft": ["R22", "R23"]}, None, "2026-11-28T01:00:00", "2026-11-28T01:00:01", 1.0
)


def test_an_honest_bundle_state_passes_unchanged() -> None:
    saved = {
        "scripts": {"visit=1:setupRafts": OUTCOME.to_json(), "visit=2:setupRafts": {"state": "failed"}},
        "escalation": {"visit=1:calibrate": RaisedRequest(memory_mb=400, walltime_s=900).to_json()},
        "rerun": "failed",
        "dir_token": "0123456789abcdef0123456789abcdef",
    }
    assert trusted_bundle_state(saved, source="b") == saved
    assert trusted_script_outcome("o", OUTCOME.to_json()) == OUTCOME


@pytest.mark.parametrize(
    ("saved", "field"),
    [
        ({"scripts": ["visit=1:setupRafts"]}, r"scripts"),
        ({"scripts": {"s": "success"}}, r"scripts\['s'\]"),
        ({"scripts": {"s": {"state": 1}}}, r"scripts\['s'\]: state"),
        ({"scripts": {"s": {"state": "success", "feeds": {"t": "R22"}}}}, r"scripts\['s'\]: feeds"),
        ({"scripts": {"s": {"state": "success", "feeds": {"t": [{"a": 1}]}}}}, r"scripts\['s'\]: feeds"),
        ({"scripts": {"s": {"state": "success", "message": 3}}}, r"scripts\['s'\]: message"),
        ({"scripts": {"s": {"state": "success", "elapsed_s": "1"}}}, r"scripts\['s'\]: elapsed_s"),
        ({"scripts": {"s": {"state": "success", "command": "rm"}}}, r"scripts\['s'\]"),
        ({"escalation": {"i": {"memory_mb": "lots"}}}, r"escalation\['i'\]: memory_mb"),
        ({"escalation": {"i": {"memory_mb": -5}}}, r"escalation\['i'\]: memory_mb"),
        ({"escalation": {"i": {"walltime_s": 1.5}}}, r"escalation\['i'\]: walltime_s"),
        ({"escalation": {"i": None}}, r"escalation\['i'\]"),
        ({"escalation": {"i": {"cpus": 4}}}, r"escalation\['i'\]"),
        ({"escalation": "x"}, r"escalation"),
        ({"dir_token": "x; rm -rf ~"}, r"dir_token"),
        ({"dir_token": 12}, r"dir_token"),
    ],
)
def test_a_bad_bundle_state_is_refused_naming_the_field(saved: dict[str, Any], field: str) -> None:
    with pytest.raises(UntrustedState, match=rf"^task state store 'bundle': {field} = "):
        trusted_bundle_state(saved, source="task state store 'bundle'")


# --- streams and feeds from XCom ---


def test_streams_pass_as_copies() -> None:
    streams = [{"visit": 1, "raft": "R22", "dithered": True, "seeing": 0.7}]
    checked = trusted_streams("streams", streams)
    assert checked == streams and checked[0] is not streams[0]
    assert trusted_feeds("f", {"processRaft": ("R22",)}) == {"processRaft": ["R22"]}
    assert trusted_map_index("m", -1) == -1 and trusted_map_index("m", 3) == 3


@pytest.mark.parametrize(
    ("streams", "field"),
    [
        ({"visit": 1}, "streams"),
        ("visit=1", "streams"),
        ([["visit", 1]], r"streams\[0\]"),
        ([{"visit": 1}, {"visit": {"$ne": 1}}], r"streams\[1\]"),
        ([{"visit": None}], r"streams\[0\]"),
        ([{1: "x"}], r"streams\[0\]"),
    ],
)
def test_bad_streams_are_refused_naming_the_one_at_fault(streams: Any, field: str) -> None:
    with pytest.raises(UntrustedState, match=rf"^{field} = "):
        trusted_streams("streams", streams)


@pytest.mark.parametrize("value", [True, "3", -2, 1.0])
def test_a_bad_map_index_is_refused(value: Any) -> None:
    with pytest.raises(UntrustedState, match="a map index is an int"):
        trusted_map_index("map_index", value)


def test_a_stream_of_lists_is_refused() -> None:
    with pytest.raises(UntrustedState, match=r"^stream = \{'visit': \[1, 2\]\}"):
        trusted_stream("stream", {"visit": [1, 2]})


# --- trigger events ---


def _done_event(job_id: str = "900") -> dict[str, Any]:
    acct = group_accounting(parse_sacct(f"{job_id}|FAILED|1:0", ("JobID", "State", "ExitCode")))[job_id]
    return {"status": "done", **accounting_to_payload(acct)}


def test_an_honest_event_gives_its_accounting() -> None:
    event = _done_event()
    assert trusted_event_job_id(event) == "900"
    assert trusted_event_accounting(event).job_id == "900"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({**_done_event(), "job_id": "1; touch /tmp/x"}, "trigger event: job_id"),
        ({"status": "error", "message": "gone"}, "trigger event: job_id"),
        ("done", "trigger event"),
        ({**_done_event(), "rows": [{"JobID": 900}]}, "trigger event: rows"),
        ({**_done_event(), "rows": "900|FAILED"}, "trigger event: rows"),
    ],
)
def test_a_bad_event_is_refused(event: Any, field: str) -> None:
    with pytest.raises(UntrustedState, match=rf"^{re.escape(field)} = "):
        trusted_event_accounting(event)


# --- logs named by a record ---

TASK = "airflow-desc/dc1/run1/processSensor.bundle.0"


@pytest.mark.parametrize(
    ("recorded", "read"),
    [
        (f"{TASK}/t2-4711.out", f"{TASK}/t2-4711.out"),
        (f"{TASK}/t1-4711_3.out", f"{TASK}/t1-4711_3.out"),
        (f"/home/desc/{TASK}/logs/visit=1_raft=R22_processEimage.log",
         f"{TASK}/logs/visit=1_raft=R22_processEimage.log"),
        # only the name counts: the directory is always this task's own
        ("/etc/t1-1.out", f"{TASK}/t1-1.out"),
        ("/home/desc/other-task/logs/x.log", f"{TASK}/logs/x.log"),
        ("/etc/passwd", None),
        ("../../.ssh/id_ed25519", None),
        (f"{TASK}/logs/..log", None),
        (f"{TASK}/logs/.hidden.log", None),
        (f"{TASK}/records.jsonl", None),
        ("x.log\n", None),
        (None, None),
        (42, None),
    ],
)  # fmt: skip
def test_a_recorded_log_is_read_only_from_the_task_instances_own_directory(recorded: Any, read: Any) -> None:
    assert own_log_path(TASK, recorded) == read
