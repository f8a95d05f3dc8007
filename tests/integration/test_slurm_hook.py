"""SlurmHook against the real logins of the local site: one reused connection, refused host keys,
classified SSH and command errors, sbatch rejections, the bastion, and jobs found by name.

Every test opens its own connections (``hook.close()`` first) and reads ``SlurmHook.stats`` as
differences, since the counters are per process and other tests of the same xdist worker use them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import pathlib
import subprocess
import time
from collections.abc import Iterator

import pytest

from airflow_desc.exceptions import ClusterCommandError, ClusterUnreachable, SlurmSubmitError
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.slurm import parse_sacct, sacct_command, scancel_command
from airflow_desc.slurm.quoting import quote_path
from tests.integration.site import Site
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("in_process_airflow_home")


def fresh_hook(ssh_conn_id: str, **kwargs: object) -> SlurmHook:
    hook = SlurmHook(ssh_conn_id, **kwargs)  # type: ignore[arg-type]
    hook.close()
    return hook


@pytest.fixture
def perlmutter(site: Site) -> Iterator[SlurmHook]:
    hook = fresh_hook("perlmutter_ssh", cluster="perlmutter")
    yield hook
    hook.close()


@pytest.fixture
def s3df(site: Site) -> Iterator[SlurmHook]:
    hook = fresh_hook("s3df_ssh", cluster="s3df")
    yield hook
    hook.close()


def counts(conn_id: str) -> collections.Counter[str]:
    return collections.Counter(SlurmHook.stats[conn_id])


def delta(conn_id: str, before: collections.Counter[str]) -> collections.Counter[str]:
    return counts(conn_id) - before


def connection_json(site: Site, port: int, **extra: object) -> str:
    return json.dumps(
        {
            "conn_type": "ssh",
            "host": "127.0.0.1",
            "port": port,
            "login": site.user,
            "extra": {"key_file": site.key, **extra},
        }
    )


def public_host_key(site: Site, login: str) -> str:
    return (pathlib.Path(site.dir) / "ssh" / f"host_{login}_ed25519.pub").read_text().strip()


@pytest.fixture
def empty_home(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """No ~/.ssh (known_hosts, config, keys) and no agent: only what the connection carries counts."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


# --- the connection ------------------------------------------------------------------------------


def test_one_connection_serves_many_commands(perlmutter: SlurmHook) -> None:
    before = counts("perlmutter_ssh")
    outputs = [perlmutter.run(f"echo run-{i}").stdout for i in range(10)]
    assert outputs == [f"run-{i}\n" for i in range(10)]
    # A second hook instance for the same connection shares the cached client.
    assert SlurmHook("perlmutter_ssh").run("true").returncode == 0
    used = delta("perlmutter_ssh", before)
    assert used["connections"] == 1, used
    assert used["commands"] == 11 and used["echo"] == 10, used


def test_a_host_key_of_another_login_is_refused(
    site: Site, empty_home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 2222 is perlmutter's login; the connection carries the s3df login's key.
    wrong = public_host_key(site, "s3df")
    assert wrong.split()[1] not in public_host_key(site, "perlmutter")
    monkeypatch.setenv(
        "AIRFLOW_CONN_DESC_IT_WRONG_HOST_KEY",
        connection_json(site, site.ports["perlmutter"], host_key=wrong),
    )
    hook = fresh_hook("desc_it_wrong_host_key", retries=3, retry_wait=5)
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable) as caught:
        hook.run("true")
    message = str(caught.value)
    assert "host key" in message and "refusing" in message, message
    assert "desc_it_wrong_host_key" in message and ":2222" in message, message
    # A verdict, not a network hiccup: no retry (retry_wait=5 would show).
    assert time.monotonic() - started < 5
    assert not getattr(caught.value, "transient", False)
    assert SlurmHook.stats["desc_it_wrong_host_key"]["connections"] == 0


def test_an_unknown_host_key_is_refused(
    site: Site, empty_home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DESC_IT_NO_HOST_KEY",
        connection_json(site, site.ports["perlmutter"], no_host_key_check=False),
    )
    hook = fresh_hook("desc_it_no_host_key", retries=2, retry_wait=5)
    with pytest.raises(ClusterUnreachable) as caught:
        hook.run("true")
    message = str(caught.value)
    assert "unknown" in message and "refusing" in message, message
    assert "host_key" in message, message
    # Nothing was learned on the way: the empty home still has no known_hosts.
    assert not (empty_home / ".ssh" / "known_hosts").exists()


def test_a_connection_without_host_key_checking_is_refused(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DESC_IT_NO_CHECK",
        connection_json(site, site.ports["perlmutter"], no_host_key_check=True),
    )
    hook = fresh_hook("desc_it_no_check")
    with pytest.raises(ClusterUnreachable) as caught:
        hook.run("true")
    message = str(caught.value)
    assert "host-key checking off" in message and "refuses" in message, message
    assert "host_key extra" in message, message
    assert SlurmHook.stats["desc_it_no_check"]["connections"] == 0


