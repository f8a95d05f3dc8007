"""Process records: the DC1 state of each recorded outcome, validation, JSON, and the JSON-lines recorder."""

from __future__ import annotations

import json
import pathlib
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_desc.history import PROCESS_STATES, JsonLinesRecorder, ProcessRecord, process_state
from airflow_desc.slurm import (
    Diagnosis,
    JobAccounting,
    ReasonClass,
    accounting_to_payload,
    diagnose,
    group_accounting,
    parse_sacct,
)
from tests.site_recordings import site_jobs

DATA = pathlib.Path(__file__).parents[2] / "data"
SITE_CGROUP = site_jobs("sacct-mixed-cgroup.txt")
SITE_LINUXPROC = site_jobs("sacct-mixed-linuxproc.txt")
# Site-shaped, for the states the site recordings lack.
FIXTURE = group_accounting(parse_sacct((DATA / "slurm" / "sacct_mixed.txt").read_text()))
JOB_UID = 1001  # the site user that submitted (and cancelled) the recorded jobs


@pytest.mark.parametrize(
    ("acct", "job_uid", "state", "reason"),
    [
        (SITE_CGROUP["5000026"], JOB_UID, "success", ReasonClass.SUCCESS),
        (SITE_CGROUP["5000028"], JOB_UID, "failed", ReasonClass.NON_ZERO_EXIT),  # FAILED 3:0
        (SITE_LINUXPROC["5000023"], JOB_UID, "failed", ReasonClass.NON_ZERO_EXIT),
        (SITE_CGROUP["5000027"], JOB_UID, "terminated", ReasonClass.OUT_OF_MEMORY),  # OUT_OF_MEMORY
        # FAILED 0:9 with the batch step CANCELLED by 0: SLURM's over-memory kill, not the user.
        (SITE_LINUXPROC["5000022"], JOB_UID, "terminated", ReasonClass.OUT_OF_MEMORY),
        (SITE_LINUXPROC["5000022"], 0, "terminated", ReasonClass.OUT_OF_MEMORY),
        (FIXTURE["5000103"], JOB_UID, "terminated", ReasonClass.TIME_LIMIT),  # TIMEOUT
        (FIXTURE["5000111"], JOB_UID, "terminated", ReasonClass.NODE_FAILURE),
        (FIXTURE["5000112"], JOB_UID, "terminated", ReasonClass.PREEMPTED),
        # CANCELLED by 1001: by the job's own user, or by someone else.
        (SITE_CGROUP["5000029"], JOB_UID, "cancelled", ReasonClass.CANCELLED_BY_USER),
        (SITE_LINUXPROC["5000024"], JOB_UID, "cancelled", ReasonClass.CANCELLED_BY_USER),
        (SITE_CGROUP["5000029"], 1000, "terminated", ReasonClass.CANCELLED_BY_USER),
        (SITE_CGROUP["5000029"], 0, "terminated", ReasonClass.CANCELLED_BY_USER),
        (SITE_CGROUP["5000029"], None, "terminated", ReasonClass.CANCELLED_BY_USER),
        (FIXTURE["5000106"], 1000, "cancelled", ReasonClass.CANCELLED_BY_USER),  # CANCELLED by 1000
    ],
    ids=lambda v: v.job_id if isinstance(v, JobAccounting) else str(v),
)
def test_process_state_of_each_recorded_outcome(
    acct: JobAccounting, job_uid: int | None, state: str, reason: ReasonClass
) -> None:
    diagnosis = diagnose(acct)
    assert diagnosis.reason is reason
    assert process_state(acct, diagnosis, job_uid=job_uid) == state


def test_a_failed_output_check_fails_a_completed_job() -> None:
    acct = SITE_CGROUP["5000026"]
    check = Diagnosis(ReasonClass.OUTPUT_CHECK, "job 5000026 wrote no calexp.fits")
    assert process_state(acct, check) == "failed"
    assert process_state(acct, diagnose(acct)) == "success"


# --- ProcessRecord ---


def record(**overrides: Any) -> ProcessRecord:
    values: dict[str, Any] = {
        "workflow": "DC1-DM12",
        "process": "processEimage",
        "state": "success",
        "dag_id": "dc1",
        "run_id": "manual__2026-11-28T01:00:00+00:00",
        "task_id": "group.processEimage",
        "stream": "visit=2201/raft=R22/sensor=S11",
    }
    values.update(overrides)
    return ProcessRecord(**values)


@pytest.mark.parametrize("state", PROCESS_STATES)
def test_every_process_state_is_accepted(state: str) -> None:
    assert record(state=state).state == state


@pytest.mark.parametrize("state", ["succeeded", "COMPLETED", "", "Success"])
def test_an_unknown_state_is_refused(state: str) -> None:
    with pytest.raises(ValueError, match=f"state {state!r} is not one of waiting, ready"):
        record(state=state)


