"""SlurmOperator's pure parts: job names, task dirs, walltimes, the resources of the next try.

Jobs come from real sacct text: the local site's recordings (tests/data/site) and the
site-shaped fixture of tests/data/slurm for the states the site recordings lack
(TIMEOUT, NODE_FAIL, PREEMPTED).
"""

from __future__ import annotations

import pathlib
import re
import shlex
from collections.abc import Sequence
from typing import Any

import pytest

from airflow_desc.clusters import ClusterProfile
from airflow_desc.exceptions import ResourceLimitError
from airflow_desc.operators.escalation import escalate_job, task_walltime_s
from airflow_desc.operators.job_names import job_name_for, task_dir_for
from airflow_desc.operators.slurm import SlurmOperator
from airflow_desc.slurm import (
    JobAccounting,
    JobSpec,
    diagnose,
    group_accounting,
    parse_sacct,
    render_job_script,
    sacct_command,
    submit_script_command,
)
from airflow_desc.slurm.nodes import NodeState, parse_sinfo_nodes
from airflow_desc.slurm.script import CONTAINER_SUPERVISOR_NAME, container_supervisor, measured_payload
from tests.site_recordings import site_jobs
from tests.unit.conftest import s3df_profile

DATA = pathlib.Path(__file__).parents[2] / "data"


def site_job(name: str, job_id: str) -> JobAccounting:
    return site_jobs(name)[job_id]


def fixture_job(job_id: str) -> JobAccounting:
    return group_accounting(parse_sacct((DATA / "slurm" / "sacct_mixed.txt").read_text()))[job_id]


CGROUP_OOM = site_job("sacct-mixed-cgroup.txt", "5000027")  # OUT_OF_MEMORY, ReqMem 100M
LINUXPROC_OOM = site_job("sacct-mixed-linuxproc.txt", "5000022")  # FAILED 0:9, ReqMem 100M
EXIT_3 = site_job("sacct-mixed-cgroup.txt", "5000028")
TIMEOUT = fixture_job("5000103")  # TIMEOUT, Timelimit 00:01:00
NODE_FAIL = fixture_job("5000111")  # on nid001234
PREEMPTED = fixture_job("5000112")  # on nid001235


def profile(**overrides: Any) -> ClusterProfile:
    """A cluster of 2 GB per core: s3df with 4 cores and 8192 MB per node, 30 minutes at most."""
    return s3df_profile(**{"cores_per_node": 4, "max_walltime": "00:30:00", **overrides})


def operator(**kwargs: Any) -> SlurmOperator:
    return SlurmOperator(task_id="group.processEimage", command="processEimage.py", **kwargs)


#: A partition of four usable nodes, as ``sinfo -N`` reports it: a failed node can be left out.
PARTITION = parse_sinfo_nodes(
    "nid001234|debug|mixed|none\nnid001235|debug|idle|none\nnid009999|debug|idle|none\nnid000002|debug|idle|none\n"
)


def escalate(
    op: SlurmOperator,
    prof: ClusterProfile,
    acct: JobAccounting,
    state: dict[str, Any] | None = None,
    nodes: Sequence[NodeState] | None = PARTITION,
) -> dict[str, Any]:
    """What the operator's next try asks for (``escalate_job`` with the operator's factors)."""
    return escalate_job(
        prof, acct, diagnose(acct), state or {}, escalate=op.escalate,
        timeout_factor=op.timeout_factor, memory_factor=op.memory_factor, partition_nodes=nodes,
    )  # fmt: skip


def test_operator_builds_outside_a_dag() -> None:
    op = operator(cpus=2, time_limit="00:10:00")
    assert op.task_id == "group.processEimage"
    assert op.retries == 2  # retries by cause are the point
    assert op.escalate and (op.timeout_factor, op.memory_factor) == (2.0, 2.0)


# --- job names ---

RUN = "manual__2026-11-28T01:00:00+00:00"


def test_job_name_is_deterministic_and_readable() -> None:
    name = job_name_for("dc1", RUN, "group.processEimage", -1, 2)
    assert name == job_name_for("dc1", RUN, "group.processEimage", -1, 2)
    assert re.fullmatch(r"processEimage\.[0-9a-f]{12}\.t2", name)


