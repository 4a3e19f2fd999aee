"""Idempotency-Key records: one per (credential, key), kept ``RETENTION_S``.

``begin`` claims a key for a request (or says why not), ``finish`` stores the
answer, ``release`` gives the key back when the answer is not final (a 5xx or
429: the client retries with the same key). The HTTP side is
``api/idempotency.py``; the table is migration 13.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.storage import pii
from paynode.storage.keyring import Keyring

RETENTION_S = 24 * 3600  # a key is remembered this long, as Stripe does
# A request that claimed its key and never finished (its process was killed): after
# this the key may be claimed again by the same request. The requests behind it are
# idempotent by their own ids, so running one again is safe.
ABANDONED_S = 60
MAX_ANSWER_BYTES = 1 << 20  # a larger answer is not kept (the key is released)
_TABLE, _COLUMN = "idempotency_keys", "body_ct"


@dataclass(frozen=True)
class Stored:
    status: int
    content_type: str
    body: bytes


class Claimed:
    """The key is this request's: run it, then ``finish`` or ``release``."""


class InFlight:
    """Another request under this key has not finished."""


class Mismatch:
    """The key was used for a different request."""


CLAIMED, IN_FLIGHT, MISMATCH = Claimed(), InFlight(), Mismatch()
Begun = Claimed | InFlight | Mismatch | Stored

_CLAIM = sa.text(
    "INSERT INTO idempotency_keys (owner, key, fingerprint, state)"
    " VALUES (:owner, :key, :fp, 'in_flight')"
    " ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
    " state = 'in_flight', status = NULL, content_type = NULL, body_ct = NULL,"
    " created_at = now()"
    # Taken over: a record past its retention, or this same request abandoned midway.
    " WHERE idempotency_keys.created_at < now() - make_interval(secs => :retention)"
    " OR (idempotency_keys.state = 'in_flight' AND idempotency_keys.fingerprint = :fp"
    " AND idempotency_keys.created_at < now() - make_interval(secs => :abandoned))"
    " RETURNING true"
)
_READ = sa.text(
    "SELECT fingerprint, state, status, content_type, body_ct FROM idempotency_keys"
    " WHERE owner = :owner AND key = :key"
)


def _row_id(owner: str, key: str) -> str:
    return f"{owner}/{key}"


async def begin(
    conn: AsyncConnection, keys: Keyring, owner: str, key: str, fingerprint: bytes
) -> Begun:
    """Claim ``key`` for the request ``fingerprint`` names, or say what holds it."""
    params = {"owner": owner, "key": key, "fp": fingerprint, "retention": RETENTION_S,
              "abandoned": ABANDONED_S}  # fmt: skip
    if (await conn.execute(_CLAIM, params)).first() is not None:
        return CLAIMED
    row: Any = (await conn.execute(_READ, params)).first()
    if row is None:  # deleted between the two statements: claim it again
        return CLAIMED if (await conn.execute(_CLAIM, params)).first() else IN_FLIGHT
    if bytes(row[0]) != fingerprint:
        return MISMATCH
    if row[1] != "done":
        return IN_FLIGHT
    body = pii.open_(keys, bytes(row[4]), _TABLE, _COLUMN, _row_id(owner, key))
    return Stored(int(row[2]), str(row[3]), body.encode())


async def finish(
    conn: AsyncConnection, keys: Keyring, owner: str, key: str, status: int,
    content_type: str, body: bytes,
) -> None:  # fmt: skip
    """Keep the answer of the request that claimed ``key``."""
    assert len(body) <= MAX_ANSWER_BYTES
    sealed = pii.seal(keys, body.decode(), _TABLE, _COLUMN, _row_id(owner, key),
                      limit=MAX_ANSWER_BYTES)  # fmt: skip
    await conn.execute(
        sa.text(
            "UPDATE idempotency_keys SET state = 'done', status = :status, content_type = :ct,"
            " body_ct = :body WHERE owner = :owner AND key = :key AND state = 'in_flight'"
        ),
        {"owner": owner, "key": key, "status": status, "ct": content_type, "body": sealed},
    )


async def release(conn: AsyncConnection, owner: str, key: str) -> None:
    """Forget a claim whose answer is not final: the client may retry under the key."""
    await conn.execute(
        sa.text(
            "DELETE FROM idempotency_keys WHERE owner = :owner AND key = :key"
            " AND state = 'in_flight'"
        ),
        {"owner": owner, "key": key},
    )


async def sweep(conn: AsyncConnection, limit: int = 1000) -> int:
    """Delete up to ``limit`` records past their retention; how many went."""
    result: Any = await conn.execute(
        sa.text(
            "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys"
            " WHERE created_at < now() - make_interval(secs => :retention) LIMIT :n)"
        ),
        {"retention": RETENTION_S, "n": limit},
    )
    return int(result.rowcount or 0)
