"""Checks of what a task reads back: only values airflow-desc could have written are used.

The task state store (Airflow 3.3) and XCom can be written through Airflow's REST API, and a
trigger event is only as good as the trigger that sent it. What a task reads there decides which
SLURM job is re-attached to or cancelled (a job id), which file's tail goes into the task log and
the history (a log path), and which scripts and requests a bundle reruns with (its saved state).
So every such value is checked before use: each check returns the value when it is one we could
have written, and raises :class:`~airflow_desc.exceptions.UntrustedState` naming the field and the
value (its repr, cut short) otherwise, before any command runs with it.

Pure: no Airflow, no I/O; the operators call these at every read.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from airflow_desc.exceptions import UntrustedState
from airflow_desc.slurm.accounting import JobAccounting, accounting_from_payload
from airflow_desc.slurm.commands import validate_job_id
from airflow_desc.workflow.scripts import ScriptOutcome
from airflow_desc.workflow.spec_templates import Scalar

__all__ = [
    "trusted_bundle_state",
    "trusted_bundles",
    "trusted_event_accounting",
    "trusted_event_job_id",
    "trusted_feeds",
    "trusted_job_id",
    "trusted_map_index",
    "trusted_path",
    "own_log_path",
    "trusted_script_outcome",
    "trusted_slurm_state",
    "trusted_stream",
    "trusted_streams",
]

_SHOWN = 80
_TOKEN = re.compile(r"[0-9a-f]{32}")
_OUTCOME_TEXT = ("message", "start", "end")
_OUTCOME_FIELDS = frozenset(("state", "feeds", "elapsed_s", *_OUTCOME_TEXT))
_RAISED_FIELDS = frozenset(("memory_mb", "walltime_s"))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _refuse(field: str, value: Any, why: str) -> NoReturn:
    raise UntrustedState(
        f"{field} = {_shown(value)}: {why}. airflow-desc never writes such a value, so nothing was run "
        "with it; the task state store and XCom can be written through Airflow's REST API: find who "
        "wrote it, delete it, then clear the task"
    )


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _is_count(value: Any) -> bool:
    # bool is an int to Python, never a count to us.
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def trusted_job_id(field: str, value: Any) -> str:
    """Return ``value`` if it is a SLURM job id (:func:`~airflow_desc.slurm.validate_job_id`).

    :param field: how to name the value in the error, e.g. ``"task state store 'slurm': job_id"``.
    :param value: the value read back.
    :raises UntrustedState: for anything else.
    """
    if not isinstance(value, str):
        _refuse(field, value, f"a SLURM job id is a string, not {type(value).__name__}")
    try:
        return validate_job_id(value)
    except ValueError:
        _refuse(field, value, "not a SLURM job id")


def _place(path: str) -> str:
    # A relative path and one under "~/" both name a place in the login's home directory (SSH
    # starts there), and the operators write both forms.
    return posixpath.normpath(path[2:] if path.startswith("~/") else path)


def trusted_path(field: str, value: Any, task_dir: str) -> str:
    """Return ``value`` if it names a file inside ``task_dir``, the task instance's directory.

    :param field: how to name the value in the error.
    :param value: the path read back.
    :param task_dir: the task instance's directory on the cluster
        (:func:`~airflow_desc.operators.job_names.task_dir_for`).
    :raises UntrustedState: for a non-string, a NUL byte or line break, a ``..`` part, or a path
        elsewhere.
    """
    if not isinstance(value, str):
        _refuse(field, value, f"a path is a string, not {type(value).__name__}")
    if any(c in value for c in "\0\n\r"):
        _refuse(field, value, "a path of ours has no NUL byte or line break")
    if ".." in value.split("/"):
        _refuse(field, value, "a path of ours never climbs with '..'")
    base = _place(task_dir).rstrip("/") + "/"
    if not _place(value).startswith(base):
        _refuse(field, value, f"not inside this task instance's directory {task_dir}")
    return value


# The logs we write: a job's ``t<try>-<job id>.out`` in its task's directory, a bundled instance's
# ``logs/<name>.log`` (the pilot's name, made of these characters, from the instance id).
_JOB_LOG = re.compile(r"t[0-9]+-[0-9]+(?:_[0-9]+)?\.out")
_INSTANCE_LOG = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9._=+-]*\.log")


def own_log_path(task_dir: str, recorded: Any) -> str | None:
    """Return where a log the history names is in the task instance's own directory, or ``None``.

    A recorded path is never read as it is: only its file name is kept, and only when it is a name
    we write (``t<try>-<job id>.out`` for a job, ``<name>.log`` for a bundled instance, the latter
    in ``logs/``), joined to ``task_dir`` (:func:`~airflow_desc.operators.job_names.task_dir_for`),
    which comes from the attempt's own identity. So a record (or a pilot's records file) naming
    another file can make nothing outside this task's logs be read.

    :param task_dir: the task instance's directory on the cluster.
    :param recorded: the recorded log path.
    """
    if not isinstance(recorded, str) or any(c in recorded for c in "\0\n\r"):
        return None
    name = posixpath.basename(recorded)
    if _JOB_LOG.fullmatch(name):
        return f"{task_dir.rstrip('/')}/{name}"
    if _INSTANCE_LOG.fullmatch(name) and ".." not in name:
        return f"{task_dir.rstrip('/')}/logs/{name}"
    return None


def trusted_slurm_state(state: Any, task_dir: str, *, source: str) -> dict[str, Any]:
    """Return a copy of a SlurmOperator's saved state once every field it acts on is checked.

    ``job_id`` and each of ``recorded`` must be job ids, ``log_path`` and ``log_pattern`` inside
    ``task_dir``, ``try_number`` a positive int, the submit and claim times strings,
    ``node_failures`` a list of ``{try, job_id, message}``. The escalation is checked where it is used
    (:class:`~airflow_desc.slurm.JobSpec` refuses what sbatch could not take).

    :param state: the saved state.
    :param task_dir: the task instance's directory on the cluster.
    :param source: where it was read, for the error, e.g. ``"task state store 'slurm'"``.
    :raises UntrustedState: naming the first field that is not what we write.
    """
    if not isinstance(state, Mapping):
        _refuse(source, state, f"the saved state is a mapping, not {type(state).__name__}")
    if state.get("job_id") is not None:
        trusted_job_id(f"{source}: job_id", state["job_id"])
    recorded = state.get("recorded")
    if recorded is not None:
        if not _is_list(recorded):
            _refuse(f"{source}: recorded", recorded, "a list of job ids is expected")
        for job_id in recorded:
            trusted_job_id(f"{source}: recorded", job_id)
    for key in ("log_path", "log_pattern"):
        if state.get(key) is not None:
            trusted_path(f"{source}: {key}", state[key], task_dir)
    if state.get("try_number") is not None and not _is_count(state["try_number"]):
        _refuse(f"{source}: try_number", state["try_number"], "a try number is a positive int")
    for key in ("submit_after", "submitted_at", "claimed_at"):
        if state.get(key) is not None and not isinstance(state[key], str):
            _refuse(f"{source}: {key}", state[key], "a time is an ISO string")
    _trusted_node_failures(f"{source}: node_failures", state.get("node_failures"))
    return dict(state)


def _trusted_node_failures(field: str, value: Any) -> None:
    """Check the jobs a try lost to node failures: ``[{"try": n, "job_id": id, "message": text}]``."""
    if value is None:
        return
    if not _is_list(value):
        _refuse(field, value, "a list of node failures is expected")
    for item in value:
        if not isinstance(item, Mapping) or set(item) != {"try", "job_id", "message"}:
            _refuse(field, item, "a node failure is {try, job_id, message}")
        if not _is_count(item["try"]) or not isinstance(item["message"], str):
            _refuse(field, item, "a node failure's try is a positive int, its message a string")
        trusted_job_id(f"{field}: job_id", item["job_id"])


def trusted_script_outcome(field: str, value: Any) -> ScriptOutcome:
    """Return the :class:`~airflow_desc.workflow.scripts.ScriptOutcome` a saved outcome describes.

    :param field: how to name the value in the error.
    :param value: ``ScriptOutcome.to_json()`` output, read back.
    :raises UntrustedState: for another shape or a field of another type.
    """
    if not isinstance(value, Mapping):
        _refuse(field, value, f"a script outcome is a mapping, not {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in _OUTCOME_FIELDS)
    if unknown:
        _refuse(field, value, f"a script outcome has no field {', '.join(unknown)}")
    if not isinstance(value.get("state"), str):
        _refuse(f"{field}: state", value.get("state"), "a script outcome's state is a string")
    trusted_feeds(f"{field}: feeds", value.get("feeds", {}))
    for key in _OUTCOME_TEXT:
        if value.get(key) is not None and not isinstance(value[key], str):
            _refuse(f"{field}: {key}", value[key], "a string or null is expected")
    elapsed = value.get("elapsed_s")
    if elapsed is not None and (isinstance(elapsed, bool) or not isinstance(elapsed, int | float)):
        _refuse(f"{field}: elapsed_s", elapsed, "seconds are a number or null")
    return ScriptOutcome.from_json(value)


def _trusted_raised_request(field: str, value: Any) -> None:
    if not isinstance(value, Mapping) or not value or set(value) - _RAISED_FIELDS:
        _refuse(field, value, "a raised request maps memory_mb and/or walltime_s to positive ints")
    for key, number in value.items():
        if not _is_count(number):
            _refuse(f"{field}: {key}", number, "a raised request is a positive int")


def trusted_bundle_state(state: Any, *, source: str) -> dict[str, Any]:
    """Return a copy of a bundle's saved state once its script outcomes and raised requests are checked.

    :param state: the saved state: ``scripts`` (outcomes by script id), ``escalation`` (raised
        requests by instance id), ``rerun``, ``rerun_ids`` (what this try reruns whatever its state),
        ``dir_token`` (32 hex digits, written into the bundle's directory on the cluster).
    :param source: where it was read, for the error, e.g. ``"task state store 'bundle'"``.
    :raises UntrustedState: naming the first field that is not what we write.
    """
    if not isinstance(state, Mapping):
        _refuse(source, state, f"the saved state is a mapping, not {type(state).__name__}")
    for key in ("scripts", "escalation"):
        if state.get(key) is not None and not isinstance(state[key], Mapping):
            _refuse(f"{source}: {key}", state[key], "a mapping by id is expected")
    again = state.get("rerun_ids")
    if again is not None and not (_is_list(again) and all(isinstance(i, str) for i in again)):
        _refuse(f"{source}: rerun_ids", again, "a list of instance ids is expected")
    for sid, outcome in (state.get("scripts") or {}).items():
        trusted_script_outcome(f"{source}: scripts[{_shown(sid)}]", outcome)
    for iid, request in (state.get("escalation") or {}).items():
        _trusted_raised_request(f"{source}: escalation[{_shown(iid)}]", request)
    token = state.get("dir_token")
    if token is not None and not (isinstance(token, str) and _TOKEN.fullmatch(token)):
        _refuse(f"{source}: dir_token", token, "a directory token is 32 hex digits")
    return dict(state)


def trusted_feeds(field: str, value: Any) -> dict[str, list[Scalar]]:
    """Return a copy of the streams a script made: sub-task names to lists of stream values.

    :param field: how to name the value in the error.
    :param value: a script outcome's ``feeds``, or a feeding script's XCom ``feeds``.
    :raises UntrustedState: for anything else.
    """
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and _is_list(v) and all(_is_scalar(x) for x in v) for k, v in value.items()
    ):
        _refuse(field, value, "feeds map sub-task names to lists of str, int, float or bool")
    return {k: list(v) for k, v in value.items()}


def trusted_map_index(field: str, value: Any) -> int:
    """Return ``value`` if it is a map index: an int, -1 for an unmapped task.

    :param field: how to name the value in the error.
    :param value: the value read back.
    :raises UntrustedState: for anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        _refuse(field, value, "a map index is an int, -1 or more")
    return value


def trusted_stream(field: str, value: Any) -> dict[str, Scalar]:
    """Return a copy of one stream's values: a mapping of str to str, int, float or bool.

    :param field: how to name the value in the error, e.g. ``"streams[2]"``.
    :param value: the stream's values, from XCom (through ``expand``) or the DAG file.
    :raises UntrustedState: for anything else.
    """
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and _is_scalar(v) for k, v in value.items()
    ):
        _refuse(field, value, "a stream maps variable names to str, int, float or bool")
    return dict(value)


