"""The checkpointer: advances the ledger checkpoint in the background, and at stop.

A shard's recovery replays only the journal after the checkpoint
(``storage/checkpoint.py``), so this bounds restart time by the rows of one
interval rather than by the journal's age. The folding is PostgreSQL's work;
this service only asks for it every ``interval_s`` and when the node stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
import psycopg

from paynode.actors.background import lower_priority
from paynode.storage import checkpoint
from paynode.storage.database import connect

log = logging.getLogger("paynode.checkpoint")


class CheckpointStats(msgspec.Struct):
    below: int  # the horizon: every transaction below it is folded in (0: none yet)
    taken: int  # checkpoints advanced by this process
    failed: int
    last_seconds: float  # how long the last one took
    last_unix: float  # when the last one finished (0: none yet); a stale one means slow restarts


class Checkpointer:
    """Run in the followers' ``ServiceHost`` (or as ``ray.remote(Checkpointer)``)."""

    def __init__(self, database_url: str, interval_s: float) -> None:
        lower_priority()  # follows the journal: yields the CPU to the money path
        assert interval_s >= 0
        self._url = database_url
        self._interval_s = interval_s
        self._lock = asyncio.Lock()  # one at a time: a stop's and the loop's
        self._task: asyncio.Task[None] | None = None
        self._below = 0
        self._taken = 0
        self._failed = 0
        self._last_s = 0.0
        self._last_unix = 0.0

    async def start(self) -> None:
        if self._interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.checkpoint()

    async def checkpoint(self) -> CheckpointStats:
        """Advance the checkpoint now, step by step until it caught up; a failure is
        logged and counted, never raised (the steps done stay done)."""
        async with self._lock:
            t0 = time.perf_counter()
            try:
                conn = await connect(self._url, "paynode-checkpoint")
                try:
                    caught_up = False
                    old = self._below
                    while not caught_up:
                        _, self._below, caught_up = await checkpoint.advance(conn)
                finally:
                    await conn.close()
            except psycopg.errors.SerializationFailure:
                pass  # another node's checkpoint committed first: it covers ours
            except (psycopg.Error, OSError) as e:
                self._failed += 1
                log.warning("ledger checkpoint failed (%s); next in %.0f s", type(e).__name__,
                            self._interval_s)  # fmt: skip
            else:
                self._taken += 1
                self._last_s = time.perf_counter() - t0
                self._last_unix = time.time()
                log.debug("ledger checkpoint %d -> %d in %.2f s", old, self._below, self._last_s)
            return self.snapshot()

    def snapshot(self) -> CheckpointStats:
        return CheckpointStats(
            self._below, self._taken, self._failed, self._last_s, self._last_unix
        )

    async def stats(self) -> bytes:
        return msgspec.msgpack.encode(self.snapshot())

    async def ping(self) -> bool:
        return True

    async def stop(self) -> None:
        """A last checkpoint: the next start replays only what is committed after it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.checkpoint()


def decode_stats(raw: bytes) -> CheckpointStats:
    return msgspec.msgpack.decode(raw, type=CheckpointStats)
