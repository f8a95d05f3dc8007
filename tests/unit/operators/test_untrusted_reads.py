"""Hostile saved states: the try fails with a message naming the field, and no command runs.

The task state store and XCom can be written through Airflow's REST API. Each test writes there
what airflow-desc never would and runs the operator against a hook that records every call: the
assertion is on the error raised and on the hook never having been called.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_desc.exceptions import SlurmJobFailed
from airflow_desc.operators.bundle import SlurmBundleOperator
from airflow_desc.operators.job_names import job_name_for
from airflow_desc.operators.slurm import SlurmOperator
from airflow_desc.operators.workflow import WorkflowBatchOperator, WorkflowScriptOperator
from airflow_desc.sensors.slurm import SlurmJobSensor
from airflow_desc.slurm import accounting_to_payload, group_accounting, parse_sacct
from airflow_desc.slurm.maintenance import ClusterAvailability
from airflow_desc.slurm.ownership import parse_owners

SITE = pathlib.Path(__file__).parents[2] / "data" / "clusters" / "site.yaml"
# This task instance's directory on perlmutter of the site (work_dir airflow-desc).
TASK_DIR = "airflow-desc/d/r/group.processEimage.0"


class Store:
    def __init__(self, **values: Any) -> None:
        self.values = dict(values)

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any, retention: Any = None) -> None:
        self.values[key] = json.loads(json.dumps(value))


class TI:
    dag_id, run_id, task_id, map_index, try_number = "d", "r", "group.processEimage", 0, 2

    def __init__(self, xcom: dict[str, Any] | None = None) -> None:
        self.xcom, self.pushed = xcom or {}, {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get(key)


class RecordingHook:
    """A hook that only records: any call of it is a command that should not have run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args))
            if name == "read_tail":
                return "the tail\n"
            if name == "availability":  # no reservation, no partition known: nothing holds a submission
                return ClusterAvailability()
            if name in ("sacct", "owners", "squeue", "own_queue", "find_jobs_by_name"):
                return {} if name in ("sacct", "owners") else []
            raise AssertionError(f"unexpected hook call {name}{args}")

        return call


class ListRecorder:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def record(self, records: Any) -> None:
        self.records.extend(records)


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> RecordingHook:
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(SITE))
    recording = RecordingHook()
    monkeypatch.setattr(SlurmOperator, "_hook", lambda self, profile: recording)
    monkeypatch.setattr(SlurmJobSensor, "_setup", lambda self: (None, recording))
    return recording


def context(slurm: Any = None, bundle: Any = None, xcom: dict[str, Any] | None = None) -> Any:
    values = {k: v for k, v in (("slurm", slurm), ("bundle", bundle)) if v is not None}
    return {"ti": TI(xcom), "task_state_store": Store(**values), "dag_run": None, "params": {}}


def operator() -> SlurmOperator:
    return SlurmOperator(
        task_id="group.processEimage", command="true", cluster="perlmutter", recorder=ListRecorder()
    )


def done_event(job_id: str = "900", state: str = "FAILED", exit_code: str = "1:0") -> dict[str, Any]:
    acct = group_accounting(parse_sacct(f"{job_id}|{state}|{exit_code}", ("JobID", "State", "ExitCode")))
    return {"status": "done", **accounting_to_payload(acct[job_id])}


HONEST = {"job_id": "900", "try_number": 1, "log_pattern": f"{TASK_DIR}/t1-%j.out",
          "log_path": f"{TASK_DIR}/t1-900.out"}  # fmt: skip


# --- SlurmOperator ---


@pytest.mark.parametrize(
    ("state", "named"),
    [
        ({"job_id": "1; touch /tmp/x"}, "task state store 'slurm': job_id = '1; touch /tmp/x'"),
        ({"recorded": ["1 && reboot"]}, "task state store 'slurm': recorded = '1 && reboot'"),
        ({"job_id": 900}, "task state store 'slurm': job_id = 900"),
        (
            {"node_failures": [{"try": 1, "job_id": "1;id", "message": ""}]},
            "task state store 'slurm': node_failures: job_id = '1;id'",
        ),
        ({"node_failures": "many"}, "task state store 'slurm': node_failures = 'many'"),
        ({"submit_after": 0}, "task state store 'slurm': submit_after = 0"),
    ],
)
def test_a_hostile_job_id_fails_the_try_before_any_command(
    hook: RecordingHook, state: dict[str, Any], named: str
) -> None:
    with pytest.raises(AirflowFailException, match=named) as caught:
        operator().execute(context(slurm=state))
    assert "nothing was run with it" in str(caught.value)
    assert hook.calls == []


