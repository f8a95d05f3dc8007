"""Record who cleared which task instances through Airflow's API, and why, for the history.

:class:`ClearRecorder` is an ASGI middleware the plugin adds to the api-server (``fastapi_root_middlewares``).
It watches ``POST /api/v2/dags/{dag_id}/clearTaskInstances`` (the UI's Clear of task instances, a
REST call, ``airflow-desc rerun`` and the status page's Rerun all go through it) and
``POST /api/v2/dags/{dag_id}/dagRuns/{run_id}/clear`` (the UI's Clear of a whole DAG run). When a
clear that is not a dry run succeeded, it reads who made it from Airflow's audit log (the ``log``
row Airflow's ``action_logging`` wrote for that request: its ``owner`` is the authenticated user)
and writes one :class:`~airflow_desc.history.records.RerunRequest` per cleared task instance to the
history (:func:`~airflow_desc.reruns.requests_from_clear`): the user, and the clear's ``note`` as
the reason (those cleared only as downstream say so). The writer copies them into the
``triggered_by`` and ``rerun_reason`` of the attempts that follow. A task-instance clear answers
with the task instances it cleared; for a DAG run's, the run's task instances are read just
before it (every one, or those that failed with ``only_failed``; ``only_new`` clears none).

The answer is held until the request is recorded, so that a caller who got it finds it in the
history. Recording never fails the clear: a history that does not answer is a warning in the
api-server's log (the attempts then say nobody).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_desc.reruns import requests_from_clear, same_clear

__all__ = ["ClearRecorder", "record_clear"]

log = logging.getLogger(__name__)

_CLEAR = re.compile(r"/api/v2/dags/(?P<dag_id>[^/]+)/(?:clearTaskInstances|dagRuns/(?P<run_id>[^/]+)/clear)$")
#: The events Airflow's audit log names the two clears (their endpoints' names).
CLEAR_EVENT = "post_clear_task_instances"
RUN_CLEAR_EVENT = "clear_dag_run"
#: The task-instance states a DAG run's clear with ``only_failed`` clears.
_FAILED = ("failed", "upstream_failed")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClearRecorder:
    """ASGI middleware: record each successful clear made through the API in the history (see the module).

    :param app: the api-server's application.
    """

    def __init__(self, app: Callable[[Message, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        """Pass the request on; for a clear, hold the answer until the clear is recorded."""
        found = _CLEAR.search(str(scope.get("path", ""))) if scope.get("type") == "http" else None
        if found is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        dag_id, run_id = found["dag_id"], found["run_id"]
        started = datetime.now(timezone.utc)
        request = await _whole_body(receive)
        replay: list[Message] = [{"type": "http.request", "body": request, "more_body": False}]

        async def receiving() -> Message:
            return replay.pop() if replay else await receive()

        answer: list[Message] = []

        async def holding(message: Message) -> None:
            answer.append(message)

        body = _json(request)
        clears = body is not None and not body.get("dry_run", True)  # Airflow's default is a dry run
        before = None
        if clears and run_id is not None:
            before = await _off_the_loop(run_task_instances, dag_id, run_id, body)
        try:
            await self.app(scope, receiving, holding)
        finally:
            start = next((m for m in answer if m.get("type") == "http.response.start"), {})
            if clears and body is not None and start.get("status") == 200:
                cleared = before if run_id is not None else _cleared_in(answer, start)
                event = CLEAR_EVENT if run_id is None else RUN_CLEAR_EVENT
                if cleared:
                    asked = {"dag_run_id": run_id, **body} if run_id is not None else body
                    await _off_the_loop(record_clear, dag_id, asked, cleared, started, event)
            for message in answer:
                await send(message)


async def _whole_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            return b"".join(chunks)
        chunks.append(bytes(message.get("body", b"")))
        if not message.get("more_body"):
            return b"".join(chunks)


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _cleared_in(answer: list[Message], start: Message) -> list[dict[str, Any]]:
    """Return the task instances a clearTaskInstances answer lists."""
    body = b"".join(bytes(m.get("body", b"")) for m in answer if m.get("type") == "http.response.body")
    if (b"content-encoding", b"gzip") in [(k.lower(), v) for k, v in start.get("headers", [])]:
        body = gzip.decompress(body)
    found = (_json(body) or {}).get("task_instances")
    return list(found) if isinstance(found, list) else []


async def _off_the_loop(func: Callable[..., Any], dag_id: str, *args: Any) -> Any:
    """Run a database call in a thread; a failure is a warning (the clear is not the history's to stop)."""
    import anyio.to_thread

    try:
        return await anyio.to_thread.run_sync(func, dag_id, *args)
    except Exception:  # noqa: BLE001 - the clear happens anyway; only its who and why are missing
        log.warning(
            "could not record a clear of %s for the history (%s): the attempts that follow will not say "
            "who cleared them or why", dag_id, func.__name__, exc_info=True,
        )  # fmt: skip
        return None


def run_task_instances(dag_id: str, run_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the task instances a DAG run's clear of ``body`` clears, as the API lists task instances."""
    import sqlalchemy as sa
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session

    if body.get("only_new"):
        return []
    query = sa.select(TI.task_id, TI.map_index, TI.try_number).where(TI.dag_id == dag_id, TI.run_id == run_id)
    if body.get("only_failed"):
        query = query.where(TI.state.in_(_FAILED))
    with create_session() as session:
        rows = session.execute(query).all()
    return [{"task_id": t, "map_index": m, "try_number": n, "dag_run_id": run_id} for t, m, n in rows]


def record_clear(
    dag_id: str,
    body: dict[str, Any],
    cleared: list[dict[str, Any]],
    started: datetime,
    event: str = CLEAR_EVENT,
) -> int:
    """Write the rerun requests of one clear: who from Airflow's audit log, why from its note.

    :param dag_id: the DAG.
    :param body: the clear's request body (with ``dag_run_id``).
    :param cleared: the task instances it cleared.
    :param started: when the request arrived (the audit-log row is newer).
    :param event: the audit log's name of the clear.
    :return: how many requests were written.
    """
    from airflow_desc.history import default_history_store

    who = clear_author(dag_id, body, started, event)
    if who is None:
        log.warning("no audit-log entry for a clear of %s: recorded as by an unknown user", dag_id)
        who = "unknown (no audit-log entry)"
    requests = requests_from_clear(dag_id, body, cleared, who=who, at=datetime.now(timezone.utc))
    default_history_store().request_reruns(requests)
    return len(requests)


def clear_author(
    dag_id: str, body: dict[str, Any], started: datetime, event: str = CLEAR_EVENT
) -> str | None:
    """Return the user Airflow's audit log names for this clear: the newest matching row since ``started``."""
    import sqlalchemy as sa
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    query = sa.select(Log.owner, Log.extra).where(
        Log.event == event, Log.dag_id == dag_id, Log.dttm >= started - timedelta(seconds=1)
    )
    if body.get("dag_run_id"):
        query = query.where(Log.run_id == body["dag_run_id"])
    with create_session() as session:
        rows = session.execute(query.order_by(Log.id.desc())).all()
    return next((str(owner) for owner, extra in rows if owner and same_clear(extra, body)), None)
