"""What the renderer calls things: task ids, stream paths, bundle instance ids (no Airflow).

The DAG builder, the operators, the live status and the bulk reruns all name tasks and streams
the same way; this module is that one vocabulary:

- a process or task path ``DC1-DM12/level1/level1SetupFilters`` is task id
  ``level1.level1SetupFilters`` (:func:`task_id_for`): task groups nest as the tasks do;
- a sub-task group has a ``streams`` task and, when bundled, a mapped ``bundle`` task;
- a stream's values are written as its path ``visit=2201/raft=R22`` (:func:`stream_path`), and a
  process instance inside a bundle as ``visit=2201/raft=R22:processEimage`` (:func:`instance_id`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_desc.workflow.spec_templates import format_value

if TYPE_CHECKING:
    from airflow_desc.workflow.graph import TaskNode

__all__ = [
    "BUNDLE_TASK",
    "STREAMS_TASK",
    "VERDICT_TASK",
    "bundle_task_id",
    "instance_id",
    "stream_extends",
    "stream_path",
    "streams_task_id",
    "task_id_for",
]

#: Task ids the renderer gives to a sub-task group's own tasks; no process may be named so.
STREAMS_TASK = "streams"
BUNDLE_TASK = "bundle"
#: The id of a generated DAG's last task, the run's verdict; no top-level process may be named so.
VERDICT_TASK = "verdict"


def stream_path(stream: Mapping[str, Any]) -> str:
    """Write a stream's values as its path: ``visit=2201/raft=R22/sensor=S11`` ("" at the top level)."""
    return "/".join(f"{name}={format_value(value)}" for name, value in stream.items())


def stream_extends(stream: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
    """Whether ``stream`` lies below ``parent`` (it has each of the parent's values)."""
    return all(stream.get(name) == value for name, value in parent.items())


def task_id_for(path: str) -> str:
    """Return the Airflow task (or group) id of a process or task path (``level1.level1SetupFilters``)."""
    return ".".join(path.split("/")[1:])


def streams_task_id(task: TaskNode) -> str:
    """Return the id of a sub-task group's ``streams`` task."""
    return f"{task_id_for(task.path)}.{STREAMS_TASK}"


def bundle_task_id(task: TaskNode) -> str:
    """Return the id of a bundled sub-task's mapped bundle task."""
    return f"{task_id_for(task.path)}.{BUNDLE_TASK}"


def instance_id(stream: Mapping[str, Any], process: str) -> str:
    """Return the id of a process instance in a bundle: ``visit=2201/raft=R22:setupEimageSensors``."""
    return f"{stream_path(stream)}:{process}"
