"""The notifier actor: fans the outbox out to webhook endpoints and devices, and delivers.

Three loops, all reading PostgreSQL and never the ledger shards, so a slow or
dead endpoint costs payments nothing:

* **fan-out** follows the outbox in commit order (storage/outbox.py: the
  journal's accounts and transfers, and the events table) and, in one
  transaction, records a delivery per (endpoint, event) and a push per
  (device, event) together with its new position. A crash repeats at most the
  last batch, and the unique (endpoint, event) pair makes that a no-op.
* **one worker per endpoint** sends its pending deliveries in outbox order
  (actors/notify/schedule.py), signs each attempt, records it, and backs off
  exponentially with jitter; after ``max_attempts`` a delivery is dead.
* **push** hands pending pushes to the provider.

Deliveries are at least once: an attempt whose answer was not recorded (the
node died) is sent again. Receivers dedupe by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path

import aiohttp
import msgspec
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.actors.background import lower_priority
from paynode.actors.notify import message_channels
from paynode.actors.notify.codes import CodeSender
from paynode.actors.notify.destinations import DestinationError, check_resolved
from paynode.actors.notify.messages import MessageSender
from paynode.actors.notify.push_send import PushSender
from paynode.actors.notify.push_sink import SinkPushChannel
from paynode.actors.notify.sms import STATUS_CALLBACK_PATH
from paynode.domain.notify.channels import Outcome
from paynode.domain.notify.outbox import START, Position, through
from paynode.domain.notify.schedule import backoff_s, ready
from paynode.domain.notify.signature import HEADER, header
from paynode.domain.notify.templates import load as load_templates
from paynode.domain.settings import (
    ApnsSettings,
    EmailSettings,
    FcmSettings,
    NotifySettings,
    OtpSettings,
    PushSettings,
    SmsSettings,
    WebhookSettings,
)
from paynode.storage import notify, outbox
from paynode.storage.database import async_engine
from paynode.storage.journal_watch import JournalWatch
from paynode.storage.keyring import load as load_keyring

log = logging.getLogger("paynode.notifier")

_RESPONSE_READ_LIMIT = 4096  # bytes of a receiver's answer read before closing
_LAG_SAMPLES = 10_000
_PUSH_MAX_ATTEMPTS = 5
IDLE_CHECK_S = 30.0  # a fan-out pass even with nothing announced (one may be lost)
USER_AGENT = "paynode-webhooks/1"


class NotifierStats(msgspec.Struct):
    endpoints: int
    devices: int
    cursor_txid: int
    events_scanned: int
    deliveries_created: int
    delivered: int
    failed_attempts: int
    dead: int
    in_flight: int
    pushes_sent: int
    errors: int
    delivery_lag_p50_s: float | None
    delivery_lag_p99_s: float | None
    delivery_lag_max_s: float | None
    push_retries: int = 0  # pushes a provider asked to send again later (429, 5xx)
    devices_unregistered: int = 0  # devices whose token a provider called dead


decode_stats = msgspec.msgpack.Decoder(NotifierStats).decode


async def _wait(event: asyncio.Event, timeout: float | None) -> None:
    """Until ``event`` is set or ``timeout`` seconds pass (None: no limit)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


class _Queue:
    """One endpoint's pending deliveries as the worker holds them."""

    def __init__(self) -> None:
        self.items: list[notify.PendingDelivery] = []
        self.last_id = 0  # highest delivery id read
        self.more = True  # the fan-out added some since the last read
        self.reread = True  # read the whole queue again (start, or a retry by hand)


class _UnknownSubscriber(Exception):
    """A fan-out pass met a live subscriber it does not know (see ``_fanout_once``)."""


def _finished(in_flight: dict[int, asyncio.Task[None]], delivery_id: int, wake: asyncio.Event):
    def done(_: asyncio.Task[None]) -> None:
        in_flight.pop(delivery_id, None)
        wake.set()

    return done


