"""The states of a DAG run's process instances, per stream, as a running task reads them.

Generated tasks run with trigger rule ``all_done`` and decide per stream whether they run:
:class:`RunStates` reads the task-instance states of the run (one Task SDK call), the streams of
sub-tasks (their ``streams`` tasks' XCom) and the streams inside bundles (the bundles'
``bundle_summary`` XComs); :func:`skip_for` turns them into a process instance's
:class:`~airflow_desc.workflow.outcomes.Skip`, or ``None`` when it runs (a sub-task's stream
counts as one state, by ``combine_states``).

A sub-task with no streams below a stream of its parent is one of two things:

- **blocked**: its ``streams`` task made none there because something it ``depends_on`` did not
  succeed for that parent stream (it lists those parent streams in its ``blocked_streams`` XCom,
  :data:`BLOCKED_STREAMS`). It counts as **skipped** there (DC1's Skipped: not run because
  something upstream failed; the failure is counted where it happened), so what depends on it is
  Skipped in turn: with labels ``a -> b -> c``, a failed ``a`` leaves ``b`` and ``c`` not run, and
  the run's verdict fails on ``a``'s failure.
- **empty**: its feeding script made an empty list of streams. Nothing to run counts as
  **success**, as before (a sub-task with nothing to do did not fail).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_desc.operators.slurm import untrusted_fails_the_task
from airflow_desc.operators.trusted import trusted_bundles, trusted_streams
from airflow_desc.workflow.graph import ProcessNode, TaskNode, WorkflowGraph
from airflow_desc.workflow.naming import (
    bundle_task_id,
    stream_extends,
    stream_path,
    streams_task_id,
    task_id_for,
)
from airflow_desc.workflow.outcomes import MinSuccess, Skip, StreamCounts, combine_states
from airflow_desc.workflow.registry import workflow_for
from airflow_desc.workflow.spec_templates import Scalar

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_desc.workflow.registry import LoadedWorkflow

__all__ = ["BLOCKED_STREAMS", "BLOCKED_STATE", "ProcessInRun", "RunStates", "map_index_of", "skip_for"]

#: The XCom key under which a ``streams`` task lists the parent streams it made no streams for
#: because an upstream of its sub-task did not succeed there.
BLOCKED_STREAMS = "blocked_streams"
#: What a sub-task counts as below such a parent stream.
BLOCKED_STATE = "skipped"

#: How a process instance ended, from its Airflow task instance's state.
_FROM_AIRFLOW = {
    "success": "success",
    "failed": "failed",
    "upstream_failed": "skipped",
    "skipped": "skipped",
    "removed": "skipped",
}


class RunStates:
    """The states of process instances of one DAG run, per stream, read by a running task.

    Task-instance states come from one Task SDK call; the streams of a sub-task from its
    ``streams`` task's XCom; the streams inside bundles from the bundles' ``bundle_summary`` XComs.

    :param context: the running task's context.
    :param graph: the DAG's graph.
    """

    def __init__(self, context: Context, graph: WorkflowGraph) -> None:
        self.ti: Any = context["ti"]
        self.graph = graph
        self._states: dict[str, Any] | None = None
        self._streams: dict[str, list[dict[str, Any]]] = {}
        self._bundles: dict[str, dict[str, str]] = {}
        self._blocked: dict[str, list[dict[str, Any]]] = {}
        #: What :meth:`upstream` found of sub-tasks with a ``min_success``, by name: the threshold
        #: and the counts (a skip's message says it).
        self.notes: dict[str, str] = {}

    def airflow_state(self, task_id: str, map_index: int = -1) -> str | None:
        """Return the raw Airflow state of one task instance (``None`` if it has none)."""
        if self._states is None:
            found = self.ti.get_task_states(dag_id=self.ti.dag_id, run_ids=[self.ti.run_id])
            self._states = dict(found.get(self.ti.run_id) or {})
        key = task_id if map_index < 0 else f"{task_id}_{map_index}"
        state = self._states.get(key)
        return None if state is None else str(state)

    def task_state(self, task_id: str, map_index: int = -1) -> str:
        """Return the process state of one task instance (anything not finished counts as failed)."""
        return _FROM_AIRFLOW.get(self.airflow_state(task_id, map_index) or "", "failed")

    def streams(self, task: TaskNode) -> list[dict[str, Any]]:
        """Return the streams of a sub-task in this run (a bundled one's bundles flattened)."""
        key = streams_task_id(task)
        if key not in self._streams:
            [value] = self.ti.xcom_pull(task_ids=[key], map_indexes=-1) or [None]
            # XCom can be written through the REST API: checked before it decides what runs.
            with untrusted_fails_the_task():
                if task.bundling.state == "bundle":
                    bundles = trusted_bundles(f"XCom of {key}", value or [])
                    self._streams[key] = [stream for bundle in bundles for stream in bundle]
                else:
                    self._streams[key] = trusted_streams(f"XCom of {key}", value or [])
        return self._streams[key]

    def blocked(self, task: TaskNode, stream: Mapping[str, Any]) -> list[str]:
        """Return :data:`BLOCKED_STATE` once per parent stream below ``stream`` where the task was blocked.

        Its ``streams`` task lists them in its :data:`BLOCKED_STREAMS` XCom (see the module docs).
        """
        key = streams_task_id(task)
        if key not in self._blocked:
            [value] = self.ti.xcom_pull(task_ids=[key], key=BLOCKED_STREAMS, map_indexes=-1) or [None]
            with untrusted_fails_the_task():
                self._blocked[key] = trusted_streams(f"XCom {BLOCKED_STREAMS} of {key}", value or [])
        return [BLOCKED_STATE for parent in self._blocked[key] if stream_extends(parent, stream)]

    def bundle_states(self, task: TaskNode) -> dict[str, str]:
        """Return the state of each stream of a bundled sub-task, from its bundles' summaries."""
        key = bundle_task_id(task)
        if key not in self._bundles:
            states: dict[str, str] = {}
            for summary in self.ti.xcom_pull(task_ids=[key], key="bundle_summary") or []:
                if isinstance(summary, Mapping):
                    states.update(summary.get("streams") or {})
            self._bundles[key] = states
        return self._bundles[key]

    def subtask(self, task: TaskNode, stream: Mapping[str, Any]) -> str:
        """Return the state of a sub-task for one stream of its parent: all its streams below that one."""
        if self.task_state(streams_task_id(task)) != "success":
            return "skipped" if self.airflow_state(streams_task_id(task)) == "skipped" else "failed"
        below = [(index, s) for index, s in enumerate(self.streams(task)) if stream_extends(s, stream)]
        blocked = self.blocked(task, stream)
        if task.bundling.state == "bundle":
            done = self.bundle_states(task)
            return combine_states([*(done.get(stream_path(s), "failed") for _, s in below), *blocked])
        states = [self.task_state(task_id_for(p.path), index) for p in task.processes for index, _ in below]
        states += [self.subtask(child, stream) for child in task.children]
        return combine_states([*states, *blocked])

    def subtask_streams(self, task: TaskNode, stream: Mapping[str, Any]) -> list[str] | None:
        """Return the state of each stream of a sub-task below one stream of its parent.

        ``None`` when its ``streams`` task did not succeed (no streams to count); a parent stream it
        was blocked at counts as one stream, :data:`BLOCKED_STATE`.
        """
        if self.task_state(streams_task_id(task)) != "success":
            return None
        below = [(index, s) for index, s in enumerate(self.streams(task)) if stream_extends(s, stream)]
        blocked = self.blocked(task, stream)
        if task.bundling.state == "bundle":
            done = self.bundle_states(task)
            return [*(done.get(stream_path(s), "failed") for _, s in below), *blocked]
        return blocked + [
            combine_states(
                [self.task_state(task_id_for(p.path), index) for p in task.processes]
                + [self.subtask(child, s) for child in task.children]
            )
            for index, s in below
        ]

    def upstream(
        self,
        task: TaskNode,
        names: Iterable[str],
        stream: Mapping[str, Any],
        map_index: int,
        thresholds: Mapping[str, MinSuccess] | None = None,
    ) -> dict[str, str]:
        """Return the state of each named sibling (process or sub-task of ``task``) for one stream of it.

        A sub-task with a threshold is ``success`` when enough of its streams succeeded, else
        ``failed``; :attr:`notes` then says the threshold and the counts.

        :param task: the task whose processes / sub-tasks the names are.
        :param names: the names.
        :param stream: the stream (of ``task``).
        :param map_index: that stream's map index in ``task``'s mapped tasks (-1 at the top level).
        :param thresholds: ``min_success`` by sub-task name (the dependent's).
        """
        children = {child.name: child for child in task.children}
        states: dict[str, str] = {}
        for name in dict.fromkeys(names):
            if name in children:
                child = children[name]
                feeder = task.process(child.streams_from) if child.streams_from else None
                fed = self.task_state(task_id_for(feeder.path), map_index) if feeder else "success"
                threshold = (thresholds or {}).get(name)
                if fed != "success":
                    states[name] = "skipped"
                elif threshold is None:
                    states[name] = self.subtask(child, stream)
                else:
                    states[name] = self._thresholded(child, stream, threshold)
            else:
                states[name] = self.task_state(task_id_for(task.process(name).path), map_index)
        return states

    def _thresholded(self, child: TaskNode, stream: Mapping[str, Any], threshold: MinSuccess) -> str:
        per_stream = self.subtask_streams(child, stream)
        if per_stream is None:
            return self.subtask(child, stream)
        counts = StreamCounts.of(per_stream)
        if counts.ran == 0 and self.blocked(child, stream):
            # Nothing ran because the sub-task's own upstream blocked it: not "met by an empty sub-task".
            self.notes[child.name] = f"not run (its upstream did not succeed): {counts}"
            return BLOCKED_STATE
        met = threshold.met(counts)
        verdict = "at or above" if met else "below"
        self.notes[child.name] = f"{verdict} its {threshold}: {counts}"
        return "success" if met else "failed"


def _upstream_names(process: ProcessNode) -> list[str]:
    names = [*process.depends_on, *process.after]
    if process.skip_if is not None:
        names += [n for n in process.skip_if.names if n not in names]
    return names


def skip_for(
    runs: RunStates,
    task: TaskNode,
    process: ProcessNode,
    stream: Mapping[str, Any],
    map_index: int,
    variables: Mapping[str, Scalar],
) -> Skip | None:
    """Return why one stream's instance of ``process`` (in ``task``) is Skipped, or ``None`` if it runs.

    :param runs: the run's states.
    :param task: the task the process belongs to.
    :param process: the process.
    :param stream: the stream's values.
    :param map_index: the stream's map index (-1 at the top level).
    :param variables: the run's variables.
    """
    siblings = {p.name for p in task.processes} | {c.name for c in task.children}
    names = [n for n in _upstream_names(process) if n in siblings]
    states = runs.upstream(task, names, stream, map_index, process.min_success) if names else {}
    return process.skip_reason(states, stream, variables, runs.notes)


@dataclass(frozen=True)
class ProcessInRun:
    """One process of a workflow as its running task instance sees it: where it sits, the run's variables.

    :param workflow: the loaded workflow.
    :param graph: the variant's graph.
    :param task: the task the process belongs to.
    :param process: the process.
    :param variables: the run's variables.
    """

    workflow: LoadedWorkflow
    graph: WorkflowGraph
    task: TaskNode
    process: ProcessNode
    variables: dict[str, Scalar]

    @classmethod
    def find(
        cls, workflow_key: str, variant: str | None, process_path: str, context: Context
    ) -> ProcessInRun:
        """Look the process up in the registry and read the run's variables."""
        workflow = workflow_for(workflow_key)
        return cls(
            workflow=workflow,
            graph=workflow.graph(variant),
            task=workflow.task(variant, process_path.rpartition("/")[0]),
            process=workflow.process(variant, process_path),
            variables=workflow.run_variables(variant, context),
        )

    def skip(self, context: Context, stream: Mapping[str, Any]) -> Skip | None:
        """Return why this stream's instance is Skipped, or ``None`` if it runs (:func:`skip_for`)."""
        runs = RunStates(context, self.graph)
        return skip_for(runs, self.task, self.process, stream, map_index_of(context), self.variables)


def map_index_of(context: Context) -> int:
    """Return the running task instance's map index (-1 when not mapped)."""
    value = getattr(context["ti"], "map_index", -1)
    return -1 if value is None else int(value)