def trusted_streams(field: str, value: Any) -> list[dict[str, Scalar]]:
    """Return a copy of a list of streams (see :func:`trusted_stream`).

    :param field: how to name the value in the error, e.g. ``"streams"``.
    :param value: the list.
    :raises UntrustedState: for anything else.
    """
    if not _is_list(value):
        _refuse(field, value, "a list of streams is expected")
    return [trusted_stream(f"{field}[{i}]", stream) for i, stream in enumerate(value)]


def trusted_bundles(field: str, value: Any) -> list[list[dict[str, Scalar]]]:
    """Return a copy of a list of bundles, each a list of streams (see :func:`trusted_stream`).

    :param field: how to name the value in the error.
    :param value: the list, e.g. a bundled sub-task's streams task's XCom.
    :raises UntrustedState: for anything else.
    """
    if not _is_list(value):
        _refuse(field, value, "a list of bundles (lists of streams) is expected")
    return [trusted_streams(f"{field}[{i}]", bundle) for i, bundle in enumerate(value)]


def trusted_event_job_id(event: Any) -> str:
    """Return the job id of a trigger event, checked as a job id.

    :param event: the event ``execute_complete`` was given.
    :raises UntrustedState: for an event that is not a mapping or has no job id.
    """
    if not isinstance(event, Mapping):
        _refuse("trigger event", event, f"an event is a mapping, not {type(event).__name__}")
    return trusted_job_id("trigger event: job_id", event.get("job_id"))


def trusted_event_accounting(event: Any) -> JobAccounting:
    """Return the accounting a ``done`` trigger event carries, its job id checked first.

    :param event: the event ``execute_complete`` was given.
    :raises UntrustedState: for a bad job id, or rows that are not sacct rows as the trigger sends them.
    """
    trusted_event_job_id(event)
    try:
        return accounting_from_payload(event)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        why = str(exc)[:_SHOWN]  # the parser's words may quote the whole payload
        _refuse("trigger event: rows", event.get("rows"), f"not the sacct rows of the job ({why})")