class Notifier:
    """Run under Ray as ``ray.remote(Notifier)`` or in a ``ServiceHost``.

    Takes the three sections it reads, and absolute paths: an actor's working
    directory is not the node's.
    """

    def __init__(
        self,
        notify_s: NotifySettings,
        webhook: WebhookSettings,
        otp_s: OtpSettings,
        data_dir: Path,
        keyring: str,
        database_url: str,
        push_s: PushSettings | None = None,
        apns: ApnsSettings | None = None,
        fcm: FcmSettings | None = None,
        email: EmailSettings | None = None,
        sms: SmsSettings | None = None,
        public_url: str = "",  # the front's, for the SMS provider's status callbacks
    ) -> None:
        lower_priority()  # follows the journal: yields the CPU to the money path
        assert data_dir.is_absolute(), data_dir
        self._notify = notify_s
        self._webhook = webhook
        self._otp = otp_s
        self._url = database_url
        self._engine = async_engine(database_url, pool_size=4, name="paynode-notifier")
        self._keys = load_keyring(data_dir, keyring, create=False)
        self._endpoints: dict[str, notify.LiveEndpoint] = {}
        self._devices: list[notify.LiveDevice] = []
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._queues: dict[str, _Queue] = {}
        self._watch = JournalWatch(database_url)  # wakes the fan-out on commits
        self._push_wake = asyncio.Event()
        self._cursor: Position = START
        self._global = asyncio.Semaphore(webhook.max_concurrency)
        self._http: aiohttp.ClientSession | None = None
        self._push_s = push_s or PushSettings()
        # The real APNs/FCM clients when configured, else the JSON-lines sink.
        self._push = PushSender(
            apns or ApnsSettings(), fcm or FcmSettings(), data_dir / "push-sink.jsonl",
            fallback=SinkPushChannel(data_dir),
        )  # fmt: skip
        # The send API's messages (POST /v1/notifications): their own loop and channels.
        self._channels = message_channels.build(
            data_dir,
            email or EmailSettings(),
            sms or SmsSettings(),
            self._push,
            sms_callback_url=public_url.rstrip("/") + STATUS_CALLBACK_PATH,
        )
        self._messages = MessageSender(
            self._engine, self._keys, notify_s, self._channels, load_templates()
        )
        # Step-up codes: to whichever channel reaches the user, with fallback (codes.py).
        self._codes = CodeSender(self._engine, self._keys, otp_s, self._channels, load_templates())
        self._tasks: list[asyncio.Task[None]] = []
        self._lags: deque[float] = deque(maxlen=_LAG_SAMPLES)
        self._lag_max = 0.0
        self._in_flight = 0
        self._counts = dict.fromkeys(
            (
                "scanned",
                "created",
                "delivered",
                "failed",
                "dead",
                "pushed",
                "errors",
                "push_retries",
                "unregistered",
            ),
            0,
        )

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> int:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._webhook.max_concurrency, ttl_dns_cache=10),
            headers={"User-Agent": USER_AGENT},
        )
        async with self._engine.connect() as conn:
            self._cursor = await notify.load_cursor(conn)
        # The saved position already covers every live subscriber: a pass saves its
        # position only if it knew every subscriber that could want what it read.
        await self.reload()
        self._tasks = [
            asyncio.create_task(self._fanout_loop()),
            asyncio.create_task(self._push_loop()),
            asyncio.create_task(self._reload_loop()),
            asyncio.create_task(self._messages.run()),
            asyncio.create_task(self._codes.run()),
        ]
        return len(self._endpoints)

    async def ping(self) -> bool:
        return True

    async def wake_messages(self) -> None:
        """Send API messages became due (created or replayed): look now, not at the next poll."""
        self._messages.wake()

    async def wake_codes(self) -> None:
        """A step-up code was queued (a payment needing one, or a resend): send it now."""
        self._codes.wake()

    async def stop(self) -> None:
        for t in [*self._tasks, *self._workers.values()]:
            t.cancel()
        if self._http is not None:
            await self._http.close()
        await message_channels.close_all(self._channels)  # the push sender among them
        await self._engine.dispose()

    async def reload(self) -> int:
        """Re-read endpoints and devices (the API calls this after changing them)."""
        async with self._engine.connect() as conn:
            endpoints = await notify.live_endpoints(conn, self._keys)
            devices = await notify.live_devices(conn)
        self._endpoints = {e.id: e for e in endpoints}
        self._devices = devices
        for eid in list(self._workers):
            if eid not in self._endpoints:
                self._workers.pop(eid).cancel()
                self._wakes.pop(eid, None)
                self._queues.pop(eid, None)
        for eid in self._endpoints:
            if eid not in self._workers:
                self._wakes[eid] = asyncio.Event()
                self._workers[eid] = asyncio.create_task(self._endpoint_worker(eid))
            self._wakes[eid].set()
        self._watch.nudge()
        return len(endpoints)

    async def wake(self, endpoint_id: str) -> None:
        """A delivery of this endpoint was queued by hand (retry)."""
        if endpoint_id in self._queues:
            self._queues[endpoint_id].reread = True
        if endpoint_id in self._wakes:
            self._wakes[endpoint_id].set()

    async def _reload_loop(self) -> None:
        # Another front may have changed endpoints without reaching this actor.
        while True:
            await asyncio.sleep(5)
            try:
                await self.reload()
            except (SQLAlchemyError, OSError) as e:
                self._counts["errors"] += 1
                log.warning("notifier: reload failed: %s", type(e).__name__)

    # -- fan-out ------------------------------------------------------------------

    async def _fanout_loop(self) -> None:
        """Fan out while commits are announced beyond the position, one pass per
        ``notify_interval_ms`` (batched); asleep otherwise (storage/journal_watch.py)."""
        interval = self._notify.interval_ms / 1000
        self._watch.start()
        try:
            while True:
                try:
                    scanned = await self._fanout_once()
                except (SQLAlchemyError, OSError) as e:
                    self._counts["errors"] += 1
                    log.warning("notifier: fan-out failed: %s", type(e).__name__)
                    scanned = 0
                if scanned >= self._notify.batch:
                    continue  # behind: the next page at once
                if not self._watch.behind(self._cursor.txid):
                    await self._watch.wait(IDLE_CHECK_S)  # reload() nudges it too
                await asyncio.sleep(interval)
        finally:
            await self._watch.stop()

    async def _fanout_once(self) -> int:
        """One pass: the next events for the subscribers known now, and the new position.

        A subscriber gets what commits above its ``start_txid``. One created
        while a pass reads (the API tells this actor only afterwards) might
        want what the pass just read without it: one started between the
        pass's position and the last txid it read. Such a start is below the
        read's horizon, so that subscriber had committed before the read and
        a query after it finds it. Then the pass records nothing and reads
        again once it knows it. A saved position thus covers every live
        subscriber, and a restart need not step back.
        """
        endpoints = list(self._endpoints.values())
        devices = self._devices
        known = {e.id for e in endpoints} | {d.id for d in devices}
        start = self._cursor
        try:
            async with self._engine.begin() as conn:
                if not endpoints and not devices:
                    await self._skip(conn, start)
                    return 0
                owners = {e.owner_user_id for e in endpoints} | {d.user_id for d in devices}
                # An admin's endpoint (no owner) hears everything: keep every event.
                users = None if None in owners else sorted(o for o in owners if o)
                events, last, _ = await outbox.read_events(
                    conn, start, self._notify.batch, users=users
                )
                if last is None:
                    return 0
                if not await notify.subscribers_started(conn, start.txid, last.txid) <= known:
                    raise _UnknownSubscriber
                deliveries = []
                pushes: list[tuple[str, str]] = []  # (device, event)
                woken = set()
                for ev in events:
                    for ep in endpoints:
                        if ep.wants(ev):
                            deliveries.append((ep.id, ev.event.id, list(ev.order_keys)))
                            woken.add(ep.id)
                    pushes.extend((d.id, ev.event.id) for d in devices if d.wants(ev))
                await notify.insert_deliveries(conn, deliveries)
                await notify.insert_pushes(conn, pushes)
                await notify.save_cursor(conn, last)
        except _UnknownSubscriber:
            # Nothing was recorded: learn the newcomers; the next pass reads again.
            await self.reload()
            return 0
        self._cursor = last
        self._counts["scanned"] += len(events)
        self._counts["created"] += len(deliveries)
        for eid in woken:
            if eid in self._wakes:
                if eid in self._queues:
                    self._queues[eid].more = True
                self._wakes[eid].set()
        if pushes:
            self._push_wake.set()
        return len(events)

    async def _skip(self, conn: AsyncConnection, start: Position) -> None:
        """Nobody listens: move past what is committed without reading it."""
        horizon = await notify.visible_horizon(conn)
        if await notify.subscribers_started(conn, start.txid, horizon - 1):
            raise _UnknownSubscriber
        if horizon - 1 > start.txid:
            await notify.save_cursor(conn, through(horizon - 1))
            self._cursor = through(horizon - 1)

    # -- webhook deliveries -----------------------------------------------------------

    async def _endpoint_worker(self, endpoint_id: str) -> None:
        """Send one endpoint's deliveries; its queue is in memory, topped up from PostgreSQL.

        The fan-out only appends (delivery ids grow in outbox order), so a top-up
        reads ids above the last one held; a retry by hand re-reads the whole
        queue once nothing is in flight.
        """
        wake = self._wakes[endpoint_id]
        q = self._queues[endpoint_id] = _Queue()
        in_flight: dict[int, asyncio.Task[None]] = {}
        while endpoint_id in self._endpoints:
            ep = self._endpoints[endpoint_id]
            wake.clear()
            try:
                await self._top_up(endpoint_id, q, in_flight)
            except (SQLAlchemyError, OSError) as e:
                self._counts["errors"] += 1
                log.warning("notifier: endpoint queue unreadable: %s", type(e).__name__)
                await asyncio.sleep(1)
                continue
            now = time.time()
            for d in ready(q.items, in_flight, ep.max_in_flight, now):
                task = asyncio.create_task(self._deliver(ep, d, q))
                in_flight[d.id] = task
                task.add_done_callback(_finished(in_flight, d.id, wake))
            waiting = [d.due for d in q.items if d.id not in in_flight]
            timeout = None
            if waiting and len(in_flight) < ep.max_in_flight:
                timeout = min(max(min(waiting) - now, 0.005), 30.0)
            await _wait(wake, timeout)

    async def _top_up(self, endpoint_id: str, q: _Queue, in_flight: dict) -> None:
        window = self._webhook.window
        if q.reread and not in_flight:
            async with self._engine.connect() as conn:
                q.items = await notify.pending_deliveries(conn, endpoint_id, window)
            q.reread = False
            q.last_id = q.items[-1].id if q.items else q.last_id
            q.more = len(q.items) == window
        if q.more and len(q.items) < window // 2:
            room = window - len(q.items)
            async with self._engine.connect() as conn:
                fresh = await notify.pending_deliveries(conn, endpoint_id, room, q.last_id)
            q.items.extend(fresh)
            q.last_id = fresh[-1].id if fresh else q.last_id
            q.more = len(fresh) == room  # a full read: there may be more behind it

    async def _deliver(self, ep: notify.LiveEndpoint, d: notify.PendingDelivery, q: _Queue) -> None:
        assert self._http is not None
        body = msgspec.json.encode(d.event.event)
        attempt = d.attempts + 1
        headers = {
            "Content-Type": "application/json",
            HEADER: header(ep.secrets, body),
            "Paynode-Event-Id": d.event.event.id,
            "Paynode-Delivery-Id": str(d.id),
            "Paynode-Attempt": str(attempt),
        }
        status: int | None = None
        error: str | None = None
        async with self._global:
            self._in_flight += 1
            t0 = time.perf_counter()
            try:
                await check_resolved(ep.url, self._webhook.allow_private)
                async with self._http.post(
                    ep.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self._webhook.timeout_s),
                ) as resp:
                    status = resp.status
                    await resp.content.read(_RESPONSE_READ_LIMIT)
            except DestinationError as e:
                error = e.code
            except TimeoutError:
                error = "timeout"
            except aiohttp.ClientError as e:
                error = type(e).__name__  # never the message: it may quote the URL
            finally:
                self._in_flight -= 1
            elapsed_ms = int((time.perf_counter() - t0) * 1000)
        ok = status is not None and 200 <= status < 300
        if status is not None and not ok:
            error = f"http_{status}"
        dead = not ok and attempt >= self._webhook.max_attempts
        wait = 0.0
        if not ok and not dead:
            wait = backoff_s(attempt, self._webhook.backoff_base_s, self._webhook.backoff_cap_s)
        try:
            async with self._engine.begin() as conn:
                await notify.record_attempt(conn, d.id, status, error, elapsed_ms, ok, dead, wait)
        except (SQLAlchemyError, OSError) as e:
            # Unrecorded: the delivery stays pending and is sent again (at least once).
            self._counts["errors"] += 1
            log.warning("notifier: attempt not recorded: %s", type(e).__name__)
            d.due = time.time() + 1
            return
        if ok or dead:
            q.items.remove(d)
        else:
            d.attempts, d.due = attempt, time.time() + wait
        if ok:
            self._counts["delivered"] += 1
            if d.attempts == 0:
                self._observe_lag(time.time() - d.event.created_ns / 1e9)
        else:
            self._counts["failed"] += 1
            self._counts["dead"] += int(dead)

    def _observe_lag(self, lag: float) -> None:
        self._lags.append(max(lag, 0.0))
        self._lag_max = max(self._lag_max, lag)

    # -- push -------------------------------------------------------------------------

    async def _push_loop(self) -> None:
        while True:
            self._push_wake.clear()
            try:
                sent = await self._push_once()
            except (SQLAlchemyError, OSError) as e:
                self._counts["errors"] += 1
                log.warning("notifier: push failed: %s", type(e).__name__)
                sent = 0
            if sent == 0:
                await _wait(self._push_wake, 1.0)

    async def _push_once(self) -> int:
        async with self._engine.connect() as conn:
            batch = await notify.pending_pushes(conn, self._keys, 500)
        dead: set[str] = set()  # devices unregistered during this batch
        for p in batch:
            if p.device_id in dead:
                continue  # its pushes were dropped with it
            code = None  # step-up codes go by self._codes, to whichever channel reaches the user
            outcome = await self._push.send_push(p.id, p.platform, p.token, p.event.event, code)
            if await self._record_push(p, outcome):
                dead.add(p.device_id)
        if dead:
            await self.reload()  # the fan-out stops queueing for them
        return len(batch)

    async def _record_push(self, p: notify.PendingPush, outcome: Outcome) -> bool:
        """Record one attempt; True if the device was unregistered (its token is dead)."""
        wait = 0.0
        if outcome.ok:
            status = "sent"
        elif outcome.retry and p.attempts + 1 < _PUSH_MAX_ATTEMPTS:
            status = "pending"
            wait = backoff_s(
                p.attempts + 1, self._push_s.backoff_base_s, self._push_s.backoff_cap_s
            )
            asked = self._push.retry_after_s(p.platform)
            if asked is not None:  # the provider's own wait, within our bound
                wait = max(wait, min(asked, self._push_s.max_retry_after_s))
        else:
            status = "failed"
        async with self._engine.begin() as conn:
            await notify.mark_push(conn, p.id, status, outcome.detail, wait)
            if outcome.invalid_to:
                await notify.unregister_device(conn, p.device_id)
        self._counts["pushed"] += int(outcome.ok)
        self._counts["push_retries"] += int(status == "pending")
        if outcome.invalid_to:
            self._counts["unregistered"] += 1
            # The device id, never the token (a secret).
            log.warning(
                "notifier: device %s unregistered: %s refused its token (%s)",
                p.device_id, p.platform, outcome.detail,
            )  # fmt: skip
        return outcome.invalid_to

    # -- observability ----------------------------------------------------------------

    async def stats(self) -> bytes:
        lags = sorted(self._lags)

        def q(f: float) -> float | None:
            return lags[min(len(lags) - 1, int(f * len(lags)))] if lags else None

        c = self._counts
        return msgspec.msgpack.encode(
            NotifierStats(
                endpoints=len(self._endpoints),
                devices=len(self._devices),
                cursor_txid=self._cursor.txid,
                events_scanned=c["scanned"],
                deliveries_created=c["created"],
                delivered=c["delivered"],
                failed_attempts=c["failed"],
                dead=c["dead"],
                in_flight=self._in_flight,
                pushes_sent=c["pushed"],
                errors=c["errors"],
                delivery_lag_p50_s=q(0.5),
                delivery_lag_p99_s=q(0.99),
                delivery_lag_max_s=self._lag_max if lags else None,
                push_retries=c["push_retries"],
                devices_unregistered=c["unregistered"],
            )
        )

    async def reset_lag(self) -> None:
        """Forget lag samples (a benchmark measures one phase at a time)."""
        self._lags.clear()
        self._lag_max = 0.0
