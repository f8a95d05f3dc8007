"""A client-side deadline on every answer of a PostgreSQL history server.

A server that accepted the connection and then says nothing (a stopped ``postgres``, a frozen
host, a proxy whose backend is gone) would hang a writer for good, and PostgreSQL's own limits do
not help: ``connect_timeout`` bounds only the start of a connection, ``statement_timeout`` is
enforced by the server (which is not running), and TCP's (``tcp_user_timeout``, keepalives) only
notice a peer whose kernel stopped acknowledging, while a stopped server's kernel still
acknowledges everything.

So every round trip of a history connection (each statement and COPY, commit and rollback, the pool's
ping, the queries psycopg2 makes when it connects) is watched by one watchdog thread per process:
when no answer came within the deadline, the watchdog shuts the connection's socket down, the
blocked call fails at once, the connection is closed (SQLAlchemy discards it as disconnected) and
the caller gets a psycopg2 ``OperationalError`` saying so (``ReplyTimeout``). What the server does
with the statement once it runs again is unknown: a write that timed out is spooled and written
again later (an upsert under the record's key), so it is never stored twice.

Connections are made of :func:`bounded_connection_class` (psycopg2's ``connection_factory``); the
deadline is lifted only around the migrations (:func:`unbounded`), which take what they take.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["bounded_connection_class", "unbounded"]


class _Watchdog:
    """Shuts down the socket of a call that has not returned by its deadline (one thread, lazily started)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, socket fd)
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, fd: int, seconds: float) -> int:
        with self._cond:
            token = next(self._tokens)
            self._armed[token] = (time.monotonic() + seconds, fd)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="desc-history-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> bool:
        """Stop watching; return whether the deadline passed (the socket was shut down)."""
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, fd) in list(self._armed.items()):
                    if deadline <= now:
                        # Under the lock: a call that returned and disarmed is never touched, so the
                        # fd still belongs to the blocked call's connection.
                        del self._armed[token]
                        _shut_down(fd)
                        self._fired.add(token)
                wait = min((d for d, _ in self._armed.values()), default=now + 3600.0) - now
                self._cond.wait(max(wait, 0.0))


def _shut_down(fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # the blocked poll() in libpq sees end of file at once
    except OSError:
        pass
    finally:
        sock.close()  # the duplicate only


_WATCHDOG = _Watchdog()


def _fresh_watchdog() -> None:
    # A forked child (a task runner) inherits neither the thread nor a usable lock state.
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_fresh_watchdog)


@functools.cache
def _reply_timeout_class() -> type[Exception]:
    import psycopg2

    class _ReplyTimeout(psycopg2.OperationalError):  # type: ignore[misc]
        """The history server sent no answer within the deadline; the connection was dropped."""

    _ReplyTimeout.__name__ = _ReplyTimeout.__qualname__ = "ReplyTimeout"
    _ReplyTimeout.__module__ = __name__
    return _ReplyTimeout


@contextlib.contextmanager
def _bounded(conn: Any) -> Iterator[None]:
    seconds = getattr(conn, "reply_timeout", None)
    if not seconds or conn.closed:
        yield
        return
    import psycopg2

    token = _WATCHDOG.arm(conn.fileno(), seconds)
    try:
        yield
    except psycopg2.Error as exc:
        if not _WATCHDOG.disarm(token):
            raise
        conn.close()  # SQLAlchemy sees a closed connection: a disconnect, never pooled again
        raise _reply_timeout_class()(
            f"the history database sent no answer within {seconds:g} s (the client's deadline, "
            "[desc] history_reply_timeout): the server is stopped or unreachable; connection dropped"
        ) from exc
    finally:
        _WATCHDOG.disarm(token)


class _BoundedCursorMixin:
    """Each call that waits for the server's answer is watched (cursors of any factory)."""

    connection: Any

    def execute(self, query: Any, vars: Any = None) -> Any:  # noqa: A002 - psycopg2's name
        with _bounded(self.connection):
            return super().execute(query, vars)  # type: ignore[misc]

    def executemany(self, query: Any, vars_list: Any) -> Any:
        with _bounded(self.connection):
            return super().executemany(query, vars_list)  # type: ignore[misc]

    def callproc(self, procname: Any, parameters: Any = None) -> Any:
        with _bounded(self.connection):
            return super().callproc(procname, parameters)  # type: ignore[misc]

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
        with _bounded(self.connection):
            return super().copy_expert(sql, file, size)  # type: ignore[misc]


@functools.cache
def _bounded_cursor_class(factory: type) -> type:
    if issubclass(factory, _BoundedCursorMixin):
        return factory
    return type(f"Bounded{factory.__name__}", (_BoundedCursorMixin, factory), {})


@functools.cache
def bounded_connection_class(seconds: float) -> type:
    """Return a psycopg2 connection class whose every round trip waits ``seconds`` at most.

    Give it as ``connection_factory`` to ``psycopg2.connect`` (SQLAlchemy: ``connect_args``).
    Its cursors, of whatever ``cursor_factory`` (psycopg2's own helpers pass theirs), are watched.

    :param seconds: the deadline of one answer (> 0).
    """
    import psycopg2.extensions

    class BoundedConnection(psycopg2.extensions.connection):  # type: ignore[misc]
        reply_timeout: float | None = seconds

        def cursor(self, name: Any = None, cursor_factory: Any = None, *args: Any, **kwargs: Any) -> Any:
            given = cursor_factory or self.cursor_factory or psycopg2.extensions.cursor
            factory = _bounded_cursor_class(given)
            return super().cursor(name, factory, *args, **kwargs)

        def commit(self) -> None:
            with _bounded(self):
                super().commit()

        def rollback(self) -> None:
            with _bounded(self):
                super().rollback()

    return BoundedConnection


@contextlib.contextmanager
def unbounded(dbapi_connection: Any) -> Iterator[None]:
    """Lift the deadline of one connection while the block runs (the migrations: an index takes long).

    :param dbapi_connection: a connection of :func:`bounded_connection_class` (anything else: no-op).
    """
    if getattr(dbapi_connection, "reply_timeout", None) is None:
        yield
        return
    dbapi_connection.reply_timeout = None
    try:
        yield
    finally:
        del dbapi_connection.reply_timeout  # the class's again
