"""Who is calling: ``Authorization: Bearer <token>`` to a :class:`Principal`.

Three kinds of bearer token are accepted:

- an access JWT (``eyJ...``) from ``/v1/auth/login`` or ``/v1/auth/refresh``;
- an API key (``pk_...``) from ``POST /v1/api-keys``;
- the bootstrap admin key, ``PAYNODE_API_KEY``, if the node was started with one.

Lookups that need PostgreSQL (API keys, session revocation) are cached for
``auth_cache_s``; a revocation made through this front takes effect at once,
one made elsewhere within that time.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import OrderedDict
from typing import Generic, TypeVar

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from paynode.api import problems as p
from paynode.api.auth.scopes import Principal
from paynode.api.auth.tokens import TokenError, secret_hash, split_secret, verify_access
from paynode.storage import identity
from paynode.storage.database import libpq_url
from paynode.storage.keyring import Keyring

API_KEY_PREFIX = "pk"
V = TypeVar("V")
_MISSING = object()


class TtlCache(Generic[V]):
    """A bounded map whose entries expire; the oldest entry goes when it is full."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> V | object:
        hit = self._items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return _MISSING
        return hit[1]

    def put(self, key: str, value: V) -> None:
        self._items.pop(key, None)
        self._items[key] = (time.monotonic() + self.ttl_s, value)
        if len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


def unauthorized(code: str) -> p.ApiError:
    return p.ApiError(code, headers={"WWW-Authenticate": 'Bearer realm="paynode"'})


class Authenticator:
    def __init__(
        self, keys: Keyring, engine: AsyncEngine, cache_s: float, bootstrap_key: str | None
    ) -> None:
        self.keys = keys
        self.engine = engine
        self._api_keys: TtlCache[identity.ApiKeyRow | None] = TtlCache(cache_s)
        self._sessions: TtlCache[bool] = TtlCache(cache_s)
        self._bootstrap = None if not bootstrap_key else secret_hash(bootstrap_key)

    async def __call__(self, authorization: str | None) -> Principal:
        if not authorization:
            raise unauthorized(p.UNAUTHENTICATED)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 4096:
            raise unauthorized(p.UNAUTHENTICATED)
        if token.startswith(API_KEY_PREFIX + "_"):
            return await self._api_key(token)
        if token.count(".") == 2:
            return await self._jwt(token)
        if self._bootstrap is not None and hmac.compare_digest(secret_hash(token), self._bootstrap):
            return Principal("bootstrap", "bootstrap", None, frozenset({"admin"}))
        raise unauthorized(p.INVALID_TOKEN)

    async def _api_key(self, token: str) -> Principal:
        parts = split_secret(token, API_KEY_PREFIX)
        if parts is None:
            raise unauthorized(p.INVALID_API_KEY)
        key_id, secret = parts
        row = self._api_keys.get(key_id)
        if row is _MISSING:
            async with self.engine.connect() as conn:
                row = await identity.get_api_key(conn, key_id)
            self._api_keys.put(key_id, row)
        if not isinstance(row, identity.ApiKeyRow) or row.revoked_at is not None:
            raise unauthorized(p.INVALID_API_KEY)
        if not hmac.compare_digest(secret_hash(secret), row.secret_hash):
            raise unauthorized(p.INVALID_API_KEY)
        return Principal("api_key", row.id, row.owner_user_id, frozenset(row.scopes))

    async def _jwt(self, token: str) -> Principal:
        try:
            claims = verify_access(self.keys, token)
        except TokenError as e:
            raise unauthorized(e.code) from None
        active = self._sessions.get(claims.sid)
        if active is _MISSING:
            async with self.engine.connect() as conn:
                active = await identity.session_active(conn, claims.sid)
            self._sessions.put(claims.sid, bool(active))
        if not active:
            raise unauthorized(p.SESSION_REVOKED)
        return Principal(
            "user", claims.sub, claims.sub, frozenset(claims.scope.split()), claims.sid
        )

    def forget_api_key(self, key_id: str) -> None:
        self._api_keys.drop(key_id)

    def forget_session(self, session_id: str) -> None:
        self._sessions.drop(session_id)

    def forget(self, notice: str) -> None:
        """A revocation announced by any front (``storage.identity.REVOKED_CHANNEL``)."""
        kind, _, object_id = notice.partition(":")
        if kind == "api_key":
            self.forget_api_key(object_id)
        elif kind == "session":
            self.forget_session(object_id)

    async def follow_revocations(self, database_url: str) -> None:
        """Drop what any front revokes, as it commits (several fronts share one database).

        Runs until cancelled. While the listening connection is down (a PostgreSQL
        restart), every cache entry is dropped: a revocation may have been missed.
        """
        delay_s = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    libpq_url(database_url), autocommit=True, connect_timeout=5
                ) as conn:
                    await conn.execute(f"LISTEN {identity.REVOKED_CHANNEL}")
                    delay_s = 0.1
                    async for notice in conn.notifies():
                        self.forget(notice.payload)
            except (psycopg.Error, OSError):
                self._api_keys.clear()
                self._sessions.clear()
                await asyncio.sleep(delay_s)  # PostgreSQL is away: back off, then listen again
                delay_s = min(delay_s * 2, 5.0)
