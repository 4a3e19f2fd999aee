"""Webhook endpoints, deliveries, devices and inbound webhooks in PostgreSQL.

Signing secrets and device tokens are sealed with :mod:`storage.pii` (the
node must use them, so they cannot be hashes). Every function takes an open
async connection so a caller controls the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.notify.outbox import START, Position, Source
from paynode.storage import pii
from paynode.storage.events import StoredEvent, parse_event_id, type_sql
from paynode.storage.keyring import Keyring
from paynode.storage.outbox import render
from paynode.storage.rows import record

# -- endpoints ------------------------------------------------------------------------


class Endpoint(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str | None
    url: str
    events: list[str]
    max_in_flight: int
    enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    secret_rotating_until: dt.datetime | None


class LiveEndpoint(msgspec.Struct, kw_only=True):
    """An endpoint as the notifier holds it: with its secrets opened, in memory only."""

    id: str
    owner_user_id: str | None
    url: str
    events: frozenset[str]
    max_in_flight: int
    start_txid: int
    secrets: tuple[str, ...]  # the current one first

    def wants(self, event: StoredEvent) -> bool:
        if event.position.txid <= self.start_txid:
            return False  # committed before the endpoint existed
        if "*" not in self.events and event.event.type not in self.events:
            return False
        return self.owner_user_id is None or self.owner_user_id in event.users


_ENDPOINT_COLS = (
    "id, owner_user_id, url, events, max_in_flight, enabled, created_at, updated_at,"
    " CASE WHEN previous_expires_at > now() THEN previous_expires_at END"
)


def _seal_secret(keys: Keyring, endpoint_id: str, secret: str, column: str) -> bytes:
    return pii.seal(keys, secret, "webhook_endpoints", column, endpoint_id)


async def create_endpoint(
    conn: AsyncConnection,
    keys: Keyring,
    endpoint_id: str,
    owner: str | None,
    url: str,
    events: Sequence[str],
    max_in_flight: int,
    secret: str,
) -> Endpoint:
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO webhook_endpoints (id, owner_user_id, url, events, secret_ct,"
                " max_in_flight) VALUES (:id, :owner, :url, :events, :secret, :mif)"
                f" RETURNING {_ENDPOINT_COLS}"
            ),
            {
                "id": endpoint_id,
                "owner": owner,
                "url": url,
                "events": list(events),
                "secret": _seal_secret(keys, endpoint_id, secret, "secret_ct"),
                "mif": max_in_flight,
            },
        )
    ).one()
    return _endpoint(row)


def _endpoint(row: Sequence[Any]) -> Endpoint:
    return record(Endpoint, row)


async def get_endpoint(conn: AsyncConnection, endpoint_id: str) -> Endpoint | None:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT {_ENDPOINT_COLS} FROM webhook_endpoints"
                " WHERE id = :id AND deleted_at IS NULL"
            ),
            {"id": endpoint_id},
        )
    ).first()
    return None if row is None else _endpoint(row)


async def list_endpoints(conn: AsyncConnection, owner: str | None, admin: bool) -> list[Endpoint]:
    where = "deleted_at IS NULL" + ("" if admin else " AND owner_user_id = :owner")
    rows = await conn.execute(
        sa.text(f"SELECT {_ENDPOINT_COLS} FROM webhook_endpoints WHERE {where} ORDER BY id"),
        {"owner": owner},
    )
    return [_endpoint(r) for r in rows]


async def update_endpoint(
    conn: AsyncConnection, endpoint_id: str, changes: dict[str, Any]
) -> Endpoint | None:
    allowed = {"url", "events", "max_in_flight", "enabled"}
    assert set(changes) <= allowed, "only these columns change through the API"
    sets = ", ".join(f"{k} = :{k}" for k in changes)
    if changes.get("enabled") is True:
        # Re-enabled: events from now on, not those committed while it was off.
        sets += (
            ", start_txid = CASE WHEN enabled THEN start_txid"
            " ELSE pg_current_xact_id()::text::bigint END"
        )
    row = (
        await conn.execute(
            sa.text(
                f"UPDATE webhook_endpoints SET {sets}, updated_at = now()"
                " WHERE id = :id AND deleted_at IS NULL"
                f" RETURNING {_ENDPOINT_COLS}"
            ),
            {**changes, "id": endpoint_id},
        )
    ).first()
    return None if row is None else _endpoint(row)


async def delete_endpoint(conn: AsyncConnection, endpoint_id: str) -> bool:
    result = await conn.execute(
        sa.text(
            "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false"
            " WHERE id = :id AND deleted_at IS NULL"
        ),
        {"id": endpoint_id},
    )
    return result.rowcount == 1


async def rotate_secret(
    conn: AsyncConnection, keys: Keyring, endpoint_id: str, secret: str, overlap_s: int
) -> Endpoint | None:
    """Make ``secret`` current; the old one keeps signing beside it for ``overlap_s``."""
    row = (
        await conn.execute(
            sa.text("SELECT secret_ct FROM webhook_endpoints WHERE id = :id FOR UPDATE"),
            {"id": endpoint_id},
        )
    ).first()
    if row is None:
        return None
    old = pii.open_(keys, bytes(row[0]), "webhook_endpoints", "secret_ct", endpoint_id)
    result = (
        await conn.execute(
            sa.text(
                "UPDATE webhook_endpoints SET secret_ct = :new, previous_secret_ct = :old,"
                " previous_expires_at = now() + make_interval(secs => :overlap),"
                " updated_at = now() WHERE id = :id AND deleted_at IS NULL"
                f" RETURNING {_ENDPOINT_COLS}"
            ),
            {
                "id": endpoint_id,
                "new": _seal_secret(keys, endpoint_id, secret, "secret_ct"),
                "old": _seal_secret(keys, endpoint_id, old, "previous_secret_ct"),
                "overlap": overlap_s,
            },
        )
    ).first()
    return None if result is None else _endpoint(result)


async def live_endpoints(conn: AsyncConnection, keys: Keyring) -> list[LiveEndpoint]:
    rows: Iterable[tuple[Any, ...]] = await conn.execute(
        sa.text(
            "SELECT id, owner_user_id, url, events, max_in_flight, start_txid, secret_ct,"
            " CASE WHEN previous_expires_at > now() THEN previous_secret_ct END"
            " FROM webhook_endpoints WHERE enabled AND deleted_at IS NULL"
        )
    )
    out = []
    for eid, owner, url, events, mif, start, ct, prev in rows:
        secrets = [pii.open_(keys, bytes(ct), "webhook_endpoints", "secret_ct", eid)]
        if prev is not None:
            secrets.append(
                pii.open_(keys, bytes(prev), "webhook_endpoints", "previous_secret_ct", eid)
            )
        out.append(
            LiveEndpoint(
                id=eid,
                owner_user_id=owner,
                url=url,
                events=frozenset(events),
                max_in_flight=mif,
                start_txid=start,
                secrets=tuple(secrets),
            )
        )
    return out


# -- fan-out and deliveries (the notifier) ----------------------------------------------

CURSOR_NAME = "fanout"


async def load_cursor(conn: AsyncConnection) -> Position:
    row = (
        await conn.execute(
            sa.text("SELECT txid, source, key FROM notifier_cursor WHERE name = :n"),
            {"n": CURSOR_NAME},
        )
    ).first()
    return START if row is None else Position(row[0], Source(row[1]), row[2])


async def save_cursor(conn: AsyncConnection, position: Position) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO notifier_cursor (name, txid, source, key) VALUES (:n, :t, :s, :k)"
            " ON CONFLICT (name) DO UPDATE SET txid = excluded.txid, source = excluded.source,"
            " key = excluded.key"
        ),
        {"n": CURSOR_NAME, "t": position.txid, "s": int(position.source), "k": position.key},
    )


async def subscribers_started(conn: AsyncConnection, after: int, before: int) -> set[str]:
    """Ids of the live endpoints and devices started (or re-enabled) in a txid between
    ``after`` and ``before``, exclusive: recent ones, each found by an index."""
    rows = await conn.execute(
        sa.text(
            "SELECT id FROM webhook_endpoints WHERE enabled AND deleted_at IS NULL"
            " AND start_txid > :a AND start_txid < :b UNION ALL"
            " SELECT id FROM devices WHERE deleted_at IS NULL"
            " AND start_txid > :a AND start_txid < :b"
        ),
        {"a": after, "b": before},
    )
    return {r[0] for r in rows}


async def visible_horizon(conn: AsyncConnection) -> int:
    """Every event with a txid below this is committed (or never will be)."""
    row = (
        await conn.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
    ).one()
    return int(row[0])


async def insert_deliveries(
    conn: AsyncConnection, rows: Sequence[tuple[str, str, list[str]]]
) -> None:
    """(endpoint, event, order keys), in outbox order: ids follow it."""
    if rows:
        await conn.execute(
            sa.text(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, order_keys)"
                " VALUES (:ep, :ev, :keys) ON CONFLICT (endpoint_id, event_id) DO NOTHING"
            ),
            [{"ep": ep, "ev": ev, "keys": keys} for ep, ev, keys in rows],
        )


class PendingDelivery(msgspec.Struct):
    id: int
    attempts: int
    due: float  # unix seconds
    keys: tuple[str, ...]
    event: StoredEvent


async def _events_of(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, StoredEvent]:
    """The events these ids name, rendered (an id that names none is left out)."""
    refs = {eid: ref for eid in ids if (ref := parse_event_id(eid)) is not None}
    found = await render(conn, refs.values())
    return {eid: found[ref] for eid, ref in refs.items() if ref in found}


async def pending_deliveries(
    conn: AsyncConnection, endpoint_id: str, limit: int, after: int = 0
) -> list[PendingDelivery]:
    """Pending deliveries of an endpoint with ids above ``after``, in outbox order."""
    rows = (
        await conn.execute(
            sa.text(
                "SELECT d.id, d.attempts, extract(epoch FROM d.next_attempt_at)::float8,"
                " d.order_keys, d.event_id FROM webhook_deliveries d"
                " WHERE d.endpoint_id = :ep AND d.status = 'pending' AND d.id > :after"
                " ORDER BY d.id LIMIT :limit"
            ),
            {"ep": endpoint_id, "limit": limit, "after": after},
        )
    ).all()
    events = await _events_of(conn, [r[4] for r in rows])
    # Every delivery names an event that exists (events and the journal are never
    # deleted); one that does not is never sent, as before with a join.
    return [
        PendingDelivery(r[0], r[1], r[2], tuple(r[3]), events[r[4]]) for r in rows if r[4] in events
    ]


async def record_attempt(
    conn: AsyncConnection,
    delivery_id: int,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    delivered: bool,
    dead: bool,
    retry_in_s: float,
) -> None:
    status = "delivered" if delivered else ("dead" if dead else "pending")
    await conn.execute(
        sa.text(
            "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms)"
            " SELECT :id, attempts + 1, :code, :error, :ms FROM webhook_deliveries WHERE id = :id"
        ),
        {"id": delivery_id, "code": status_code, "error": error, "ms": duration_ms},
    )
    await conn.execute(
        sa.text(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, status = :status,"
            " last_status = :code, last_error = :error,"
            " next_attempt_at = now() + make_interval(secs => :wait),"
            " delivered_at = CASE WHEN :delivered THEN now() END WHERE id = :id"
        ),
        {
            "id": delivery_id,
            "status": status,
            "code": status_code,
            "error": error,
            "wait": retry_in_s,
            "delivered": delivered,
        },
    )


class Attempt(msgspec.Struct):
    attempt: int
    at: dt.datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class Delivery(msgspec.Struct, kw_only=True):
    id: int
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    history: list[Attempt]


async def list_deliveries(
    conn: AsyncConnection, endpoint_id: str, after: int, limit: int, status: str | None
) -> list[Delivery]:
    where = "d.endpoint_id = :ep AND d.id > :after" + (" AND d.status = :st" if status else "")
    rows = (
        await conn.execute(
            sa.text(
                "SELECT * FROM (SELECT d.id, d.event_id, "
                + type_sql("d.event_id")
                + " AS type, d.status, d.attempts,"
                " CASE WHEN d.status = 'pending' THEN d.next_attempt_at END, d.last_status,"
                " d.last_error, d.created_at, d.delivered_at"
                f" FROM webhook_deliveries d WHERE {where} ORDER BY d.id LIMIT :limit) x"
                " WHERE x.type IS NOT NULL ORDER BY x.id"
            ),
            {"ep": endpoint_id, "after": after, "limit": limit, "st": status},
        )
    ).all()
    history: dict[int, list[Attempt]] = {r[0]: [] for r in rows}
    if rows:
        attempts = await conn.execute(
            sa.text(
                "SELECT delivery_id, attempt, at, status_code, error, duration_ms"
                " FROM webhook_attempts WHERE delivery_id = ANY(:ids) ORDER BY delivery_id, id"
            ),
            {"ids": list(history)},
        )
        for a in attempts:
            history[a[0]].append(Attempt(*a[1:]))
    return [record(Delivery, r, history=history[r[0]]) for r in rows]


async def retry_delivery(
    conn: AsyncConnection, endpoint_id: str, delivery_id: int, max_attempts: int
) -> bool:
    """Queue one more attempt now, whatever the delivery's state (a replay)."""
    result = await conn.execute(
        sa.text(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),"
            " attempts = least(attempts, :cap) WHERE id = :id AND endpoint_id = :ep"
        ),
        {"id": delivery_id, "ep": endpoint_id, "cap": max_attempts - 1},
    )
    return result.rowcount == 1


