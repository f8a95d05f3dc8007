"""SlurmHook's retry policy without SSH: which errors are retried, how long it waits, what it logs.

The connection and the command are replaced by stand-ins that fail a chosen number of times;
``time.sleep`` is recorded instead of slept.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import paramiko
import pytest

from airflow_desc.exceptions import ClusterUnreachable
from airflow_desc.hooks.slurm import CommandResult, SlurmHook
from tests.unit.hooks.recorded_log import RecordedWarnings


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


@pytest.fixture
def hook() -> Iterator[SlurmHook]:
    hook = SlurmHook("desc_unit_retries", jump_conn_id="", cluster="unitcluster", retries=3, retry_wait=0.5)
    hook.close()
    yield hook
    hook.close()


def transient(message: str) -> ClusterUnreachable:
    err = ClusterUnreachable(message)
    err.transient = True  # type: ignore[attr-defined]
    return err


def failing(errors: list[BaseException], result: object) -> object:
    def call(*args: object, **kwargs: object) -> object:
        if errors:
            raise errors.pop(0)
        return result

    return call


def test_transient_connect_errors_are_retried_with_doubling_waits(
    hook: SlurmHook, slept: list[float], monkeypatch: pytest.MonkeyPatch, warned: RecordedWarnings
) -> None:
    client = object()
    monkeypatch.setattr(hook, "_connect", failing([transient("down"), transient("still down")], client))
    assert hook._connect_with_retries() is client
    assert slept == [0.5, 1.0]
    assert warned == [
        "SSH to unitcluster failed (down); retry 1 in 0.5 s",
        "SSH to unitcluster failed (still down); retry 2 in 1.0 s",
    ]


def test_the_last_transient_connect_error_is_raised_as_is(
    hook: SlurmHook, slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    last = transient("third")
    monkeypatch.setattr(hook, "_connect", failing([transient("1"), transient("2"), last], None))
    with pytest.raises(ClusterUnreachable) as caught:
        hook._connect_with_retries()
    assert caught.value is last
    assert slept == [0.5, 1.0]


def test_a_connect_verdict_is_not_retried(
    hook: SlurmHook, slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    verdict = ClusterUnreachable("host key mismatch")
    monkeypatch.setattr(hook, "_connect", failing([verdict], None))
    with pytest.raises(ClusterUnreachable) as caught:
        hook._connect_with_retries()
    assert caught.value is verdict
    assert slept == []


def test_a_dropped_idempotent_command_is_rerun_on_a_new_connection(
    hook: SlurmHook, slept: list[float], monkeypatch: pytest.MonkeyPatch, warned: RecordedWarnings
) -> None:
    ok = CommandResult(command="sacct -j 1", returncode=0, stdout="", stderr="")
    monkeypatch.setattr(hook, "_run_once", failing([EOFError("eof")], ok))
    closed: list[bool] = []
    monkeypatch.setattr(hook, "close", lambda: closed.append(True))
    assert hook.run("sacct -j 1") is ok
    assert closed == [True]
    assert slept == [0.5]
    assert warned == ["command on unitcluster failed (eof); retry 1 in 0.5 s"]


def test_a_command_that_keeps_dropping_is_unreachable(
    hook: SlurmHook, slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    drops: list[BaseException] = [TimeoutError("t1"), paramiko.SSHException("s2"), ConnectionError("c3")]
    monkeypatch.setattr(hook, "_run_once", failing(drops, None))
    with pytest.raises(
        ClusterUnreachable, match=r"connection lost while running 'squeue' \(ConnectionError: c3\)"
    ):
        hook.run("squeue -h")
    assert slept == [0.5, 1.0]


def test_a_dropped_sbatch_is_not_rerun(
    hook: SlurmHook, slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hook, "_run_once", failing([EOFError("eof")], None))
    monkeypatch.setattr(hook, "close", lambda: None)
    with pytest.raises(ClusterUnreachable, match=r"connection lost while running 'sbatch' \(EOFError: eof\)"):
        hook.run("sbatch --parsable job.sh", idempotent=False)
    assert slept == []
