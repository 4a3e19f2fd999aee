"""Email over SMTP (aiosmtplib), or a local sink file when no server is configured.

One connection per message: codes and alerts are few, and a fresh connection
needs no keep-alive or reconnect logic (reuse is a later optimisation). The
message is multipart/alternative (text, then HTML) with ``Message-ID`` derived
from the message's stable id, so a server or client can drop a resend of the
same message.

SMTP answers map to :class:`Outcome`: a refused recipient (5xx) is
``invalid_to``, other 5xx are final, 4xx, timeouts and connection failures may
pass later (``retry``). ``detail`` is the reply code and exception class, never
the server's text (it may quote the address).
"""

from __future__ import annotations

import hashlib
import time
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import aiosmtplib

from paynode.actors.notify.sink import JsonLinesSink
from paynode.domain.notify.channels import ChannelName, Message, Outcome
from paynode.domain.settings import EmailSettings

SINK_FILE = "email-sink.jsonl"


def build(message: Message, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail["Date"] = formatdate(time.time(), usegmt=True)
    digest = hashlib.blake2b(message.id.encode(), digest_size=16).hexdigest()
    mail["Message-ID"] = f"<{digest}@paynode>"
    if message.urgent:
        mail["Importance"] = "high"
    mail.set_content(message.text)
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    return mail


def _outcome(e: Exception) -> Outcome:
    if isinstance(e, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in e.recipients]
        return Outcome(ok=False, retry=all(400 <= c < 500 for c in codes),
                       invalid_to=any(c >= 500 for c in codes),
                       detail=f"smtp_{codes[0] if codes else 0} recipient refused")  # fmt: skip
    if isinstance(e, aiosmtplib.SMTPRecipientRefused):
        return Outcome(ok=False, retry=400 <= e.code < 500, invalid_to=e.code >= 500,
                       detail=f"smtp_{e.code} recipient refused")  # fmt: skip
    if isinstance(e, aiosmtplib.SMTPResponseException):
        detail = f"smtp_{e.code} {type(e).__name__}"
        return Outcome(ok=False, retry=400 <= e.code < 500, detail=detail)
    # Timeouts, refused connections, dropped sessions: the server may be back later.
    return Outcome(ok=False, retry=True, detail=type(e).__name__)


class EmailChannel:
    name: ChannelName = "email"

    def __init__(self, settings: EmailSettings, data_dir: Path) -> None:
        self._email = settings
        self._sink = None if settings.host else JsonLinesSink(data_dir / SINK_FILE)

    async def send(self, message: Message) -> Outcome:
        mail = build(message, self._email.from_address)
        if self._sink is not None:
            await self._sink.write({
                "id": message.id, "to": message.to, "from": self._email.from_address,
                "subject": message.subject, "text": message.text, "html": message.html,
                "message_id": mail["Message-ID"], "at": time.time(),
            })  # fmt: skip
            return Outcome(ok=True, provider_id=mail["Message-ID"], detail="250 written to sink")
        email = self._email
        try:
            await aiosmtplib.send(
                mail, hostname=email.host, port=email.port, timeout=email.timeout_ms / 1000,
                use_tls=email.tls == "tls", start_tls=email.tls == "starttls",
                username=email.username or None, password=email.password or None,
            )  # fmt: skip
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            return _outcome(e)
        return Outcome(ok=True, provider_id=mail["Message-ID"], detail="250 accepted")

    async def close(self) -> None:
        return None