@pytest.mark.parametrize(
    "other",
    [
        ("dc1", RUN, "group.processEimage", -1, 3),
        ("dc1", RUN, "group.processEimage", 0, 2),
        ("dc1", RUN, "group.processEimage", 1, 2),
        ("dc1", "manual__2026-11-28T02:00:00+00:00", "group.processEimage", -1, 2),
        ("dc2", RUN, "group.processEimage", -1, 2),
        ("dc1", RUN, "other.processEimage", -1, 2),
    ],
    ids=["try", "map-0", "map-1", "run", "dag", "task-group"],
)
def test_job_name_differs_by_try_map_index_run_dag_and_task(other: tuple[Any, ...]) -> None:
    assert job_name_for(*other) != job_name_for("dc1", RUN, "group.processEimage", -1, 2)


def test_job_names_of_the_tries_of_one_task_instance_share_their_prefix() -> None:
    # Only the try differs: one name prefix finds every try of a task instance.
    first, second = (job_name_for("dc1", RUN, "t", 4, n) for n in (1, 2))
    assert first.rsplit(".", 1)[0] == second.rsplit(".", 1)[0]


@pytest.mark.parametrize(
    "task_id",
    ["processEimage", "group.sub.process_eimage", "odd|name,with spaces$`#\"'", "x" * 200, "tâche"],
)
def test_job_name_is_accepted_by_sbatch_and_sacct(task_id: str) -> None:
    name = job_name_for("dc1", RUN, task_id, 7, 1)
    assert "|" not in name and "," not in name
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
    assert len(name) <= 40 + 1 + 12 + 3
    spec = JobSpec(job_name=name, command="true")
    assert f"#SBATCH --job-name={name}\n" in render_job_script(spec)
    assert f"--name={name}" in sacct_command(name=name, start="now-1days")


# --- task dirs ---


def test_task_dir_sanitizes_the_run_id() -> None:
    path = task_dir_for("airflow-desc/", "dc1", RUN, "group.processEimage", -1)
    assert path == "airflow-desc/dc1/manual__2026-11-28T01_00_00_00_00/group.processEimage"
    assert ":" not in path and "+" not in path


def test_task_dir_of_a_mapped_task_carries_its_index() -> None:
    assert task_dir_for("/scratch/desc", "dc1", RUN, "t", 3).endswith("/t.3")
    assert task_dir_for("/scratch/desc", "dc1", RUN, "t", 0) != task_dir_for(
        "/scratch/desc", "dc1", RUN, "t", -1
    )


def test_task_dirs_of_a_manual_and_a_scheduled_run_differ() -> None:
    scheduled = RUN.replace("manual__", "scheduled__")
    assert task_dir_for("w", "dc1", RUN, "t", -1) != task_dir_for("w", "dc1", scheduled, "t", -1)


def test_task_dir_is_a_remote_dir_the_submit_command_takes_as_is() -> None:
    path = task_dir_for("/scratch/desc", "dc1", RUN, "group.processEimage", 2)
    made = f"(umask 077 && mkdir -p -- {path} && cat > {path}/t1.sh) && "
    assert submit_script_command(path, "t1.sh").startswith(made)


def test_task_dir_keeps_a_home_relative_work_dir() -> None:
    assert task_dir_for("~/runs", "d", "r", "t", -1) == "~/runs/d/r/t"


# --- walltimes ---


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        (90, 5400),  # a bare number is minutes, as for sbatch --time
        (1.5, 90),
        ("90", 5400),
        (" 30 ", 1800),
        ("01:30:00", 5400),
        ("2:30", 150),  # MM:SS
        ("1-00:00:00", 86400),
        ("1-12", 129600),  # D-HH
    ],
)
def test_walltime_s(value: str | int | float | None, seconds: int | None) -> None:
    assert task_walltime_s(value) == seconds


@pytest.mark.parametrize("value", ["UNLIMITED", "soon", "1:2:3:4"])
def test_walltime_s_refuses_what_sbatch_would_not_read(value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value)) + "|not a SLURM duration"):
        task_walltime_s(value)


# --- resources of the next job ---


