"""Nodes: which of a partition's nodes can run a job, whom a node failure excludes, a drain said plainly.

After a node failure (``NODE_FAIL``) the job is resubmitted with the same resources; it asks
SLURM to keep off the failed node (``--exclude``) **only when another usable node of the partition
can run it** (:func:`exclusion_after_node_failure`). Excluding a partition's only node makes sbatch
refuse the job ("Requested node configuration is not available"), which turns a passing hardware
fault into a failed task; without the exclusion the job waits for the node to come back.

A node SLURM left DRAIN / DOWN (e.g. slurmctld's "Duplicate jobid" drain after it lost its state)
stops every job from running there until an admin resumes it: :func:`unavailable_notice` says so,
with SLURM's reason and the command to run.

Node states are sinfo's long names (``sinfo -N -o %T``, https://slurm.schedmd.com/sinfo.html#SECTION_NODE-STATE-CODES):
a trailing ``*`` means the node does not respond, ``~`` powered off, ``#`` powering up,
``!`` / ``%`` powering down, ``$`` / ``@`` maintenance / reboot pending, ``^`` rebooting, ``-`` planned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from airflow_desc.slurm.commands import SINFO_NODE_FORMAT
from airflow_desc.slurm.parse import SlurmOutputError

__all__ = [
    "NodeState",
    "exclusion_after_node_failure",
    "expand_hostlist",
    "parse_sinfo_nodes",
    "unavailable_notice",
]

#: Base states (flags stripped) in which a responding node takes jobs.
_USABLE = frozenset({"idle", "mixed", "allocated", "completing", "planned"})
#: Base states an admin has to act on before the node runs jobs again.
_UNAVAILABLE = frozenset({"down", "drained", "draining", "drain", "fail", "failing", "maint", "inval"})
_FLAGS = "*~#!%$@^-+"
_HOSTLIST = re.compile(r"^(?P<prefix>[^\[\]]*)\[(?P<ranges>[\d,-]+)\](?P<suffix>[^\[\]]*)$")


@dataclass(frozen=True)
class NodeState:
    """One node of one partition as ``sinfo -N`` reports it.

    :param name: the node.
    :param partition: the partition (without the default marker ``*``).
    :param state: the long state as printed, lower case, e.g. ``idle``, ``drained``, ``down*``.
    :param reason: why it is down or drained (``None`` for none).
    """

    name: str
    partition: str
    state: str
    reason: str | None = None

    @property
    def base_state(self) -> str:
        """The state without sinfo's flag characters."""
        return self.state.rstrip(_FLAGS)

    @property
    def usable(self) -> bool:
        """Whether the node takes jobs now: responding and neither down nor drained."""
        return self.base_state in _USABLE and not self.state.endswith("*")

    @property
    def unavailable(self) -> bool:
        """Whether the node is down, drained or failing, or does not respond."""
        return self.base_state in _UNAVAILABLE or self.state.endswith("*")


def parse_sinfo_nodes(stdout: str) -> list[NodeState]:
    """Read ``sinfo -h -N --format='%N|%P|%T|%E'`` output (one line per node and partition).

    :raises SlurmOutputError: for a line that is not four fields.
    """
    count = SINFO_NODE_FORMAT.count("|") + 1
    nodes = []
    for number, raw in enumerate(stdout.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split("|", count - 1)
        if len(parts) != count:
            raise SlurmOutputError(
                f"sinfo output line {number} has {len(parts)} fields, expected {count}: {line!r}",
                text=line,
                line_number=number,
            )
        name, partition, state, reason = (p.strip() for p in parts)
        nodes.append(
            NodeState(name, partition.rstrip("*"), state.lower(), None if reason in ("", "none") else reason)
        )
    return nodes


def expand_hostlist(text: str) -> list[str]:
    """Expand a one-bracket hostlist as sacct's NodeList prints it: ``nid[001-003,7]`` -> 3+1 names.

    Anything else (a plain name, or several names joined by ``,`` outside brackets) is split on ``,``.
    """
    names: list[str] = []
    for part in re.split(r",(?![^\[]*\])", text.strip()):
        match = _HOSTLIST.match(part)
        if match is None:
            if part:
                names.append(part)
            continue
        for item in match.group("ranges").split(","):
            low, _, high = item.partition("-")
            width = len(low)
            for number in range(int(low), int(high or low) + 1):
                names.append(f"{match.group('prefix')}{number:0{width}d}{match.group('suffix')}")
    return names


def exclusion_after_node_failure(
    failed: str | None,
    partition_nodes: Sequence[NodeState],
    excluded: Iterable[str] = (),
    *,
    nodes_needed: int = 1,
) -> tuple[list[str], str]:
    """Return the nodes the resubmission excludes after a node failure, and a note saying why.

    The failed nodes are added to the exclusions only while at least ``nodes_needed`` usable
    nodes of the partition stay outside them; otherwise the earlier exclusions are kept if that
    still leaves enough, else none: the job then waits for a node to come back rather than being
    refused by sbatch.

    :param failed: the failed job's NodeList (``None``: unknown, nothing to exclude).
    :param partition_nodes: the partition's nodes as sinfo reports them now.
    :param excluded: what earlier tries excluded.
    :param nodes_needed: how many nodes the job asks for.
    """
    before = sorted(set(excluded))
    failed_nodes = expand_hostlist(failed) if failed else []
    usable = {n.name for n in partition_nodes if n.usable}

    def enough(exclude: Iterable[str]) -> bool:
        return len(usable - set(exclude)) >= nodes_needed

    wanted = sorted({*before, *failed_nodes})
    if failed_nodes and enough(wanted):
        others = ", ".join(sorted(usable - set(wanted)))
        return wanted, f"the resubmission excludes {', '.join(failed_nodes)}: {others} can run it"
    if not failed_nodes:
        return before, "the failed node is not known: nothing more excluded"
    if before and enough(before):
        return before, (
            f"{', '.join(failed_nodes)} not excluded: no other usable node of the partition can run the "
            "job; it waits for a node to come back"
        )
    return [], (
        f"{', '.join(failed_nodes)} not excluded: no other usable node of the partition can run the job "
        f"(usable now: {', '.join(sorted(usable)) or 'none'}); it waits for a node to come back"
    )


def unavailable_notice(nodes: Sequence[NodeState], cluster: str) -> str | None:
    """Say plainly which of ``nodes`` SLURM left down or drained, why, and what an admin does.

    :param nodes: the nodes the job ran on, as sinfo reports them now.
    :param cluster: the cluster, for the message.
    :return: one sentence per node, or ``None`` when all of them take jobs.
    """
    seen: dict[str, NodeState] = {}
    for node in nodes:
        if node.unavailable:
            seen.setdefault(node.name, node)
    if not seen:
        return None
    return " ".join(
        f"Node {n.name} of {cluster} is {n.state.upper()} (SLURM's reason: {n.reason or 'none given'}): "
        f"no job runs there until an admin resumes it with "
        f"'scontrol update nodename={n.name} state=resume'."
        for n in seen.values()
    )
