"""``Idempotency-Key`` on POST: a retried request gets the first answer, never a second effect.

As Stripe does: a POST carrying the header runs once per (credential, key); the
same request again, for 24 hours, gets the stored status and body (with
``Idempotent-Replayed: true``); another request under the key is 409
``idempotency_key_reused``; one arriving while the first still runs is 409
``idempotency_key_in_use`` (retry). An answer that is not final (5xx, 429) is
not kept, so the retry runs again; nor is a refusal before the request ran
(its credential, scope or body shape: 401, 403, malformed or invalid fields),
so the corrected request may use the key. The key belongs to the credential's
principal, so it needs one: without a credential the header is refused (400
``idempotency_key_needs_credential``) rather than silently ignored.

Requests without the header never come here: the transfer path pays nothing.
Stored answers are sealed with the PII key (they may hold a secret shown once).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from paynode.api import errors
from paynode.api import problems as p
from paynode.api.context import Context
from paynode.domain.ledger.model import Code
from paynode.storage import idempotency as store
from paynode.storage.pii import SealError

log = logging.getLogger("paynode.api")

HEADER = b"idempotency-key"
MAX_KEY_LENGTH = 255
SWEEP_EVERY = 256  # new keys between two deletions of expired ones
_FINAL = frozenset(range(200, 500)) - {429}  # answers worth replaying
# Refusals before the request ran (as Stripe: "no API endpoint began execution"): the
# credential, the scope, the body's shape. Not kept: the corrected retry runs.
_NOT_RUN = frozenset({
    p.UNAUTHENTICATED, p.INVALID_TOKEN, p.TOKEN_EXPIRED, p.INVALID_API_KEY, p.SESSION_REVOKED,
    p.FORBIDDEN, p.INSUFFICIENT_SCOPE, p.MALFORMED_JSON, p.BODY_TOO_LARGE, p.UNKNOWN_FIELD,
    p.MISSING_FIELD, p.INVALID_FIELD,
})  # fmt: skip


def header_of(scope: dict[str, Any]) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            return value
    return None


def _valid(raw: bytes) -> str | None:
    """Printable ASCII without spaces, 1..255 characters (Stripe allows 255)."""
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or any(b < 0x21 or b > 0x7E for b in raw):
        return None
    return raw.decode()


class Idempotency:
    """Wraps the app for POSTs that carry the header (``api/edge.py`` routes them here)."""

    def __init__(self, context: Callable[[], Context], body_limit_bytes: int) -> None:
        self._context = context
        self._body_limit = body_limit_bytes
        self._claims = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any, app: Any) -> None:
        raw = header_of(scope)
        assert raw is not None and scope["method"] == "POST"
        key = _valid(raw)
        if key is None:
            detail = f"1 to {MAX_KEY_LENGTH} printable ASCII characters, no spaces"
            await p.problem(p.INVALID_IDEMPOTENCY_KEY, detail)(scope, receive, send)
            return
        ctx = self._context()
        authorization = next((v.decode("latin-1") for n, v in scope["headers"]
                              if n == b"authorization"), None)  # fmt: skip
        if authorization is None:
            await p.problem(p.IDEMPOTENCY_KEY_NEEDS_CREDENTIAL)(scope, receive, send)
            return
        try:
            principal = await ctx.auth(authorization)
        except p.ApiError as e:  # the key cannot be scoped: the credential's error
            await errors.problem_for(e)(scope, receive, send)
            return
        body, complete = await _read(receive, self._body_limit)
        if not complete:  # too large: the route answers 413, nothing to keep
            await app(scope, _replay(body, True, receive), send)
            return
        owner = f"{principal.kind}:{principal.id}"
        digest = hashlib.sha256()
        for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode()):
            digest.update(part.encode() + b"\0")
        digest.update(body)
        try:
            async with ctx.engine.begin() as conn:
                begun = await store.begin(conn, ctx.keys, owner, key, digest.digest())
        except (SQLAlchemyError, OSError, SealError) as e:
            log.warning("idempotency key not readable: %s", type(e).__name__)
            await p.problem(Code.STORAGE_UNAVAILABLE)(scope, receive, send)
            return
        if isinstance(begun, store.Stored):
            await _send_stored(send, begun)
        elif begun is store.MISMATCH:
            await p.problem(p.IDEMPOTENCY_KEY_REUSED)(scope, receive, send)
        elif begun is store.IN_FLIGHT:
            await p.problem(p.IDEMPOTENCY_KEY_IN_USE, headers={"Retry-After": "1"})(
                scope, receive, send
            )
        else:
            await self._run(scope, _replay(body, False, receive), send, app, ctx, owner, key)

    async def _run(self, scope: dict[str, Any], receive: Any, send: Any, app: Any,
                   ctx: Context, owner: str, key: str) -> None:  # fmt: skip
        """Run the request once and keep its answer, then pass the answer on.

        The answer is held back until it is kept (or the key given back): a client
        that retries the moment it has an answer must find the key settled, not the
        claim of the request it is retrying (found by CI: a refusal's retry got 409).
        An answer too large to keep gives the key back and streams."""
        status = 500
        content_type = ""
        held: list[dict[str, Any]] = []
        size = 0
        streaming = False
        settled = False

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status, content_type, size, streaming, settled
            if streaming:
                await send(message)
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                content_type = next((v.decode("latin-1") for n, v in message.get("headers", ())
                                     if n == b"content-type"), "")  # fmt: skip
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            held.append(message)
            if size > store.MAX_ANSWER_BYTES:
                streaming = settled = True
                await self._release(ctx, owner, key)
                for m in held:
                    await send(m)
                held.clear()

        try:
            await app(scope, receive, capture)
            if not settled:
                answer = b"".join(m.get("body", b"") for m in held
                                  if m["type"] == "http.response.body")  # fmt: skip
                if status in _FINAL and _ran(content_type, answer):
                    settled = await self._keep(ctx, owner, key, status, content_type, answer)
        finally:
            if not settled:
                await self._release(ctx, owner, key)
            self._claims += 1
            if self._claims % SWEEP_EVERY == 0:
                await self._sweep(ctx)
        for m in held:
            await send(m)

    @staticmethod
    async def _keep(
        ctx: Context, owner: str, key: str, status: int, content_type: str, answer: bytes
    ) -> bool:
        try:
            async with ctx.engine.begin() as conn:
                await store.finish(conn, ctx.keys, owner, key, status, content_type, answer)
            return True
        except (SQLAlchemyError, OSError, UnicodeDecodeError) as e:
            # Not kept: a retry runs the request again (its own ids make that safe), as
            # if the key had never been seen.
            log.warning("idempotent answer not kept: %s", type(e).__name__)
            return False

    @staticmethod
    async def _release(ctx: Context, owner: str, key: str) -> None:
        try:
            async with ctx.engine.begin() as conn:
                await store.release(conn, owner, key)
        except (SQLAlchemyError, OSError) as e:  # the claim lapses after ABANDONED_S
            log.warning("idempotency key not released: %s", type(e).__name__)

    @staticmethod
    async def _sweep(ctx: Context) -> None:
        try:
            async with ctx.engine.begin() as conn:
                await store.sweep(conn)
        except (SQLAlchemyError, OSError) as e:  # the next sweep tries again
            log.warning("expired idempotency keys not swept: %s", type(e).__name__)


def _ran(content_type: str, answer: bytes) -> bool:
    """False for a problem that refused the request before it ran (``_NOT_RUN``)."""
    if not content_type.startswith(p.PROBLEM_JSON):
        return True
    try:
        code = msgspec.json.decode(answer, type=_Coded).code
    except msgspec.DecodeError:
        return True
    return code not in _NOT_RUN


class _Coded(msgspec.Struct):
    code: str = ""


async def _read(receive: Any, limit: int) -> tuple[bytes, bool]:
    """The request body, up to ``limit`` bytes; (body, whether it is all of it)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts), True
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(parts), False
        if not message.get("more_body", False):
            return b"".join(parts), True


def _replay(body: bytes, more: bool, receive: Any) -> Callable[[], Any]:
    """A ``receive`` that hands the app the body already read, then what the client
    sends next (the rest of a body cut at the limit, or its disconnect)."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replayed


async def _send_stored(send: Any, stored: store.Stored) -> None:
    headers = [(b"content-length", str(len(stored.body)).encode()),
               (b"idempotent-replayed", b"true")]  # fmt: skip
    if stored.content_type:
        headers.append((b"content-type", stored.content_type.encode("latin-1")))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body})
