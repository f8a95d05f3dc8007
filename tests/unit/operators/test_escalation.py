"""Escalation of a single job by cause: walltime after TIMEOUT, memory (and cores, or the high-memory
partition) after OUT_OF_MEMORY, node exclusion after NODE_FAIL / PREEMPTED; nothing otherwise.

Jobs come from real sacct text (see ``test_slurm``'s recordings).
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_desc.exceptions import ResourceLimitError
from airflow_desc.operators.escalation import EscalationExhausted, next_resources
from airflow_desc.slurm import JobAccounting, ReasonClass, diagnose
from airflow_desc.slurm.nodes import NodeState, parse_sinfo_nodes
from tests.unit.operators.test_slurm import (
    CGROUP_OOM,
    EXIT_3,
    LINUXPROC_OOM,
    NODE_FAIL,
    PREEMPTED,
    TIMEOUT,
    escalate,
    operator,
    profile,
)

# --- escalation after TIMEOUT ---


def test_timeout_doubles_the_walltime_it_ran_with() -> None:
    esc = escalate(operator(), profile(), TIMEOUT, {"resources": {"time_limit_s": 600}})
    assert esc == {"time_limit_s": 1200}


def test_timeout_without_a_recorded_request_uses_the_sacct_time_limit() -> None:
    assert TIMEOUT.job.time_limit_s == 60
    assert escalate(operator(), profile(), TIMEOUT) == {"time_limit_s": 120}


def test_timeout_escalation_is_capped_at_the_cluster_maximum() -> None:
    esc = escalate(operator(timeout_factor=3.0), profile(), TIMEOUT, {"resources": {"time_limit_s": 900}})
    assert esc["time_limit_s"] == 1800 == profile().max_walltime_s


def test_timeout_at_the_cluster_maximum_fails_for_good() -> None:
    with pytest.raises(EscalationExhausted) as caught:
        escalate(operator(), profile(), TIMEOUT, {"resources": {"time_limit_s": 1800}})
    message = str(caught.value)
    assert "s3df maximum walltime (1800 s)" in message
    assert "reached its time limit" in message  # the diagnosis comes first


def test_timeout_escalation_keeps_earlier_escalations() -> None:
    state = {"resources": {"time_limit_s": 600}, "escalation": {"exclude": ["nid000001"], "mem_mb": 4000}}
    esc = escalate(operator(), profile(), TIMEOUT, state)
    assert esc == {"exclude": ["nid000001"], "mem_mb": 4000, "time_limit_s": 1200, "cluster": "s3df"}
    assert state["escalation"] == {"exclude": ["nid000001"], "mem_mb": 4000}  # not changed in place


# --- escalation after running out of memory ---


@pytest.mark.parametrize("acct", [CGROUP_OOM, LINUXPROC_OOM], ids=["cgroup", "linuxproc"])
def test_out_of_memory_doubles_the_recorded_request(acct: JobAccounting) -> None:
    assert diagnose(acct).reason is ReasonClass.OUT_OF_MEMORY
    # No resources recorded: the 100M of sacct's ReqMem.
    assert escalate(operator(), profile(), acct) == {"mem_mb": 200, "cpus": 1}


def test_out_of_memory_asks_for_the_cores_that_come_with_the_memory() -> None:
    # 2 GB per core: 6000 MB take 3 cores.
    esc = escalate(operator(), profile(), CGROUP_OOM, {"resources": {"mem_mb": 3000, "cpus": 1}})
    assert esc == {"mem_mb": 6000, "cpus": 3}
    assert profile().cores_for_memory(6000) == 3


def test_out_of_memory_keeps_more_cores_than_the_memory_needs() -> None:
    esc = escalate(operator(), profile(), CGROUP_OOM, {"resources": {"mem_mb": 1000, "cpus": 4}})
    assert esc == {"mem_mb": 2000, "cpus": 4}


def test_out_of_memory_is_capped_at_a_node() -> None:
    esc = escalate(operator(), profile(), CGROUP_OOM, {"resources": {"mem_mb": 5000, "cpus": 1}})
    assert esc == {"mem_mb": 8192, "cpus": 4}


def test_out_of_memory_at_a_whole_node_moves_to_the_high_memory_partition() -> None:
    prof = profile(high_memory_partition="bigmem")
    state = {"resources": {"mem_mb": 8192, "cpus": 4}, "escalation": {"mem_mb": 8192, "cpus": 4}}
    esc = escalate(operator(), prof, CGROUP_OOM, state)
    assert esc == {"mem_mb": 16384, "cpus": 4, "partition": "bigmem", "cluster": "s3df"}


# --- out of memory where memory comes only with cores (mem_per_cpu_mb) ---

ASKED: dict[str, Any] = {"cpus": 1, "mem_mb": None, "time_limit": None, "partition": None, "nodes": 1}


def test_out_of_memory_on_a_memory_per_core_cluster_asks_for_more_cores_not_more_mem() -> None:
    prof = profile(mem_per_cpu_mb=1000)  # 4 cores, 1000 MB each
    state = {"resources": {"cpus": 1, "mem_per_cpu_mb": 1000}}
    esc = escalate(operator(), prof, CGROUP_OOM, state)
    assert esc == {"cpus": 2, "mem_mb": 2000}
    res = next_resources(prof, {"escalation": esc}, **ASKED)
    assert (res["cpus"], res["mem_mb"], res["mem_per_cpu_mb"]) == (2, None, 1000)  # --mem-per-cpu, 2 CPUs


def test_memory_per_core_escalation_is_capped_at_a_nodes_cores_then_exhausted() -> None:
    prof = profile(mem_per_cpu_mb=1000)
    esc = escalate(operator(memory_factor=3.0), prof, CGROUP_OOM, {"resources": {"cpus": 2}})
    assert esc == {"cpus": 4, "mem_mb": 6000}  # 6 cores' worth, capped at the node's 4
    with pytest.raises(EscalationExhausted) as caught:
        escalate(operator(), prof, CGROUP_OOM, {"resources": {"cpus": 4}})
    assert "every core of a s3df node (4 cores carrying 4000 MB at mem_per_cpu_mb 1000)" in str(caught.value)
    moved = escalate(operator(), profile(mem_per_cpu_mb=1000, high_memory_partition="bigmem"), CGROUP_OOM,
                     {"resources": {"cpus": 4}})  # fmt: skip
    assert moved == {"partition": "bigmem", "mem_mb": 8000, "cluster": "s3df"}


def test_a_memory_request_on_a_memory_per_core_cluster_is_asked_as_cores() -> None:
    res = next_resources(
        profile(mem_per_cpu_mb=1000), {}, cpus=1, mem_mb=2500, time_limit=None, partition=None, nodes=1
    )
    assert (res["cpus"], res["mem_mb"], res["mem_per_cpu_mb"]) == (3, None, 1000)


# --- a job moved to another cluster (a fallback) ---


def test_a_moved_job_is_capped_to_the_fallback_and_leaves_the_other_clusters_partition_and_nodes() -> None:
    small = profile(name="small", cores_per_node=2, memory_per_node_mb=4096, max_walltime="00:10:00")
    esc = {"mem_mb": 6000, "time_limit_s": 1800, "partition": "bigmem", "exclude": ["n1"], "cluster": "s3df"}
    res = next_resources(
        small, {"escalation": esc}, cpus=4, mem_mb=None, time_limit=None, partition=None, nodes=1, fit=True
    )
    assert (res["cpus"], res["mem_mb"], res["time_limit_s"]) == (2, 4096, 600)
    assert (res["partition"], res["exclude"]) == (small.partition, None)
    with pytest.raises(ResourceLimitError):  # not moved: the same request is refused, as before
        next_resources(small, {"escalation": esc}, **{**ASKED, "cpus": 4})


def test_out_of_memory_on_the_high_memory_partition_keeps_doubling_there() -> None:
    # The profile describes standard nodes; on the high-memory partition SLURM enforces the limits
    # (a request above its nodes is rejected at submission with sbatch's own message).
    prof = profile(high_memory_partition="bigmem")
    state = {"resources": {"mem_mb": 16384, "partition": "bigmem"}, "escalation": {"partition": "bigmem"}}
    esc = escalate(operator(), prof, CGROUP_OOM, state)
    assert esc == {"partition": "bigmem", "mem_mb": 32768, "cluster": "s3df"}


def test_out_of_memory_at_a_whole_node_without_a_high_memory_partition_fails_for_good() -> None:
    with pytest.raises(EscalationExhausted) as caught:
        escalate(operator(), profile(), LINUXPROC_OOM, {"resources": {"mem_mb": 8192}})
    message = str(caught.value)
    assert "whole s3df node's memory (8192 MB)" in message
    assert "ran out of memory" in message


# --- node failure, preemption, other failures ---


@pytest.mark.parametrize(("acct", "node"), [(NODE_FAIL, "nid001234"), (PREEMPTED, "nid001235")])
def test_retryable_failure_excludes_the_node_and_keeps_the_resources(acct: JobAccounting, node: str) -> None:
    assert diagnose(acct).retryable
    state = {"resources": {"mem_mb": 4000, "time_limit_s": 600}}
    assert escalate(operator(), profile(), acct, state) == {"exclude": [node], "cluster": "s3df"}


@pytest.mark.parametrize(
    "nodes",
    [
        parse_sinfo_nodes("nid001234|debug|down*|Not responding\n"),
        parse_sinfo_nodes("nid001234|debug|down|test\nnid000002|debug|drained|Duplicate jobid\n"),
        None,
    ],
    ids=["only-node", "the-other-drained", "sinfo-unknown"],
)
def test_a_node_failure_excludes_nothing_when_no_other_node_can_run_the_job(
    nodes: list[NodeState] | None,
) -> None:
    # Excluding the partition's only usable node makes sbatch refuse the job for good.
    assert escalate(operator(), profile(), NODE_FAIL, {}, nodes) == {"exclude": []}


def test_excluded_nodes_accumulate_without_repeats() -> None:
    state = {"escalation": {"exclude": ["nid009999", "nid001234"], "time_limit_s": 1200}}
    esc = escalate(operator(), profile(), NODE_FAIL, state)
    assert esc == {"exclude": ["nid001234", "nid009999"], "time_limit_s": 1200, "cluster": "s3df"}


def test_a_payload_failure_changes_nothing() -> None:
    state = {"resources": {"mem_mb": 4000}, "escalation": {"time_limit_s": 1200}}
    assert escalate(operator(), profile(), EXIT_3, state) == {"time_limit_s": 1200}


@pytest.mark.parametrize("acct", [TIMEOUT, CGROUP_OOM, LINUXPROC_OOM], ids=["timeout", "cgroup", "linuxproc"])
def test_escalate_false_changes_nothing_even_at_the_limits(acct: JobAccounting) -> None:
    state = {"resources": {"time_limit_s": 1800, "mem_mb": 8192}, "escalation": {"cpus": 2}}
    assert escalate(operator(escalate=False), profile(), acct, state) == {"cpus": 2}