@pytest.mark.parametrize(
    "log_path",
    [
        "../../etc/passwd",
        "~/other/task/dir/x.log",
        "/etc/passwd",
        f"{TASK_DIR}/t1-900.out\0",
        f"{TASK_DIR}/t1-900.out\n/etc/passwd",
        f"{TASK_DIR}/../../../../.ssh/id_rsa",
    ],
)
def test_a_hostile_log_path_is_never_read(hook: RecordingHook, log_path: str) -> None:
    ctx = context(slurm={**HONEST, "log_path": log_path})
    with pytest.raises(AirflowFailException, match=r"task state store 'slurm': log_path = "):
        operator().execute_complete(ctx, done_event())
    with pytest.raises(AirflowFailException, match=r"task state store 'slurm': log_path = "):
        operator().execute(ctx)
    assert hook.calls == []


def test_a_hostile_log_pattern_is_never_read(hook: RecordingHook) -> None:
    # A job finished under another id than the saved one: its log is guessed from the pattern.
    ctx = context(slurm={**HONEST, "log_pattern": "~/other/task/dir/%j.log"})
    with pytest.raises(AirflowFailException, match=r"'slurm': log_pattern = '~/other/task/dir/%j.log'"):
        operator().execute_complete(ctx, done_event("901"))
    assert hook.calls == []


@pytest.mark.parametrize(
    ("event", "named"),
    [
        ({**done_event(), "job_id": "1; touch /tmp/x"}, "trigger event: job_id = '1; touch /tmp/x'"),
        ({"status": "error", "job_id": "../x", "message": "vanished"}, "trigger event: job_id = '../x'"),
        ({**done_event(), "rows": [{"JobID": ["900"]}]}, "trigger event: rows = "),
    ],
)
def test_a_hostile_trigger_event_fails_the_try(hook: RecordingHook, event: Any, named: str) -> None:
    with pytest.raises(AirflowFailException, match=named):
        operator().execute_complete(context(slurm=HONEST), event)
    with pytest.raises(AirflowFailException, match=named):
        SlurmJobSensor(task_id="s", job_id="900").execute_complete(context(), event)
    assert hook.calls == []


def test_an_honest_state_reads_its_log_as_before(hook: RecordingHook) -> None:
    ctx = context(slurm=HONEST)
    with pytest.raises(SlurmJobFailed) as caught:
        operator().execute_complete(ctx, done_event())
    assert hook.calls == [("read_tail", (f"{TASK_DIR}/t1-900.out",))]
    assert caught.value.log_tail == "the tail\n"
    # The summary pushed and the state saved keep the path: the next read accepts them.
    assert ctx["ti"].pushed["slurm_summary"]["log_path"] == f"{TASK_DIR}/t1-900.out"
    assert ctx["task_state_store"].values["slurm"]["recorded"] == ["900"]


def test_an_honest_event_of_another_job_guesses_its_log_from_the_pattern(hook: RecordingHook) -> None:
    with pytest.raises(SlurmJobFailed):
        operator().execute_complete(context(slurm=HONEST), done_event("901"))
    assert hook.calls == [("read_tail", (f"{TASK_DIR}/t1-901.out",))]


# --- SlurmBundleOperator ---


def bundle_operator(**kwargs: Any) -> SlurmBundleOperator:
    return SlurmBundleOperator(
        task_id="group.processEimage", workflow_key="w", variant=None, bundle_task="T",
        cluster="perlmutter", **{"streams": [{"visit": 1}], **kwargs},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("saved", "named"),
    [
        ({"scripts": {"visit=1:setup": {"state": "success", "feeds": "R22"}}},
         r"'bundle': scripts\['visit=1:setup'\]: feeds = 'R22'"),
        ({"scripts": {"visit=1:setup": ["success"]}},
         r"'bundle': scripts\['visit=1:setup'\] = \['success'\]"),
        ({"escalation": {"visit=1:calibrate": {"memory_mb": "lots"}}},
         r"'bundle': escalation\['visit=1:calibrate'\]: memory_mb = 'lots'"),
        ({"escalation": {"visit=1:calibrate": {"walltime_s": -60}}},
         r"'bundle': escalation\['visit=1:calibrate'\]: walltime_s = -60"),
    ],
)  # fmt: skip
def test_a_hostile_bundle_state_fails_the_try_before_any_command(
    hook: RecordingHook, saved: dict[str, Any], named: str
) -> None:
    with pytest.raises(AirflowFailException, match=named):
        bundle_operator().execute(context(slurm=HONEST, bundle=saved))
    with pytest.raises(AirflowFailException, match=named):
        bundle_operator().execute_complete(context(slurm=HONEST, bundle=saved), done_event())
    assert hook.calls == []


