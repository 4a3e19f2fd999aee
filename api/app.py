"""The HTTP front: FastAPI routes over :class:`LedgerClient`.

Bodies are read with a size limit and decoded by msgspec into the types of
:mod:`api.schemas`; every error leaves as problem+json with a ``code``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import msgspec
import sqlalchemy as sa
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from actors.ledger.model import (
    ACCOUNT_FLAGS,
    TRANSFER_FLAGS,
    AccountBalances,
    AccountSpec,
    Code,
    JournalRow,
    flag_names,
)
from actors.messages import decode_stats
from node.config import Settings
from storage.database import async_engine
from storage.schema import TRANSFER_COLUMNS
from storage.schema import transfers as transfers_t

from . import contract
from . import problems as p
from .batcher import Overloaded
from .ledger_client import LedgerClient, Unavailable
from .metrics import FrontMetrics, render
from .schemas import (
    AccountIn,
    AccountOut,
    BatchResult,
    Health,
    Readiness,
    TransferBatchIn,
    TransferBatchOut,
    TransferIn,
    TransferOut,
    TransferPage,
)
from .validation import account_flags, canonical_metadata

log = logging.getLogger("paynode.api")
T = TypeVar("T")
JSON = "application/json"


def _json(obj: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status, media_type=JSON)


async def _decode(request: Request, t: type[T], limit: int) -> T:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise p.ApiError(p.BODY_TOO_LARGE, f"at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise p.ApiError(p.BODY_TOO_LARGE, f"at most {limit} bytes")
        chunks.append(chunk)
    try:
        return msgspec.json.decode(b"".join(chunks), type=t)
    except msgspec.ValidationError as e:
        raise p.from_validation(e) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise p.ApiError(p.MALFORMED_JSON) from None


def account_out(b: AccountBalances) -> AccountOut:
    balance = b.credits_posted - b.debits_posted
    return AccountOut(
        id=b.id,
        currency=b.currency,
        flags=flag_names(b.flags, ACCOUNT_FLAGS),  # type: ignore[arg-type]
        debits_posted=b.debits_posted,
        credits_posted=b.credits_posted,
        debits_pending=b.debits_pending,
        credits_pending=b.credits_pending,
        balance=balance,
        available=balance - b.debits_pending,
        metadata=msgspec.json.decode(b.metadata),
        timestamp=b.ts,
    )


def transfer_out(r: JournalRow) -> TransferOut:
    return TransferOut(
        id=r.id,
        status=r.status,  # type: ignore[arg-type]
        debit_account_id=r.debit_account_id,
        credit_account_id=r.credit_account_id,
        amount=r.amount,
        currency=r.currency,
        flags=flag_names(r.flags, TRANSFER_FLAGS),  # type: ignore[arg-type]
        pending_id=r.pending_id,
        timeout_s=r.timeout_s or None,
        metadata=msgspec.json.decode(r.metadata),
        timestamp=r.ts,
    )


def _cursor_encode(ts: int, tid: str) -> str:
    return base64.urlsafe_b64encode(f"{ts}:{tid}".encode()).decode().rstrip("=")


def _cursor_decode(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts, tid = raw.split(":", 1)
        value = int(ts)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise p.ApiError(p.INVALID_CURSOR) from None
    if not 0 <= value < 2**63 or not _STORED_ID.match(tid):  # ts is a bigint
        raise p.ApiError(p.INVALID_CURSOR)
    return value, tid


# Ids as stored: the client alphabet, plus '~' of node-made ids (pending expiries).
_STORED_ID = re.compile(r"[A-Za-z0-9._:~-]{1,80}\Z")


def _check_path_id(value: str, code: str) -> None:
    """An id that cannot exist is simply not found (and never reaches the database)."""
    if not _STORED_ID.match(value):
        raise p.ApiError(code, status=404)


# FastAPI >= 0.165 looks up OpenTelemetry providers on every request when the
# opentelemetry packages are importable (Ray brings them); /metrics is ours.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(settings: Settings, shard_names: list[str]) -> FastAPI:
    """The ASGI app. Ray must be initialized in this process (the shards are looked up)."""
    metrics = FrontMetrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import ray

        handles = [ray.get_actor(n, namespace=settings.namespace) for n in shard_names]
        engine = async_engine(settings.database_url or "", settings.db_pool_size)
        state["engine"] = engine
        state["client"] = LedgerClient(handles, engine, settings, on_batch=metrics.observe_batch)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="paynode",
        version="1",
        description="Payment node: accounts and transfers in integer minor units.",
        lifespan=lifespan,
        **_NO_TELEMETRY,
    )
    contract.install(app)

    def client() -> LedgerClient:
        return state["client"]

    # -- errors -----------------------------------------------------------

    @app.exception_handler(p.ApiError)
    async def _api_error(_: Request, e: p.ApiError) -> Response:
        return p.problem(e.code, e.detail, e.field, e.status)

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, e: Overloaded) -> Response:
        return p.problem(p.OVERLOADED)

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, e: Unavailable) -> Response:
        return p.problem(Code.STORAGE_UNAVAILABLE)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> Response:
        return p.problem(p.METHOD_NOT_ALLOWED if e.status_code == 405 else p.NOT_FOUND)

    @app.exception_handler(RequestValidationError)
    async def _query(_: Request, e: RequestValidationError) -> Response:
        errors = e.errors()
        loc = ".".join(str(x) for x in errors[0]["loc"]) if errors else ""
        return p.problem(p.INVALID_FIELD, errors[0]["msg"] if errors else "", loc)

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception) -> Response:
        if type(e).__module__.startswith("ray"):
            log.error("shard call failed: %s", type(e).__name__)
            return p.problem(Code.STORAGE_UNAVAILABLE, "a ledger shard is unavailable")
        log.exception("unhandled error")
        return p.problem(p.INTERNAL)

    class CountRequests:
        """Pure ASGI (BaseHTTPMiddleware costs a task per request): count by route and status."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.inner(scope, receive, send)
                return
            status = [500]

            async def send_counted(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await self.inner(scope, receive, send_counted)
            finally:
                path = getattr(scope.get("route"), "path", "unmatched")
                metrics.requests[(scope["method"], path, status[0])] += 1

    app.add_middleware(CountRequests)

    # -- accounts ---------------------------------------------------------

    @app.post(
        "/v1/accounts",
        openapi_extra=contract.body(AccountIn),
        responses=contract.replies(
            {201: (AccountOut, "Created"), 200: (AccountOut, "Already existed, same fields")},
            (400, 409, 413, 422, 503),
        ),
        status_code=201,
    )
    async def create_account(request: Request) -> Response:
        body = await _decode(request, AccountIn, settings.max_body_bytes)
        spec = AccountSpec(
            body.id, body.currency, account_flags(body), canonical_metadata(body.metadata)
        )
        result = await client().create_account(spec)
        if result.code not in (Code.OK, Code.EXISTS):
            raise p.ApiError(result.code)
        fresh = AccountBalances(*msgspec.structs.astuple(result.spec), 0, 0, 0, 0)
        if result.code == Code.EXISTS:
            current = await client().account(spec.id)
            fresh = current or fresh
        return _json(account_out(fresh), 201 if result.code == Code.OK else 200)

    @app.get(
        "/v1/accounts/{account_id}",
        responses=contract.replies({200: (AccountOut, "The account")}, (404, 503)),
    )
    async def get_account(account_id: str) -> Response:
        _check_path_id(account_id, Code.ACCOUNT_NOT_FOUND)
        found = await client().account(account_id)
        if found is None:
            raise p.ApiError(Code.ACCOUNT_NOT_FOUND, status=404)
        return _json(account_out(found))

    @app.get(
        "/v1/accounts/{account_id}/transfers",
        responses=contract.replies({200: (TransferPage, "Newest first")}, (400, 404, 422)),
    )
    async def account_transfers(
        account_id: str,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        _check_path_id(account_id, Code.ACCOUNT_NOT_FOUND)
        if not await client().resolve({account_id}):
            raise p.ApiError(Code.ACCOUNT_NOT_FOUND, status=404)
        t = transfers_t
        cols = [sa.cast(c, sa.Text) if c.name == "metadata" else c for c in t.columns]
        sides = []
        for side in (t.c.debit_account_id, t.c.credit_account_id):
            q = sa.select(*cols).where(side == account_id)
            if cursor is not None:
                ts, tid = _cursor_decode(cursor)
                q = q.where(sa.tuple_(t.c.ts, t.c.id) < sa.tuple_(sa.literal(ts), sa.literal(tid)))
            sides.append(q.order_by(t.c.ts.desc(), t.c.id.desc()).limit(limit + 1))
        union = sa.union_all(*sides).subquery()
        q = sa.select(union).order_by(union.c.ts.desc(), union.c.id.desc()).limit(limit + 1)
        async with state["engine"].connect() as conn:
            rows = [JournalRow(*r) for r in await conn.execute(q)]
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _cursor_encode(rows[-1].ts, rows[-1].id) if more and rows else None
        return _json(TransferPage([transfer_out(r) for r in rows], next_cursor))

    # -- transfers --------------------------------------------------------

    @app.post(
        "/v1/transfers",
        openapi_extra=contract.body(TransferIn),
        responses=contract.replies(
            {201: (TransferOut, "Applied"), 200: (TransferOut, "Replay of the same transfer")},
            (400, 409, 413, 422, 503),
        ),
        status_code=201,
    )
    async def create_transfer(request: Request) -> Response:
        body = await _decode(request, TransferIn, settings.max_body_bytes)
        (outcome,) = await client().transfer([body])
        metrics.outcomes[outcome.code] += 1
        if outcome.code or outcome.row is None:
            raise p.ApiError(outcome.code)
        return _json(transfer_out(outcome.row), 200 if outcome.replayed else 201)

    @app.post(
        "/v1/transfers/batch",
        openapi_extra=contract.body(TransferBatchIn),
        responses=contract.replies(
            {200: (TransferBatchOut, "One result per transfer, in request order")},
            (400, 413, 422, 503),
        ),
    )
    async def create_transfers(request: Request) -> Response:
        body = await _decode(request, TransferBatchIn, settings.max_body_bytes)
        outcomes = await client().transfer(body.transfers)
        results = []
        for o in outcomes:
            metrics.outcomes[o.code] += 1
            if o.code or o.row is None:
                results.append(BatchResult(o.id, code=o.code))
            else:
                results.append(BatchResult(o.id, status=o.row.status))  # type: ignore[arg-type]
        return _json(TransferBatchOut(results))

    @app.get(
        "/v1/transfers/{transfer_id}",
        responses=contract.replies({200: (TransferOut, "The transfer as journaled")}, (404,)),
    )
    async def get_transfer(transfer_id: str) -> Response:
        _check_path_id(transfer_id, p.TRANSFER_NOT_FOUND)
        cols = [sa.cast(c, sa.Text) if c.name == "metadata" else c for c in transfers_t.columns]
        q = sa.select(*cols).where(transfers_t.c.id == transfer_id)
        async with state["engine"].connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            raise p.ApiError(p.TRANSFER_NOT_FOUND)
        return _json(transfer_out(JournalRow(*row)))

    # -- operations -------------------------------------------------------

    @app.get("/health", responses=contract.replies({200: (Health, "The process is up")}))
    async def health() -> Response:
        return _json(Health("ok"))

    @app.get(
        "/ready",
        responses=contract.replies(
            {200: (Readiness, "Shards and PostgreSQL reachable"), 503: (Readiness, "Not ready")}
        ),
    )
    async def ready() -> Response:
        async def db() -> bool:
            async with state["engine"].connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True

        checks = [db(), *(h.ping.remote() for h in client().shards)]
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*checks, return_exceptions=True), timeout=3
            )
        except TimeoutError:
            results = [False] * len(checks)
        ok = [r is True for r in results]
        body = Readiness("ready" if all(ok) else "not_ready", ok[0], ok[1:])
        return _json(body, 200 if all(ok) else 503)

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        calls = [h.stats.remote() for h in client().shards]
        try:
            raw = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 3)
        except TimeoutError:
            raw = [None] * len(calls)
        stats = [decode_stats(r) if isinstance(r, bytes) else None for r in raw]
        text = render(metrics, client().queue_depths(), stats)
        return Response(text, media_type="text/plain; version=0.0.4")

    assert set(TRANSFER_COLUMNS) == set(JournalRow.__struct_fields__)
    return app