@pytest.mark.parametrize("through_bastion", [False, True], ids=["login", "bastion"])
def test_a_connection_allowing_host_key_changes_is_refused_before_any_command(
    site: Site, monkeypatch: pytest.MonkeyPatch, through_bastion: bool
) -> None:
    # Even with the right key pinned: allow_host_key_change makes the SSH provider skip known_hosts
    # and accept whatever key the server shows.
    loose = connection_json(
        site, site.ports["bastion" if through_bastion else "perlmutter"], allow_host_key_change=True
    )
    if through_bastion:
        monkeypatch.setenv("AIRFLOW_CONN_DESC_IT_LOOSE_BASTION", loose)
        conn = json.loads(connection_json(site, site.ports["s3df"], host_key=public_host_key(site, "s3df")))
        conn["extra"]["jump_conn_id"] = "desc_it_loose_bastion"
        monkeypatch.setenv("AIRFLOW_CONN_DESC_IT_LOOSE", json.dumps(conn))
    else:
        monkeypatch.setenv("AIRFLOW_CONN_DESC_IT_LOOSE", loose)
    hook = fresh_hook("desc_it_loose", retries=3, retry_wait=5)
    before = counts("desc_it_loose"), counts("desc_it_loose_bastion")
    started = time.monotonic()
    try:
        with pytest.raises(ClusterUnreachable) as caught:
            hook.run("touch should-never-run")
    finally:
        hook.close()
    message = str(caught.value)
    refused = "desc_it_loose_bastion" if through_bastion else "desc_it_loose"
    port = site.ports["bastion" if through_bastion else "perlmutter"]
    assert f"(connection {refused})" in message, message
    assert "allow_host_key_change: true" in message and "refuses" in message, message
    assert f"ssh-keyscan -t ed25519 -p {port} 127.0.0.1" in message, message
    assert "host_key extra" in message and "known_hosts" in message, message
    assert time.monotonic() - started < 5, "a refused policy is a verdict, not worth a retry"
    # Refused before connecting, so before any command.
    assert delta("desc_it_loose", before[0]) == collections.Counter()
    assert delta("desc_it_loose_bastion", before[1]) == collections.Counter()


def test_a_key_not_in_authorized_keys_fails_authentication(
    site: Site, tmp_path: pathlib.Path, empty_home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "stranger_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stranger", "-f", str(key)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    conn = json.loads(
        connection_json(site, site.ports["perlmutter"], host_key=public_host_key(site, "perlmutter"))
    )
    conn["extra"].update(key_file=str(key), look_for_keys=False)
    monkeypatch.setenv("AIRFLOW_CONN_DESC_IT_STRANGER", json.dumps(conn))
    hook = fresh_hook("desc_it_stranger", retries=3, retry_wait=5)
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable) as caught:
        hook.run("true")
    message = str(caught.value)
    assert "authentication failed" in message, message
    assert "sshproxy" in message and "expired" in message, message
    assert "authorized_keys" in message, message
    assert time.monotonic() - started < 5, "an authentication failure is not worth a retry"


def test_a_closed_port_is_unreachable_after_retries(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DESC_IT_CLOSED_PORT",
        connection_json(site, 1, host_key=public_host_key(site, "perlmutter")),
    )
    hook = fresh_hook("desc_it_closed_port", retries=2, retry_wait=0.1)
    started = time.monotonic()
    with pytest.raises(ClusterUnreachable) as caught:
        hook.run("true")
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "cannot connect" in message and "127.0.0.1:1" in message, message
    assert getattr(caught.value, "transient", False), "a refused connection is worth a retry"
    assert 0.1 <= elapsed < 15, f"one retry after 0.1 s expected, took {elapsed:.2f} s"
    assert SlurmHook.stats["desc_it_closed_port"]["connections"] == 0


# --- commands ------------------------------------------------------------------------------------


def test_a_missing_command_is_named(perlmutter: SlurmHook) -> None:
    with pytest.raises(ClusterCommandError) as caught:
        perlmutter.run("no-such-command-xyz")
    assert caught.value.returncode == 127
    assert "command not found" in str(caught.value)
    assert "no-such-command-xyz" in str(caught.value)
    assert "no-such-command-xyz" in caught.value.stderr
    # The connection survives a failed command.
    assert perlmutter.run("echo still-here").stdout == "still-here\n"


def submit_expecting_rejection(hook: SlurmHook, script: str, remote_dir: str) -> SlurmSubmitError:
    try:
        job = hook.submit(script, remote_dir=remote_dir, script_name="job.sh")
    except SlurmSubmitError as exc:
        return exc
    hook.run(scancel_command([job.job_id]), check=False)
    raise AssertionError(f"sbatch accepted job {job.job_id} on {hook.cluster}:\n{script}")


