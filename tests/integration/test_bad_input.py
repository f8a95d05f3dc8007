"""Hostile values reach SLURM literally or are refused before anything is sent; never executed.

Every value that could run a command if a shell saw it tries to create ``pwned-<what>-<token>``
in the desc user's home (shared by both logins) or in /tmp; each test checks that no such file
appeared. The token keeps tests independent when they run in parallel.
"""

from __future__ import annotations

import asyncio
import posixpath
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_desc.config import configured_cluster_profiles
from airflow_desc.exceptions import ResourceLimitError
from airflow_desc.hooks.slurm import SlurmHook
from airflow_desc.operators.slurm import SlurmOperator
from airflow_desc.slurm import (
    JobSpec,
    accounting_from_payload,
    parse_sacct,
    render_job_script,
    sacct_command,
)
from airflow_desc.slurm.quoting import quote_path
from airflow_desc.triggers.slurm import SlurmJobTrigger
from tests.integration.site import Site
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("in_process_airflow_home")

CONN = "perlmutter_ssh"


@pytest.fixture
def remote_dir(hook: SlurmHook, token: str) -> Iterator[str]:
    path = f"~/airflow-desc-tests/bad-input-{token}"
    yield path
    hook.run(f"rm -rf -- {quote_path(path)}", check=False)


@pytest.fixture
def no_pwned(hook: SlurmHook, token: str) -> Iterator[None]:
    """After the test, no command smuggled in by a value has created its file."""
    yield
    found = hook.run(f"ls -d ~/pwned-* /tmp/pwned-* 2>/dev/null | grep -F -- {token} || true").stdout
    assert found == "", f"a value was executed by a shell: {found}"


def hostile(what: str, token: str) -> str:
    """Text that creates a ``~/pwned-<what>-*-<token>`` file in a shell, quoted or not.

    Unquoted and in double quotes the ``$(...)`` and backticks run; in single quotes the
    ``';...;'`` part breaks out; in double quotes the ``";...;"`` part does too. It has no ``/``,
    so that it can also be a file or directory name: ``cd`` alone goes home.
    """
    return (
        f"a b;$(cd;touch pwned-{what}-dollar-{token}) `cd;touch pwned-{what}-tick-{token}` "
        f"';cd;touch pwned-{what}-squote-{token};' \";cd;touch pwned-{what}-dquote-{token};\" \\ * ~"
    )


def commands_sent() -> int:
    return SlurmHook.stats[CONN]["commands"]


def ended(hook: SlurmHook, job_id: str) -> bool:
    acct = hook.sacct([job_id]).get(job_id)
    return acct is not None and acct.is_terminal and not acct.is_placeholder


# --- through render_job_script and SlurmHook.submit ----------------------------------------------


@pytest.mark.usefixtures("no_pwned")
def test_an_env_value_arrives_byte_identical(
    hook: SlurmHook, jobs: list[str], remote_dir: str, token: str
) -> None:
    value = hostile("env", token) + f" $(touch /tmp/pwned-envtmp-{token})"
    home = hook.run('printf %s "$HOME"').stdout
    spec = JobSpec(
        job_name=f"desc-it-env-{token}",
        command="printf '%s' \"$DESC_IT_VALUE\" > value.out",
        env={"DESC_IT_VALUE": value},
        workdir=remote_dir,
        output=posixpath.join(home, remote_dir[2:], "job-%j.log"),
        time_limit_s=60,
    )
    submitted = hook.submit(
        render_job_script(spec), remote_dir=remote_dir, script_name="job.sh", job_name=spec.job_name
    )
    jobs.append(submitted.job_id)
    wait_for(lambda: ended(hook, submitted.job_id), timeout=180, what=f"job {submitted.job_id} ends")
    acct = hook.sacct([submitted.job_id])[submitted.job_id]
    log = hook.read_tail(posixpath.join(remote_dir, f"job-{submitted.job_id}.log"))
    assert acct.state.state.value == "COMPLETED", log
    arrived = hook.run(f"cat -- {quote_path(posixpath.join(remote_dir, 'value.out'))}").stdout
    assert arrived == value, log


@pytest.mark.usefixtures("no_pwned")
def test_a_hostile_remote_dir_and_script_name_are_literal(
    hook: SlurmHook, jobs: list[str], remote_dir: str, token: str
) -> None:
    odd_dir = posixpath.join(remote_dir, hostile("dir", token))
    odd_name = hostile("script", token) + ".sh"
    script = "#!/bin/bash\n#SBATCH --hold\n#SBATCH --time=1\n#SBATCH --output=/dev/null\ntrue\n"
    submitted = hook.submit(script, remote_dir=odd_dir, script_name=odd_name)
    jobs.append(submitted.job_id)
    path = quote_path(posixpath.join(odd_dir, odd_name))
    assert hook.run(f"cat -- {path}").stdout == script
    command = hook.run(f"scontrol show job {submitted.job_id} | grep -E '^ +Command='").stdout
    assert command.strip() == "Command=" + hook.run(f"readlink -f -- {path}").stdout.strip()


