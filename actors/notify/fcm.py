"""Firebase Cloud Messaging HTTP v1, authorised by an OAuth 2.0 service account.

The service account's JSON key signs an RS256 assertion
(:func:`provider_tokens.google_assertion`) that ``token_uri`` trades for an
access token; the token is kept until shortly before its ``expires_in`` and
sent as ``Bearer`` to ``POST <endpoint>/v1/projects/<project>/messages:send``
with the message of :mod:`actors.notify.push` (the same shape the sink writes).

Answers, mapped onto :class:`Outcome`: 200 ok (the message ``name``); 404
``UNREGISTERED``, or 400 ``INVALID_ARGUMENT`` about the token: the token is dead
(``invalid_to``); 401: a new access token and one more try; 429, 5xx, timeouts:
try later, not before the ``Retry-After`` the answer gave (``retry_after_s``).
"""

from __future__ import annotations

import email.utils
import logging
import time
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec

from paynode.actors.notify.provider_tokens import google_assertion, load_service_account
from paynode.actors.notify.push import fcm_message
from paynode.domain.notify.channels import ChannelName, Message, Outcome
from paynode.domain.settings import FcmSettings

log = logging.getLogger("paynode.notify.fcm")

MAX_ANSWER_BYTES = 16 * 1024  # Google's error bodies are under 1 KiB: read no more
MAX_TOKEN_CHARS = 4096  # registration tokens are ~160 characters
TOKEN_EARLY_S = 60  # an access token is replaced this long before it expires
MIN_TOKEN_LIFE_S = 60  # an expires_in below it is taken as this (never a token per send)
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_T = TypeVar("_T")


class _Detail(msgspec.Struct):
    errorCode: str = ""  # Google's field names
    fieldViolations: list[dict[str, str]] = []


class _Error(msgspec.Struct):
    code: int = 0
    status: str = ""
    message: str = ""
    details: list[_Detail] = []


class _ErrorBody(msgspec.Struct):
    error: _Error = msgspec.field(default_factory=_Error)


class _Sent(msgspec.Struct):
    name: str = ""


class _AccessToken(msgspec.Struct):
    access_token: str
    expires_in: int = 3600
    token_type: str = "Bearer"


def _token_refused(err: _Error) -> bool:
    """A 400 INVALID_ARGUMENT about the registration token itself (not the payload)."""
    for d in err.details:
        if any(v.get("field") == "message.token" for v in d.fieldViolations):
            return True
    return "registration token" in err.message.lower()


def outcome_of(status: int, err: _Error, name: str = "") -> Outcome:
    codes = {d.errorCode for d in err.details if d.errorCode} | {err.status}
    detail = f"{status} {'/'.join(sorted(c for c in codes if c))}".strip()
    if status == 200:
        return Outcome(ok=True, provider_id=name or None, detail=detail)
    if (status == 404 and "UNREGISTERED" in codes) or (
        status == 400 and "INVALID_ARGUMENT" in codes and _token_refused(err)
    ):
        return Outcome(ok=False, invalid_to=True, detail=detail)
    if status in (401, 408, 429) or status >= 500:
        return Outcome(ok=False, retry=True, detail=detail)
    return Outcome(ok=False, detail=detail)


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)


class FcmClient:
    """``send`` implements the push :class:`Channel` for Android (and FCM-registered) devices."""

    name: ChannelName = "push"

    def __init__(self, fcm: FcmSettings) -> None:
        self._account, self._key = load_service_account(Path(fcm.service_account_file).expanduser())
        self._token_uri = fcm.token_uri or self._account.token_uri
        self._send_url = (
            f"{fcm.endpoint.rstrip('/')}/v1/projects/{self._account.project_id}/messages:send"
        )
        self._http = httpx.AsyncClient(
            http2=True,
            timeout=fcm.timeout_ms / 1000,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            follow_redirects=False,
        )
        self._access = ""
        self._access_until = 0.0
        self.exchanges = 0  # access tokens obtained (stats, tests)
        self.retry_after_s: float | None = None  # of the last answer that gave one

    async def _access_token(self) -> str:
        now = time.time()
        if self._access and now < self._access_until:
            return self._access
        assertion = google_assertion(self._account, self._key, self._token_uri, int(now))
        status, _, raw = await self._post(
            self._token_uri, {}, data={"grant_type": JWT_BEARER, "assertion": assertion}
        )
        if status != 200:
            raise _ExchangeFailed(status)
        got = msgspec.json.decode(raw, type=_AccessToken)
        self._access = got.access_token
        self._access_until = now + max(got.expires_in, MIN_TOKEN_LIFE_S) - TOKEN_EARLY_S
        self.exchanges += 1
        return self._access

    async def send(self, message: Message) -> Outcome:
        self.retry_after_s = None
        if not message.to or len(message.to) > MAX_TOKEN_CHARS:
            return Outcome(ok=False, invalid_to=True, detail="malformed registration token")
        collapse = message.data.get("event_id", message.id)
        body = msgspec.json.encode(
            fcm_message(message.to, message.subject, message.text, message.data, collapse)
        )
        for _ in range(2):  # a second time only after a 401 and a new access token
            try:
                token = await self._access_token()
                status, retry_after, raw = await self._post(
                    self._send_url,
                    {"authorization": f"Bearer {token}", "content-type": "application/json; UTF-8"},
                    content=body,
                )
            except _ExchangeFailed as e:
                return Outcome(ok=False, retry=True, detail=f"token exchange {e.status}")
            except httpx.TimeoutException:
                return Outcome(ok=False, retry=True, detail="timeout")
            except (httpx.HTTPError, msgspec.DecodeError) as e:  # never str(e)
                return Outcome(ok=False, retry=True, detail=type(e).__name__)
            if status == 401:
                self._access = ""  # revoked or expired early: exchange again
                continue
            self.retry_after_s = retry_after_s(retry_after, time.time())
            if status == 200:
                return outcome_of(200, _Error(), _decode(raw, _Sent, _Sent()).name)
            return outcome_of(status, _decode(raw, _ErrorBody, _ErrorBody()).error)
        return Outcome(ok=False, retry=True, detail="401 UNAUTHENTICATED")

    async def _post(
        self,
        url: str,
        headers: dict[str, str],
        content: bytes | None = None,
        data: dict[str, str] | None = None,
    ) -> tuple[int, str | None, bytes]:
        """(status, Retry-After, at most MAX_ANSWER_BYTES of the body)."""
        async with self._http.stream(
            "POST", url, headers=headers, content=content, data=data
        ) as resp:
            raw = b""
            async for chunk in resp.aiter_bytes():
                raw += chunk
                if len(raw) >= MAX_ANSWER_BYTES:
                    break
            return resp.status_code, resp.headers.get("retry-after"), raw[:MAX_ANSWER_BYTES]

    async def close(self) -> None:
        await self._http.aclose()


class _ExchangeFailed(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _decode(raw: bytes, kind: type[_T], default: _T) -> _T:
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.DecodeError:
        return default
