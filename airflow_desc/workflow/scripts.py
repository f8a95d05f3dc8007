"""Script processes: import a spec's callable, call it with its arguments, read the streams it makes.

A script process runs on the Airflow worker: as a task of its own at the top levels, or inside a
bundle task (setup scripts before the allocation, wrapup scripts after it). Either way it is
called here, with the spec's kwargs (variables and stream values filled in, ``expected_streams``
added when the function takes it), and a script that makes the streams of sub-tasks returns
their values (:func:`script_feeds`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_desc.exceptions import WorkflowSpecError
from airflow_desc.workflow.graph import ProcessNode
from airflow_desc.workflow.naming import stream_path
from airflow_desc.workflow.spec_templates import Scalar

if TYPE_CHECKING:
    from airflow_desc.workflow.registry import LoadedWorkflow

__all__ = [
    "ScriptOutcome",
    "call_script",
    "import_callable",
    "import_target",
    "script_feeds",
    "script_kwargs",
]

log = logging.getLogger(__name__)


def import_target(target: str) -> Any:
    """Import ``module.path:name`` (a script's callable, a notifier's class) and return it.

    :raises ImportError: if the module cannot be imported.
    :raises AttributeError: if it has no such name.
    """
    module_name, _, attr = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


@functools.lru_cache(maxsize=256)
def import_callable(target: str) -> Callable[..., Any]:
    """Import ``module.path:function``.

    :raises WorkflowSpecError: if the module or the function cannot be found.
    """
    try:
        value = import_target(target)
    except (ImportError, AttributeError) as exc:
        raise WorkflowSpecError(f"cannot import the script callable {target!r}: {exc}") from None
    if not callable(value):
        raise WorkflowSpecError(f"the script callable {target!r} is not callable")
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ScriptOutcome:
    """One run of a script process: its state, the streams it made, and when.

    :param state: ``success``, ``failed`` or ``skipped``.
    :param feeds: the stream values it made, by sub-task.
    :param message: why it failed or was skipped.
    :param start: ISO start time.
    :param end: ISO end time.
    :param elapsed_s: seconds.
    """

    state: str
    feeds: Mapping[str, list[Scalar]] = field(default_factory=dict)
    message: str | None = None
    start: str | None = None
    end: str | None = None
    elapsed_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-able dict."""
        return {**dataclasses.asdict(self), "feeds": {k: list(v) for k, v in self.feeds.items()}}

    @classmethod
    def skipped(cls, message: str) -> ScriptOutcome:
        """Return the outcome of a script not run (an upstream did not succeed, or its ``skip_if`` held)."""
        return cls("skipped", message=message, start=_now(), end=_now(), elapsed_s=0.0)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScriptOutcome:
        """Rebuild from :meth:`to_json` output."""
        return cls(
            **{k: data[k] for k in ("state", "feeds", "message", "start", "end", "elapsed_s") if k in data}
        )


def script_kwargs(
    workflow: LoadedWorkflow, process: ProcessNode, stream: Mapping[str, Any], variables: Mapping[str, Scalar]
) -> dict[str, Any]:
    """Return the arguments of one call of a script: its kwargs (+ ``expected_streams``)."""
    kwargs = process.render_kwargs(stream, variables)
    function = import_callable(process.callable or "")
    if "expected_streams" in inspect.signature(function).parameters:
        kwargs["expected_streams"] = {
            name: workflow.expected_streams(name, variables) for name in process.feeds
        }
    return kwargs


def script_feeds(process: ProcessNode, result: Any) -> dict[str, list[Scalar]]:
    """Return the streams a script's return value makes, by sub-task.

    :raises WorkflowSpecError: for a value that is not a list of stream values (or, for a script
        that feeds several sub-tasks, a mapping of each of them to such a list).
    """
    if not process.feeds:
        return {}
    if isinstance(result, Mapping):
        missing = [name for name in process.feeds if name not in result]
        if missing:
            raise WorkflowSpecError(
                f"{process.path}: {process.callable} returned no streams for {', '.join(missing)}; "
                "return a mapping of each sub-task it feeds to a list of stream values"
            )
        lists = {name: result[name] for name in process.feeds}
    elif len(process.feeds) == 1 and isinstance(result, list | tuple):
        lists = {process.feeds[0]: result}
    else:
        raise WorkflowSpecError(
            f"{process.path}: {process.callable} returned {type(result).__name__}; a script that makes the "
            f"streams of {', '.join(process.feeds)} returns a list of stream values"
            + (" (a mapping by sub-task, as it feeds several)" if len(process.feeds) > 1 else "")
        )
    feeds: dict[str, list[Scalar]] = {}
    for name, values in lists.items():
        if not isinstance(values, list | tuple) or not all(
            isinstance(v, str | int | float | bool) for v in values
        ):
            raise WorkflowSpecError(
                f"{process.path}: the streams of {name} must be a list of text or numbers, got {values!r}"
            )
        feeds[name] = list(values)
    return feeds


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def call_script(
    workflow: LoadedWorkflow, process: ProcessNode, stream: Mapping[str, Any], variables: Mapping[str, Scalar]
) -> tuple[ScriptOutcome, Any]:
    """Run one script process instance on this worker; never raises for the script's own errors.

    :return: the outcome (``failed`` with the exception's last line when it raised), and the
        return value (``None`` when it failed).
    """
    start, clock = _now(), time.monotonic()
    try:
        kwargs = script_kwargs(workflow, process, stream, variables)
        result = import_callable(process.callable or "")(**kwargs)
        feeds = script_feeds(process, result)
    except Exception as exc:  # the script's failure is a process outcome, recorded, not a crash
        log.exception("script %s failed for stream %r", process.path, stream_path(stream))
        text = str(exc).strip().splitlines()
        message = f"{type(exc).__name__}: {text[-1] if text else ''}"
        outcome = ScriptOutcome("failed", message=message, start=start, end=_now(), elapsed_s=_since(clock))
        return outcome, None
    return ScriptOutcome("success", feeds, start=start, end=_now(), elapsed_s=_since(clock)), result


def _since(clock: float) -> float:
    return round(time.monotonic() - clock, 3)
