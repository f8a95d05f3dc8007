"""How many task instances a campaign of a workflow makes (the DAG's doc and the bundling check).

:func:`estimate_task_instances` counts, per task, the streams of an average and of a busy DAG
run from the same ``expected_streams`` numbers :mod:`airflow_desc.workflow.build` bundles by,
or from other fan-outs, and how many task instances Airflow would schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from airflow_desc.workflow.build import in_busy_run
from airflow_desc.workflow.graph import (
    BundleState,
    TaskNode,
    WorkflowGraph,
)

T = TypeVar("T")

__all__ = ["TaskEstimate", "TaskInstanceEstimate", "estimate_task_instances"]


@dataclass(frozen=True)
class TaskEstimate:
    """The task instances one task adds to a DAG run.

    :param path: the task path.
    :param state: its bundling state.
    :param processes: its processes.
    :param bundle_size: streams per bundle (bundled tasks).
    :param streams_per_run: its streams in an average run.
    :param streams_in_busy_run: its streams in a busy run.
    :param per_run: task instances in an average run.
    :param in_busy_run: task instances in a busy run.
    """

    path: str
    state: BundleState
    processes: int
    bundle_size: int | None
    streams_per_run: float
    streams_in_busy_run: int
    per_run: float
    in_busy_run: int


@dataclass(frozen=True)
class TaskInstanceEstimate:
    """How many task instances a campaign of DAG runs makes.

    :param runs: the number of DAG runs (top-level streams).
    :param tasks: per task.
    """

    runs: int
    tasks: tuple[TaskEstimate, ...]

    @property
    def per_run(self) -> float:
        """Task instances of an average DAG run."""
        return sum(t.per_run for t in self.tasks)

    @property
    def busy_run(self) -> int:
        """Task instances of a busy DAG run (every optional sub-task launched)."""
        return sum(t.in_busy_run for t in self.tasks)

    @property
    def total(self) -> int:
        """Task instances of all the runs (average runs)."""
        return round(self.per_run * self.runs)

    def format(self) -> str:
        """Return a table for people: a line per task (indented as the hierarchy), then the totals."""
        head = f"{'task':<44} {'bundling':<9} {'size':>5} {'streams/run':>12} {'TIs/run':>9} {'TIs busy':>9}"
        lines = [head]
        for t in self.tasks:
            name = "  " * t.path.count("/") + t.path.rpartition("/")[2]
            size = str(t.bundle_size) if t.bundle_size else "-"
            lines.append(
                f"{name:<44} {t.state:<9} {size:>5} {t.streams_per_run:>12.1f} {t.per_run:>9.1f} "
                f"{t.in_busy_run:>9}"
            )
        lines.append(
            f"task instances per run: {self.per_run:.0f} (busy run: {self.busy_run}); "
            f"{self.runs} runs: {self.total}"
        )
        return "\n".join(lines)


def estimate_task_instances(
    graph: WorkflowGraph, fanout: Mapping[str, float] | None = None, *, runs: int = 1
) -> TaskInstanceEstimate:
    """Count the task instances of ``runs`` DAG runs, without running anything.

    Top-level processes: one instance each. Processes of a sub-task that is not bundled: one
    per stream. A bundled sub-task: one per bundle of its streams (at the graph's bundle
    size); the tasks below it and all script processes inside add none.

    :param graph: the DAG.
    :param fanout: streams per parent stream by sub-task name, replacing the graph's
        ``expected_streams`` (e.g. counts from a past campaign); bundling decisions and sizes
        stay the graph's.
    :param runs: DAG runs in the campaign.
    :raises ValueError: for a fan-out naming no sub-task.
    """
    overrides = dict(fanout or {})
    names = {t.name for t in graph.iter_tasks() if t.parent_path is not None}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"fanout names no sub-task of {graph.dag_id}: {', '.join(unknown)}")
    estimates: list[TaskEstimate] = []
    stack: list[tuple[TaskNode, float, float]] = [(graph.root, 1.0, 1.0)]
    while stack:
        task, parent_average, parent_busy = stack.pop()
        if task.parent_path is None:
            average = busy = 1.0
        else:
            expected = overrides.get(task.name, task.expected_streams)
            average, busy = parent_average * expected, parent_busy * in_busy_run(expected)
        estimates.append(_estimate(task, average, busy))
        stack.extend((child, average, busy) for child in reversed(task.children))
    return TaskInstanceEstimate(runs, tuple(estimates))


def _estimate(task: TaskNode, average: float, busy: float) -> TaskEstimate:
    busy_streams = math.ceil(busy - 1e-9)
    state, size = task.bundling.state, task.bundling.bundle_size
    n = len(task.processes)
    if state == "none":
        per_run, in_busy = n * average, n * busy_streams
    elif state == "bundle" and size:
        in_busy = math.ceil(busy_streams / size)
        per_run = in_busy * average / busy if busy > 0 else 0.0
    else:
        per_run, in_busy = 0.0, 0
    return TaskEstimate(task.path, state, n, size, average, busy_streams, per_run, in_busy)