# -- devices ------------------------------------------------------------------------------


class Device(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    platform: str
    token_last4: str
    events: list[str]
    created_at: dt.datetime


class DeviceTaken(Exception):
    """The token is registered to another live device row."""


def _device(keys: Keyring, row: Sequence[Any]) -> Device:
    did, user, platform, ct, events, created = row
    token = pii.open_(keys, bytes(ct), "devices", "token_ct", did)
    return Device(
        id=did,
        user_id=user,
        platform=platform,
        token_last4=token[-4:],
        events=list(events),
        created_at=created,
    )


_DEVICE_COLS = "id, user_id, platform, token_ct, events, created_at"


async def register_device(
    conn: AsyncConnection,
    keys: Keyring,
    device_id: str,
    user_id: str,
    platform: str,
    token: str,
    events: Sequence[str],
) -> tuple[Device, bool]:
    """(device, created). The same token again for the same user updates that device."""
    index = pii.blind_index(keys, f"device:{platform}", token)
    existing = (
        await conn.execute(
            sa.text(
                f"SELECT {_DEVICE_COLS} FROM devices"
                " WHERE token_index = :ix AND deleted_at IS NULL FOR UPDATE"
            ),
            {"ix": index},
        )
    ).first()
    if existing is not None:
        if existing[1] != user_id:
            # A phone changed hands: the token now belongs to whoever registers it.
            await conn.execute(
                sa.text("UPDATE devices SET deleted_at = now() WHERE id = :id"),
                {"id": existing[0]},
            )
            await _drop_pushes(conn, existing[0])
        else:
            row = (
                await conn.execute(
                    sa.text(
                        f"UPDATE devices SET events = :ev WHERE id = :id RETURNING {_DEVICE_COLS}"
                    ),
                    {"ev": list(events), "id": existing[0]},
                )
            ).one()
            return _device(keys, row), False
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO devices (id, user_id, platform, token_ct, token_index, events)"
                f" VALUES (:id, :user, :pf, :ct, :ix, :ev) RETURNING {_DEVICE_COLS}"
            ),
            {
                "id": device_id,
                "user": user_id,
                "pf": platform,
                "ct": pii.seal(keys, token, "devices", "token_ct", device_id),
                "ix": index,
                "ev": list(events),
            },
        )
    ).one()
    return _device(keys, row), True


