"""A DAG's process plan: which process instances its task instances stand for, and its workflow's order.

What :mod:`airflow_desc.status.live` needs of a DAG to count its runs in progress, as data: made
where the DAG is loaded (:mod:`airflow_desc.status.dag_plans`, called by the plugin's listener in
the worker when a task starts), stored as JSON in the history (``process_plans``,
:mod:`airflow_desc.history.live`), read back here by whoever shows the table (the api-server,
``airflow-desc status``), which then needs no DAG file.

The JSON document (:meth:`DagProcesses.to_json`, format :data:`PLAN_FORMAT`)::

    {"format": 1, "dag_id": ..., "workflow": ..., "variant": ..., "workflow_version": ...,
     "tasks": {task_id: PROCESS, ...},
     "bundles": {task_id: {"streams_task_id": ..., "processes": [PROCESS, ...]}, ...},
     "order": [[task, process], ...]}

    PROCESS = {"process", "task", "version", "process_type", "workflow", "variant", "mapped"}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["PLAN_FORMAT", "BundleIdentity", "DagProcesses", "PlanError", "ProcessIdentity"]

#: The format of the JSON document; a reader refuses others (a newer writer's) by name.
PLAN_FORMAT = 1


class PlanError(ValueError):
    """A stored plan is not one this version reads: the message names the DAG and the field."""


@dataclass(frozen=True)
class ProcessIdentity:
    """What the status table shows of a process: its row.

    :param process: the process name.
    :param task: its Pipeline II task.
    :param version: that task's version.
    :param process_type: ``batch`` or ``script``.
    :param workflow: the workflow (history ``workflow``) it belongs to.
    :param variant: the workflow variant ("" for none).
    :param mapped: whether it runs as one task instance per stream.
    """

    process: str
    task: str
    version: str
    process_type: str
    workflow: str
    variant: str = ""
    mapped: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return it as a JSON object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "process") -> ProcessIdentity:
        """Return it from :meth:`to_json`'s object.

        :raises PlanError: naming ``where`` and the field that is missing or of the wrong type.
        """
        obj = _object(data, where)
        return cls(
            process=_text(obj, "process", where),
            task=_text(obj, "task", where),
            version=_text(obj, "version", where),
            process_type=_text(obj, "process_type", where),
            workflow=_text(obj, "workflow", where),
            variant=_text(obj, "variant", where, ""),
            mapped=_flag(obj, "mapped", where),
        )


@dataclass(frozen=True)
class BundleIdentity:
    """A bundle task: the processes each stream of its bundles runs, and where the bundles are.

    :param streams_task_id: the task whose return value is the list of bundles (lists of streams).
    :param processes: the processes of the bundled sub-task, in spec order.
    """

    streams_task_id: str
    processes: tuple[ProcessIdentity, ...]

    def to_json(self) -> dict[str, Any]:
        """Return it as a JSON object."""
        return {"streams_task_id": self.streams_task_id, "processes": [p.to_json() for p in self.processes]}

    @classmethod
    def from_json(cls, data: Any, where: str = "bundle") -> BundleIdentity:
        """Return it from :meth:`to_json`'s object.

        :raises PlanError: naming ``where`` and the field.
        """
        obj = _object(data, where)
        processes = obj.get("processes")
        if not isinstance(processes, list):
            raise PlanError(f"{where}.processes: expected a list, got {type(processes).__name__}")
        return cls(
            streams_task_id=_text(obj, "streams_task_id", where),
            processes=tuple(
                ProcessIdentity.from_json(p, f"{where}.processes[{i}]") for i, p in enumerate(processes)
            ),
        )


@dataclass(frozen=True)
class DagProcesses:
    """The processes of one DAG, by Airflow task id.

    :param dag_id: the DAG.
    :param workflow: the workflow name the history records for it.
    :param variant: its variant ("" for none).
    :param workflow_version: the workflow's version ("" when unknown: a hand-written DAG, or a plan
        written before plans kept it).
    :param tasks: task id -> the process that task runs.
    :param bundles: bundle task id -> what its instances run.
    :param order: ``(task, process)`` of every process, in the workflow's order (the spec's,
        depth first: the order of the DC1 status table).
    """

    dag_id: str
    workflow: str
    variant: str = ""
    workflow_version: str = ""
    tasks: Mapping[str, ProcessIdentity] = dataclasses.field(default_factory=dict)
    bundles: Mapping[str, BundleIdentity] = dataclasses.field(default_factory=dict)
    order: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the plan as the JSON document of the module's docstring."""
        return {
            "format": PLAN_FORMAT,
            "dag_id": self.dag_id,
            "workflow": self.workflow,
            "variant": self.variant,
            "workflow_version": self.workflow_version,
            "tasks": {task_id: p.to_json() for task_id, p in self.tasks.items()},
            "bundles": {task_id: b.to_json() for task_id, b in self.bundles.items()},
            "order": [list(pair) for pair in self.order],
        }

    @classmethod
    def from_json(cls, data: Any) -> DagProcesses:
        """Return the plan from :meth:`to_json`'s document.

        :raises PlanError: for another format, or a field missing or of the wrong type (named,
            with the DAG).
        """
        obj = _object(data, "plan")
        where = f"plan of {obj.get('dag_id')!r}"
        if obj.get("format") != PLAN_FORMAT:
            raise PlanError(
                f"{where}: format {obj.get('format')!r}, this airflow-desc reads format {PLAN_FORMAT}; "
                "upgrade airflow-desc where the table is shown, or let a task of the DAG run again"
            )
        tasks, bundles, order = obj.get("tasks"), obj.get("bundles"), obj.get("order")
        if not isinstance(tasks, dict) or not isinstance(bundles, dict):
            raise PlanError(f"{where}: tasks and bundles must be JSON objects")
        if not isinstance(order, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
            for pair in order
        ):
            raise PlanError(f"{where}.order: expected a list of [task, process] pairs of text")
        return cls(
            dag_id=_text(obj, "dag_id", where),
            workflow=_text(obj, "workflow", where),
            variant=_text(obj, "variant", where, ""),
            workflow_version=_text(obj, "workflow_version", where, ""),
            tasks={str(k): ProcessIdentity.from_json(v, f"{where}.tasks[{k!r}]") for k, v in tasks.items()},
            bundles={
                str(k): BundleIdentity.from_json(v, f"{where}.bundles[{k!r}]") for k, v in bundles.items()
            },
            order=tuple((task, process) for task, process in order),
        )


def _object(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise PlanError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def _text(obj: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise PlanError(f"{where}.{key}: expected text, got {type(value).__name__}")
    return value


def _flag(obj: Mapping[str, Any], key: str, where: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise PlanError(f"{where}.{key}: expected true or false, got {type(value).__name__}")
    return value
