"""Record who cleared which task instances through Airflow's API, and why, for the history.

:class:`ClearRecorder` is an ASGI middleware the plugin adds to the api-server (``fastapi_root_middlewares``).
It watches ``POST /api/v2/dags/{dag_id}/clearTaskInstances``: the UI's Clear, a REST call,
``airflow-desc rerun`` and the status page's Rerun all go through it. When a clear that is not a
dry run succeeded, it reads who made it from Airflow's audit log (the ``log`` row Airflow's
``action_logging`` wrote for that request: its ``owner`` is the authenticated user) and writes one
:class:`~airflow_desc.history.records.RerunRequest` per cleared task instance to the history
(:func:`~airflow_desc.reruns.requests_from_clear`): the user, and the clear's ``note`` as the
reason (those cleared only as downstream say so). The writer copies them into the
``triggered_by`` and ``rerun_reason`` of the attempts that follow.

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

_CLEAR = re.compile(r"/api/v2/dags/(?P<dag_id>[^/]+)/clearTaskInstances$")
#: The event Airflow's audit log names a clearTaskInstances call (its endpoint's name).
CLEAR_EVENT = "post_clear_task_instances"

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClearRecorder:
    """ASGI middleware: record each successful ``clearTaskInstances`` in the history (see the module).

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
        request: list[bytes] = []
        answer: list[Message] = []
        started = datetime.now(timezone.utc)

        async def receiving() -> Message:
            message = await receive()
            if message.get("type") == "http.request":
                request.append(bytes(message.get("body", b"")))
            return message

        async def holding(message: Message) -> None:
            answer.append(message)

        try:
            await self.app(scope, receiving, holding)
        finally:
            start = next((m for m in answer if m.get("type") == "http.response.start"), {})
            if start.get("status") == 200:
                body = b"".join(
                    bytes(m.get("body", b"")) for m in answer if m.get("type") == "http.response.body"
                )
                if (b"content-encoding", b"gzip") in [(k.lower(), v) for k, v in start.get("headers", [])]:
                    body = gzip.decompress(body)
                await _record_off_the_loop(found["dag_id"], b"".join(request), body, started)
            for message in answer:
                await send(message)


async def _record_off_the_loop(dag_id: str, request: bytes, answer: bytes, started: datetime) -> None:
    import anyio.to_thread

    try:
        body, cleared = json.loads(request or b"{}"), json.loads(answer or b"{}").get("task_instances") or []
    except (ValueError, AttributeError):
        return
    if not isinstance(body, dict) or body.get("dry_run", True) or not cleared:
        return
    try:
        await anyio.to_thread.run_sync(record_clear, dag_id, body, cleared, started)
    except Exception:  # noqa: BLE001 - the clear happened; only its who and why are missing
        log.warning(
            "could not record the clear of %d task instance(s) of %s in the history: the attempts "
            "that follow will not say who cleared them or why", len(cleared), dag_id, exc_info=True,
        )  # fmt: skip


def record_clear(dag_id: str, body: dict[str, Any], cleared: list[dict[str, Any]], started: datetime) -> int:
    """Write the rerun requests of one clear: who from Airflow's audit log, why from its note.

    :param dag_id: the DAG.
    :param body: the clear's request body.
    :param cleared: the task instances the API answered it cleared.
    :param started: when the request arrived (the audit-log row is newer).
    :return: how many requests were written.
    """
    from airflow_desc.history import default_history_store

    who = clear_author(dag_id, body, started)
    if who is None:
        log.warning("no audit-log entry for a clear of %s: recorded as by an unknown user", dag_id)
        who = "unknown (no audit-log entry)"
    requests = requests_from_clear(dag_id, body, cleared, who=who, at=datetime.now(timezone.utc))
    default_history_store().request_reruns(requests)
    return len(requests)


def clear_author(dag_id: str, body: dict[str, Any], started: datetime) -> str | None:
    """Return the user Airflow's audit log names for this clear: the newest matching row since ``started``."""
    import sqlalchemy as sa
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    query = sa.select(Log.owner, Log.extra).where(
        Log.event == CLEAR_EVENT, Log.dag_id == dag_id, Log.dttm >= started - timedelta(seconds=1)
    )
    if body.get("dag_run_id"):
        query = query.where(Log.run_id == body["dag_run_id"])
    with create_session() as session:
        rows = session.execute(query.order_by(Log.id.desc())).all()
    return next((str(owner) for owner, extra in rows if owner and same_clear(extra, body)), None)
