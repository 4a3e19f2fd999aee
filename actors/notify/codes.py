"""Step-up codes sent wherever the user is: push, else SMS, else email, with fallback.

The front queues a send (``otp_sends``) with the challenge, and another at each
resend; this sender, inside the notifier, takes due sends, derives the code from
the sealed challenge (the code exists only in the message), and tries the
user's channels in order: their preferred order if they set one, else
``CHANNELS`` (push, SMS, email). A channel is skipped when the user has no
address there (no device, no phone); one that answers not ok passes the send
to the next. Email comes last and every user has an address there, so a code
always has somewhere to go. If every channel failed and one may succeed later,
the send is retried with backoff while the challenge is open.

Never logged: the code, the address, the message. ``result`` keeps each
channel's ``detail`` (provider status), which names neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from paynode.domain.notify import templates as tpl
from paynode.domain.notify.channels import CHANNELS, Channel, ChannelName, Message, Outcome
from paynode.domain.notify.schedule import backoff_s
from paynode.domain.risk import otp
from paynode.domain.settings import OtpSettings
from paynode.storage import code_sends, identity, notifications, payments
from paynode.storage import risk as risk_store
from paynode.storage.keyring import Keyring

log = logging.getLogger("paynode.notifier.codes")

BATCH = 50  # sends taken per pass
MAX_ATTEMPTS = 5  # passes over every channel before a send is failed
RETRY_BASE_S, RETRY_CAP_S = 1.0, 30.0  # a code lives minutes: retries must be quick
IDLE_POLL_S = 1.0  # a pass even when not woken (a wake may be lost): one indexed query
PLATFORMS = {"apns": "ios", "fcm": "android"}
SEND_TIMEOUT_S = 30.0  # one channel send, whatever the channel's own timeout says

# (user id) -> (channel order, locale): the user's preferences, or None for the defaults
Preferred = Callable[[str], Awaitable[tuple[list[ChannelName], str] | None]]


def order(preferred: list[ChannelName] | None) -> list[ChannelName]:
    """The user's channels first, then the others in the default order: a code must
    reach the user, so a channel left out of the preferences is a fallback, not off."""
    first = list(dict.fromkeys(preferred or []))
    return first + [c for c in CHANNELS if c not in first]


class CodeSender:
    def __init__(
        self,
        engine: AsyncEngine,
        keys: Keyring,
        otp_s: OtpSettings,
        channels: Mapping[str, Channel],
        templates: tpl.Templates,
        preferred: Preferred | None = None,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._otp = otp_s
        self._channels = dict(channels)
        self._templates = templates
        self._preferred = preferred or self._stored_preferences
        self._wake = asyncio.Event()
        self.counts = {"sent": 0, "fallbacks": 0, "failed": 0, "errors": 0}

    async def _stored_preferences(self, user_id: str) -> tuple[list[ChannelName], str]:
        async with self._engine.connect() as conn:
            prefs = await notifications.preferences(conn, user_id)
        return list(prefs.channels), prefs.locale

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            wait = IDLE_POLL_S
            try:
                took = await self.once()
                async with self._engine.connect() as conn:
                    nxt = await code_sends.next_due_s(conn)
                wait = (
                    0.0 if took >= BATCH else IDLE_POLL_S if nxt is None else min(IDLE_POLL_S, nxt)
                )
            except (SQLAlchemyError, OSError) as e:
                self.counts["errors"] += 1
                log.warning("codes: pass failed: %s", type(e).__name__)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def once(self) -> int:
        async with self._engine.connect() as conn:
            due = await code_sends.due(conn, BATCH)
        for send in due:
            await self._send(send)
        return len(due)

    async def _send(self, send: code_sends.PendingSend) -> None:
        async with self._engine.connect() as conn:
            ch = await risk_store.load_challenge(conn, self._keys, send.payment_id)
            pay = await payments.get(conn, send.payment_id)
            user = None
            if pay is not None and pay.owner_user_id:
                user = await identity.get_user(conn, self._keys, pay.owner_user_id)
            devices = []
            if user is not None:
                devices = await code_sends.user_devices(conn, self._keys, user.id)
        now = time.time()
        if ch is None or pay is None or user is None or not self._open(ch, now):
            await self._mark(send, "failed", "challenge closed")
            return
        prefs = await self._preferred(user.id)
        channels, locale = order(prefs[0] if prefs else None), prefs[1] if prefs else "en"
        minutes = max(1, math.ceil((ch.issued_at + self._otp.max_age_s - now) / 60))
        rendered = self._templates.render(tpl.STEP_UP, locale, {
            "code": otp.code_for(ch), "payment_id": pay.id, "amount": pay.amount,
            "currency": pay.currency, "minutes": minutes,
        })  # fmt: skip
        tried: list[str] = []
        retry = False
        for name in channels:
            channel = self._channels.get(name)
            addresses = self._addresses(name, user.profile, devices)
            if channel is None or not addresses:
                continue
            outcome = await self._try(channel, name, send, rendered, addresses)
            tried.append(f"{name}:{outcome.detail}"[:200])
            if outcome.ok:
                self.counts["sent"] += 1
                self.counts["fallbacks"] += int(len(tried) > 1)
                await self._mark(send, "sent", "; ".join(tried), name, outcome.provider_id)
                return
            retry = retry or outcome.retry
        attempt = send.attempts + 1
        if retry and attempt < MAX_ATTEMPTS:
            wait = backoff_s(attempt, RETRY_BASE_S, RETRY_CAP_S)
            await self._mark(send, "pending", "; ".join(tried), retry_in_s=wait)
        else:
            self.counts["failed"] += 1
            await self._mark(send, "failed", "; ".join(tried) or "no channel")

    def _open(self, ch: otp.Challenge, now: float) -> bool:
        return (not ch.used and ch.attempts < self._otp.max_attempts
                and now - ch.issued_at <= self._otp.max_age_s)  # fmt: skip

    @staticmethod
    def _addresses(
        name: ChannelName, profile: identity.Profile, devices: list[code_sends.DeviceAddress]
    ) -> list[tuple[str, str]]:
        """(address, platform) pairs of the user on a channel."""
        if name == "push":
            return [(d.token, PLATFORMS.get(d.platform, d.platform)) for d in devices]
        if name == "sms":
            return [(profile.phone, "")] if profile.phone else []
        return [(profile.email, "")] if profile.email else []

    async def _try(
        self, channel: Channel, name: ChannelName, send: code_sends.PendingSend,
        r: tpl.Rendered, addresses: list[tuple[str, str]],
    ) -> Outcome:  # fmt: skip
        """Send to each address on the channel; ok if any accepted (a push goes to every
        device, as a code is for whichever the user holds)."""
        outcomes = []
        for i, (to, platform) in enumerate(addresses):
            message = Message(
                id=f"otp_{send.payment_id}_{send.seq}_{name}_{i}", channel=name, to=to,
                subject=r.subject, text={"sms": r.sms, "push": r.push}.get(name, r.text),
                html=r.html if name == "email" else "", platform=platform,
                data={"payment_id": send.payment_id, "kind": "step_up"}, urgent=True,
            )  # fmt: skip
            try:
                outcomes.append(await asyncio.wait_for(channel.send(message), SEND_TIMEOUT_S))
            except TimeoutError:
                outcomes.append(Outcome(ok=False, retry=True, detail="timeout"))
            except Exception as e:  # a channel's bug must not stop the fallback
                outcomes.append(Outcome(ok=False, retry=True, detail=type(e).__name__))
        ok = [o for o in outcomes if o.ok]
        return ok[0] if ok else outcomes[0]

    async def _mark(self, send: code_sends.PendingSend, status: str, result: str,
                    channel: str | None = None, provider_id: str | None = None,
                    retry_in_s: float = 0.0) -> None:  # fmt: skip
        async with self._engine.begin() as conn:
            await code_sends.mark(conn, send.id, status, result, channel, provider_id, retry_in_s)
