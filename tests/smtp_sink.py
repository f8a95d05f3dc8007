"""A real SMTP server on 127.0.0.1 that keeps what it receives (aiosmtpd), for the notification tests.

It speaks SMTP as any mail relay does (no TLS, no login); a message is kept before the server
answers ``250`` to its DATA, so once the sender's call returned, the message is here.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["SmtpSink"]


@dataclass
class SmtpSink:
    """Start with :meth:`start` (it listens on a free port, :attr:`port`), stop with :meth:`stop`."""

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
        """Listen on a free port of :attr:`host`; return self."""
        self._thread.start()
        made = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(lambda: SMTP(self, hostname="desc-sink"), self.host, 0), self._loop
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

    def connection(self) -> dict[str, Any]:
        """An Airflow SMTP connection to this server, as ``AIRFLOW_CONN_<ID>`` JSON takes it."""
        extra = {"disable_tls": True, "disable_ssl": True, "retry_limit": 0, "timeout": 30}
        return {"conn_type": "smtp", "host": self.host, "port": self.port, "extra": extra}

    def received(self) -> list[EmailMessage]:
        """The messages so far, in the order they came."""
        with self._lock:
            return list(self.messages)
