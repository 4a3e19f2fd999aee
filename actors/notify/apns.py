"""Apple Push Notification service: HTTP/2 with a token-based (JWT) provider credential.

``POST <endpoint>/3/device/<token>`` with the ``apns-*`` headers and the JSON
payload of :mod:`actors.notify.push` (the same shape the sink writes), and
``authorization: bearer <provider token>`` (:class:`provider_tokens.ApnsTokens`,
reused for up to ``token_refresh_s``). Apple speaks HTTP/2 only; an ``http://``
endpoint (a local simulator) gets HTTP/2 in the clear with prior knowledge.

Apple's answers, mapped onto :class:`Outcome`: 200 ok (``apns-id``); 410
``Unregistered`` and 400 ``BadDeviceToken`` / ``DeviceTokenNotForTopic``: the token
is dead (``invalid_to``); 403 ``ExpiredProviderToken``: a new provider token and
one more try; 429 and 5xx, timeouts and broken connections: try later.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import msgspec

from paynode.actors.notify.provider_tokens import ApnsTokens, load_apns_key
from paynode.actors.notify.push import apns_headers, apns_payload
from paynode.domain.notify.channels import ChannelName, Message, Outcome
from paynode.domain.settings import ApnsSettings

log = logging.getLogger("paynode.notify.apns")

MAX_ANSWER_BYTES = 4096  # Apple's error bodies are a few dozen bytes: read no more
MAX_TOKEN_CHARS = 200  # device tokens are 64 hex digits today; Apple allows them to grow
DEAD_TOKEN_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered"})
_ID_NAMESPACE = uuid.UUID("6f2d1a4e-2b7c-4c55-9a43-5e1c0d7f3a10")  # apns-id from message id


class _Answer(msgspec.Struct):
    reason: str = ""


def apns_id(message_id: str) -> str:
    """A UUID (the form Apple wants) derived from the message id: the same on every retry."""
    return str(uuid.uuid5(_ID_NAMESPACE, message_id))


def outcome_of(status: int, reason: str, provider_id: str | None) -> Outcome:
    """Apple's answer as an Outcome (a 403 ``ExpiredProviderToken`` is handled before)."""
    detail = f"{status} {reason}".strip()
    if status == 200:
        return Outcome(ok=True, provider_id=provider_id, detail=detail)
    if status == 410 or (status == 400 and reason in DEAD_TOKEN_REASONS):
        return Outcome(ok=False, invalid_to=True, detail=detail)
    if status == 429 or status >= 500 or reason == "ExpiredProviderToken":
        return Outcome(ok=False, retry=True, detail=detail)
    return Outcome(ok=False, detail=detail)  # a request or credential Apple will never take


class ApnsClient:
    """One HTTP/2 connection pool to APNs; ``send`` implements the push :class:`Channel`."""

    name: ChannelName = "push"

    def __init__(self, apns: ApnsSettings) -> None:
        key = load_apns_key(Path(apns.key_file).expanduser())
        self.tokens = ApnsTokens(apns.team_id, apns.key_id, key, apns.token_refresh_s)
        self._topic = apns.topic
        self._base = apns.endpoint.rstrip("/")
        # One connection carries many streams; Apple asks providers to keep it open.
        self._http = httpx.AsyncClient(
            http1=False,
            http2=True,
            timeout=apns.timeout_ms / 1000,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
            follow_redirects=False,
        )

    async def send(self, message: Message) -> Outcome:
        if not message.to or len(message.to) > MAX_TOKEN_CHARS:
            return Outcome(ok=False, invalid_to=True, detail="malformed device token")
        url = f"{self._base}/3/device/{quote(message.to, safe='')}"
        headers = apns_headers(message.data.get("event_id", message.id), self._topic, time.time())
        headers["apns-id"] = apns_id(message.id)
        if message.urgent:  # a one-time code is useless once it expires: do not store it
            headers["apns-expiration"] = "0"
        body = msgspec.json.encode(apns_payload(message.subject, message.text, message.data))
        for _ in range(2):  # a second time only after a new provider token
            token = self.tokens.current()
            headers["authorization"] = f"bearer {token}"
            try:
                status, reason, provider_id = await self._post(url, headers, body)
            except httpx.TimeoutException:
                return Outcome(ok=False, retry=True, detail="timeout")
            except httpx.HTTPError as e:  # never str(e): it may quote the URL (the token)
                return Outcome(ok=False, retry=True, detail=type(e).__name__)
            if status == 403 and reason == "ExpiredProviderToken":
                self.tokens.expired(token)
                log.info("apns: provider token expired; signed a new one")
                continue
            return outcome_of(status, reason, provider_id)
        return outcome_of(403, "ExpiredProviderToken", None)

    async def _post(
        self, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, str | None]:
        async with self._http.stream("POST", url, headers=headers, content=body) as resp:
            raw = b""
            async for chunk in resp.aiter_bytes():
                raw += chunk
                if len(raw) >= MAX_ANSWER_BYTES:
                    break
            reason = ""
            if resp.status_code != 200 and raw:
                try:
                    reason = msgspec.json.decode(raw[:MAX_ANSWER_BYTES], type=_Answer).reason
                except msgspec.DecodeError:
                    reason = "unreadable answer"
            return resp.status_code, reason[:100], resp.headers.get("apns-id")

    async def close(self) -> None:
        await self._http.aclose()
