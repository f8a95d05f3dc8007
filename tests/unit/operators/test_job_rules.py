"""SlurmOperator's state rules: only its own job is re-attached, an owner's cancel is Cancelled and
not retried, a clear's cancel of an earlier try's job reruns at once, a node failure resubmits within
the try (excluding the node only when another can run the job), a drained node is said plainly.

The hook records the commands the operator would run (see ``test_untrusted_reads``); SLURM's answers
are sacct / sinfo text as the local site prints it.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_desc.exceptions import SlurmJobFailed
from airflow_desc.operators.job_names import job_name_for
from airflow_desc.operators.resume import NODE_FAILURE_RESUBMITS
from airflow_desc.operators.slurm import SlurmOperator
from airflow_desc.slurm import (
    JobAccounting,
    SubmittedJob,
    accounting_to_payload,
    group_accounting,
    parse_sacct,
)
from airflow_desc.slurm.nodes import parse_sinfo_nodes
from airflow_desc.slurm.ownership import parse_owners
from tests.site_recordings import SITE
from tests.unit.operators.test_untrusted_reads import (
    HONEST,
    TASK_DIR,
    ListRecorder,
    RecordingHook,
    context,
)
from tests.unit.operators.test_untrusted_reads import SITE as CLUSTERS_FILE

FIELDS = ("JobID", "JobName", "State", "ExitCode", "NodeList")
TRY1 = job_name_for("d", "r", "group.processEimage", 0, 1)
TRY2 = job_name_for("d", "r", "group.processEimage", 0, 2)


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> RecordingHook:
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(CLUSTERS_FILE))
    recording = RecordingHook()
    monkeypatch.setattr(SlurmOperator, "_hook", lambda self, profile: recording)
    return recording


def job(line: str) -> JobAccounting:
    [acct] = group_accounting(parse_sacct(line, FIELDS)).values()
    return acct


def event(acct: JobAccounting) -> dict[str, Any]:
    return {"status": "done", **accounting_to_payload(acct)}


def operator() -> SlurmOperator:
    return SlurmOperator(
        task_id="group.processEimage", command="true", cluster="perlmutter", recorder=ListRecorder()
    )


def submits_as(recording: RecordingHook, *job_ids: str) -> list[dict[str, Any]]:
    """Let sbatch answer with these ids, in order; return what was submitted."""
    submitted: list[dict[str, Any]] = []
    ids = list(job_ids)

    def submit(script: str, **kwargs: Any) -> SubmittedJob:
        submitted.append({"script": script, **kwargs})
        return SubmittedJob(job_id=ids.pop(0), cluster=None)

    recording.submit = submit  # type: ignore[method-assign]
    return submitted


def records(op: SlurmOperator) -> list[Any]:
    assert isinstance(op.recorder, ListRecorder)
    return op.recorder.records


# --- re-attach only our own job ---


def test_a_reused_job_id_is_not_re_attached(hook: RecordingHook) -> None:
    # slurmctld lost its state and gave job id 900 to another task's job, now running.
    hook.owners = lambda ids: parse_owners("900|job.d7a7edb06df0.t1|1001|2026-12-06T05:27:36")  # type: ignore[method-assign]
    hook.sacct = lambda ids: {"900": job("900|job.d7a7edb06df0.t1|RUNNING|0:0|pm-n1")}  # type: ignore[method-assign]
    submitted = submits_as(hook, "901")
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(context(slurm=HONEST))
    assert deferred.value.trigger.job_id == "901"
    assert [s["job_name"] for s in submitted] == [TRY2]


def test_an_older_job_of_our_name_is_not_re_attached(hook: RecordingHook) -> None:
    # Our record says try 1 started submitting at 06:00; a job of that name submitted at 05:00 is older.
    state = {**HONEST, "submit_after": "2026-12-06T06:00:00+00:00"}
    hook.owners = lambda ids: parse_owners(f"900|{TRY1}|1001|2026-12-06T05:00:00")  # type: ignore[method-assign]
    hook.sacct = lambda ids: {"900": job(f"900|{TRY1}|RUNNING|0:0|pm-n1")}  # type: ignore[method-assign]
    submits_as(hook, "901")
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(context(slurm=state))
    assert deferred.value.trigger.job_id == "901"


def test_our_own_running_job_is_re_attached(hook: RecordingHook) -> None:
    state = {**HONEST, "submit_after": "2026-12-06T05:27:35+00:00"}
    hook.owners = lambda ids: parse_owners(f"900|{TRY1}|1001|2026-12-06T05:27:36")  # type: ignore[method-assign]
    hook.sacct = lambda ids: {"900": job(f"900|{TRY1}|RUNNING|0:0|pm-n1")}  # type: ignore[method-assign]
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(context(slurm=state))
    assert deferred.value.trigger.job_id == "900"
    assert "submit" not in [name for name, _ in hook.calls]


# --- Cancelled (the owner's cancel) vs Terminated (anyone else's) ---

THIS_TRY = {
    **HONEST,
    "try_number": 2,
    "log_path": f"{TASK_DIR}/t2-900.out",
    "log_pattern": f"{TASK_DIR}/t2-%j.out",
}


def test_the_owners_cancel_is_cancelled_and_not_retried(hook: RecordingHook) -> None:
    fields = ("JobID", "JobName", "State", "ExitCode", "NodeList")
    text = (SITE / "cancelled-by-owner-sacct.txt").read_text().replace("2763", "900")
    acct = group_accounting(
        parse_sacct("\n".join(ln for ln in text.splitlines() if not ln.startswith("#")), fields)
    )
    hook.owners = lambda ids: parse_owners(f"900|{TRY2}|1001|2026-12-06T05:13:37")  # type: ignore[method-assign]
    hook.nodes = lambda **kw: parse_sinfo_nodes("pm-n1|regular*|idle|none\n")  # type: ignore[method-assign]
    op = operator()
    with pytest.raises(AirflowFailException, match="recorded Cancelled and not retried"):
        op.execute_complete(context(slurm=THIS_TRY), event(acct["900"]))
    [record] = records(op)
    assert (record.state, record.try_number) == ("cancelled", 2)


def test_roots_cancel_is_terminated_and_retried(hook: RecordingHook) -> None:
    hook.owners = lambda ids: parse_owners(f"900|{TRY2}|1001|2026-12-06T05:13:37")  # type: ignore[method-assign]
    hook.nodes = lambda **kw: parse_sinfo_nodes("pm-n1|regular*|idle|none\n")  # type: ignore[method-assign]
    op = operator()
    with pytest.raises(SlurmJobFailed):
        op.execute_complete(context(slurm=THIS_TRY), event(job(f"900|{TRY2}|CANCELLED by 0|0:15|pm-n1")))
    [record] = records(op)
    assert record.state == "terminated"


def test_a_clears_cancel_of_an_earlier_tries_job_reruns_at_once(hook: RecordingHook) -> None:
    # Try 2 re-attached to try 1's job 900 just before the clear's scancel ended it.
    hook.owners = lambda ids: parse_owners(f"900|{TRY1}|1001|2026-12-06T05:13:37")  # type: ignore[method-assign]
    hook.nodes = lambda **kw: parse_sinfo_nodes("pm-n1|regular*|idle|none\n")  # type: ignore[method-assign]
    submitted = submits_as(hook, "901")
    op = operator()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute_complete(context(slurm=HONEST), event(job(f"900|{TRY1}|CANCELLED by 1001|0:0|pm-n1")))
    assert deferred.value.trigger.job_id == "901"
    assert [s["job_name"] for s in submitted] == [TRY2]
    [record] = records(op)
    assert (record.state, record.try_number, record.job_id) == ("cancelled", 1, "900")


# --- NODE_FAIL: resubmitted within the try; the node excluded only when another can run the job ---


def node_fail(
    recording: RecordingHook, sinfo: str
) -> tuple[SlurmOperator, dict[str, Any], list[dict[str, Any]]]:
    recording.nodes = lambda **kw: parse_sinfo_nodes(sinfo)  # type: ignore[method-assign]
    submitted = submits_as(recording, "901", "902", "903")
    op, ctx = operator(), context(slurm=THIS_TRY)
    return op, ctx, submitted


def test_a_node_failure_resubmits_on_the_other_node_without_spending_a_retry(hook: RecordingHook) -> None:
    op, ctx, submitted = node_fail(hook, "pm-n1|regular*|down|test\npm-n2|regular*|idle|none\n")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute_complete(ctx, event(job(f"900|{TRY2}|NODE_FAIL|0:0|pm-n1")))
    assert deferred.value.trigger.job_id == "901"
    assert "#SBATCH --exclude=pm-n1" in submitted[0]["script"]
    [record] = records(op)
    assert (record.state, record.reason, record.try_number) == ("terminated", "node-failure", 2)
    # The task log and the record say the node is down, why, and what an admin does.
    assert "Node pm-n1 of perlmutter is DOWN (SLURM's reason: test)" in (record.message or "")
    assert "scontrol update nodename=pm-n1 state=resume" in (record.message or "")


def test_a_node_failure_on_the_only_usable_node_excludes_nothing(hook: RecordingHook) -> None:
    op, ctx, submitted = node_fail(hook, "pm-n1|regular*|idle|none\n")
    with pytest.raises(TaskDeferred):
        op.execute_complete(ctx, event(job(f"900|{TRY2}|NODE_FAIL|0:0|pm-n1")))
    assert "--exclude" not in submitted[0]["script"]


def test_node_failures_spend_a_retry_only_after_the_resubmissions(hook: RecordingHook) -> None:
    op, ctx, submitted = node_fail(hook, "pm-n1|regular*|idle|none\npm-n2|regular*|idle|none\n")
    job_id = "900"
    for _ in range(NODE_FAILURE_RESUBMITS):
        with pytest.raises(TaskDeferred) as deferred:
            op.execute_complete(ctx, event(job(f"{job_id}|{TRY2}|NODE_FAIL|0:0|pm-n1")))
        job_id = deferred.value.trigger.job_id
    with pytest.raises(SlurmJobFailed):
        op.execute_complete(ctx, event(job(f"{job_id}|{TRY2}|NODE_FAIL|0:0|pm-n1")))
    assert len(submitted) == NODE_FAILURE_RESUBMITS
    # Each SLURM job of the try is an attempt of its own (resubmit 0, 1, 2), all Terminated /
    # NODE_FAIL; the last one names the try's earlier failed jobs.
    recorded = records(op)
    assert [(r.try_number, r.resubmit, r.job_id, r.state, r.slurm_state) for r in recorded] == [
        (2, i, f"{900 + i}", "terminated", "NODE_FAIL") for i in range(NODE_FAILURE_RESUBMITS + 1)
    ]
    assert len({r.key() for r in recorded}) == len(recorded)  # none overwrites another
    assert [f["job_id"] for f in recorded[-1].extra["node_failures"]] == ["900", "901"]


def test_a_vanished_job_says_its_drained_node_plainly(hook: RecordingHook) -> None:
    # slurmctld lost its state: the job is gone, and the node is drained for a "Duplicate jobid".
    hook.nodes = lambda **kw: parse_sinfo_nodes(  # type: ignore[method-assign]
        "pm-n1|regular*|drained|Duplicate jobid\npm-n2|regular*|idle|none\n"
    )
    vanished = {"status": "error", "job_id": "900", "message": "job 900 vanished: neither sacct nor squeue"}
    with pytest.raises(SlurmJobFailed) as caught:
        operator().execute_complete(context(slurm=THIS_TRY), vanished)
    message = str(caught.value)
    assert message.startswith("job 900 vanished")
    assert "Node pm-n1 of perlmutter is DRAINED (SLURM's reason: Duplicate jobid)" in message
    assert "'scontrol update nodename=pm-n1 state=resume'" in message
    assert "pm-n2" not in message


# --- a job whose accounting was purged, settled by the trigger from the controller's answer ---


@pytest.mark.parametrize(("job_id", "state"), [("3268", "success"), ("3269", "failed")])
def test_a_job_settled_from_the_controller_is_recorded_with_its_state(
    hook: RecordingHook, job_id: str, state: str
) -> None:
    from airflow_desc.slurm import CONTROLLER_NOTE, parse_scontrol_jobs

    controller = parse_scontrol_jobs((SITE / "scontrol-ended.txt").read_text())[job_id]
    # What SlurmJobTrigger fires for it (tests/unit/triggers/test_slurm.py checks that).
    done = {"status": "done", **accounting_to_payload(controller.to_accounting()), "source": "controller"}
    saved = {**THIS_TRY, "job_id": job_id, "log_path": f"{TASK_DIR}/t2-{job_id}.out"}
    hook.nodes = lambda **kw: parse_sinfo_nodes("pm-n1|regular*|idle|none\n")  # type: ignore[method-assign]
    op = operator()
    if state == "success":
        summary = op.execute_complete(context(slurm=saved), {**done, "message": "not ours to repeat"})
        assert (summary["state"], summary["slurm_state"], summary["exit_code"]) == ("success", "COMPLETED", 0)
    else:
        with pytest.raises(SlurmJobFailed, match="exit"):
            op.execute_complete(context(slurm=saved), done)
    [record] = records(op)
    assert (record.state, record.job_id, record.try_number) == (state, job_id, 2)
    assert CONTROLLER_NOTE in record.message and "not ours" not in record.message
    assert record.node == "pm-n1" and record.max_rss_bytes is None