def test_a_hostile_bundle_state_in_xcom_is_refused_too(hook: RecordingHook) -> None:
    ctx = context(slurm=HONEST, xcom={"bundle_state": {"scripts": {"s": {"state": 7}}}})
    with pytest.raises(AirflowFailException, match=r"XCom 'bundle_state': scripts\['s'\]: state = 7"):
        bundle_operator().execute(ctx)
    assert hook.calls == []


def test_a_hostile_log_path_is_never_read_by_the_bundle(hook: RecordingHook) -> None:
    ctx = context(slurm={**HONEST, "log_path": "~/other/task/dir/x.log"}, bundle={})
    with pytest.raises(AirflowFailException, match=r"'slurm': log_path = '~/other/task/dir/x.log'"):
        bundle_operator().execute_complete(ctx, done_event())
    assert hook.calls == []


@pytest.mark.parametrize(
    ("streams", "named"),
    [
        ([["visit", 1]], r"streams\[0\] = \['visit', 1\]"),
        ([{"visit": 1}, {"visit": {"$(reboot)": 1}}], r"streams\[1\] = "),
        ("visit=1", r"streams = 'visit=1'"),
    ],
)
def test_hostile_streams_from_xcom_fail_the_try(hook: RecordingHook, streams: Any, named: str) -> None:
    with pytest.raises(AirflowFailException, match=named):
        bundle_operator(streams=streams)
    assert hook.calls == []


def test_a_hostile_stream_of_a_batch_or_script_process_fails_the_try() -> None:
    common = {"task_id": "p", "workflow_key": "w", "variant": None, "process_path": "T/p"}
    with pytest.raises(AirflowFailException, match=r"stream = \{'visit': \[1\]\}"):
        WorkflowBatchOperator(stream={"visit": [1]}, **common)
    with pytest.raises(AirflowFailException, match=r"stream = \['visit'\]"):
        WorkflowScriptOperator(stream=["visit"], **common)  # type: ignore[arg-type]


def test_an_honest_job_of_an_earlier_try_is_still_adopted(hook: RecordingHook) -> None:
    # The worker died after job 900 of try 1 succeeded: try 2 adopts it from the saved state.
    [acct] = group_accounting(parse_sacct("900|COMPLETED|0:0", ("JobID", "State", "ExitCode"))).values()
    hook.sacct = lambda ids: {"900": acct} if "900" in ids else {}  # type: ignore[method-assign]
    ctx = context(slurm=HONEST)
    name = job_name_for("d", "r", "group.processEimage", 0, 1)
    hook.owners = lambda ids: parse_owners(f"900|{name}|1000|2026-12-06T05:00:00")  # type: ignore[method-assign]
    summary = operator().execute(ctx)
    assert summary["adopted"] and summary["job_id"] == "900"
    assert summary["log_path"] == f"{TASK_DIR}/t1-900.out"
    # tries 1, 2 by name; squeue: a live job's name from the controller wins over accounting; then
    # its log's end (read on success too: the task log, the history, the job script's own timing of
    # the payload), from the trusted path
    calls = [name for name, _ in hook.calls]
    assert calls == ["find_jobs_by_name", "find_jobs_by_name", "squeue", "read_tail"]
    assert hook.calls[-1] == ("read_tail", (f"{TASK_DIR}/t1-900.out",))


def test_a_success_whose_log_cannot_be_read_is_still_recorded_a_failure_is_not(
    hook: RecordingHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_desc.exceptions import ClusterUnreachable

    def unreachable(path: str, **_: Any) -> str:
        raise ClusterUnreachable("perlmutter: connection lost")

    monkeypatch.setattr(hook, "read_tail", unreachable, raising=False)
    op = operator()
    summary = op.execute_complete(context(slurm=HONEST), done_event(state="COMPLETED", exit_code="0:0"))
    assert summary["state"] == "success"
    [record] = op.recorder.records  # type: ignore[union-attr]
    assert record.state == "success" and record.log_tail is None
    with pytest.raises(ClusterUnreachable):  # the diagnosis needs it: the try fails, a retry adopts the job
        operator().execute_complete(context(slurm=HONEST), done_event())
