"""SlurmJobTrigger and its shared ClusterPoller against the real perlmutter cluster of the site.

Each test runs its triggers in one ``asyncio.run`` event loop, so it gets its own poller, and
reads ``SlurmHook.stats`` as differences (the counters are per process, shared with other tests
of the same xdist worker).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import math
import os
import pathlib
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import pytest

from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.slurm import accounting_from_payload, chunked_sacct_commands
from airflow_desc.triggers.hold import SubmissionHoldTrigger
from airflow_desc.triggers.slurm import ClusterPoller, SlurmJobTrigger
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("in_process_airflow_home")

CONN = "perlmutter_ssh"
HELD_JOBS = 200
SHORT_JOBS = 3


def counts() -> collections.Counter[str]:
    return collections.Counter(SlurmHook.stats[CONN])


def sbatch_loop(hook: SlurmHook, count: int, *args: str) -> list[str]:
    """Submit ``count`` jobs in one SSH command; return their ids."""
    words = " ".join(args)
    loop = f"for i in $(seq {count}); do sbatch --parsable {words} || exit 1; done"
    ids = [line.split(";")[0] for line in hook.run(loop).stdout.split()]
    assert len(ids) == count, ids
    return ids


def wait_in_sacct(hook: SlurmHook, job_ids: Sequence[str], timeout: float = 60) -> None:
    """Wait until sacct reports every job as ended, with its real record (not slurmdbd's stand-in)."""
    wait_for(
        lambda: hook.sacct(job_ids),
        until=lambda accounting: all(
            i in accounting and accounting[i].is_terminal and not accounting[i].is_placeholder
            for i in job_ids
        ),
        timeout=timeout,
        what=f"jobs {job_ids} ended in sacct",
    )


async def first_event(trigger: SlurmJobTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError(f"trigger for job {trigger.job_id} ended without an event")


def trigger_for(job_id: str, **kwargs: Any) -> SlurmJobTrigger:
    kwargs = {"poll_interval": 1, **kwargs}
    return SlurmJobTrigger(job_id=job_id, ssh_conn_id=CONN, **kwargs)


def state_of(event: dict[str, Any]) -> str:
    assert event["status"] == "done", event
    return str(accounting_from_payload(event).state.state.value)


def test_one_sacct_per_poll_for_203_triggers(hook: SlurmHook, jobs: list[str], token: str) -> None:
    name = f"desc-poll-test-{token}"
    before = counts()
    held = sbatch_loop(hook, HELD_JOBS, f"--hold -J {name} -t 1 -o /dev/null --wrap true")
    jobs.extend(held)
    short = sbatch_loop(hook, SHORT_JOBS, f"-J {name}-short -t 1 -o /dev/null --wrap 'sleep 2'")
    jobs.extend(short)

    async def scenario() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        tasks = {i: asyncio.create_task(first_event(trigger_for(i))) for i in held + short}
        poller = ClusterPoller.for_cluster(CONN, None, 1)
        try:
            short_tasks = [tasks[i] for i in short]
            done, _ = await asyncio.wait(short_tasks, timeout=300)
            assert len(done) == SHORT_JOBS, "the 3 short jobs did not end within 300 s"
            mid = counts() - before
            at_short = {"polls": poller.polls, "sacct": mid["sacct"], "squeue": mid["squeue"]}
            at_short["held_fired"] = sum(tasks[i].done() for i in held)
            at_short["scancels"] = mid["scancel"]
            # Cancel the held jobs with one command, from the event loop the triggers share.
            await asyncio.to_thread(hook.scancel, held)
            await asyncio.wait_for(asyncio.gather(*tasks.values()), timeout=120)
            return {i: t.result() for i, t in tasks.items()}, at_short
        finally:
            for task in tasks.values():
                task.cancel()

    events, at_short = asyncio.run(scenario())
    used = counts() - before

    # When the short jobs fired: one sacct per poll, at most one squeue per poll (only for ids
    # slurmdbd had not recorded yet: new jobs, held ones for a while), no held trigger fired.
    assert at_short["polls"] >= 1
    assert at_short["sacct"] == at_short["polls"], at_short
    assert at_short["squeue"] <= at_short["polls"], at_short
    assert at_short["held_fired"] == 0, at_short
    assert at_short["scancels"] == 0
    for job_id in short:
        assert state_of(events[job_id]) == "COMPLETED", events[job_id]
    for job_id in held:
        assert state_of(events[job_id]) == "CANCELLED", events[job_id]
        assert events[job_id]["job_id"] == job_id
    # The whole test: one connection, two sbatch loops, one scancel, and polls of one sacct each.
    assert used["connections"] == 1, used
    assert used["for"] == 2 and used["scancel"] == 1, used
    assert used["sacct"] >= at_short["sacct"] + 1
    assert used["squeue"] <= used["sacct"], used
    jobs.clear()  # every job ended


def test_a_finished_job_fires_after_one_sacct_and_no_squeue(
    hook: SlurmHook, jobs: list[str], token: str
) -> None:
    [job_id] = sbatch_loop(hook, 1, f"--hold -J desc-poll-done-{token} -t 1 -o /dev/null --wrap true")
    jobs.append(job_id)
    hook.scancel([job_id])
    wait_in_sacct(hook, [job_id])
    before = counts()

    async def scenario() -> tuple[dict[str, Any], int]:
        event = await asyncio.wait_for(first_event(trigger_for(job_id)), timeout=60)
        return event, ClusterPoller.for_cluster(CONN, None, 1).polls

    event, polls = asyncio.run(scenario())
    used = counts() - before
    assert state_of(event) == "CANCELLED"
    assert polls == 1
    assert used["sacct"] == 1 and used["squeue"] == 0, used
    assert used["connections"] == 0, "the hook's connection is reused by the poller"


def test_sacct_is_chunked_by_max_ids(hook: SlurmHook, jobs: list[str], token: str) -> None:
    max_ids = inspect.signature(chunked_sacct_commands).parameters["max_ids"].default
    [real] = sbatch_loop(hook, 1, f"--hold -J desc-poll-chunk-{token} -t 1 -o /dev/null --wrap true")
    jobs.append(real)
    hook.scancel([real])
    wait_in_sacct(hook, [real])
    # Ids far beyond the site's job counter: never existed. The real job comes last, in the
    # second chunk, so its accounting has to be merged from there.
    never = [str(9_000_000 + i) for i in range(max_ids)]
    before = counts()

    async def scenario() -> dict[str, Any]:
        poller = ClusterPoller(CONN, None, interval=3600)  # polls once, then only when told
        waits = [asyncio.create_task(poller.wait(i, vanish_grace=3600)) for i in [*never, real]]
        try:
            event = await asyncio.wait_for(waits[-1], timeout=120)
            first = counts() - before
            assert poller.polls == 1
            assert first["sacct"] == math.ceil((max_ids + 1) / max_ids) == 2, first
            # The real job is settled and forgotten: max_ids ids left, one chunk.
            assert len(poller.watches) == max_ids
            await poller.poll_once(SlurmHook(CONN))
            second = counts() - before
            assert poller.polls == 2
            assert second["sacct"] - first["sacct"] == math.ceil(max_ids / max_ids) == 1, second
            assert not any(w.done() for w in waits[:-1]), "a job that never existed fired within its grace"
            return event
        finally:
            for task in waits:
                task.cancel()

    event = asyncio.run(scenario())
    assert state_of(event) == "CANCELLED" and event["job_id"] == real


def test_a_job_unknown_to_sacct_and_squeue_vanishes(hook: SlurmHook) -> None:
    job_id = "999999"
    assert not hook.sacct([job_id]) and not hook.squeue([job_id])

    async def scenario() -> tuple[dict[str, Any], float]:
        started = time.monotonic()
        event = await asyncio.wait_for(first_event(trigger_for(job_id, vanish_grace=3)), timeout=60)
        return event, time.monotonic() - started

    event, elapsed = asyncio.run(scenario())
    assert event["status"] == "error", event
    assert event["job_id"] == job_id
    assert "vanished" in event["message"] and job_id in event["message"], event
    assert elapsed >= 3, f"fired after {elapsed:.1f} s, before the 3 s grace"


def wait_until_running(hook: SlurmHook, job_id: str, timeout: float = 240) -> None:
    wait_for(
        lambda: hook.squeue([job_id]),
        until=lambda rows: bool(rows) and rows[0].state.state.value == "RUNNING",
        timeout=timeout,
        what=f"job {job_id} running",
    )


def test_on_kill_cancels_the_running_job(hook: SlurmHook, jobs: list[str], token: str) -> None:
    [job_id] = sbatch_loop(hook, 1, f"-J desc-poll-kill-{token} -t 2 -o /dev/null --wrap 'sleep 60'")
    jobs.append(job_id)
    wait_until_running(hook, job_id)

    async def scenario() -> tuple[dict[str, Any], float]:
        trigger = trigger_for(job_id)
        waiting = asyncio.create_task(first_event(trigger))
        await asyncio.sleep(2)  # the poller has seen the job running
        assert not waiting.done()
        started = time.monotonic()
        await trigger.on_kill()
        event = await asyncio.wait_for(waiting, timeout=60)
        return event, time.monotonic() - started

    event, elapsed = asyncio.run(scenario())
    assert state_of(event) == "CANCELLED", event
    assert elapsed < 30, "the job ended because it was cancelled, not because sleep 60 finished"
    assert hook.sacct([job_id])[job_id].state.state.value == "CANCELLED"


def delete_accounting(job_id: str) -> list[str]:
    """Delete a job's rows from perlmutter's accounting DB (MariaDB, as root over its socket), as a
    purge of old records would; return the deleted ``job_db_inx``."""
    sock = pathlib.Path(os.environ["DESC_SITE_DIR"]) / "run" / "mariadb" / "mariadb.sock"

    def sql(statement: str) -> str:
        argv = ["mariadb", f"--socket={sock}", "-u", "root", "-N", "slurm_acct_db", "-e", statement]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    inx = sql(f"SELECT job_db_inx FROM perlmutter_job_table WHERE id_job = {int(job_id)}").split()
    for i in inx:
        sql(f"DELETE FROM perlmutter_step_table WHERE job_db_inx = {int(i)}")
        sql(f"DELETE FROM perlmutter_job_table WHERE job_db_inx = {int(i)}")
    return inx


def test_a_job_purged_from_accounting_settles_from_the_controller(
    hook: SlurmHook, jobs: list[str], token: str
) -> None:
    # Issue 11, item 7: slurmdbd lost the job's rows; the controller still holds the ended job for
    # MinJobAge (300 s on the site) and says it COMPLETED: done, never "vanished".
    [job_id] = sbatch_loop(hook, 1, f"-J desc-poll-purged-{token} -t 1 -o /dev/null --wrap 'sleep 1'")
    jobs.append(job_id)
    wait_in_sacct(hook, [job_id])
    assert delete_accounting(job_id), f"job {job_id} has no row in perlmutter_job_table"
    assert job_id not in hook.sacct([job_id]) and not hook.squeue([job_id])
    known = hook.controller_jobs([job_id])
    assert job_id in known, f"the controller forgot job {job_id} already (MinJobAge)"

    async def scenario() -> dict[str, Any]:
        poller = ClusterPoller(CONN, None, interval=3600)  # polls once, then only when told
        return await asyncio.wait_for(poller.wait(job_id, vanish_grace=3600), timeout=120)

    event = asyncio.run(scenario())
    assert event["status"] == "done" and event["source"] == "controller", event
    acct = accounting_from_payload(event)
    assert (acct.job_id, acct.state.raw, acct.exit_code) == (job_id, "COMPLETED", 0)
    assert acct.node_list and acct.elapsed_s is not None and acct.job is not None and acct.job.end
    assert acct.max_rss_bytes is None and "accounting purged" in event["message"]
    jobs.clear()  # ended


def test_reservations_and_partitions_come_with_the_job_poll(
    hook: SlurmHook, jobs: list[str], token: str
) -> None:
    """One poll of a watched job and a submission hold: the sacct's SSH call also reads the reservations
    and partitions (no call of their own), and a hold the cluster does not hold is cleared at once."""
    [job_id] = sbatch_loop(hook, 1, f"--hold -J desc-poll-avail-{token} -t 1 -o /dev/null --wrap true")
    jobs.append(job_id)
    held = SubmissionHoldTrigger(
        ssh_conn_id=CONN, cluster="perlmutter", reason="-", walltime_s=60, partition="regular"
    )
    before = counts()

    async def scenario() -> tuple[int, Any, bool]:
        poller = ClusterPoller(CONN, None, interval=3600)  # polls once, then only when told
        watch = asyncio.create_task(poller.wait(job_id, vanish_grace=3600))
        clear = asyncio.create_task(poller.wait_until_clear(held.hold))
        try:
            await asyncio.wait_for(clear, timeout=60)
            return poller.polls, poller.availability, watch.done()
        finally:
            watch.cancel()

    polls, availability, fired = asyncio.run(scenario())
    used = counts() - before
    assert polls == 1 and not fired
    assert used["sacct"] == 1, used
    assert not {"printf", "TZ=UTC", "sinfo", "{"} & set(used), used  # no SSH call of their own
    regular = availability.partition("regular")
    assert regular.up and regular.default and regular.nodes == {"pm-n1", "pm-n2"}, availability