def test_a_record_of_a_real_job_survives_json() -> None:
    acct = SITE_LINUXPROC["5000022"]
    diagnosis = diagnose(acct)
    job = acct.job
    original = record(
        state=process_state(acct, diagnosis),
        job_id=acct.job_id,
        cluster=acct.cluster,
        slurm_state=acct.state.raw,
        exit_code=acct.exit_code,
        signal=acct.signal,
        reason=str(diagnosis.reason),
        message=diagnosis.message,
        submit_time=job.submit,  # naive, in the cluster's local time, as sacct prints it
        start_time=job.start,
        end_time=datetime(2026, 11, 28, 1, 44, tzinfo=timezone(timedelta(hours=-8))),
        elapsed_s=acct.elapsed_s,
        max_rss_bytes=acct.max_rss_bytes,
        req_mem_bytes=acct.req_mem_bytes,
        node=acct.node_list,
        extra={"accounting": accounting_to_payload(acct)["rows"]},
    )
    data = original.to_json()
    assert data["submit_time"] == "2026-11-28T01:43:45"
    assert data["end_time"] == "2026-11-28T01:44:00-08:00"
    rebuilt = ProcessRecord.from_json(json.loads(json.dumps(data)))
    assert rebuilt == original
    assert rebuilt.end_time.utcoffset() == timedelta(hours=-8)
    assert rebuilt.submit_time.tzinfo is None
    assert (rebuilt.state, rebuilt.reason, rebuilt.max_rss_bytes) == (
        "terminated",
        "out-of-memory",
        429588480,
    )


def test_from_json_refuses_unknown_fields() -> None:
    data = {**record().to_json(), "colour": "blue"}
    with pytest.raises(ValueError, match="unknown record fields: colour"):
        ProcessRecord.from_json(data)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"try_number": "2"}, "field try_number: expected int, got str '2'"),
        ({"map_index": 1.5}, "field map_index: expected int, got float 1.5"),
        ({"exit_code": True}, "field exit_code: expected int or null, got bool True"),
        ({"elapsed_s": "12.5"}, "field elapsed_s: expected int or float or null, got str '12.5'"),
        ({"cluster": 5}, "field cluster: expected str or null, got int 5"),
        ({"process": None}, "field process: expected str, got NoneType None"),
        ({"extra": ["a"]}, "field extra: expected dict, got list ['a']"),
        ({"start_time": 1764300000}, "field start_time: expected datetime or null, got int 1764300000"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_from_json_checks_each_field_type(changes: dict[str, Any], message: str) -> None:
    data = {**record().to_json(), **changes}
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        ProcessRecord.from_json(data)
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        record(**changes).check_types()  # the dataclass itself takes anything


def test_from_json_takes_whole_numbers_for_floats_and_null_for_optional_fields() -> None:
    data = {**record().to_json(), "elapsed_s": 12, "req_walltime_s": 3600, "exit_code": None}
    rebuilt = ProcessRecord.from_json(data)
    assert (rebuilt.elapsed_s, rebuilt.req_walltime_s, rebuilt.exit_code) == (12, 3600, None)


@pytest.mark.parametrize("data", [[1, 2], "text", 42, None], ids=["list", "string", "number", "null"])
def test_from_json_refuses_what_is_not_an_object(data: Any) -> None:
    with pytest.raises(TypeError, match="^a JSON .* not an object$"):
        ProcessRecord.from_json(data)


def test_key_is_the_attempt() -> None:
    assert record(state="failed").key() == record(state="success", message="x").key()
    assert record(try_number=1).key() != record(try_number=2).key()
    assert record(map_index=1).key() != record(map_index=2).key()
    assert record(stream="a").key() != record(stream="b").key()


# --- JsonLinesRecorder ---


def test_recorder_appends_and_the_last_write_of_a_key_wins(tmp_path: pathlib.Path) -> None:
    recorder = JsonLinesRecorder(tmp_path / "desc" / "history.jsonl")
    first, second = record(try_number=1, state="running"), record(try_number=2, state="running")
    recorder.record([first, second])
    recorder.record([record(try_number=1, state="terminated", reason="time-limit")])
    lines = recorder.path.read_text().splitlines()
    assert len(lines) == 3  # appended, never rewritten
    assert all(json.loads(line)["workflow"] == "DC1-DM12" for line in lines)
    found = {r.try_number: r for r in recorder.read()}
    assert set(found) == {1, 2}
    assert (found[1].state, found[1].reason) == ("terminated", "time-limit")
    assert found[2] == second


def test_reading_a_missing_file_gives_nothing(tmp_path: pathlib.Path) -> None:
    recorder = JsonLinesRecorder(tmp_path / "none.jsonl")
    recorder.record([])
    assert not recorder.path.exists()
    assert recorder.read() == []


def test_blank_lines_are_skipped(tmp_path: pathlib.Path) -> None:
    recorder = JsonLinesRecorder(tmp_path / "h.jsonl")
    recorder.record([record()])
    with open(recorder.path, "a", encoding="utf-8") as f:
        f.write("\n   \n")
    recorder.record([record(try_number=2)])
    assert len(recorder.read()) == 2


@pytest.mark.parametrize(
    "bad_line",
    [
        '{"workflow": "DC1-DM12", "process": "p"',  # cut short by a crash
        "[1, 2]",
        "null",
        '{"workflow": "w", "process": "p", "state": "bogus"}',
        '{"workflow": "w", "process": "p", "state": "success", "start_time": "yesterday"}',
        "{}",
        '{"workflow": "w", "process": "p", "state": "success", "try_number": "2"}',
    ],
    ids=["truncated", "list", "null", "bad-state", "bad-time", "empty", "bad-type"],
)
def test_a_corrupt_line_is_named_by_file_and_line(tmp_path: pathlib.Path, bad_line: str) -> None:
    recorder = JsonLinesRecorder(tmp_path / "h.jsonl")
    recorder.record([record(try_number=1), record(try_number=2)])
    with open(recorder.path, "a", encoding="utf-8") as f:
        f.write(bad_line + "\n")
    with pytest.raises(ValueError, match="^" + re.escape(f"{recorder.path}:3: not a process record")):
        recorder.read()
