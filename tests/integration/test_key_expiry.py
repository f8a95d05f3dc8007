"""SSH certificates on the site's logins: valid, expiring, expired, renewed.

docker/site/up makes a user CA the logins trust (``TrustedUserCAKeys``), as NERSC's logins trust
sshproxy's. Each test makes a fresh key that is in no authorized_keys: only a certificate the CA
signs for the site user (``ssh-keygen -s CA -n desc -V ...``) logs it in, as an sshproxy key.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from airflow_desc.exceptions import ClusterUnreachable, SshKeyExpired
from airflow_desc.history import JsonLinesRecorder, open_history
from airflow_desc.history.key_checks import key_checks
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.ssh_keys import key_notes
from tests.integration.airflow_env import AirflowEnv, explain
from tests.integration.site import Site
from tests.unit.hooks.recorded_log import RecordedWarnings
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("in_process_airflow_home")

CLI = pathlib.Path(sys.executable).with_name("airflow-desc")


class CertifiedKey:
    """A fresh key in ``directory`` and certificates the site's user CA signs for it."""

    def __init__(self, site: Site, directory: pathlib.Path) -> None:
        ca = os.environ.get("DESC_SITE_USER_CA")
        if not ca or not pathlib.Path(ca).exists():
            pytest.fail("the site has no user CA (DESC_SITE_USER_CA): run docker/site/up, then source env.sh")
        self.site, self.ca, self.key = site, ca, directory / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        self.cert = pathlib.Path(f"{self.key}-cert.pub")

    def certify(self, validity: str) -> pathlib.Path:
        """Issue a certificate valid ``validity`` (``ssh-keygen -V``) beside the key, as sshproxy does."""
        subprocess.run(["ssh-keygen", "-q", "-s", self.ca, "-I", f"{self.site.user}@sshproxy-test", "-n",
                        self.site.user, "-V", validity, f"{self.key}.pub"], check=True)  # fmt: skip
        return self.cert

    def connection(self, login: str = "perlmutter") -> str:
        """An Airflow SSH connection to ``login`` with this key, as JSON (``AIRFLOW_CONN_*``)."""
        host_key = (pathlib.Path(self.site.dir) / "ssh" / f"host_{login}_ed25519.pub").read_text().split()
        return json.dumps({
            "conn_type": "ssh", "host": "127.0.0.1", "port": self.site.ports[login], "login": self.site.user,
            "extra": {"key_file": str(self.key), "host_key": " ".join(host_key[:2]), "look_for_keys": False},
        })  # fmt: skip


@pytest.fixture
def key(site: Site, tmp_path: pathlib.Path) -> CertifiedKey:
    return CertifiedKey(site, tmp_path)


@pytest.fixture
def conn_id(key: CertifiedKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"desc_it_cert_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}", key.connection())
    yield name
    SlurmHook(name, jump_conn_id="").close()


def fresh_hook(conn_id: str) -> SlurmHook:
    hook = SlurmHook(conn_id, jump_conn_id="", cluster="perlmutter")
    hook.close()
    return hook


def test_a_valid_certificate_logs_in_and_the_bare_key_does_not(key: CertifiedKey, conn_id: str) -> None:
    hook = fresh_hook(conn_id)
    with pytest.raises(ClusterUnreachable) as refused:
        hook.run("true")
    assert "no certificate says when (NERSC's sshproxy writes <key>-cert.pub" in str(refused.value)
    key.certify("-1m:+1d")
    assert hook.run("sinfo -h -o %P").stdout.split() == ["regular*"]


def test_a_certificate_for_another_user_is_not_called_expired(key: CertifiedKey, conn_id: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-s", key.ca, "-I", "x", "-n", "someone-else", "-V", "-1m:+1d",
                    f"{key.key}.pub"], check=True)  # fmt: skip
    with pytest.raises(ClusterUnreachable) as refused:
        fresh_hook(conn_id).run("true")
    assert not isinstance(refused.value, SshKeyExpired)
    assert f"although the certificate {key.cert} is valid until " in str(refused.value)


