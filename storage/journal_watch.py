"""Waking the journal's followers when there is something to follow (LISTEN/NOTIFY).

Every transaction that inserts into the journal or the other followed tables
(transfers, accounts, events, audit_log) announces its txid on
:data:`CHANNEL` when it commits: a statement-level trigger (migration 8), so
no writer can forget. Followers (the analytics stream, the notifier's fan-out)
sleep until an announcement instead of polling on a short timer, which costs
an idle node CPU in every follower and in PostgreSQL.

An announced txid may still be invisible to a follower's snapshot bound
(``pg_snapshot_xmin``: an older transaction is still running), so a follower
keeps working at its own pace while anything announced is beyond what it has
covered, and a slow fallback timer covers announcements lost while the
listening connection was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from paynode.storage.database import libpq_url

log = logging.getLogger("paynode.journal_watch")

CHANNEL = "paynode_journal"


class JournalWatch:
    """The highest txid announced so far, and a wake-up when it moves."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self.announced = 0  # highest txid announced since the watch started
        self.connected = False
        self._moved = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def nudge(self) -> None:
        """Wake the waiter now (its follower has news of its own, e.g. a new subscriber)."""
        self._moved.set()

    def behind(self, covered_txid: int) -> bool:
        """Whether a commit was announced beyond ``covered_txid`` (or we cannot know)."""
        return self.announced > covered_txid or not self.connected

    async def wait(self, timeout_s: float) -> None:
        """Until something is announced (or ``timeout_s``); forgets earlier wake-ups."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._moved.wait(), timeout_s)
        self._moved.clear()

    async def _listen(self) -> None:
        delay_s = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    libpq_url(self._url), autocommit=True, connect_timeout=5
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected, delay_s = True, 0.1
                    self._moved.set()  # anything committed while not listening: look now
                    async for notice in conn.notifies():
                        try:
                            txid = int(notice.payload)
                        except ValueError:
                            continue  # not ours
                        if txid > self.announced:
                            self.announced = txid
                        self._moved.set()
            except (psycopg.Error, OSError) as e:
                self.connected = False
                log.warning("journal watch: %s; listening again in %.1f s", type(e).__name__,
                            delay_s)  # fmt: skip
                self._moved.set()  # the follower's own timer covers the gap
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
