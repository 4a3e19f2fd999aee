"""The handle directory actor: @handle -> account, answered from memory.

It loads every live handle at start (warm) and is the only writer, so its
map is never stale: a claim is committed to PostgreSQL first (the unique
index on live handles is the last word), then added to the map; a release
the same way. Names are normalized by :mod:`actors.rails.handles_rules`
before they reach it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from paynode.storage.database import async_engine

MAX_RESOLVE = 1000  # handles per call


class Handle(msgspec.Struct, array_like=True, frozen=True):
    handle: str
    account_id: str
    owner_user_id: str  # "" = admin-owned account
    created_at: float  # unix seconds


class Claimed(msgspec.Struct, array_like=True, frozen=True):
    code: str  # "" or handle_taken
    handle: Handle | None


_enc = msgspec.msgpack.Encoder()
decode_handles = msgspec.msgpack.Decoder(list[Handle | None]).decode
decode_claimed = msgspec.msgpack.Decoder(Claimed).decode
decode_timings = msgspec.msgpack.Decoder(list[int]).decode


class HandleDirectory:
    """Run under Ray as ``ray.remote(HandleDirectory)``."""

    def __init__(self, database_url: str) -> None:
        self._engine = async_engine(database_url, pool_size=2, name="paynode-handles")
        self._by_name: dict[str, Handle] = {}

    async def start(self) -> int:
        async with self._engine.connect() as conn:
            rows: Iterable[tuple[Any, ...]] = await conn.execute(
                sa.text(
                    "SELECT handle, account_id, coalesce(owner_user_id, ''),"
                    " extract(epoch FROM created_at)::float8 FROM handles"
                    " WHERE released_at IS NULL"
                )
            )
            self._by_name = {r[0]: Handle(*r) for r in rows}
        return len(self._by_name)

    async def ping(self) -> bool:
        return True

    async def stop(self) -> None:
        await self._engine.dispose()

    async def resolve(self, names: list[str]) -> bytes:
        """The live handle of each (normalized) name, or None."""
        assert len(names) <= MAX_RESOLVE
        return _enc.encode([self._by_name.get(n) for n in names])

    async def timed_resolve(self, names: list[str]) -> bytes:
        """Nanoseconds each lookup took inside this process (``paynode bench --mode handles``)."""
        out = []
        by_name = self._by_name
        for n in names:
            t0 = time.perf_counter_ns()
            by_name.get(n)
            out.append(time.perf_counter_ns() - t0)
        return _enc.encode(out)

    async def claim(self, name: str, account_id: str, owner: str) -> bytes:
        if name in self._by_name:
            return _enc.encode(Claimed("handle_taken", None))
        try:
            async with self._engine.begin() as conn:
                created: float = (
                    await conn.execute(
                        sa.text(
                            "INSERT INTO handles (handle, account_id, owner_user_id)"
                            " VALUES (:h, :a, nullif(:o, ''))"
                            " RETURNING extract(epoch FROM created_at)::float8"
                        ),
                        {"h": name, "a": account_id, "o": owner},
                    )
                ).scalar_one()
        except IntegrityError:
            return _enc.encode(Claimed("handle_taken", None))
        handle = Handle(name, account_id, owner, created)
        self._by_name[name] = handle
        return _enc.encode(Claimed("", handle))

    async def release(self, name: str) -> bool:
        async with self._engine.begin() as conn:
            done = await conn.execute(
                sa.text(
                    "UPDATE handles SET released_at = now()"
                    " WHERE handle = :h AND released_at IS NULL"
                ),
                {"h": name},
            )
        self._by_name.pop(name, None)
        return done.rowcount == 1

    async def count(self) -> int:
        return len(self._by_name)