@pytest.mark.usefixtures("no_pwned")
def test_a_job_name_with_a_semicolon_and_spaces_reaches_slurm_literally(
    hook: SlurmHook, jobs: list[str], remote_dir: str, token: str
) -> None:
    # JobSpec refuses what an #SBATCH line cannot carry (quotes, $, `, #, \, newline) and what
    # breaks sacct (| and ,); the rest is written double-quoted and reaches SLURM as given.
    name = f"x; touch ~/pwned-name-{token} && echo *"
    spec = JobSpec(
        job_name=name, command="true", time_limit_s=60, output="/dev/null", extra_sbatch={"hold": None}
    )
    submitted = hook.submit(
        render_job_script(spec), remote_dir=remote_dir, script_name="job.sh", job_name=name
    )
    jobs.append(submitted.job_id)
    [row] = hook.squeue([submitted.job_id])
    assert row.name == name
    assert hook.find_jobs_by_name(name) == [submitted.job_id]


@pytest.mark.parametrize(
    "name",
    [
        "x\ntouch ~/pwned-newline",
        "x\rtouch ~/pwned-cr",
        "x; $(touch ~/pwned-dollar)",
        "x `touch ~/pwned-backtick`",
        "x' ; touch ~/pwned-quote",
        'x" ; touch ~/pwned-dquote',
        "x|y",
        "x,y",
        "x\0y",
    ],
)
def test_a_job_name_an_sbatch_line_cannot_carry_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="job_name"):
        JobSpec(job_name=name, command="true")


def test_refused_values_send_nothing(hook: SlurmHook, token: str) -> None:
    hook.run("true")  # connect first: the counter below must only see what the calls send
    before = commands_sent()
    with pytest.raises(ValueError, match="line break"):
        hook.find_jobs_by_name(f"x\ntouch ~/pwned-findnl-{token}")
    with pytest.raises(ValueError, match="','"):
        hook.find_jobs_by_name("x,y")
    for bad_id in (f"1; touch ~/pwned-id-{token}", "1 2", "$(id)", "1\n2", "", "1,2"):
        with pytest.raises(ValueError, match="job id"):
            hook.scancel([bad_id])
        with pytest.raises(ValueError, match="job id"):
            hook.sacct([bad_id])
        with pytest.raises(ValueError, match="job id"):
            hook.squeue([bad_id])
    with pytest.raises(ValueError, match="line break"):
        hook.submit("true\n", remote_dir=f"~/x\ntouch ~/pwned-dirnl-{token}", script_name="job.sh")
    with pytest.raises(ValueError, match="plain file name"):
        hook.submit("true\n", remote_dir="~/airflow-desc-tests", script_name="../../.bashrc")
    assert commands_sent() == before


@pytest.mark.usefixtures("no_pwned")
def test_find_jobs_by_a_hostile_name_finds_nothing(hook: SlurmHook, token: str) -> None:
    for name in (f"x; touch ~/pwned-find-{token}", hostile("find", token)):
        assert hook.find_jobs_by_name(name) == []
    assert hook.squeue(name=hostile("squeue", token)) == []


# --- cluster limits, before anything is sent -----------------------------------------------------


def test_check_request_names_the_limit_it_refuses(site: Site) -> None:
    profiles = configured_cluster_profiles()
    s3df, perlmutter = profiles.get("s3df"), profiles.get("perlmutter")
    with pytest.raises(ResourceLimitError) as walltime:
        s3df.check_request(cpus=1, mem_mb=None, time_limit_s=3 * 3600)
    assert "walltime 3:00:00 exceeds the 2:00:00 maximum" in str(walltime.value)
    assert "cluster s3df (partition roma)" in str(walltime.value)
    with pytest.raises(ResourceLimitError) as memory:
        perlmutter.check_request(cpus=1, mem_mb=100 * 1024, time_limit_s=60)
    assert "memory 102400 MB per node exceeds the 4096 MB of a node" in str(memory.value)
    with pytest.raises(ResourceLimitError) as both:
        perlmutter.check_request(cpus=3, mem_mb=5000, time_limit_s=3600)
    lines = str(both.value).splitlines()
    assert len(lines) == 3, lines
    assert "the 2 cores of a node" in lines[0] and "4096 MB" in lines[1] and "0:30:00 maximum" in lines[2]
    # At the limits exactly, nothing is refused.
    s3df.check_request(cpus=1, mem_mb=8192, time_limit_s=2 * 3600)
    perlmutter.check_request(cpus=2, mem_mb=4096, time_limit_s=30 * 60)
    with pytest.raises(ValueError, match="positive"):
        perlmutter.check_request(cpus=0, mem_mb=None, time_limit_s=None)


# --- the shared poller ---------------------------------------------------------------------------