def test_resources_without_escalation_are_what_the_task_asks_for() -> None:
    res = operator(cpus="2", mem_mb="3000", time_limit="00:10:00")._resources(profile(), {})
    assert res == {"cpus": 2, "mem_mb": 3000, "time_limit_s": 600, "partition": "roma", "exclude": None}


def test_resources_of_the_task_override_the_profile_partition() -> None:
    assert operator(partition="milano")._resources(profile(), {})["partition"] == "milano"


def test_resources_apply_an_escalation() -> None:
    state = {
        "escalation": {
            "cpus": 3,
            "mem_mb": 6000,
            "time_limit_s": 1200,
            "partition": "bigmem",
            "exclude": ["nid2", "nid1", "nid2"],
        }
    }
    res = operator(cpus=1, mem_mb=3000, time_limit=10)._resources(profile(), state)
    assert res == {
        "cpus": 3,
        "mem_mb": 6000,
        "time_limit_s": 1200,
        "partition": "bigmem",
        "exclude": "nid1,nid2",
    }


@pytest.mark.parametrize(
    ("acct", "used", "expected"),
    [
        (TIMEOUT, {"time_limit_s": 600, "mem_mb": 1000}, {"time_limit_s": 1200, "mem_mb": 1000, "cpus": 1}),
        (CGROUP_OOM, {"time_limit_s": 600, "mem_mb": 3000}, {"time_limit_s": 600, "mem_mb": 6000, "cpus": 3}),
        (NODE_FAIL, {"time_limit_s": 600, "mem_mb": 1000}, {"time_limit_s": 600, "mem_mb": 1000, "cpus": 1}),
    ],
    ids=["timeout", "oom", "node-failure"],
)
def test_the_next_try_asks_for_the_escalated_resources(
    acct: JobAccounting, used: dict[str, int], expected: dict[str, int]
) -> None:
    op, prof = operator(mem_mb=1000, time_limit="00:10:00"), profile()
    esc = escalate(op, prof, acct, {"resources": used})
    res = op._resources(prof, {"escalation": esc, "resources": used})
    assert {k: res[k] for k in expected} == expected
    assert res["exclude"] == ("nid001234" if acct is NODE_FAIL else None)


@pytest.mark.parametrize(
    ("kwargs", "state", "limit"),
    [
        ({"mem_mb": 10000}, {}, "memory 10000 MB per node exceeds the 8192 MB"),
        ({"cpus": 8}, {}, "8 CPUs per node exceed the 4 cores"),
        ({"time_limit": "01:00:00"}, {}, "walltime 1:00:00 exceeds the 0:30:00 maximum"),
        # An escalation recorded under a bigger profile, now over the limit.
        ({}, {"escalation": {"time_limit_s": 3600}}, "walltime 1:00:00 exceeds"),
        ({}, {"escalation": {"mem_mb": 16384, "cpus": 4}}, "memory 16384 MB"),
    ],
)
def test_resources_above_the_cluster_limits_are_refused(
    kwargs: dict[str, Any], state: dict[str, Any], limit: str
) -> None:
    with pytest.raises(ResourceLimitError, match=re.escape(limit)):
        operator(**kwargs)._resources(profile(), state)


def test_the_high_memory_rerun_gets_more_memory_than_the_try_that_ran_out() -> None:
    op, prof = operator(mem_mb=2048), profile(high_memory_partition="bigmem")
    used = {"mem_mb": 8192, "cpus": 4}
    esc = escalate(op, prof, CGROUP_OOM, {"resources": used, "escalation": {"mem_mb": 8192, "cpus": 4}})
    assert esc["partition"] == "bigmem"
    res = op._resources(prof, {"escalation": esc, "resources": used})
    assert res["mem_mb"] is None or res["mem_mb"] > used["mem_mb"]


def test_a_profiles_sbatch_options_go_in_every_job_script_and_the_operators_win() -> None:
    from airflow_desc.operators.job_script import job_spec_for

    profile = s3df_profile(sbatch_options={"licenses": "sps", "comment": "desc"})
    op = SlurmOperator(task_id="t", command="true", cluster="s3df", sbatch_args={"comment": "mine"})
    res = {"partition": "roma", "time_limit_s": 60, "cpus": 1, "mem_mb": None, "exclude": ""}
    script = render_job_script(job_spec_for(op, profile, res, name="j", log_pattern="logs/%j.log"))
    assert "#SBATCH --licenses=sps\n" in script and "#SBATCH --comment=mine\n" in script
    assert script.count("#SBATCH --comment=") == 1


