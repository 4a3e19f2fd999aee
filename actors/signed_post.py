"""How a simulator delivers an event to the node: a signed webhook, at least once.

The simulators (the bank, the RTP network) stand in for outside parties that
call ``POST /v1/webhooks/{provider}`` with an HMAC signature
(``domain/notify/signature.py``) and retry until the node answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp

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
