"""The fronts' recovery loops: one pass every interval for as long as the front runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def every(
    interval_ms: int, one_pass: Callable[[], Awaitable[object]], log: logging.Logger, what: str
) -> None:
    """Run ``one_pass()`` every ``interval_ms``. A pass that fails (PostgreSQL, the ledger
    or a Ray call unavailable) is logged by its exception's type, never its message (it
    could hold data); nothing is lost: every pass starts again from durable state."""
    assert interval_ms > 0
    while True:
        await asyncio.sleep(interval_ms / 1000)
        try:
            await one_pass()
        except Exception as e:
            log.warning("%s failed: %s", what, type(e).__name__)
