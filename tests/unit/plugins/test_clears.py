"""The clear recorder's middleware, without a database: what it passes on untouched, what it holds."""

from __future__ import annotations

import json
from typing import Any

import anyio

from airflow_desc.plugins.clears import ClearRecorder


async def answer_ok(scope: Any, receive: Any, send: Any) -> None:
    message = await receive()
    body = json.dumps({"echo": json.loads(message["body"] or b"{}"), "task_instances": []}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})


def call(path: str, body: dict[str, Any], method: str = "POST") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path}
    anyio.run(ClearRecorder(answer_ok), scope, receive, send)
    return sent


def test_other_requests_and_dry_runs_pass_through_unchanged() -> None:
    for path, body in [
        ("/api/v2/dags/dc1/dagRuns", {"x": 1}),
        ("/api/v2/dags/dc1/clearTaskInstances", {"dry_run": True, "task_ids": ["a"]}),
        ("/api/v2/dags/dc1/clearTaskInstances", {"task_ids": ["a"]}),  # dry_run is Airflow's default
    ]:
        start, end = call(path, body)
        assert start["status"] == 200
        assert json.loads(end["body"])["echo"] == body  # the request reached the app whole