def test_the_profile_says_how_a_payload_runs_in_its_container() -> None:
    from airflow_desc.operators.bundle import SlurmBundleOperator
    from airflow_desc.operators.job_script import job_spec_for

    profile = s3df_profile(
        container_runtime="podman",
        container_image="localhost/default:1",
        container_options=["--pull=never", "--network=none"],
        container_binds=["/sdf/group/desc:/desc:ro"],
        env={"SITE": "s3df"},
    )
    res = {"partition": "roma", "time_limit_s": 60, "cpus": 1, "mem_mb": None, "exclude": ""}
    scripts = {
        image: render_job_script(
            job_spec_for(
                SlurmOperator(task_id="t", command="true", cluster="s3df", container_image=image),
                profile,
                res,
                name="j",
                log_pattern="logs/%j.log",
            )
        )
        for image in ("localhost/mine:2", None)
    }
    # Under the shell that stops the container when the job is stopped (it writes "run --name ...").
    words = f"bash -c {shlex.quote(container_supervisor())} {CONTAINER_SUPERVISOR_NAME} podman"
    words += " --rm --pull=never --network=none --volume /sdf/group/desc:/desc:ro --env SITE"
    words += " --env DESC_USAGE_FILE"  # the file the container writes what its payload used into
    measured = shlex.quote(measured_payload("true"))
    assert f"{words} " in scripts["localhost/mine:2"]
    assert (
        f' --volume "$PWD:$PWD" --workdir "$PWD" localhost/mine:2 bash -c {measured} &\n'
        in scripts["localhost/mine:2"]
    )
    assert f" localhost/default:1 bash -c {measured} &\n" in scripts[None]  # the cluster's default image
    # A bundle's pilot runs on the node: its instances run in their containers (see the manifest).
    assert SlurmBundleOperator.payload_in_container is False
    op = SlurmOperator(task_id="t", command="true", cluster="s3df")
    op.payload_in_container = False
    assert "podman" not in render_job_script(job_spec_for(op, profile, res, name="j", log_pattern="l/%j"))


def test_an_image_on_a_cluster_without_a_container_runtime_says_what_to_set() -> None:
    from airflow_desc.operators.job_script import container_for

    with pytest.raises(
        ValueError, match="container image 'localhost/x:1' but cluster 's3df' has container_runtime"
    ):
        container_for(s3df_profile(), "localhost/x:1")
    assert container_for(s3df_profile(), None).runtime == "none"


def test_a_workflow_job_starts_in_the_work_dir_of_the_cluster_it_goes_to_once_per_script() -> None:
    from airflow_desc.operators.bundle import SlurmBundleOperator
    from airflow_desc.operators.job_script import job_spec_for
    from airflow_desc.operators.workflow import WorkflowBatchOperator

    assert WorkflowBatchOperator.in_work_dir and SlurmBundleOperator.in_work_dir
    res = {"partition": "roma", "time_limit_s": 60, "cpus": 1, "mem_mb": None, "exclude": ""}
    op = SlurmOperator(task_id="t", command="true", cluster="s3df")
    home = s3df_profile(work_dir="desc work")
    assert "mkdir -p" not in render_job_script(job_spec_for(op, home, res, name="j", log_pattern="l/%j"))
    op.in_work_dir = True
    fallback = s3df_profile(work_dir="/sdf/desc")
    # A try resubmitted in one process (a node failure, a move to a fallback) asks again: one line each.
    for _ in range(2):
        script = render_job_script(job_spec_for(op, home, res, name="j", log_pattern="l/%j"))
        assert script.count("mkdir -p -- ") == 1 and "cd -- \"$HOME\"/'desc work'\n" in script
    moved = render_job_script(job_spec_for(op, fallback, res, name="j", log_pattern="l/%j"))
    assert moved.count("mkdir -p -- ") == 1 and "cd -- /sdf/desc\n" in moved