async def get_device(conn: AsyncConnection, keys: Keyring, device_id: str) -> Device | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_DEVICE_COLS} FROM devices WHERE id = :id AND deleted_at IS NULL"),
            {"id": device_id},
        )
    ).first()
    return None if row is None else _device(keys, row)


async def list_devices(conn: AsyncConnection, keys: Keyring, user_id: str) -> list[Device]:
    rows = await conn.execute(
        sa.text(
            f"SELECT {_DEVICE_COLS} FROM devices WHERE user_id = :u AND deleted_at IS NULL"
            " ORDER BY created_at, id"
        ),
        {"u": user_id},
    )
    return [_device(keys, r) for r in rows]


async def update_device_events(
    conn: AsyncConnection, keys: Keyring, device_id: str, events: Sequence[str]
) -> Device | None:
    row = (
        await conn.execute(
            sa.text(
                "UPDATE devices SET events = :ev WHERE id = :id AND deleted_at IS NULL"
                f" RETURNING {_DEVICE_COLS}"
            ),
            {"ev": list(events), "id": device_id},
        )
    ).first()
    return None if row is None else _device(keys, row)


async def delete_device(conn: AsyncConnection, device_id: str) -> bool:
    result = await conn.execute(
        sa.text("UPDATE devices SET deleted_at = now() WHERE id = :id AND deleted_at IS NULL"),
        {"id": device_id},
    )
    await _drop_pushes(conn, device_id)
    return result.rowcount == 1


