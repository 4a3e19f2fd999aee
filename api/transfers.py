"""``POST /v1/transfers`` and ``POST /v1/transfers/batch``: the hot path, as plain ASGI.

These two routes carry nearly all of the node's traffic, so they skip FastAPI's
per-request machinery (route matching over every router, the dependency
graph, the Request object) and do exactly what the other routes do, in order:
read the body with a size limit (413), authenticate (401, cached), charge the
caller's rate limit (429), check the scope (403), decode with msgspec (400,
422), then count the user's sends toward their limits, audit the request in
a group commit and submit the transfers. Every failure is the same
problem+json the rest of the API answers (``api/errors.py``).

The contract is declared once, in :data:`ROUTES`: ``api/contract.py`` puts it
in ``/openapi.json`` and :class:`TransferRoutes` serves it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.types import Receive, Scope, Send

from paynode.api import problems as p
from paynode.api import risk_gate
from paynode.api.auth.ratelimit import retry_after
from paynode.api.auth.scopes import Principal
from paynode.api.batcher import Overloaded
from paynode.api.bulk_decode import BulkDecoder
from paynode.api.context import Context
from paynode.api.errors import problem_for
from paynode.api.render import applied_transfer
from paynode.api.schemas import (
    BatchResult,
    TransferBatchIn,
    TransferBatchOut,
    TransferIn,
    TransferOut,
)
from paynode.api.validation import transfer_flags
from paynode.domain.ledger.plan import TransferResult
from paynode.storage.audit_log import Entry

SCOPE = "transfers:write"
_JSON = [(b"content-type", b"application/json")]
_NUL = b"\\u0000"  # JSON's spelling of NUL: no field may hold it (PostgreSQL text cannot)


class HotRoute(msgspec.Struct, frozen=True):
    """A route served outside FastAPI, declared once for serving and for /openapi.json."""

    method: str
    path: str
    summary: str
    body: type
    status: int
    replies: dict[int, tuple[type, str]]
    errors: tuple[int, ...]
    scope: str


ROUTES = (
    HotRoute("POST", "/v1/transfers", "Create a transfer", TransferIn, 201,
             {201: (TransferOut, "Applied"), 200: (TransferOut, "Replay of the same transfer")},
             (400, 401, 403, 409, 413, 422, 429, 503), SCOPE),
    HotRoute("POST", "/v1/transfers/batch", "Create transfers", TransferBatchIn, 200,
             {200: (TransferBatchOut, "One result per transfer, in request order")},
             (400, 401, 403, 413, 422, 429, 503), SCOPE),
)  # fmt: skip

_decode_one = msgspec.json.Decoder(TransferIn).decode
_decode_batch = BulkDecoder(TransferBatchIn).decode
_encode = msgspec.json.encode


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it is known to exceed ``limit``."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise p.ApiError(p.BODY_TOO_LARGE, f"at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise p.ApiError(p.BODY_TOO_LARGE, f"at most {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decode(raw: bytes, decode: Callable[[bytes], Any]) -> Any:
    if _NUL in raw:
        raise p.ApiError(p.INVALID_FIELD, "text fields may not hold NUL (\\u0000)")
    try:
        return decode(raw)
    except msgspec.ValidationError as e:
        raise p.from_validation(e) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise p.ApiError(p.MALFORMED_JSON) from None


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None


def source_ip(scope: Scope) -> str:
    # uvicorn runs with proxy_headers off: this is the TCP peer, not a header.
    client = scope.get("client")
    return client[0] if client else "unknown"


async def admit(ctx: Context, scope: Scope) -> Principal:
    """Authenticate (401), charge the caller's bucket (429), check the scope (403)."""
    principal = await ctx.auth(_authorization(scope))
    wait = ctx.per_principal.take(principal.rate_key)
    if wait:
        raise p.ApiError(p.RATE_LIMITED, headers={"Retry-After": retry_after(wait)})
    if not principal.has(SCOPE):
        raise p.ApiError(p.INSUFFICIENT_SCOPE, f"needs {SCOPE}")
    return principal


