"""A local SMTP server that captures messages (aiosmtpd), for tests and development.

Serves on a socket the caller bound (``start(sock)``): a port picked, released and
bound again could be taken in between. Messages are kept in memory, parsed.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

MAX_MESSAGES = 10_000


@dataclass
class Captured:
    sender: str
    recipients: list[str]
    subject: str
    text: str
    html: str
    headers: dict[str, str]


@dataclass
class SmtpCapture:
    """Keeps each message; refuses recipients in ``refuse`` with a 451 (try later), as a
    full mailbox or a greylisting server does."""

    messages: list[Captured] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:  # fmt: skip
        if address in self.refuse:
            return "451 4.2.2 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text_part = msg.get_body(("plain",))
        html_part = msg.get_body(("html",))
        captured = Captured(
            sender=str(envelope.mail_from),
            recipients=list(envelope.rcpt_tos),
            subject=str(msg["Subject"] or ""),
            text=text_part.get_content() if text_part else "",  # type: ignore[union-attr]
            html=html_part.get_content() if html_part else "",  # type: ignore[union-attr]
            headers={k: str(v) for k, v in msg.items()},
        )
        with self._lock:
            if len(self.messages) < MAX_MESSAGES:
                self.messages.append(captured)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Captured]:
        with self._lock:
            return [m for m in self.messages if address in m.recipients]


class Server:
    """The capture server in a thread of its own (its own event loop)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.capture = SmtpCapture()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="smtp-capture")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await self._loop.create_server(
                lambda: SMTP(self.capture, hostname="paynode-test", enable_SMTPUTF8=True),
                sock=self.sock,
            )
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def start(self) -> Server:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("SMTP capture server did not start")
        return self

    def stop(self) -> None:
        def close() -> None:
            self._server.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(5)