def test_a_certificate_expiring_within_two_hours_warns_in_the_log_in_clusters_check_and_on_the_page(
    key: CertifiedKey, conn_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    key.certify("-1m:+30m")
    warned = RecordedWarnings()
    monkeypatch.setattr(SlurmHook, "log", property(lambda self: warned))
    monkeypatch.setattr(SlurmHook, "_warned", set())
    assert fresh_hook(conn_id).run("true").returncode == 0  # it still logs in
    assert len(warned) == 1 and f"the SSH certificate for {conn_id} expires at " in warned[0], warned
    assert "renew the key with sshproxy before then" in warned[0]

    profiles = tmp_path / "clusters.yaml"
    site_profiles = pathlib.Path(os.environ["DESC_CLUSTERS_FILE"]).read_text()
    profiles.write_text(site_profiles.replace("ssh_conn_id: perlmutter_ssh", f"ssh_conn_id: {conn_id}"))
    history = f"sqlite:///{tmp_path / 'history.db'}"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "DESC_HISTORY_CONN_ID": history}
    proc = subprocess.run([str(CLI), "clusters", "check", "perlmutter", "--file", str(profiles)],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 1, explain(proc)
    [line] = [line for line in proc.stdout.splitlines() if line.startswith(("OK", "WARN", "FAIL"))]
    assert line.startswith("WARN perlmutter: partition regular* up"), line
    assert f"; the SSH certificate for {conn_id} expires at " in line
    # What the page shows, from what clusters check wrote (the api-server has no keys).
    [note] = key_notes(key_checks(open_history(history).engine))
    assert note.startswith(f"cluster perlmutter: the SSH certificate for {conn_id} expires at "), note
    assert note.endswith("by clusters check)")


def test_an_expired_certificate_fails_before_any_login(key: CertifiedKey, conn_id: str) -> None:
    key.certify("-10m:-5m")
    hook = fresh_hook(conn_id)
    before = SlurmHook.stats[conn_id]["connections"]
    with pytest.raises(SshKeyExpired) as caught:
        hook.run("true")
    assert f"the SSH certificate for {conn_id} expired at " in str(caught.value)
    assert f"(the certificate {key.cert}): renew the key with sshproxy" in str(caught.value)
    assert SlurmHook.stats[conn_id]["connections"] == before


def test_a_task_whose_key_expired_waits_deferred_and_finishes_once_it_is_renewed(
    key: CertifiedKey, airflow_env: AirflowEnv, tmp_path: pathlib.Path
) -> None:
    key.certify("-10m:-5m")
    history_url = f"sqlite:///{tmp_path / 'history.db'}"
    records, output = tmp_path / "records.jsonl", tmp_path / "dags-test.log"
    proc = airflow_env.dags_test_start(
        "desc_it_key_renewal", history=records, output=output,
        extra_env={"AIRFLOW_CONN_PERLMUTTER_SSH": key.connection(), "DESC_HISTORY_CONN_ID": history_url},
    )  # fmt: skip
    try:
        log = wait_for(output.read_text, timeout=300, what="the task fails fast on the expired key",
                       until=lambda text: "renew the key with sshproxy" in text)  # fmt: skip
        assert "expired at " in log and f"(the certificate {key.cert})" in log
        # Waiting deferred: the trigger wrote the expired key for the status page.
        history = open_history(history_url)
        notes = wait_for(lambda: key_notes(key_checks(history.engine)), timeout=120,
                         what="the page's line on the expired key")  # fmt: skip
        assert "its tasks wait deferred until it is renewed" in notes[0], notes
        assert proc.poll() is None and not JsonLinesRecorder(records).read()  # no job, no retry spent
        key.certify("-1m:+1d")  # sshproxy again
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.read_text()
    assert proc.returncode == 0, text[-8000:]
    [record] = JsonLinesRecorder(records).read()
    assert (record.state, record.try_number, record.slurm_state) == ("success", 1, "COMPLETED"), record
    [check] = key_checks(open_history(history_url).engine)
    assert check.expires_at is not None and check.expires_at > datetime.now(timezone.utc).replace(tzinfo=None)
    assert key_notes([check]) == []
