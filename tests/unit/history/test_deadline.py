"""The client's reply deadline, against a real socket that logs a client in and then never answers.

:class:`FrozenAfterLogin` speaks just enough of PostgreSQL's protocol (v3) to let libpq log in (no
TLS, trust), then reads and answers nothing: a server frozen after it accepted the connection. A
stopped real PostgreSQL is in ``tests/integration/test_history_outage.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from airflow_desc.history import HistoryStore, SpoolingRecorder
from airflow_desc.history.deadline import bounded_connection_class
from airflow_desc.history.engine import DEFAULT_REPLY_TIMEOUT_S, connect_arguments
from tests.unit.history.test_store import count, rec, spool_lines

_SSL_REQUEST, _GSS_REQUEST = 80877103, 80877104


def _message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


class FrozenAfterLogin:
    """Accepts, logs the client in, then goes silent (holding every connection open)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = self.sock.getsockname()[1]
        self.logins = 0
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # closed by close()
            while True:
                conn, _ = self.sock.accept()
                self.held.append(conn)
                self._login(conn)

    def _login(self, conn: socket.socket) -> None:
        while True:
            (length,) = struct.unpack("!i", _read(conn, 4))
            body = _read(conn, length - 4)
            if struct.unpack("!i", body[:4])[0] in (_SSL_REQUEST, _GSS_REQUEST):
                conn.sendall(b"N")  # no TLS, no GSSAPI: the startup message follows
                continue
            break
        params = {"server_version": "15.0", "client_encoding": "UTF8", "DateStyle": "ISO, MDY",
                  "standard_conforming_strings": "on", "integer_datetimes": "on"}  # fmt: skip
        reply = _message(b"R", struct.pack("!i", 0))  # AuthenticationOk
        for key, value in params.items():
            reply += _message(b"S", key.encode() + b"\0" + value.encode() + b"\0")
        reply += _message(b"K", struct.pack("!ii", 4242, 1)) + _message(b"Z", b"I")
        conn.sendall(reply)
        self.logins += 1  # and from now on: silence

    def url(self, query: str) -> str:
        return f"postgresql://desc:pw@127.0.0.1:{self.port}/desc_history?sslmode=disable&{query}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.held:
            conn.close()
        self.thread.join(5)


def _read(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise OSError("client gone")
        data += chunk
    return data


@pytest.fixture
def frozen() -> Iterator[FrozenAfterLogin]:
    server = FrozenAfterLogin()
    yield server
    server.close()


def test_a_server_silent_after_login_fails_a_statement_at_the_reply_deadline(
    frozen: FrozenAfterLogin,
) -> None:
    store = HistoryStore(frozen.url("reply_timeout=1&statement_timeout=500"), auto_upgrade=False)
    start = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match=r"sent no answer within 1 s") as caught:
        store.ping()
    took = time.monotonic() - start
    assert frozen.logins == 1  # it logged in: only the client's deadline got it out
    assert "ReplyTimeout" in str(caught.value)
    assert store.engine.pool.checkedin() == 0  # dropped, never handed out again by the pool
    assert took < 30, took  # the old behaviour: forever
    store.dispose()


def test_a_task_record_to_a_server_silent_after_login_is_spooled(
    frozen: FrozenAfterLogin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "history-spool.jsonl"
    recorder = SpoolingRecorder(HistoryStore(frozen.url("reply_timeout=1")), spool)
    with caplog.at_level(logging.WARNING, logger="airflow_desc.history.spool"):
        recorder.record([rec("s=1")])
    assert frozen.logins >= 1
    assert [d["stream"] for d in spool_lines(recorder)] == ["s=1"]
    assert "sent no answer within" in caplog.text
    working = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}")
    assert SpoolingRecorder(working, spool).flush().flushed == 1
    assert count(working) == 1
    working.dispose()


def test_the_reply_deadline_stays_above_the_statement_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONNECT", "STATEMENT", "REPLY"):
        monkeypatch.delenv(f"AIRFLOW__DESC__HISTORY_{name}_TIMEOUT", raising=False)
    pg = "postgresql+psycopg2://desc:pw@db.example/desc_history"

    def reply(url: str) -> float | None:
        factory = connect_arguments(make_url(url), {})[1].get("connection_factory")
        return None if factory is None else factory.reply_timeout

    assert reply(pg) == DEFAULT_REPLY_TIMEOUT_S == 6.0
    assert reply(pg + "?reply_timeout=2.5") == 2.5
    assert reply(pg + "?statement_timeout=10s") == 11.0  # a statement the server finishes is not cut
    assert reply(pg + "?statement_timeout=2min") == 121.0
    assert reply(pg + "?statement_timeout=250ms") == 6.0
    assert reply(pg + "?statement_timeout=2min&reply_timeout=30") == 30.0  # said: as said
    assert reply(pg + "?reply_timeout=0") is None  # no client deadline
    monkeypatch.setenv("AIRFLOW__DESC__HISTORY_REPLY_TIMEOUT", "9")
    assert reply(pg) == 9.0
    url = connect_arguments(make_url(pg + "?reply_timeout=3"), {})[0]
    assert "reply_timeout" not in url.query  # not libpq's: taken out of the URL
    assert "connection_factory" not in connect_arguments(make_url("sqlite://"), {})[1]


def test_a_copy_to_a_server_silent_after_login_fails_at_the_reply_deadline(frozen: FrozenAfterLogin) -> None:
    """The writer's COPY of a big batch (copy_rows.py) is watched like a statement."""
    import psycopg2

    dsn = f"host=127.0.0.1 port={frozen.port} dbname=desc_history user=desc password=pw sslmode=disable"
    conn = psycopg2.connect(dsn, connection_factory=bounded_connection_class(1.0))
    start = time.monotonic()
    with pytest.raises(psycopg2.OperationalError, match=r"sent no answer within 1 s"):
        conn.cursor().copy_expert("COPY desc_copy_streams FROM STDIN", io.StringIO("1\t\\N\n"))
    assert time.monotonic() - start < 30  # without the watchdog: forever
    assert conn.closed
