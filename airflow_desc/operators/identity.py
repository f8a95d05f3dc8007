"""What the history calls an Airflow task that is a DESC script process, and why it skipped.

A task is a DESC script process when it carries a ``desc_process`` attribute
(:func:`mark_script_process`); the plugin's listener records its outcomes. Airflow 3.3 hands the
listener no exception for a skip (the task runner only logs the ``AirflowSkipException``
message), so a task that knows why it skips says so with :func:`note_skip` before raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_desc.workflow.outcomes import Skip

__all__ = ["ATTR", "SKIP_ATTR", "DescProcess", "mark_script_process", "note_skip"]

#: The operator attributes the listener reads.
ATTR = "desc_process"
SKIP_ATTR = "desc_skip"
_T = TypeVar("_T")


@dataclass(frozen=True)
class DescProcess:
    """What the history calls a task: its workflow, Pipeline II task, process and stream.

    :param process: the process name, e.g. ``setupEimageVisits`` (default: the task id).
    :param workflow: the top-level workflow (default: the DAG id).
    :param task: the Pipeline II task, e.g. ``DC1-DM12`` (default: the workflow).
    :param version: that task's version.
    :param stream: the stream path ("" at the top level).
    :param variant: the workflow variant (``imsim-dithered`` ...).
    :param workflow_version: the top-level workflow's version; with ``workflow`` and ``variant``
        it names the history's workflow, as the batch processes' records do.
    :param spec_digest: what rendered the DAG (``LoadedWorkflow.spec_digest``), kept on the run.
    """

    process: str | None = None
    workflow: str | None = None
    task: str | None = None
    version: str = ""
    stream: str = ""
    variant: str = ""
    workflow_version: str = ""
    spec_digest: str = ""


def mark_script_process(operator: _T, **fields: Any) -> _T:
    """Mark an Airflow task as a DESC script process so that its outcomes are recorded.

    :param operator: the task (any operator; usually a ``PythonOperator`` or ``@task``).
    :param fields: :class:`DescProcess` fields.
    :return: the same operator, for chaining.
    """
    setattr(operator, ATTR, DescProcess(**fields))
    return operator


def note_skip(operator: Any, kind: str, message: str) -> None:
    """Say why ``operator``'s running instance is about to skip itself; call it before raising.

    :param operator: the running task.
    :param kind: the reason class, ``upstream-failed`` or ``skip-condition``.
    :param message: the skip's message (what the exception says).
    """
    if kind not in ("upstream-failed", "skip-condition"):
        raise ValueError(f"note_skip: kind {kind!r}; use 'upstream-failed' or 'skip-condition'")
    setattr(operator, SKIP_ATTR, Skip(kind, message))  # type: ignore[arg-type]
