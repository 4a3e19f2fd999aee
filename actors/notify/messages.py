"""The send API's delivery loop: due messages -> preferences -> template -> channel -> attempt.

Runs in the notifier actor. A pass claims due pending messages (``FOR UPDATE
SKIP LOCKED``, each moved a lease ahead: a sender that dies leaves them to be
claimed again once the lease ends, so delivery is at least once), sends them
concurrently, and records each outcome in its own transaction.

What the user asked for is read at send time, not when the notification was
made, so a change of mind applies to messages still waiting: a channel turned
off or opted out of suppresses the message (with the reason); quiet hours move a
non-urgent one to their end without counting an attempt. The address comes
from the user's sealed profile (email, phone) and live devices (push) at the
same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Mapping

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from paynode.domain.notify.channels import Channel, Message, Outcome
from paynode.domain.notify.preferences import decide
from paynode.domain.notify.schedule import backoff_s
from paynode.domain.notify.templates import Rendered, TemplateError, Templates
from paynode.domain.settings import NotifySettings
from paynode.storage import notifications as store
from paynode.storage import notify
from paynode.storage.keyring import Keyring

log = logging.getLogger("paynode.notifier.messages")

SEND_TIMEOUT_S = 60.0  # one channel send, whatever the channel's own timeout says
LEASE_S = 2 * SEND_TIMEOUT_S + 30  # a claimed message nobody recorded is due again after this
_NO_ADDRESS = {"email": "no_email", "sms": "no_phone", "push": "no_device"}  # suppressed: why


class MessageSender:
    """Sends the send API's messages through ``channels`` (by channel name: "email",
    "sms", "push"; a push channel dispatches on ``Message.platform``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        keys: Keyring,
        settings: NotifySettings,
        channels: Mapping[str, Channel],
        templates: Templates,
    ) -> None:
        self._engine = engine
        self._keys = keys
        self._notify = settings
        self._channels = channels
        self._templates = templates
        self._wake = asyncio.Event()
        self.counts = dict.fromkeys(("sent", "retried", "failed", "dead", "suppressed",
                                     "deferred", "errors"), 0)  # fmt: skip

    def wake(self) -> None:
        """Something became due now (a new notification, a replay)."""
        self._wake.set()

    async def run(self) -> None:
        interval = self._notify.message_interval_ms / 1000
        while True:
            self._wake.clear()
            try:
                claimed = await self.pass_once()
            except (SQLAlchemyError, OSError) as e:
                self.counts["errors"] += 1
                log.warning("notifier: message pass failed: %s", type(e).__name__)
                claimed = 0
            if claimed >= self._notify.message_batch:
                continue  # behind: the next batch at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def pass_once(self) -> int:
        async with self._engine.begin() as conn:
            due = await store.claim_due(conn, self._notify.message_batch, LEASE_S)
        if due:
            await asyncio.gather(*(self._one(d) for d in due))
        return len(due)

    async def _one(self, due: store.Due) -> None:
        try:
            await self._deliver(due)
        except (SQLAlchemyError, OSError) as e:
            # Unrecorded: the lease brings it back (at least once).
            self.counts["errors"] += 1
            log.warning("notifier: message %d not recorded: %s", due.id, type(e).__name__)

    async def _deliver(self, due: store.Due) -> None:
        async with self._engine.connect() as conn:
            prefs = await store.preferences(conn, due.user_id)
            to = await store.recipient(conn, self._keys, due.user_id)
        now = dt.datetime.now(dt.UTC)
        decision = decide(prefs, due.type, due.channel, due.urgent, now)  # type: ignore[arg-type]
        if decision.verdict != "send":
            async with self._engine.begin() as conn:
                if decision.verdict == "wait":
                    assert decision.until is not None
                    await store.defer(conn, due.id, decision.until, decision.reason)
                    self.counts["deferred"] += 1
                else:
                    await store.suppress(conn, due.id, decision.reason)
                    self.counts["suppressed"] += 1
            return
        addresses: list[tuple[str, str, str | None]] = []  # (to, platform, device id)
        if to is not None and due.channel == "email" and to.email:
            addresses = [(to.email, "", None)]
        elif to is not None and due.channel == "sms" and to.phone:
            addresses = [(to.phone, "", None)]
        elif to is not None and due.channel == "push":
            addresses = [(d.token, d.platform, d.id) for d in to.devices]
        if not addresses:
            async with self._engine.begin() as conn:
                await store.suppress(conn, due.id, _NO_ADDRESS.get(due.channel, "no_address"))
            self.counts["suppressed"] += 1
            return
        attempt = due.attempts + 1
        t0 = time.perf_counter()
        try:
            rendered = self._templates.render(due.template, prefs.locale, due.data)
        except TemplateError as e:
            await self._record(due, attempt, Outcome(ok=False, detail=f"template: {e}"), 0)
            return
        channel = self._channels.get(due.channel)
        if channel is None:
            outcome = Outcome(ok=False, detail=f"{due.channel} channel not configured")
        else:
            outcomes = await asyncio.gather(
                *(self._send(channel, due, rendered, a, p) for a, p, _ in addresses)
            )
            dead_devices = [dev for (_, _, dev), o in zip(addresses, outcomes, strict=True)
                            if dev is not None and o.invalid_to]  # fmt: skip
            if dead_devices:
                async with self._engine.begin() as conn:
                    for dev in dead_devices:  # the provider says the token is gone
                        await notify.unregister_device(conn, dev)
            outcome = _combined(outcomes)
        await self._record(due, attempt, outcome, int((time.perf_counter() - t0) * 1000))

    async def _send(
        self, channel: Channel, due: store.Due, r: Rendered, to: str, platform: str
    ) -> Outcome:
        msg = Message(
            id=f"ntf:{due.notification_id}:{due.channel}",  # stable: providers dedupe on it
            channel=due.channel,  # type: ignore[arg-type]
            to=to,
            subject=r.subject,
            text=r.sms if due.channel == "sms" else r.text,
            html=r.html if due.channel == "email" else "",
            platform=platform,
            data={"notification_id": due.notification_id, "type": due.type},
            urgent=due.urgent,
        )
        try:
            return await asyncio.wait_for(channel.send(msg), SEND_TIMEOUT_S)
        except TimeoutError:
            return Outcome(ok=False, retry=True, detail="timeout")
        except Exception as e:  # a channel bug must not stop the loop; recorded, retried
            log.exception("notifier: %s channel raised", due.channel)
            return Outcome(ok=False, retry=True, detail=f"error {type(e).__name__}")

    async def _record(self, due: store.Due, attempt: int, o: Outcome, duration_ms: int) -> None:
        wait = 0.0
        if o.ok:
            status, outcome = "sent", "sent"
        elif not o.retry:
            status, outcome = "failed", "failed"
        elif attempt >= self._notify.message_max_attempts:
            status, outcome = "dead", "retry"
        else:
            status, outcome = "pending", "retry"
            wait = backoff_s(
                attempt, self._notify.message_backoff_base_s, self._notify.message_backoff_cap_s
            )
        async with self._engine.begin() as conn:
            await store.record_attempt(conn, due.id, attempt, outcome, o.detail, duration_ms,
                                       status, wait, o.provider_id)  # fmt: skip
        key = {"pending": "retried"}.get(status, status)
        self.counts[key] += 1


def _combined(outcomes: list[Outcome]) -> Outcome:
    """One message to several devices: sent if any took it; else retried if any may later."""
    if len(outcomes) == 1:
        return outcomes[0]
    sent = [o for o in outcomes if o.ok]
    detail = "; ".join(o.detail for o in outcomes)[: store.MAX_DETAIL]
    if sent:
        return Outcome(ok=True, provider_id=sent[0].provider_id, detail=detail)
    return Outcome(ok=False, retry=any(o.retry for o in outcomes), detail=detail)
