"""SlurmJobTrigger serialization, the event payload of a job's accounting, and the poller's verdicts.

The poller's verdicts are tested on hand-built watches judged at chosen monotonic times,
with the accounting of real sacct outputs (tests/data/site, and the site-shaped fixture of
tests/data/slurm for a RUNNING job). No SSH: :meth:`ClusterPoller._judge` is the pure part.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import pathlib
from typing import Any

import pytest

from airflow_desc.slurm import (
    CONTROLLER_NOTE,
    ControllerJob,
    JobAccounting,
    SlurmState,
    accounting_from_payload,
    accounting_to_payload,
    group_accounting,
    parse_sacct,
    parse_scontrol_jobs,
)
from airflow_desc.triggers.slurm import ClusterPoller, SlurmJobTrigger, _Watch
from tests.site_recordings import SITE, site_jobs

DATA = pathlib.Path(__file__).parents[2] / "data"

SACCT_FILES = sorted(p.name for p in SITE.glob("sacct-*.txt"))
PLACEHOLDER = site_jobs("sacct-placeholder-allocation.txt")["5000031"]
COMPLETED = site_jobs("sacct-mixed-cgroup.txt")["5000026"]
FAILED = site_jobs("sacct-mixed-cgroup.txt")["5000028"]
PENDING = site_jobs("sacct-pending.txt")["5000029"]
# Recorded from the site's controller (scontrol -o show job), see tests/data/site/record.sh.
CONTROLLER_ENDED = parse_scontrol_jobs((SITE / "scontrol-ended.txt").read_text())
CONTROLLER_LIVE = parse_scontrol_jobs((SITE / "scontrol-live.txt").read_text())
RUNNING = group_accounting(parse_sacct((DATA / "slurm" / "sacct_mixed.txt").read_text()))["5000108"]


# --- serialize ---


@pytest.mark.parametrize(
    "kwargs",
    [
        {"job_id": "5000031", "ssh_conn_id": "s3df_ssh"},
        {
            "job_id": 5000031,
            "ssh_conn_id": "s3df_ssh",
            "jump_conn_id": "s3dflogin",
            "poll_interval": 5,
            "vanish_grace": 60,
            "cancel_on_kill": False,
        },
    ],
    ids=["defaults", "everything"],
)
def test_serialize_round_trip(kwargs: dict[str, Any]) -> None:
    trigger = SlurmJobTrigger(**kwargs)
    classpath, serialized = trigger.serialize()
    assert json.loads(json.dumps(serialized)) == serialized  # stored in the triggers table
    module_name, _, class_name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert cls is SlurmJobTrigger
    rebuilt = cls(**serialized)
    assert rebuilt.serialize() == (classpath, serialized)
    assert serialized["job_id"] == "5000031"
    assert serialized["ssh_conn_id"] == "s3df_ssh"
    assert serialized["jump_conn_id"] == kwargs.get("jump_conn_id")
    assert serialized["poll_interval"] == float(kwargs.get("poll_interval", 30.0))
    assert serialized["vanish_grace"] == float(kwargs.get("vanish_grace", 300.0))
    assert serialized["cancel_on_kill"] is kwargs.get("cancel_on_kill", True)


# --- the event payload ---


@pytest.mark.parametrize("name", SACCT_FILES)
def test_accounting_payload_round_trip_on_every_recording(name: str) -> None:
    jobs = site_jobs(name)
    assert jobs
    for job_id, acct in jobs.items():
        payload = json.loads(json.dumps(accounting_to_payload(acct)))
        rebuilt = accounting_from_payload(payload)
        assert rebuilt == acct
        assert rebuilt.job_id == job_id
        assert rebuilt.state == acct.state
        assert (rebuilt.exit_code, rebuilt.signal) == (acct.exit_code, acct.signal)
        assert rebuilt.max_rss_bytes == acct.max_rss_bytes
        assert rebuilt.is_placeholder == acct.is_placeholder
        assert [row.full_id for row in rebuilt.rows] == [row.full_id for row in acct.rows]


def test_payload_keeps_the_linuxproc_facts() -> None:
    acct = site_jobs("sacct-over-memory-linuxproc.txt")["5000022"]
    rebuilt = accounting_from_payload(json.loads(json.dumps(accounting_to_payload(acct))))
    assert rebuilt.state.state is SlurmState.FAILED
    assert (rebuilt.exit_code, rebuilt.signal) == (0, 9)
    assert rebuilt.step("batch").state.raw == "CANCELLED by 0"
    assert rebuilt.max_rss_bytes == 429588480


def test_payload_without_the_job_is_refused() -> None:
    payload = accounting_to_payload(COMPLETED)
    with pytest.raises(ValueError, match="no accounting rows for job 5000099"):
        accounting_from_payload({**payload, "job_id": "5000099"})
    with pytest.raises(ValueError, match="no accounting rows|must include JobID"):  # no rows, no fields
        accounting_from_payload({"job_id": "5000026", "rows": []})


# --- the poller's verdict on one watch ---

T0 = 1000.0  # a monotonic clock; the poller treats 0.0 as "not set"
GRACE = 60.0


Poll = (
    tuple[float, JobAccounting | None, bool] | tuple[float, JobAccounting | None, bool, ControllerJob | None]
)


def judge(polls: list[Poll], job_id: str | None = None) -> list[dict[str, Any] | None]:
    """Judge one watch at each ``(now, accounting, queued[, controller])``; return its result after
    each (None: waiting)."""

    async def run() -> list[dict[str, Any] | None]:
        poller = ClusterPoller("s3df_ssh", None, 30.0)
        first = polls[0][1]
        watch_id = job_id or (first.job_id if first is not None else "5000031")
        watch = _Watch(watch_id, asyncio.get_running_loop().create_future(), GRACE, 30.0)
        results: list[dict[str, Any] | None] = []
        for now, acct, queued, *rest in polls:
            if not watch.future.done():
                poller._judge(watch, acct, queued, now, rest[0] if rest else None)
            results.append(watch.future.result() if watch.future.done() else None)
        return results

    return asyncio.run(run())


@pytest.mark.parametrize("acct", [COMPLETED, FAILED], ids=["completed", "failed"])
def test_terminal_job_is_done_at_once_with_its_accounting(acct: JobAccounting) -> None:
    (result,) = judge([(T0, acct, False)])
    assert result is not None and result["status"] == "done"
    assert result["job_id"] == acct.job_id
    assert json.loads(json.dumps(result)) == result  # a TriggerEvent payload
    assert accounting_from_payload(result) == acct


@pytest.mark.parametrize("acct", [RUNNING, PENDING], ids=["running", "pending"])
def test_running_or_pending_job_is_never_done(acct: JobAccounting) -> None:
    assert not acct.is_terminal
    results = judge([(T0 + t, acct, False) for t in (0, 30, GRACE, 10 * GRACE)])
    assert results == [None, None, None, None]


def test_placeholder_is_not_believed_before_the_grace_period() -> None:
    assert PLACEHOLDER.is_placeholder and PLACEHOLDER.is_terminal
    results = judge([(T0 + t, PLACEHOLDER, False) for t in (0, 30, GRACE - 0.1, GRACE)])
    assert results[:3] == [None, None, None]
    assert results[3] is not None and results[3]["status"] == "done"
    assert accounting_from_payload(results[3]).job_name == "allocation"


def test_placeholder_replaced_by_the_real_line_is_judged_on_the_real_line() -> None:
    # Job ids differ between recordings; what counts is that the real line's state is taken at once.
    results = judge([(T0, PLACEHOLDER, False), (T0 + 5, COMPLETED, False)])
    assert results[0] is None
    assert results[1] is not None and results[1]["status"] == "done"
    assert accounting_from_payload(results[1]).is_placeholder is False


def test_job_unknown_to_sacct_and_squeue_vanishes_after_the_grace_period() -> None:
    results = judge([(T0 + t, None, False) for t in (0, 30, GRACE - 0.1, GRACE)])
    assert results[:3] == [None, None, None]
    error = results[3]
    assert error is not None and error["status"] == "error"
    assert error["job_id"] == "5000031"
    assert "vanished" in error["message"] and "s3df_ssh" in error["message"]
    assert json.loads(json.dumps(error)) == error


def test_a_vanished_job_stays_an_error_when_sacct_finds_it_later() -> None:
    results = judge([(T0, None, False), (T0 + GRACE, None, False), (T0 + GRACE + 1, COMPLETED, False)])
    assert [r["status"] if r else None for r in results] == [None, "error", "error"]


def test_queued_job_is_never_missing() -> None:
    results = judge([(T0 + t, None, True) for t in (0, GRACE, 10 * GRACE)])
    assert results == [None, None, None]


def test_queued_resets_the_missing_clock() -> None:
    polls = [
        (T0, None, False),
        (T0 + 50, None, True),  # squeue knows it: the 50 s missing so far do not count
        (T0 + 100, None, False),
        (T0 + 100 + GRACE - 1, None, False),
        (T0 + 100 + GRACE, None, False),
    ]
    results = judge(polls)
    assert results[:4] == [None, None, None, None]
    assert results[4] is not None and results[4]["status"] == "error"


def test_a_job_line_resets_the_missing_clock() -> None:
    polls = [(T0, None, False), (T0 + 50, RUNNING, False), (T0 + 100, None, False), (T0 + 150, None, False)]
    assert judge(polls) == [None, None, None, None]


# --- the poller's interval ---


def test_the_poll_interval_is_the_smallest_of_the_jobs_watched_now() -> None:
    """A trigger of 1 s that fired must not keep a later trigger of 5 s polling every second."""

    async def run() -> list[float]:
        poller = ClusterPoller("s3df_ssh", None, 30.0)
        loop = asyncio.get_running_loop()
        seen = [poller.current_interval]
        fast = _Watch("5000031", loop.create_future(), GRACE, 1.0)
        slow = _Watch("5000032", loop.create_future(), GRACE, 5.0)
        poller.watches = {"5000031": [fast], "5000032": [slow]}
        seen.append(poller.current_interval)
        poller._forget(fast)
        seen.append(poller.current_interval)
        poller._forget(slow)
        seen.append(poller.current_interval)
        return seen

    assert asyncio.run(run()) == [30.0, 1.0, 5.0, 30.0]


@pytest.mark.parametrize(
    ("took", "expected"),
    [(0.0, 5.0), (0.4, 4.6), (4.0, 1.25), (7.5, 1.25)],
    ids=["instant", "short", "most", "longer"],
)
def test_polls_start_one_interval_apart_a_quarter_of_it_at_least_apart(took: float, expected: float) -> None:
    poller = ClusterPoller("s3df_ssh", None, 5.0)
    assert poller.until_next_poll(T0, T0 + took) == pytest.approx(expected)


def test_a_new_poller_of_the_loop_is_shared_and_keeps_its_default_interval() -> None:
    async def run() -> tuple[bool, float]:
        first = ClusterPoller.for_cluster("s3df_ssh", None, 1.0)
        second = ClusterPoller.for_cluster("s3df_ssh", None, 5.0)
        return first is second, second.interval

    assert asyncio.run(run()) == (True, 1.0)


# --- the poller's write of each poll's job states to the history ---


def test_a_poll_writes_its_states_to_the_history(tmp_path: pathlib.Path) -> None:
    from airflow_desc.history import HistoryStore, SpoolingRecorder
    from airflow_desc.history.live import job_states

    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    spool = SpoolingRecorder(store, tmp_path / "history-spool.jsonl")
    poller = ClusterPoller("s3df_ssh", "bastion_ssh", 7.0, history=store, spool=spool)
    assert asyncio.run(poller.write_states({"5000031": "RUNNING", "5000032": "PENDING"}))
    found = job_states(
        store.engine, [("s3df_ssh", "bastion_ssh", "5000031"), ("s3df_ssh", "bastion_ssh", "5000032")]
    )
    assert {k[2]: (v.state, v.poll_interval_s) for k, v in found.items()} == {
        "5000031": ("RUNNING", 7.0),
        "5000032": ("PENDING", 7.0),
    }


def test_a_failing_write_is_a_warning_and_polling_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    from airflow_desc.history import HistoryStore

    nowhere = HistoryStore("sqlite:////proc/no-such-dir/history.db")  # cannot be made, even by root
    poller = ClusterPoller("s3df_ssh", None, 7.0, history=nowhere)
    with caplog.at_level(logging.WARNING, logger="airflow_desc.triggers.slurm"):
        assert asyncio.run(poller.write_states({"5000031": "RUNNING"})) is False
    assert "poll of s3df_ssh: the states of 1 job(s) not written to the history" in caplog.text


def test_a_poll_whose_write_succeeded_writes_out_the_spool(tmp_path: pathlib.Path) -> None:
    from airflow_desc.history import HistoryStore, JsonLinesRecorder, SpoolingRecorder
    from tests.unit.history.test_store import count, rec

    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    spool = SpoolingRecorder(store, tmp_path / "history-spool.jsonl")
    JsonLinesRecorder(spool.spool_path).record([rec("visit=1"), rec("visit=2")])  # spooled by tasks
    nowhere = HistoryStore("sqlite:////proc/no-such-dir/history.db")
    down = ClusterPoller("s3df_ssh", None, 7.0, history=nowhere, spool=spool)
    assert asyncio.run(down.write_states({"5000031": "RUNNING"})) is False
    assert spool.pending() == 2  # a failed write: the history is away, the spool is not tried
    poller = ClusterPoller("s3df_ssh", None, 7.0, history=store, spool=spool)
    # asyncio.run returns once the executor's threads are done: the flush it did not wait for too.
    assert asyncio.run(poller.write_states({"5000031": "RUNNING"}))
    assert spool.pending() == 0 and count(store) == 2
    JsonLinesRecorder(spool.spool_path).record([rec("visit=3")])
    assert asyncio.run(poller.write_states({"5000031": "COMPLETED"}))
    assert spool.pending() == 1  # within SPOOL_FLUSH_EVERY_S of the last attempt: not tried again
    poller.spool_flush_every_s = 0
    assert asyncio.run(poller.write_states({"5000031": "COMPLETED"}))
    assert spool.pending() == 0 and count(store) == 3


# --- a job sacct lost (accounting purged) but the controller still knows ---


@pytest.mark.parametrize(("job_id", "state", "exit_code"), [("3268", "COMPLETED", 0), ("3269", "FAILED", 3)])
def test_ended_job_known_only_to_the_controller_is_done_with_its_state(
    job_id: str, state: str, exit_code: int
) -> None:
    ended = CONTROLLER_ENDED[job_id]
    results = judge([(T0 + t, None, False, ended) for t in (0, GRACE, 10 * GRACE)], job_id=job_id)
    done = results[0]
    assert done is not None and done["status"] == "done"
    assert results[1:] == [done, done]
    assert done["source"] == "controller" and done["message"] == CONTROLLER_NOTE
    assert json.loads(json.dumps(done)) == done
    acct = accounting_from_payload(done)
    assert acct.job_id == job_id and acct.state.raw == state and acct.exit_code == exit_code
    assert acct.node_list == "pm-n1" and acct.elapsed_s is not None
    assert acct.total_cpu_s is None and acct.max_rss_bytes is None  # the controller does not know them


def test_live_job_known_only_to_the_controller_is_watched_past_the_grace_period() -> None:
    running, pending = CONTROLLER_LIVE["3270"], CONTROLLER_LIVE["3271"]
    polls: list[Poll] = [(T0 + t, None, False, running) for t in (0, GRACE, 10 * GRACE)]
    polls.append((T0 + 11 * GRACE, None, False, pending))
    assert judge(polls, job_id="3270") == [None, None, None, None]


def test_controller_resets_the_missing_clock_and_forgetting_it_vanishes() -> None:
    running, ended = CONTROLLER_LIVE["3270"], CONTROLLER_ENDED["3268"]
    polls: list[Poll] = [
        (T0, None, False, None),
        (T0 + GRACE - 1, None, False, running),  # the controller has it: the missing clock restarts
        (T0 + GRACE + 1, None, False, None),
        (T0 + 2 * GRACE, None, False, None),
        (T0 + 2 * GRACE + 1, None, False, None),
    ]
    results = judge(polls, job_id="3270")
    assert results[:4] == [None, None, None, None]
    assert results[4] is not None and results[4]["status"] == "error"
    assert "neither sacct, squeue nor scontrol" in results[4]["message"]
    # sacct's answer wins over the controller's when sacct has the job line.
    (result,) = judge([(T0, COMPLETED, False, ended)])
    assert result is not None and "source" not in result and accounting_from_payload(result) == COMPLETED