async def submit(
    ctx: Context, principal: Principal, source: str, transfers: list[TransferIn]
) -> list[TransferResult]:
    """Move money for a request: a user's sends count toward their limits, and every
    request is audited (group-committed, awaited with the ledger call)."""
    if not ctx.audit.has_room():
        raise Overloaded("audit queue full")  # before anything runs: nothing applied
    gated = risk_gate.gated(principal)
    counted = await risk_gate.take_transfer_usage(ctx, principal, transfers) if gated else None
    may_debit = None if principal.admin else principal.owns
    # The record is written while the ledger call runs (its own group commit); the
    # answer waits for both. A future, not a second task: this runs per request.
    audited = ctx.audit.enqueue(_audit_entry(principal, source, transfers))
    try:
        moved = await ctx.client.transfer(transfers, may_debit)
    except BaseException as e:
        audited.add_done_callback(_consumed)
        if counted is not None and getattr(e, "code", "") == p.FORBIDDEN:
            await risk_gate.release_unmoved(ctx, principal, counted, None)  # nothing ran
        raise
    try:
        await audited
    except Exception as e:
        if any(not r.code and not r.replayed for r in moved):
            # Money moved (durably) but the request's audit record is not: the client
            # must not read "nothing applied". A retry with the same ids replays the
            # transfers and records the request again. (A request that moved nothing
            # keeps its answer.)
            raise p.ApiError(p.TIMEOUT) from e
    if counted is not None:
        await risk_gate.release_unmoved(ctx, principal, counted, moved)
    return moved


def _consumed(fut: asyncio.Future[None]) -> None:
    """Retrieve a result nobody awaits (the request failed first), so asyncio does not
    report it as never retrieved."""
    if not fut.cancelled():
        fut.exception()


def _audit_entry(principal: Principal, source: str, transfers: list[TransferIn]) -> Entry:
    """One audit record per request: who asked for which ids (a digest of them)."""
    ids = "\n".join([t.id for t in transfers])
    return Entry(
        principal.id, "transfers.submit", transfers[0].id, source,
        after={"count": len(transfers), "last_id": transfers[-1].id,
               "ids_sha256": hashlib.sha256(ids.encode()).hexdigest()},
    )  # fmt: skip


class TransferRoutes:
    """The ASGI handlers of :data:`ROUTES`; ``context()`` is the app's, once it started."""

    def __init__(self, context: Callable[[], Context]) -> None:
        self.context = context
        self.handlers = {
            ("POST", "/v1/transfers"): self.single,
            ("POST", "/v1/transfers/batch"): self.batch,
        }

    async def single(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, _decode_one, self._single)

    async def batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._serve(scope, receive, send, _decode_batch, self._batch)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, decode: Callable[[bytes], Any],
        work: Callable[[Context, Principal, Any, str], Awaitable[tuple[int, bytes]]],
    ) -> None:  # fmt: skip
        """Admit, read and decode the request, ``work`` it; every error as problem+json."""
        ctx = self.context()
        try:
            principal = await admit(ctx, scope)
            raw = await read_body(scope, receive, ctx.settings.http.max_body_bytes)
            status, out = await work(ctx, principal, _decode(raw, decode), source_ip(scope))
        except ClientGone:
            return
        except Exception as e:  # every error becomes its problem+json answer
            await problem_for(e)(scope, receive, send)
            return
        await _send_json(send, status, out)

    @staticmethod
    async def _single(
        ctx: Context, principal: Principal, body: TransferIn, source: str
    ) -> tuple[int, bytes]:
        flags = transfer_flags(body)  # the static rules, with the field that broke one
        (result,) = await submit(ctx, principal, source, [body])
        ctx.metrics.outcomes[result.code] += 1
        if result.code:
            raise p.ApiError(result.code)
        return 200 if result.replayed else 201, _encode(applied_transfer(body, flags, result))

    @staticmethod
    async def _batch(
        ctx: Context, principal: Principal, body: TransferBatchIn, source: str
    ) -> tuple[int, bytes]:
        results = await submit(ctx, principal, source, body.transfers)
        ctx.metrics.outcomes.update([r.code for r in results])
        return 200, _encode(TransferBatchOut([
            BatchResult(r.id, code=r.code) if r.code
            else BatchResult(r.id, status=r.status)  # type: ignore[arg-type]
            for r in results
        ]))  # fmt: skip


async def _send_json(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
