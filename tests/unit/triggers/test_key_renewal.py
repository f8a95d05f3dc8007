"""Waiting for a renewed key: the trigger, the operators' decorator, the history's key checks.

Certificates are real (ssh-keygen, as in tests/unit/hooks/test_key_expiry.py); the trigger reads
them as in production and writes its checks to a real SQLite history.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pathlib
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import TaskDeferred

from airflow_desc.history import open_history
from airflow_desc.history.key_checks import KeyCheck, key_checks, write_key_check
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.operators.key_renewal import RESUME_AFTER_RENEWAL, waits_for_key_renewal
from airflow_desc.triggers import key_renewal
from airflow_desc.triggers.key_renewal import SshKeyRenewalTrigger, check_key_in_poll
from tests.unit.certificates import certified_keys, certify
from tests.unit.hooks.sshd import Keys, add_connection
from tests.waiting import wait_for


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ssh_conn_id": "perlmutter_ssh"},
        {"ssh_conn_id": "s3df_ssh", "jump_conn_id": "bastion_ssh", "cluster": "s3df", "check_interval": 5,
         "resume_event": {"status": "done", "job_id": "12", "rows": [{"JobID": "12"}]}},
    ],
)  # fmt: skip
def test_serialize_round_trip(kwargs: dict[str, Any]) -> None:
    trigger = SshKeyRenewalTrigger(**kwargs)
    classpath, serialized = trigger.serialize()
    assert json.loads(json.dumps(serialized)) == serialized
    module_name, _, class_name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module_name), class_name) is SshKeyRenewalTrigger
    assert SshKeyRenewalTrigger(**serialized).serialize() == (classpath, serialized)
    assert serialized["resume_event"] == kwargs.get("resume_event")


@pytest.fixture
def keys(tmp_path: pathlib.Path) -> Keys:
    return certified_keys(tmp_path)


@pytest.fixture
def conn(monkeypatch: pytest.MonkeyPatch, keys: Keys, tmp_path: pathlib.Path) -> str:
    name = f"desc_unit_renew_{uuid.uuid4().hex[:8]}"
    add_connection(monkeypatch, name, 22, keys)
    monkeypatch.delenv("DESC_CLUSTERS_FILE", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.delenv("DESC_HISTORY_CONN_ID", raising=False)
    monkeypatch.setenv("AIRFLOW__DESC__HISTORY_CONN_ID", "")
    monkeypatch.setattr(key_renewal, "_written", {})
    return name


def test_the_trigger_fires_the_resumed_event_once_the_certificate_is_renewed(
    conn: str,
    keys: Keys,
    tmp_path: pathlib.Path,
) -> None:
    cert = certify(keys, "20200101000000Z:20200102000000Z")
    resume = {"status": "done", "job_id": "12"}
    trigger = SshKeyRenewalTrigger(ssh_conn_id=conn, cluster="unitcluster", check_interval=0.05,
                                   resume_event=resume)  # fmt: skip
    history = open_history(f"sqlite:///{tmp_path / 'airflow' / 'desc' / 'history.db'}")

    def recorded() -> list[KeyCheck]:
        return key_checks(history.engine) if (tmp_path / "airflow" / "desc" / "history.db").exists() else []

    async def run() -> Any:
        waiting = asyncio.ensure_future(trigger.run().__anext__())
        seen = await asyncio.to_thread(wait_for, recorded, timeout=60, what="the expired key's check")
        assert not waiting.done()  # still expired: it waits
        assert [(c.ssh_conn_id, c.cert_path, c.expires_at, c.checked_by) for c in seen] == [
            (conn, str(cert), datetime(2020, 1, 2), "task waiting for a renewed key")
        ]
        certify(keys, "-5m:+1d")  # sshproxy again
        return await asyncio.wait_for(waiting, timeout=60)

    event = asyncio.run(run())
    assert event.payload == resume
    (check,) = key_checks(history.engine)
    assert check.expires_at is not None and check.expires_at > datetime.now() + timedelta(hours=23)


class _Job(BaseOperator):
    """Stands in for a SLURM operator: each run reads the key as the hook does before a login."""

    def __init__(self, *, conn: str, keys: Keys, deferrable: bool, **kwargs: Any) -> None:
        super().__init__(task_id="job", **kwargs)
        self.conn, self.keys, self.deferrable, self.poll_interval = conn, keys, deferrable, 0.05
        self.runs = 0

    @waits_for_key_renewal
    def execute(self, context: Any) -> Any:
        self.runs += 1
        try:
            return SlurmHook(self.conn, jump_conn_id="", cluster="unitcluster").check_key()
        finally:
            if self.runs == 1 and not self.deferrable:
                certify(self.keys, "-5m:+1d")  # renewed while the worker waits

    @waits_for_key_renewal
    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        return SlurmHook(self.conn, jump_conn_id="", cluster="unitcluster").check_key()


def test_an_expired_key_defers_the_task_to_wait_for_its_renewal(conn: str, keys: Keys) -> None:
    certify(keys, "20200101000000Z:20200102000000Z")
    job = _Job(conn=conn, keys=keys, deferrable=True)
    with pytest.raises(TaskDeferred) as caught:
        job.execute({})
    assert caught.value.method_name == RESUME_AFTER_RENEWAL
    trigger = caught.value.trigger
    assert isinstance(trigger, SshKeyRenewalTrigger)
    assert (trigger.ssh_conn_id, trigger.cluster, trigger.check_interval) == (conn, "unitcluster", 0.05)
    assert trigger.resume_event is None
    event = {"status": "done", "job_id": "12"}
    with pytest.raises(TaskDeferred) as caught:
        job.execute_complete(context={}, event=event)
    assert caught.value.method_name == "execute_complete"
    assert caught.value.trigger.resume_event == event


def test_a_task_that_does_not_defer_waits_in_its_worker(conn: str, keys: Keys) -> None:
    certify(keys, "20200101000000Z:20200102000000Z")
    job = _Job(conn=conn, keys=keys, deferrable=False)
    validity = job.execute({})
    assert job.runs == 2 and validity is not None and not validity.expired()


def test_key_checks_are_replaced_per_login(tmp_path: pathlib.Path) -> None:
    store = open_history(f"sqlite:///{tmp_path / 'h.db'}")
    assert key_checks(store.engine) == []  # not even the table yet
    now = datetime(2026, 12, 6, 15, tzinfo=timezone.utc)
    first = KeyCheck("pm_ssh", "", "perlmutter", "the certificate /c", "/c", now, now, "poll")
    write_key_check(store, first)
    write_key_check(store, KeyCheck("s3_ssh", "bastion", "s3df", "-", None, None, now, "clusters check"))
    later = KeyCheck("pm_ssh", "", "perlmutter", "the certificate /c", "/c", now + timedelta(days=1),
                     now + timedelta(minutes=5), "task waiting for a renewed key")  # fmt: skip
    write_key_check(store, later)
    naive = {c.ssh_conn_id: c for c in key_checks(store.engine)}
    assert naive["pm_ssh"] == KeyCheck(
        "pm_ssh", "", "perlmutter", "the certificate /c", "/c", datetime(2026, 12, 7, 15),
        datetime(2026, 12, 6, 15, 5), "task waiting for a renewed key",
    )  # fmt: skip
    assert naive["s3_ssh"].jump_conn_id == "bastion" and naive["s3_ssh"].expires_at is None


def test_a_poll_writes_its_login_s_key_check_on_a_change_not_at_every_poll(
    conn: str, keys: Keys, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_history(f"sqlite:///{tmp_path / 'polls.db'}")
    hook = SlurmHook(conn, jump_conn_id="")
    certify(keys, "20200101000000Z:20200102000000Z")
    with caplog.at_level("WARNING", logger=key_renewal.__name__):
        check_key_in_poll(hook, lambda: store)
        check_key_in_poll(hook, lambda: store)  # the same expired key: neither written nor logged again
    [check] = key_checks(store.engine)
    assert (check.checked_by, check.expires_at) == ("poll", datetime(2020, 1, 2))
    assert [r.getMessage() for r in caplog.records if "renew the key with sshproxy" in r.getMessage()] == [
        f"poll of {conn}: cluster {conn} (connection {conn}): the SSH certificate for {conn} expired at "
        f"2020-01-02 00:00:00 UTC (the certificate {keys.client_file}-cert.pub): renew the key with "
        "sshproxy. Tasks of this cluster wait deferred until the key is renewed."
    ]
    certify(keys, "-5m:+1d")  # renewed: written at once
    check_key_in_poll(hook, lambda: store)
    [check] = key_checks(store.engine)
    assert check.expires_at is not None and check.expires_at > datetime(2026, 1, 1)


def test_the_key_is_read_as_often_as_the_cluster_is_polled_at_most_every_minute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    from airflow_desc.operators.key_renewal import _check_interval

    profiles = tmp_path / "clusters.yaml"
    profiles.write_text("clusters:\n" + "".join(
        f"  {name}:\n    ssh_conn_id: s\n    cores_per_node: 1\n    memory_per_node_mb: 1\n"
        f"    max_walltime: 5\n    poll_interval: {interval}\n"
        for name, interval in (("fast", 3), ("slow", 600))
    ))  # fmt: skip
    monkeypatch.setenv("DESC_CLUSTERS_FILE", str(profiles))
    unset, own = type("Op", (), {"poll_interval": None})(), type("Op", (), {"poll_interval": 7.0})()
    assert [_check_interval(unset, "fast"), _check_interval(unset, "slow"), _check_interval(own, "fast")] == [
        3.0, 60.0, 7.0,
    ]  # fmt: skip
    assert _check_interval(unset, "not-a-profile") == 60.0
