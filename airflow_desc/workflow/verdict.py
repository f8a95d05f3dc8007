"""A DAG run's verdict: did its process instances end well enough for the run to succeed (no Airflow).

A generated DAG ends with a ``verdict`` task
(:class:`~airflow_desc.operators.verdict.WorkflowVerdictOperator`, trigger rule ``all_done``,
downstream of every leaf). It reads the latest attempt of each process instance of the run from the
history and :func:`judge_run` decides: the run **fails** when an instance ended Failed or
Terminated, unless that failure is *tolerated*: it lies in a sub-task that something ``depends_on``
with a ``min_success`` that was met (``depends_on: {processVisit: {min_success: 0.95}}``: up to 5%
of the visits may fail and the run is still green). Skipped instances alone never fail a run. The
summary lists the counts per state, the tolerated failures and the first failures with their
reasons, either way.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from airflow_desc.history.records import ProcessRecord
from airflow_desc.workflow.graph import TaskNode, WorkflowGraph
from airflow_desc.workflow.outcomes import combine_states
from airflow_desc.workflow.thresholds import MinSuccess, StreamCounts

__all__ = ["FAILING_STATES", "RunVerdict", "judge_run", "tolerances"]

#: Latest-attempt states that fail a run (unless tolerated).
FAILING_STATES = frozenset({"failed", "terminated"})
_SHOWN = 10


@dataclass(frozen=True)
class RunVerdict:
    """What :func:`judge_run` found.

    :param counts: process instances per state of their latest attempt.
    :param failures: the failing instances (latest attempt Failed / Terminated, not tolerated).
    :param tolerated: failed instances within a met ``min_success``, with the threshold's words.
    :param lost_tasks: Airflow task instances that failed without any process record
        (``task_id`` or ``task_id_<map index>``).
    """

    counts: Mapping[str, int]
    failures: Sequence[ProcessRecord] = ()
    tolerated: Sequence[tuple[ProcessRecord, str]] = ()
    lost_tasks: Sequence[str] = field(default_factory=tuple)

    @property
    def failed(self) -> bool:
        """Whether the run fails."""
        return bool(self.failures or self.lost_tasks)

    def summary(self, shown: int = _SHOWN) -> str:
        """Return the verdict in words: one line of counts, then the failures, the tolerated ones."""
        total = sum(self.counts.values())
        counts = ", ".join(f"{state} {n}" for state, n in sorted(self.counts.items())) or "none recorded"
        head = "FAILED" if self.failed else "SUCCESS"
        lines = [f"run {head}: {total} process instances ({counts})"]
        if self.failures:
            lines.append(f"{len(self.failures)} failed (first {min(shown, len(self.failures))}):")
            lines += [f"  {_instance(r)}: {r.state}, {_reason(r)}" for r in self.failures[:shown]]
        if self.lost_tasks:
            lines.append(
                f"{len(self.lost_tasks)} task instances failed without a process record (see their logs):"
            )
            lines += [f"  {task}" for task in self.lost_tasks[:shown]]
        if self.tolerated:
            first = min(shown, len(self.tolerated))
            lines.append(f"{len(self.tolerated)} tolerated, within a met min_success (first {first}):")
            lines += [
                f"  {_instance(r)}: {r.state}, {_reason(r)} ({why})" for r, why in self.tolerated[:shown]
            ]
        return "\n".join(lines)


def _instance(record: ProcessRecord) -> str:
    where = f"{record.task}/{record.process}"
    return f"{where} [{record.stream}]" if record.stream else where


def _reason(record: ProcessRecord) -> str:
    reason = record.reason or "no reason recorded"
    return f"{reason}: {record.message}" if record.message else reason


def tolerances(graph: WorkflowGraph) -> dict[str, tuple[TaskNode, list[MinSuccess]]]:
    """Return each sub-task that something ``depends_on`` with a ``min_success``, with those thresholds."""
    found: dict[str, tuple[TaskNode, list[MinSuccess]]] = {}
    for task in graph.iter_tasks():
        children = {child.name: child for child in task.children}
        declared = [p.min_success for p in task.processes] + [c.min_success for c in task.children]
        for thresholds in declared:
            for name, threshold in thresholds.items():
                if name in children:
                    found.setdefault(name, (children[name], []))[1].append(threshold)
    return found


def judge_run(
    graph: WorkflowGraph, records: Iterable[ProcessRecord], failed_tasks: Iterable[str] = ()
) -> RunVerdict:
    """Judge one DAG run from the latest attempt of each of its process instances.

    :param graph: the run's DAG graph (for the sub-tasks' ``min_success``).
    :param records: the latest attempt of each process instance of the run.
    :param failed_tasks: the run's Airflow task instances that failed, as the Task SDK names them
        (``task_id``, or ``task_id_<map index>`` when mapped); one with no process record is a
        failure of its own (a lost or crashed task).
    """
    latest = list(records)
    counts = Counter(r.state for r in latest)
    tolerated_ids: dict[int, str] = {}
    for sub, thresholds in tolerances(graph).values():
        tolerated_ids.update(_tolerated(sub, thresholds, latest))
    failures = [r for i, r in enumerate(latest) if r.state in FAILING_STATES and i not in tolerated_ids]
    tolerated = [(latest[i], why) for i, why in sorted(tolerated_ids.items())]
    recorded = {r.task_id if r.map_index < 0 else f"{r.task_id}_{r.map_index}" for r in latest}
    lost = [key for key in failed_tasks if key not in recorded]
    return RunVerdict(dict(counts), failures, tolerated, lost)


def _tolerated(
    sub: TaskNode, thresholds: Sequence[MinSuccess], latest: Sequence[ProcessRecord]
) -> dict[int, str]:
    """Return the failed records inside ``sub`` whose parent stream met every threshold on it, by index."""
    names = {task.name for task in sub.iter_tasks()}
    # A sub-task without a stream_var adds nothing to the path: its streams are told apart by none.
    parent_depth = len(sub.stream_vars) - (1 if sub.stream_var else 0)
    depth = parent_depth + (1 if sub.stream_var else 0)
    # parent stream -> sub-task stream -> indexes of its records
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for index, record in enumerate(latest):
        if record.task in names:
            parts = record.stream.split("/") if record.stream else []
            groups["/".join(parts[:parent_depth])]["/".join(parts[:depth])].append(index)
    tolerated: dict[int, str] = {}
    for streams in groups.values():
        counts = StreamCounts.of(
            combine_states(latest[i].state for i in members) for members in streams.values()
        )
        if all(threshold.met(counts) for threshold in thresholds):
            declared = ", ".join(str(t) for t in thresholds)
            why = f"{sub.name}: {counts}, {declared} met"
            for members in streams.values():
                tolerated.update({i: why for i in members if latest[i].state in FAILING_STATES})
    return tolerated