def held_then_cancelled(hook: SlurmHook, jobs: list[str], name: str) -> str:
    """A job that never runs and ends CANCELLED, recorded by slurmdbd."""
    out = hook.run(f"sbatch --parsable --hold -J {shlex.quote(name)} -t 1 -o /dev/null --wrap true").stdout
    job_id = out.strip().split(";")[0]
    jobs.append(job_id)
    hook.scancel([job_id])
    # Read JobID and State only: a hostile name must not stop this wait.
    by_id = sacct_command([job_id], fields=("JobID", "State", "Partition"))
    wait_for(
        lambda: any(
            r.partition for r in parse_sacct(hook.run(by_id).stdout, ("JobID", "State", "Partition"))
        ),
        timeout=60,
        what=f"sacct records job {job_id}",
    )
    return job_id


async def events_of(triggers: list[SlurmJobTrigger], timeout: float) -> list[dict[str, Any] | None]:
    """Run the triggers in one loop; the first event of each, or None if it has not fired in time."""

    async def first(trigger: SlurmJobTrigger) -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    tasks = [asyncio.create_task(first(t)) for t in triggers]
    await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        task.cancel()
    return [t.result() if t.done() and not t.cancelled() else None for t in tasks]


def poll(job_id: str) -> SlurmJobTrigger:
    return SlurmJobTrigger(job_id=job_id, ssh_conn_id=CONN, poll_interval=1, vanish_grace=5)


@pytest.mark.usefixtures("no_pwned")
def test_a_malformed_job_id_does_not_stop_its_siblings(hook: SlurmHook, jobs: list[str], token: str) -> None:
    sibling = held_then_cancelled(hook, jobs, f"desc-it-sibling-{token}")
    triggers = [poll(sibling)]
    try:
        triggers.append(poll(f"1; touch ~/pwned-trigger-{token}"))
    except ValueError:
        pass  # refusing the id up front is fine too
    events = asyncio.run(events_of(triggers, timeout=15))
    assert events[0] is not None, "the sibling's trigger never fired: the poller died"
    assert accounting_from_payload(events[0]).state.state.value == "CANCELLED"
    if len(events) == 2:
        assert events[1] is not None and events[1]["status"] == "error", events[1]


def test_a_job_name_with_a_pipe_does_not_stop_its_siblings(
    hook: SlurmHook, jobs: list[str], token: str
) -> None:
    sibling = held_then_cancelled(hook, jobs, f"desc-it-sibling-{token}")
    piped = held_then_cancelled(hook, jobs, f"desc-it|pipe|{token}")
    events = asyncio.run(events_of([poll(sibling), poll(piped)], timeout=15))
    assert events[0] is not None, "the sibling's trigger never fired: the poller died"
    assert accounting_from_payload(events[0]).state.state.value == "CANCELLED"
    assert events[1] is not None, "the trigger of the job named with '|' never fired"


# --- values read back from the task state store --------------------------------------------------


class _Store:
    def __init__(self, slurm: dict[str, Any]) -> None:
        self.values: dict[str, Any] = {"slurm": slurm}

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def set(self, key: str, value: Any, retention: Any = None) -> None:
        self.values[key] = value


class _TI:
    dag_id, run_id, task_id, map_index, try_number = "desc_it_bad_state", "r", "bad_state", -1, 2

    def xcom_push(self, key: str, value: Any) -> None:
        pass


@pytest.mark.usefixtures("no_pwned")
def test_a_task_state_we_never_wrote_sends_nothing(hook: SlurmHook, remote_dir: str, token: str) -> None:
    """A job id or log path written into the task state store (the REST API can) fails the try, unsent.

    The secret is a real file on the login that a SlurmOperator of the site would read, were the
    saved log path trusted.
    """
    secret = posixpath.join(remote_dir, "secret")
    hook.run(f"mkdir -p -- {quote_path(remote_dir)} && echo canary > {quote_path(secret)}")
    failed = parse_sacct("900|FAILED|1:0", ("JobID", "State", "ExitCode"))
    event = {"status": "done", "job_id": "900", "rows": [dict(row.raw) for row in failed]}
    task_dir = f"airflow-desc/{_TI.dag_id}/r/bad_state"
    before = commands_sent()
    op = SlurmOperator(task_id="bad_state", command="true", cluster="perlmutter")
    hostile_id: Any = {"ti": _TI(), "task_state_store": _Store({"job_id": f"1; touch ~/pwned-state-{token}"})}
    with pytest.raises(AirflowFailException, match=r"'slurm': job_id = '1; touch"):
        op.execute(hostile_id)
    for log_path in (secret, f"{task_dir}/../../../{secret[2:]}", f"{task_dir}/t1-900.out\n{secret}"):
        context: Any = {"ti": _TI(), "task_state_store": _Store({"job_id": "900", "log_path": log_path})}
        with pytest.raises(AirflowFailException, match=r"'slurm': log_path = .*nothing was run"):
            op.execute_complete(context, event)
    assert commands_sent() == before
