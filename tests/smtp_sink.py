"""A real SMTP server on 127.0.0.1 that keeps what it receives (aiosmtpd), for the notification tests.

It speaks SMTP as any mail relay does (no TLS, no login); a message is kept before the server
answers ``250`` to its DATA, so once the sender's call returned, the message is here.
tests/integration/test_notify.py listens on a free port; tests/e2e/test_notify_e2e.py on the port
that the deployment's workers have an SMTP connection to (:func:`smtp_connection`).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["SmtpSink", "html_body", "smtp_connection"]


def smtp_connection(host: str, port: int) -> dict[str, Any]:
    """An Airflow SMTP connection to a relay without TLS or login, as ``AIRFLOW_CONN_<ID>`` JSON takes it."""
    extra = {"disable_tls": True, "disable_ssl": True, "retry_limit": 0, "timeout": 30}
    return {"conn_type": "smtp", "host": host, "port": port, "extra": extra}


def html_body(message: EmailMessage) -> str:
    """The HTML part of a message (the SMTP notifier's ``html_content``)."""
    part = message.get_body(("html",))
    assert part is not None, f"no HTML part in {message['Subject']!r}"
    return str(part.get_content())


@dataclass
class SmtpSink:
    """Start with :meth:`start` (on :attr:`port`; 0: a free one), stop with :meth:`stop`, or use ``with``."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-sink", daemon=True)
        self._lock = threading.Lock()
        self._server: asyncio.AbstractServer | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook
        """Keep the message and its envelope recipients (aiosmtpd calls it for each message)."""
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        with self._lock:
            self.messages.append(message)  # type: ignore[arg-type]
            self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def start(self) -> SmtpSink:
        """Listen on :attr:`port` of :attr:`host` (0: a free port, then set in :attr:`port`); return self."""
        self._thread.start()
        made = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(lambda: SMTP(self, hostname="desc-sink"), self.host, self.port),
            self._loop,
        )
        self._server = made.result(timeout=30)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        """Stop listening and end the server's thread."""
        if self._server is not None:
            self._server.close()
            asyncio.run_coroutine_threadsafe(self._server.wait_closed(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def connection(self) -> dict[str, Any]:
        """An Airflow SMTP connection to this server, as ``AIRFLOW_CONN_<ID>`` JSON takes it."""
        return smtp_connection(self.host, self.port)

    def received(self) -> list[EmailMessage]:
        """The messages so far, in the order they came."""
        with self._lock:
            return list(self.messages)