@pytest.fixture
def remote_dir(perlmutter: SlurmHook, token: str) -> Iterator[str]:
    path = f"~/airflow-desc-tests/hook-{token}"
    yield path
    perlmutter.run(f"rm -rf -- {quote_path(path)}", check=False)


def test_sbatch_refuses_a_walltime_over_the_partition_maximum(s3df: SlurmHook, remote_dir: str) -> None:
    script = "#!/bin/bash\n#SBATCH --time=03:00:00\n#SBATCH --output=/dev/null\ntrue\n"
    error = submit_expecting_rejection(s3df, script, remote_dir)
    assert error.returncode != 0
    assert "time limit" in error.stderr.lower(), error.stderr
    assert "sbatch rejected the job" in str(error) and "time limit" in str(error).lower()
    assert "sbatch" in error.command


def test_sbatch_refuses_more_memory_than_a_node(perlmutter: SlurmHook, remote_dir: str) -> None:
    script = "#!/bin/bash\n#SBATCH --mem=100G\n#SBATCH --time=1\n#SBATCH --output=/dev/null\ntrue\n"
    error = submit_expecting_rejection(perlmutter, script, remote_dir)
    assert error.returncode != 0
    stderr = error.stderr.lower()
    assert "memory specification" in stderr or "node configuration" in stderr, error.stderr
    assert error.stderr.strip().splitlines()[-1] in str(error)


def test_the_bastion_carries_the_s3df_connection(site: Site) -> None:
    via = SlurmHook("s3df_ssh", jump_conn_id="bastion_ssh", cluster="s3df")
    bastion = SlurmHook("bastion_ssh", jump_conn_id="")
    via.close()
    bastion.close()
    before_bastion, before_s3df = counts("bastion_ssh"), counts("s3df_ssh")
    try:
        out = via.run("scontrol show config | grep ClusterName").stdout
        assert out.split("=")[-1].strip() == "s3df", out
        assert via.run("sinfo -h -o %P").stdout.split() == ["roma*"]
        assert delta("bastion_ssh", before_bastion)["connections"] == 1
        assert delta("s3df_ssh", before_s3df)["connections"] == 1
        # The tunnel runs no command on the bastion itself.
        assert delta("bastion_ssh", before_bastion)["commands"] == 0
    finally:
        via.close()
        bastion.close()


def test_commands_from_threads_share_one_connection_through_the_bastion(site: Site) -> None:
    # As the triggerer's arun() does: threads over one shared connection. Fast commands make the
    # server close each channel as our EOF goes out; an EOF sent after that close made OpenSSH drop
    # the whole connection ("ieof packet referred to nonexistent channel"), failing the other
    # threads' commands (exit -1) and reconnecting.
    via = SlurmHook("s3df_ssh", jump_conn_id="bastion_ssh", cluster="s3df")
    bastion = SlurmHook("bastion_ssh", jump_conn_id="")
    via.close()
    bastion.close()
    before_bastion, before_s3df = counts("bastion_ssh"), counts("s3df_ssh")

    def run_many(worker: int) -> list[str]:
        return [via.run(f"echo {worker}-{i}").stdout for i in range(150)]

    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            outputs = list(pool.map(run_many, range(3)))
        assert outputs == [[f"{w}-{i}\n" for i in range(150)] for w in range(3)]
        assert delta("s3df_ssh", before_s3df)["connections"] == 1
        assert delta("bastion_ssh", before_bastion)["connections"] == 1
    finally:
        via.close()
        bastion.close()


def test_find_jobs_by_name_while_queued_and_after_cancel(perlmutter: SlurmHook, token: str) -> None:
    name = f"desc-it-find-{token}"
    submit = f"sbatch --parsable --hold -J {name} -t 1 -o /dev/null --wrap 'sleep 30'"
    job_id = perlmutter.run(submit).stdout.strip().split(";")[0]
    by_name = sacct_command(name=name, start="now-1day")
    try:
        # Held, the job is only in the queue: slurmdbd records a job once it is eligible.
        assert [row.job_id for row in perlmutter.squeue(name=name)] == [job_id]
        assert perlmutter.find_jobs_by_name(name) == [job_id]
        # sacct selects jobs by name through their eligible time, so a job cancelled while still
        # held is never found by name (only by id): release it first, cancel it once recorded.
        perlmutter.run(f"scontrol release {job_id}")
        wait_for(
            lambda: parse_sacct(perlmutter.run(by_name).stdout), timeout=60, what="slurmdbd records the job"
        )
    finally:
        perlmutter.scancel([job_id])
    # Gone from the queue, the job is still found, now through sacct.
    wait_for(lambda: not perlmutter.squeue(name=name), timeout=60, what="the cancelled job leaves squeue")
    assert perlmutter.find_jobs_by_name(name) == [job_id]
    [job] = [row for row in parse_sacct(perlmutter.run(by_name).stdout) if row.step is None]
    assert job.state.state.value == "CANCELLED", job
    assert perlmutter.find_jobs_by_name(f"desc-it-find-other-{token}") == []
