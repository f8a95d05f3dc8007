"""Running the renderer's operators by hand: a fake task instance, its context, Mini's processPatch operators.

Mini is ``tests/data/specs/mini.yaml``; its processPatch operators here run for the stream patch=1,2.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from airflow_desc.operators.workflow import WorkflowScriptOperator

Op = TypeVar("Op")


class FakeTI:
    """What operators ask of a task instance: ids, task states, XCom."""

    def __init__(
        self,
        task_id: str = "t",
        map_index: int = -1,
        states: dict[str, str] | None = None,
        xcoms: dict[tuple[str, str], list[Any]] | None = None,
    ) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index, self.try_number = (
            "d",
            "r1",
            task_id,
            map_index,
            1,
        )
        self.states = states or {}
        self.xcoms = xcoms or {}
        self.pushed: dict[str, Any] = {}

    def get_task_states(self, dag_id: str, run_ids: list[str], **_: Any) -> dict[str, Any]:
        return {self.run_id: dict(self.states)}

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        ids = [task_ids] if isinstance(task_ids, str) else list(task_ids or [])
        return [value for tid in ids for value in self.xcoms.get((tid, key), [])]

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def context(ti: FakeTI, conf: dict[str, Any] | None = None, **extra: Any) -> Any:
    dag_run = type("DagRun", (), {"conf": conf or {}})()
    return {"ti": ti, "dag_run": dag_run, "params": {}, **extra}  # extra may give params


def patch_operator(
    cls: type[Op], workflow: Any, process: str, variant: str | None = None, **kwargs: Any
) -> Op:
    """The operator ``cls`` of Mini's processPatch/``process`` for the stream patch=1,2."""
    return cls(
        task_id=f"processPatch.{process}",
        workflow_key=workflow.key,
        variant=variant,
        process_path=f"Mini/processPatch/{process}",
        stream={"patch": "1,2"},
        **kwargs,
    )


def skipped_setup_filters(workflow: Any, variant: str | None) -> WorkflowScriptOperator:
    """Run processPatch's setupFilters of patch 1,2 after that patch's assemble was skipped: it skips."""
    op = patch_operator(WorkflowScriptOperator, workflow, "setupFilters", variant)
    ti = FakeTI(map_index=1, states={"processPatch.assemble_1": "skipped"})
    with pytest.raises(AirflowSkipException, match="upstream assemble skipped"):
        op.execute(context(ti))
    return op