async def _drop_pushes(conn: AsyncConnection, device_id: str) -> None:
    """Pushes queued for a device that is gone (or changed hands) are never sent."""
    await conn.execute(
        sa.text(
            "UPDATE push_notifications SET status = 'failed', result = 'device_unregistered'"
            " WHERE device_id = :id AND status = 'pending'"
        ),
        {"id": device_id},
    )


class LiveDevice(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    events: frozenset[str]
    start_txid: int

    def wants(self, event: StoredEvent) -> bool:
        # A step-up code does not ride the event: actors/notify/codes.py sends it to the
        # payer's devices (or SMS, or email) itself.
        return (
            event.position.txid > self.start_txid
            and self.user_id in event.users
            and ("*" in self.events or event.event.type in self.events)
        )


async def live_devices(conn: AsyncConnection) -> list[LiveDevice]:
    rows = await conn.execute(
        sa.text("SELECT id, user_id, events, start_txid FROM devices WHERE deleted_at IS NULL")
    )
    return [
        LiveDevice(id=r[0], user_id=r[1], events=frozenset(r[2]), start_txid=r[3]) for r in rows
    ]


async def insert_pushes(conn: AsyncConnection, rows: Sequence[tuple[str, str]]) -> None:
    if rows:
        await conn.execute(
            sa.text(
                "INSERT INTO push_notifications (device_id, event_id) VALUES (:d, :e)"
                " ON CONFLICT (device_id, event_id) DO NOTHING"
            ),
            [{"d": d, "e": e} for d, e in rows],
        )


class PendingPush(msgspec.Struct):
    id: int
    device_id: str
    platform: str
    token: str
    attempts: int
    event: StoredEvent


async def pending_pushes(conn: AsyncConnection, keys: Keyring, limit: int) -> list[PendingPush]:
    rows = (
        await conn.execute(
            sa.text(
                "SELECT p.id, p.device_id, dv.platform, dv.token_ct, p.attempts, p.event_id"
                " FROM push_notifications p JOIN devices dv ON dv.id = p.device_id"
                " WHERE p.status = 'pending' AND dv.deleted_at IS NULL"
                " AND p.next_attempt_at <= now() ORDER BY p.id LIMIT :limit"
            ),
            {"limit": limit},
        )
    ).all()
    events = await _events_of(conn, [r[5] for r in rows])
    return [
        PendingPush(
            r[0],
            r[1],
            r[2],
            pii.open_(keys, bytes(r[3]), "devices", "token_ct", r[1]),
            r[4],
            events[r[5]],
        )
        for r in rows
        if r[5] in events
    ]


async def mark_push(
    conn: AsyncConnection, push_id: int, status: str, result: str, wait_s: float = 0.0
) -> None:
    """Record an attempt; a push left pending is tried again ``wait_s`` from now."""
    await conn.execute(
        sa.text(
            "UPDATE push_notifications SET status = :st, result = :res, attempts = attempts + 1,"
            " sent_at = CASE WHEN :st = 'sent' THEN now() END,"
            " next_attempt_at = now() + make_interval(secs => :wait) WHERE id = :id"
        ),
        {"id": push_id, "st": status, "res": result, "wait": wait_s},
    )


async def unregister_device(conn: AsyncConnection, device_id: str) -> bool:
    """The provider said the device's token is dead: the device goes as if its owner had
    deleted it (no longer listed, nothing more queued or sent to it)."""
    return await delete_device(conn, device_id)


# -- inbound webhooks ---------------------------------------------------------------------


INBOUND_MAX_BYTES = 64 * 1024


class InboundReplayed(Exception):
    """This provider's event id was accepted before."""


async def record_inbound(
    conn: AsyncConnection,
    keys: Keyring,
    provider: str,
    event_id: str | None,
    event_type: str | None,
    signed_at: int | None,
    status: str,
    reason: str | None,
    payload: bytes | None,
) -> int:
    """Store one inbound webhook; an accepted event id seen before raises InboundReplayed."""
    row_id: int = (
        await conn.execute(sa.text("SELECT nextval('inbound_webhooks_id_seq')"))
    ).scalar_one()
    sealed = None
    if payload is not None:
        sealed = pii.seal(
            keys, payload.decode(errors="replace"), "inbound_webhooks", "payload_ct",
            str(row_id), limit=INBOUND_MAX_BYTES,
        )  # fmt: skip
    params = {
        "id": row_id,
        "provider": provider,
        "eid": event_id,
        "type": event_type,
        "signed": signed_at,
        "status": status,
        "reason": reason,
        "payload": sealed,
    }
    insert = sa.text(
        "INSERT INTO inbound_webhooks (id, provider, event_id, event_type, signed_at, status,"
        " reason, payload_ct) VALUES (:id, :provider, :eid, :type, :signed, :status, :reason,"
        " :payload) ON CONFLICT DO NOTHING RETURNING id"
    )
    done = (await conn.execute(insert, params)).first()
    if done is None:
        raise InboundReplayed(event_id)
    return row_id


async def unhandled_inbound(conn: AsyncConnection, provider: str, event_id: str) -> int | None:
    """The accepted row of this event if its handling never finished (crash, handler error)."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT id FROM inbound_webhooks WHERE provider = :p AND event_id = :e"
                " AND status = 'accepted' AND handled_at IS NULL"
            ),
            {"p": provider, "e": event_id},
        )
    ).first()
    return None if row is None else row[0]


INBOUND_COLUMNS = ("id", "provider", "event_id", "event_type", "signed_at", "received_at",
                   "status", "reason", "handled_at", "handler")  # fmt: skip


async def list_inbound(
    conn: AsyncConnection, provider: str | None, status: str | None, before: int | None,
    limit: int,
) -> list[tuple]:  # fmt: skip
    """Inbound webhooks newest first (``INBOUND_COLUMNS``; never the sealed payload)."""
    where, params = ["true"], {"provider": provider, "status": status, "before": before,
                               "limit": limit}  # fmt: skip
    if provider is not None:
        where.append("provider = :provider")
    if status is not None:
        where.append("status = :status")
    if before is not None:
        where.append("id < :before")
    rows = await conn.execute(
        sa.text(
            f"SELECT {', '.join(INBOUND_COLUMNS)} FROM inbound_webhooks"
            f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit"
        ),
        params,
    )
    return [tuple(r) for r in rows]


async def mark_inbound_handled(conn: AsyncConnection, row_id: int, handler: str) -> None:
    await conn.execute(
        sa.text("UPDATE inbound_webhooks SET handled_at = now(), handler = :h WHERE id = :id"),
        {"id": row_id, "h": handler},
    )
