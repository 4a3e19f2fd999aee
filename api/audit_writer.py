"""Group commit for the audit records of the hot path (transfers).

A transfer request cannot afford a transaction of its own under the audit
log's lock, so requests hand their record to this writer and wait: one
transaction stores everything queued since the last one, in arrival order.
Routes await the record alongside the ledger call, and answer only when both
are done, so an acknowledged transfer has its audit record. A failed flush
fails the requests waiting on it; their transfers may have applied, so they
are answered 503 ``timeout`` (outcome unknown): retried with the same ids,
they replay in the ledger and are recorded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.requests import Request

from paynode.api.auth.scopes import Principal
from paynode.api.batcher import Overloaded
from paynode.api.http import client_ip
from paynode.api.shard_calls import Unavailable
from paynode.storage.audit_log import Entry, append, append_copy

log = logging.getLogger("paynode.audit")

MAX_BATCH = 2_000  # records per transaction
MAX_QUEUE = 50_000  # records waiting; beyond this requests are refused (503)


class AuditWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: list[tuple[Entry, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def has_room(self) -> bool:
        return len(self._queue) < MAX_QUEUE

    async def record(self, entry: Entry) -> None:
        """Return once ``entry`` is committed; raise if it could not be."""
        await self.enqueue(entry)

    def enqueue(self, entry: Entry) -> asyncio.Future[None]:
        """Queue ``entry``; the future is done once it is committed (or failed)."""
        if not self.has_room():
            raise Overloaded("audit queue full")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((entry, done))
        self._wake.set()
        return done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    async with self._engine.connect() as conn:
                        # psycopg's own connection from the pool: one COPY per flush
                        raw = (await conn.get_raw_connection()).driver_connection
                        assert raw is not None  # a pooled connection is open
                        await append_copy(raw, [e for e, _ in batch])
                except Exception as e:  # every waiter learns; the loop goes on
                    log.warning("audit flush of %d records failed: %s", len(batch),
                                type(e).__name__)  # fmt: skip
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(Unavailable())
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)


async def audit(
    conn: AsyncConnection,
    request: Request,
    principal: Principal,
    action: str,
    subject: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Record a privileged action in the transaction that performs it (ids, no PII)."""
    await append(conn, actor=principal.id, action=action, subject=subject,
                 source_ip=client_ip(request), before=before, after=after)  # fmt: skip
