"""A chain of sub-tasks a -> b -> c (as a BPS submission's labels are): a blocked sub-task is not a success.

When ``a`` fails, ``b``'s streams task makes no streams (blocked) and says so in its
``blocked_streams`` XCom; ``b`` then counts as Skipped for ``c``, which gets no streams either. A
sub-task whose feeder made an empty list (nothing to do) still counts as a success. The operators run
against the fake task instance of the renderer's tests (task states, XCom); the generated DAG runs
for real in tests/integration/test_sub_task_chain.py.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException

from airflow_desc.clusters import load_cluster_profiles
from airflow_desc.operators.run_states import BLOCKED_STREAMS, RunStates
from airflow_desc.workflow.registry import workflow_for
from airflow_desc.workflow.render import render_dags
from tests.unit.conftest import SITE
from tests.unit.workflow.mini_operators import FakeTI, context

FEEDS = {"a": ["d0", "d1"], "b": ["d0", "d1"], "c": ["d0", "d1"]}


def chain_spec(feeds: dict[str, list[str]], c_depends_on: Any = ("b",)) -> dict[str, Any]:
    def label(name: str, depends_on: Any) -> dict[str, Any]:
        task: dict[str, Any] = {
            "streams_from": "makeQuanta",
            "stream_var": "q",
            "expected_streams": 2,
            "bundle": "never",
            "processes": {f"step_{name}": {"type": "batch", "command": "echo {{ q }}"}},
        }
        return task | ({"depends_on": depends_on} if depends_on else {})

    return {
        "name": "Chain",
        "version": "1",
        "defaults": {
            "resources": {"cluster": "perlmutter", "cpus": 1, "memory_mb": 100, "walltime": "0:05:00"}
        },
        "processes": {
            "makeQuanta": {
                "type": "script",
                "callable": "airflow_desc.bps.streams:quanta_by_label",
                "kwargs": {"quanta": feeds},
            }
        },
        "tasks": {
            "a": label("a", None),
            "b": label("b", ["a"]),
            "c": label("c", c_depends_on if isinstance(c_depends_on, dict) else list(c_depends_on)),
        },
    }


@pytest.fixture
def render_chain(tmp_path: pathlib.Path) -> Any:
    def render(spec: dict[str, Any]) -> tuple[Any, Any]:
        path = tmp_path / "chain.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        dags = render_dags(path, clusters=load_cluster_profiles(SITE))
        return workflow_for(str(path.resolve())), dags["Chain"]

    return render


def _fed(feeds: dict[str, list[str]]) -> dict[tuple[str, str], list[Any]]:
    return {("makeQuanta", "return_value"): [{"stream": {}, "map_index": -1, "feeds": feeds}]}


A_RAN = {"makeQuanta": "success", "a.streams": "success", "a.step_a_0": "success", "a.step_a_1": "failed"}
A_STREAMS = {("a.streams", "return_value"): [[{"q": "d0"}, {"q": "d1"}]]}


def test_a_failed_first_label_blocks_the_second_and_the_third_is_not_run(render_chain: Any) -> None:
    workflow, dag = render_chain(chain_spec(FEEDS))
    graph = workflow.graph(None)

    ti = FakeTI(task_id="b.streams", states=A_RAN, xcoms={**_fed(FEEDS), **A_STREAMS})
    assert dag.task_dict["b.streams"].execute(context(ti)) == []
    assert ti.pushed == {BLOCKED_STREAMS: [{}]}  # blocked at the run's one (top-level) stream

    states = {**A_RAN, "b.streams": "success"}
    xcoms = {
        **_fed(FEEDS), **A_STREAMS,
        ("b.streams", "return_value"): [[]], ("b.streams", BLOCKED_STREAMS): [[{}]],
    }  # fmt: skip
    # b counts as Skipped (it was the bug: an empty b counted as success, and c ran).
    assert RunStates(context(FakeTI(states=states, xcoms=xcoms)), graph).upstream(
        graph.root, ["a", "b"], {}, -1
    ) == {"a": "failed", "b": "skipped"}
    ti = FakeTI(task_id="c.streams", states=states, xcoms=xcoms)
    assert dag.task_dict["c.streams"].execute(context(ti)) == []
    assert ti.pushed == {BLOCKED_STREAMS: [{}]}  # and so on down the chain


def test_a_label_fed_no_streams_is_an_empty_success_and_what_depends_on_it_runs(render_chain: Any) -> None:
    feeds = {**FEEDS, "b": []}
    workflow, dag = render_chain(chain_spec(feeds))
    a_ok = {**A_RAN, "a.step_a_1": "success"}
    ti = FakeTI(task_id="b.streams", states=a_ok, xcoms={**_fed(feeds), **A_STREAMS})
    assert dag.task_dict["b.streams"].execute(context(ti)) == []
    assert ti.pushed == {BLOCKED_STREAMS: []}  # not blocked: nothing to do

    states = {**a_ok, "b.streams": "success"}
    xcoms = {
        **_fed(feeds),
        **A_STREAMS,
        ("b.streams", "return_value"): [[]],
        ("b.streams", BLOCKED_STREAMS): [[]],
    }
    ti = FakeTI(task_id="c.streams", states=states, xcoms=xcoms)
    assert dag.task_dict["c.streams"].execute(context(ti)) == [{"q": "d0"}, {"q": "d1"}]
    graph = workflow.graph(None)
    assert RunStates(context(ti), graph).subtask(graph.task("b"), {}) == "success"


def test_a_blocked_label_does_not_meet_a_min_success_of_what_depends_on_it(render_chain: Any) -> None:
    # No stream of b ran: a threshold is not "met by an empty sub-task" when b was blocked.
    workflow, dag = render_chain(chain_spec(FEEDS, c_depends_on={"b": {"min_success": 0.5}}))
    states = {**A_RAN, "b.streams": "success"}
    xcoms = {
        **_fed(FEEDS), **A_STREAMS,
        ("b.streams", "return_value"): [[]], ("b.streams", BLOCKED_STREAMS): [[{}]],
    }  # fmt: skip
    ti = FakeTI(task_id="c.streams", states=states, xcoms=xcoms)
    assert dag.task_dict["c.streams"].execute(context(ti)) == []
    assert ti.pushed == {BLOCKED_STREAMS: [{}]}
    graph = workflow.graph(None)
    runs = RunStates(context(ti), graph)
    assert runs.upstream(graph.root, ["b"], {}, -1, graph.task("c").min_success) == {"b": "skipped"}
    assert runs.notes["b"] == "not run (its upstream did not succeed): 0 of 0 streams succeeded, 1 skipped"


@pytest.mark.parametrize("value", [{"q": "d0"}, [{"q": ["d0"]}], [["d0"]], "[{}]"])
def test_a_blocked_streams_xcom_no_streams_task_wrote_is_refused(render_chain: Any, value: Any) -> None:
    # XCom can be written through the REST API: what decides that c runs is checked and named.
    workflow, _dag = render_chain(chain_spec(FEEDS))
    graph = workflow.graph(None)
    xcoms = {("b.streams", "return_value"): [[]], ("b.streams", BLOCKED_STREAMS): [value]}
    runs = RunStates(context(FakeTI(states={"b.streams": "success"}, xcoms=xcoms)), graph)
    with pytest.raises(AirflowFailException, match=rf"XCom {BLOCKED_STREAMS} of b\.streams"):
        runs.subtask(graph.task("b"), {})
