"""How a simulator delivers an event to the node: a signed webhook, at least once; and
the skeleton every simulator of an outside party shares (:class:`SimulatedParty`).

The simulators (the bank, the RTP network) stand in for outside parties that
call ``POST /v1/webhooks/{provider}`` with an HMAC signature
(``domain/notify/signature.py``) and retry until the node answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp

from paynode.actors.background import lower_priority
from paynode.domain.notify.signature import HEADER, header

MAX_ATTEMPTS = 30
TIMEOUT_S = 30.0


async def post_event(
    url: str, secret: str, event_id: str, kind: str, data: dict, log: logging.Logger
) -> bool:
    """POST one event until the node has it (2xx, or 409: it had it already); False if
    every attempt failed."""
    body = json.dumps(
        {"id": event_id, "type": kind, "created": int(time.time()), "data": data}
    ).encode()
    delay_s = 0.2
    async with aiohttp.ClientSession() as http:
        for _ in range(MAX_ATTEMPTS):
            try:
                async with http.post(
                    url, data=body,
                    headers={HEADER: header([secret], body), "Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                ) as r:  # fmt: skip
                    if r.status < 300 or r.status == 409:
                        return True
                    log.warning("%s answered %d", kind, r.status)
            except (aiohttp.ClientError, TimeoutError) as e:
                log.warning("%s not delivered: %s", kind, type(e).__name__)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 10.0)
    log.error("gave up on %s", event_id)
    return False


class SimulatedParty:
    """What every simulator of an outside party shares (the bank, the RTP network, the
    card processor, the account aggregator): it runs niced in the followers host, signs
    its webhooks with the secret the node verifies, and keeps its background deliveries
    to cancel them when it stops."""

    def __init__(self, node_url: str, provider: str, secret: str) -> None:
        lower_priority()  # stands in for a third party: yields the CPU to the money path
        self._url = f"{node_url}/v1/webhooks/{provider}"
        self._secret = secret
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = logging.getLogger(f"paynode.{provider}")

    async def ping(self) -> bool:
        return True

    async def signing_secret(self) -> str:
        """For fronts that did not start this simulator (cluster mode): the secret its
        webhooks are signed with. Crosses Ray's token-authenticated channel only."""
        return self._secret

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background (a delivery, a delayed answer)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, event_id: str, kind: str, data: dict) -> bool:
        return await post_event(self._url, self._secret, event_id, kind, data, self._log)
