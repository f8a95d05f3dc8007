"""Which nodes can run a job, whom a node failure excludes, and a drained node said plainly."""

from __future__ import annotations

import pytest

from airflow_desc.slurm.commands import sinfo_nodes_command
from airflow_desc.slurm.nodes import (
    exclusion_after_node_failure,
    expand_hostlist,
    parse_sinfo_nodes,
    unavailable_notice,
)
from airflow_desc.slurm.parse import SlurmOutputError
from tests.site_recordings import SITE

TWO_UP = parse_sinfo_nodes((SITE / "sinfo-two-nodes.txt").read_text())
ONE_DOWN = parse_sinfo_nodes((SITE / "sinfo-node-down.txt").read_text())


def test_sinfo_command_is_quoted_and_checked() -> None:
    assert sinfo_nodes_command("regular") == "sinfo -h -N '--format=%N|%P|%T|%E' -p regular"
    assert (
        sinfo_nodes_command(nodes=["nid[001-004]"]) == "sinfo -h -N '--format=%N|%P|%T|%E' -n 'nid[001-004]'"
    )
    with pytest.raises(ValueError, match="invalid node name"):
        sinfo_nodes_command(nodes=["pm-n1;reboot"])
    with pytest.raises(ValueError, match="invalid partition"):
        sinfo_nodes_command("regular --all")


def test_sinfo_lines_become_node_states() -> None:
    assert [(n.name, n.partition, n.usable) for n in TWO_UP] == [
        ("pm-n1", "regular", True),
        ("pm-n2", "regular", True),
    ]
    # Recorded with pm-n2 drained, then set down: sinfo calls it drained.
    down = {n.name: n for n in ONE_DOWN}
    assert down["pm-n2"].state == "drained"
    assert down["pm-n2"].unavailable and not down["pm-n2"].usable
    assert down["pm-n2"].reason == "desc-record-test"
    assert down["pm-n1"].usable and down["pm-n1"].reason is None


@pytest.mark.parametrize(
    ("state", "usable", "unavailable"),
    [
        ("idle", True, False),
        ("mixed", True, False),
        ("allocated", True, False),
        ("idle*", False, True),
        ("drained", False, True),
        ("draining", False, True),
        ("down*", False, True),
        ("idle~", True, False),
    ],
)
def test_node_states(state: str, usable: bool, unavailable: bool) -> None:
    [node] = parse_sinfo_nodes(f"n1|p|{state}|none\n")
    assert (node.usable, node.unavailable) == (usable, unavailable)


def test_a_bad_sinfo_line_is_named() -> None:
    with pytest.raises(SlurmOutputError, match="line 2 has 2 fields"):
        parse_sinfo_nodes("n1|p|idle|none\nn2|p\n")


def test_hostlists_expand() -> None:
    assert expand_hostlist("nid[001-003,007]") == ["nid001", "nid002", "nid003", "nid007"]
    assert expand_hostlist("pm-n1") == ["pm-n1"]
    assert expand_hostlist("a1,b[2-3]") == ["a1", "b2", "b3"]


def test_a_node_failure_excludes_the_node_when_another_can_run_the_job() -> None:
    exclude, note = exclusion_after_node_failure("pm-n1", TWO_UP)
    assert exclude == ["pm-n1"]
    assert "pm-n2 can run it" in note


def test_the_partitions_only_usable_node_is_never_excluded() -> None:
    only = [n for n in TWO_UP if n.name == "pm-n1"]
    exclude, note = exclusion_after_node_failure("pm-n1", only)
    assert exclude == []
    assert "no other usable node" in note and "waits for a node to come back" in note


def test_a_drained_other_node_does_not_count() -> None:
    # pm-n1 failed now, pm-n2 is drained: nothing can be excluded.
    exclude, _ = exclusion_after_node_failure("pm-n1", ONE_DOWN)
    assert exclude == []


def test_earlier_exclusions_stay_only_while_they_leave_a_node() -> None:
    # pm-n2 failed an earlier try, pm-n1 this one: pm-n1 stays allowed, the earlier exclusion stays.
    exclude, note = exclusion_after_node_failure("pm-n1", TWO_UP, ["pm-n2"])
    assert exclude == ["pm-n2"] and "pm-n1 not excluded" in note
    many = parse_sinfo_nodes("a|p|idle|none\nb|p|idle|none\nc|p|idle|none\n")
    assert exclusion_after_node_failure("a", many, ["b"])[0] == ["a", "b"]
    assert exclusion_after_node_failure("a", many, ["b"], nodes_needed=2)[0] == ["b"]


def test_a_drained_node_is_said_plainly_with_what_an_admin_does() -> None:
    drained = parse_sinfo_nodes("pm-n1|regular|drained|Duplicate jobid\n")
    notice = unavailable_notice(drained, "perlmutter")
    assert notice == (
        "Node pm-n1 of perlmutter is DRAINED (SLURM's reason: Duplicate jobid): no job runs there until an "
        "admin resumes it with 'scontrol update nodename=pm-n1 state=resume'."
    )
    assert unavailable_notice(TWO_UP, "perlmutter") is None
