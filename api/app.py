"""The HTTP front: FastAPI routes over :class:`LedgerClient`.

Bodies are read with a size limit and decoded by msgspec into the types of
:mod:`api.schemas`; every error leaves as problem+json with a ``code``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import inspect
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import msgspec
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from paynode.actors.analytics import decode_stats as decode_analytics
from paynode.actors.names import (
    ACH_NAME,
    ANALYTICS_NAME,
    BANK_SIM_NAME,
    HANDLES_NAME,
    NOTIFIER_NAME,
    RECONCILER_NAME,
    RISK_NAME,
)
from paynode.actors.notifier import decode_stats as decode_notifier
from paynode.actors.reconciler import decode_status as decode_recon
from paynode.actors.risk.actor import decode_policy
from paynode.api import (
    ach_routes,
    contract,
    identity_routes,
    notify_routes,
    rails_routes,
    recon_routes,
    risk_gate,
    risk_routes,
)
from paynode.api import problems as p
from paynode.api.audit_writer import AuditWriter
from paynode.api.auth.authenticate import Authenticator
from paynode.api.auth.ratelimit import TokenBuckets, retry_after
from paynode.api.auth.scopes import Principal
from paynode.api.batcher import Overloaded
from paynode.api.deps import Context, check_owner, require
from paynode.api.http import client_ip, decode_body, json_response
from paynode.api.ledger_client import LedgerClient, Unavailable
from paynode.api.metrics import FrontMetrics, RiskStats, render, render_helpers
from paynode.api.schemas import (
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
from paynode.api.validation import account_flags, canonical_metadata
from paynode.domain.ledger.model import (
    ACCOUNT_FLAGS,
    TRANSFER_FLAGS,
    AccountBalances,
    AccountSpec,
    Code,
    JournalRow,
    Outcome,
    flag_names,
)
from paynode.domain.ledger.wire import decode_stats
from paynode.domain.rails.ach_rules import CLEARING_ACCOUNT, MICRODEPOSIT_ACCOUNT
from paynode.domain.settings import Settings
from paynode.storage import identity
from paynode.storage.audit_log import Entry
from paynode.storage.database import async_engine
from paynode.storage.keyring import Keyring
from paynode.storage.pii import SealError
from paynode.storage.schema import TRANSFER_COLUMNS
from paynode.storage.schema import transfers as transfers_t

log = logging.getLogger("paynode.api")
_PUBLIC_PATHS = frozenset({"/health", "/ready"})  # never rate limited: probes must see the truth


def _declared_length(scope: Any, most: int) -> int:
    """The body size a request announces (no announcement: as large as allowed)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return min(max(int(value), 0), most)
            except ValueError:
                return most
    return 0 if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") else most


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
        owner_user_id=b.owner or None,
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


def _journal_columns() -> list:
    """The journal's columns in JournalRow order, metadata as text."""
    return [
        sa.cast(transfers_t.c[n], sa.Text) if n == "metadata" else transfers_t.c[n]
        for n in TRANSFER_COLUMNS
    ]


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


STARTUP_WAIT_S = 120.0  # how long a starting front waits for its shards


async def _operator_accounts(client: LedgerClient) -> None:
    """The accounts the rails move money through (created once; the same again is a no-op).

    A front may start while a shard restarts or rebuilds: it waits for it (bounded)
    rather than fail, since uvicorn's supervisor stops every worker when a
    replacement worker fails to start.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_WAIT_S
    for account_id in (CLEARING_ACCOUNT, MICRODEPOSIT_ACCOUNT):
        while True:
            try:
                result = await client.create_account(AccountSpec(account_id, "USD", 0, "{}", 0, ""))
                code = result.code
            except (Unavailable, Overloaded) as e:
                code = getattr(e, "code", p.OVERLOADED)
            except p.ApiError as e:  # the request deadline passed
                code = e.code
            if code in (Code.OK, Code.EXISTS):
                break
            if code not in (Code.STORAGE_UNAVAILABLE, p.SHARD_RESTARTED, p.OVERLOADED, p.TIMEOUT):
                raise RuntimeError(f"operator account {account_id}: {code}")
            if loop.time() > deadline:
                raise RuntimeError(f"operator account {account_id}: shards unavailable ({code})")
            log.warning("front start: shards not ready (%s); waiting", code)
            await asyncio.sleep(0.5)  # a retry interval while a shard restarts


def create_app(settings: Settings, shard_names: list[str], keys: Keyring) -> FastAPI:
    """The ASGI app. Ray must be initialized in this process (the shards are looked up)."""
    metrics = FrontMetrics()
    state: dict[str, Any] = {}
    per_ip = TokenBuckets(settings.ip_rate_per_s, settings.ip_rate_burst)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import ray

        handles = [ray.get_actor(n, namespace=settings.namespace) for n in shard_names]
        engine = async_engine(settings.database_url or "", settings.db_pool_size)
        state["engine"] = engine
        state["client"] = LedgerClient(handles, engine, settings, on_batch=metrics.observe_batch)
        risk = ray.get_actor(RISK_NAME, namespace=settings.namespace)
        app.state.ctx = Context(
            settings=settings,
            keys=keys,
            engine=engine,
            client=state["client"],
            auth=Authenticator(keys, engine, settings.auth_cache_s, settings.api_key),
            per_principal=TokenBuckets(settings.rate_per_s, settings.rate_burst),
            per_ip_auth=TokenBuckets(settings.auth_rate_per_s, settings.auth_rate_burst),
            analytics=ray.get_actor(ANALYTICS_NAME, namespace=settings.namespace),
            reconciler=ray.get_actor(RECONCILER_NAME, namespace=settings.namespace),
            notifier=ray.get_actor(NOTIFIER_NAME, namespace=settings.namespace),
            handles=ray.get_actor(HANDLES_NAME, namespace=settings.namespace),
            ach=ray.get_actor(ACH_NAME, namespace=settings.namespace),
            bank_sim=(
                ray.get_actor(BANK_SIM_NAME, namespace=settings.namespace)
                if settings.bank_simulator
                else None
            ),
            risk=risk,
            policy=decode_policy(await risk.policy.remote()),
            risk_stats=RiskStats(),
            audit=AuditWriter(engine),
        )
        app.state.ctx.audit.start()
        await _operator_accounts(state["client"])
        try:
            yield
        finally:
            await app.state.ctx.audit.stop()
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
        return p.problem(e.code, e.detail, e.field, e.status, e.headers)

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, e: Overloaded) -> Response:
        return p.problem(p.OVERLOADED)

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, e: Unavailable) -> Response:
        return p.problem(e.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> Response:
        return p.problem(p.METHOD_NOT_ALLOWED if e.status_code == 405 else p.NOT_FOUND)

    @app.exception_handler(RequestValidationError)
    async def _query(_: Request, e: RequestValidationError) -> Response:
        errors = e.errors()
        loc = ".".join(str(x) for x in errors[0]["loc"]) if errors else ""
        return p.problem(p.INVALID_FIELD, errors[0]["msg"] if errors else "", loc)

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def _database_down(_: Request, e: Exception) -> Response:
        # PostgreSQL unreachable (an outage, a restart, a full pool): nothing was written
        # in the failed transaction; the client retries with the same ids.
        log.warning("database unavailable: %s", type(e).__name__)
        return p.problem(Code.STORAGE_UNAVAILABLE, "the database is unavailable")

    @app.exception_handler(sa_exc.DataError)
    async def _unstorable(_: Request, e: sa_exc.DataError) -> Response:
        # Bodies holding NUL are refused when decoded; a path or query value holding it
        # reaches PostgreSQL, whose text cannot, so nothing can match it.
        if "NUL" in str(e.orig):
            return p.problem(p.INVALID_FIELD, "a value holds a NUL character")
        log.exception("database refused a value")
        return p.problem(p.INTERNAL)

    @app.exception_handler(SealError)
    async def _sealed(_: Request, e: SealError) -> Response:
        # Tampering, a value moved between rows, or a key removed too early: an
        # operator must look. The message names the column and key id, never data.
        log.error("sealed value unreadable: %s", e)
        return p.problem(p.SEALED_VALUE_UNREADABLE)

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

    class LimitPerAddress:
        """Pure ASGI: a token bucket per client address, before any routing or parsing."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] not in _PUBLIC_PATHS:
                client = scope.get("client")
                wait = per_ip.take(client[0] if client else "unknown")
                if wait:
                    response = p.problem(p.RATE_LIMITED, headers={"Retry-After": retry_after(wait)})
                    await response(scope, receive, send)
                    return
            await self.inner(scope, receive, send)

    in_flight = [0, 0]  # requests, declared body bytes

    class LimitInFlight:
        """Pure ASGI: a bound on the requests being served and on their bodies' bytes.

        Queues downstream are bounded, but every request is read and decoded
        before it meets them; without this, memory grows with the number of
        open connections (measured: ~280 KB per 400-transfer batch in flight).
        Refused before the body is read: 503 ``overloaded``.
        """

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] in _PUBLIC_PATHS:
                await self.inner(scope, receive, send)
                return
            size = _declared_length(scope, settings.max_body_bytes)
            if (
                in_flight[0] >= settings.max_inflight_requests
                or in_flight[1] + size > settings.max_inflight_body_bytes
            ):
                await p.problem(p.OVERLOADED)(scope, receive, send)
                return
            in_flight[0] += 1
            in_flight[1] += size
            try:
                await self.inner(scope, receive, send)
            finally:
                in_flight[0] -= 1
                in_flight[1] -= size

    # The last added is the outermost: counting, then CORS, then the address limit, then
    # the in-flight bound.
    app.add_middleware(LimitInFlight)
    app.add_middleware(LimitPerAddress)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in settings.cors_origins.split(",") if o.strip()],
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    app.add_middleware(CountRequests)
    app.include_router(identity_routes.router)
    app.include_router(recon_routes.router)
    app.include_router(notify_routes.router)
    app.include_router(rails_routes.router)
    app.include_router(ach_routes.router)
    app.include_router(risk_routes.router)

    def may_debit(principal: Principal):
        """None for admins (no check); else a check that the debit account is theirs."""
        return None if principal.admin else principal.owns

    # -- accounts ---------------------------------------------------------

    @app.post(
        "/v1/accounts",
        openapi_extra=contract.body(AccountIn),
        responses=contract.replies(
            {201: (AccountOut, "Created"), 200: (AccountOut, "Already existed, same fields")},
            (400, 401, 403, 404, 409, 413, 422, 429, 503),
        ),
        status_code=201,
    )
    async def create_account(
        request: Request, principal: Annotated[Principal, Depends(require("accounts:write"))]
    ) -> Response:
        body = await decode_body(request, AccountIn, settings.max_body_bytes)
        owner = await _account_owner(principal, body.owner_user_id)
        spec = AccountSpec(
            body.id, body.currency, account_flags(body), canonical_metadata(body.metadata), 0, owner
        )
        result = await client().create_account(spec)
        if result.code not in (Code.OK, Code.EXISTS):
            raise p.ApiError(result.code)
        s = result.spec
        fresh = AccountBalances(s.id, s.currency, s.flags, s.metadata, s.ts, 0, 0, 0, 0, s.owner)
        if result.code == Code.EXISTS:
            current = await client().account(spec.id)
            fresh = current or fresh
        return json_response(account_out(fresh), 201 if result.code == Code.OK else 200)

    @app.get(
        "/v1/accounts/{account_id}",
        responses=contract.replies({200: (AccountOut, "The account")}, (401, 403, 404, 429, 503)),
    )
    async def get_account(
        account_id: str, principal: Annotated[Principal, Depends(require("accounts:read"))]
    ) -> Response:
        _check_path_id(account_id, Code.ACCOUNT_NOT_FOUND)
        found = await client().account(account_id)
        if found is None:
            raise p.ApiError(Code.ACCOUNT_NOT_FOUND, status=404)
        check_owner(principal, found.owner)
        return json_response(account_out(found))

    @app.get(
        "/v1/accounts/{account_id}/transfers",
        responses=contract.replies(
            {200: (TransferPage, "Newest first")}, (400, 401, 403, 404, 422, 429)
        ),
    )
    async def account_transfers(
        account_id: str,
        principal: Annotated[Principal, Depends(require("transfers:read"))],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        _check_path_id(account_id, Code.ACCOUNT_NOT_FOUND)
        spec = (await client().resolve({account_id})).get(account_id)
        if spec is None:
            raise p.ApiError(Code.ACCOUNT_NOT_FOUND, status=404)
        check_owner(principal, spec.owner)
        t = transfers_t
        cols = _journal_columns()
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
        return json_response(TransferPage([transfer_out(r) for r in rows], next_cursor))

    # -- transfers --------------------------------------------------------

    async def _submit(
        request: Request, principal: Principal, transfers: list[TransferIn]
    ) -> list[Outcome]:
        """A user's sends count toward their limits; every request is audited."""
        ctx: Context = app.state.ctx
        if not ctx.audit.has_room():
            raise Overloaded("audit queue full")  # before anything runs: nothing applied
        gated = risk_gate.gated(principal)
        counted = await risk_gate.take_transfer_usage(ctx, principal, transfers) if gated else None
        moved, audited = await asyncio.gather(
            client().transfer(transfers, may_debit(principal)),
            _audit_transfers(request, principal, transfers),
            return_exceptions=True,
        )
        if isinstance(moved, BaseException):
            if counted is not None and getattr(moved, "code", "") == p.FORBIDDEN:
                await risk_gate.release_unmoved(ctx, principal, counted, None)  # nothing ran
            raise moved
        if isinstance(audited, BaseException) and any(
            o.code == Code.OK and not o.replayed for o in moved
        ):
            # Money moved (durably) but the request's audit record is not: the client must
            # not read "nothing applied". A retry with the same ids replays the transfers and
            # records the request again. (A request that moved nothing keeps its answer.)
            raise p.ApiError(p.TIMEOUT) from audited
        if counted is not None:
            await risk_gate.release_unmoved(ctx, principal, counted, moved)
        return moved

    async def _audit_transfers(
        request: Request, principal: Principal, transfers: list[TransferIn]
    ) -> None:
        """One audit record per request (group-committed): who asked for which ids."""
        ids = "\n".join(t.id for t in transfers)
        await app.state.ctx.audit.record(
            Entry(
                principal.id, "transfers.submit", transfers[0].id, client_ip(request),
                after={"count": len(transfers), "last_id": transfers[-1].id,
                       "ids_sha256": hashlib.sha256(ids.encode()).hexdigest()},
            )
        )  # fmt: skip

    @app.post(
        "/v1/transfers",
        openapi_extra=contract.body(TransferIn),
        responses=contract.replies(
            {201: (TransferOut, "Applied"), 200: (TransferOut, "Replay of the same transfer")},
            (400, 401, 403, 409, 413, 422, 429, 503),
        ),
        status_code=201,
    )
    async def create_transfer(
        request: Request, principal: Annotated[Principal, Depends(require("transfers:write"))]
    ) -> Response:
        body = await decode_body(request, TransferIn, settings.max_body_bytes)
        (outcome,) = await _submit(request, principal, [body])
        metrics.outcomes[outcome.code] += 1
        if outcome.code or outcome.row is None:
            raise p.ApiError(outcome.code)
        return json_response(transfer_out(outcome.row), 200 if outcome.replayed else 201)

    @app.post(
        "/v1/transfers/batch",
        openapi_extra=contract.body(TransferBatchIn),
        responses=contract.replies(
            {200: (TransferBatchOut, "One result per transfer, in request order")},
            (400, 401, 403, 413, 422, 429, 503),
        ),
    )
    async def create_transfers(
        request: Request, principal: Annotated[Principal, Depends(require("transfers:write"))]
    ) -> Response:
        body = await decode_body(request, TransferBatchIn, settings.max_body_bytes)
        outcomes = await _submit(request, principal, body.transfers)
        results = []
        for o in outcomes:
            metrics.outcomes[o.code] += 1
            if o.code or o.row is None:
                results.append(BatchResult(o.id, code=o.code))
            else:
                results.append(BatchResult(o.id, status=o.row.status))  # type: ignore[arg-type]
        return json_response(TransferBatchOut(results))

    @app.get(
        "/v1/transfers/{transfer_id}",
        responses=contract.replies(
            {200: (TransferOut, "The transfer as journaled")}, (401, 403, 404, 429)
        ),
    )
    async def get_transfer(
        transfer_id: str, principal: Annotated[Principal, Depends(require("transfers:read"))]
    ) -> Response:
        _check_path_id(transfer_id, p.TRANSFER_NOT_FOUND)
        cols = _journal_columns()
        q = sa.select(*cols).where(transfers_t.c.id == transfer_id)
        async with state["engine"].connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            raise p.ApiError(p.TRANSFER_NOT_FOUND)
        journaled = JournalRow(*row)
        if not principal.admin:
            # Either side may look: the payer and the payee both see the transfer.
            sides = await client().resolve(
                {journaled.debit_account_id, journaled.credit_account_id}
            )
            if not any(principal.owns(s.owner) for s in sides.values()):
                raise p.ApiError(p.FORBIDDEN)
        return json_response(transfer_out(journaled))

    async def _account_owner(principal: Principal, wanted: str | None) -> str:
        """Who owns a new account: the caller's user; an admin may name anyone or no one."""
        if not principal.admin:
            if wanted is not None and wanted != principal.user_id:
                raise p.ApiError(
                    p.FORBIDDEN, "only admins choose an account's owner", "$.owner_user_id"
                )
            assert principal.user_id is not None, "non-admin credentials always act as a user"
            return principal.user_id
        if wanted is None:
            return ""
        async with state["engine"].connect() as conn:
            if not await identity.user_exists(conn, wanted):
                raise p.ApiError(p.USER_NOT_FOUND, field="$.owner_user_id", status=422)
        return wanted

    # -- operations -------------------------------------------------------

    @app.get("/health", responses=contract.replies({200: (Health, "The process is up")}))
    async def health() -> Response:
        return json_response(Health("ok"))

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
        return json_response(body, 200 if all(ok) else 503)

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        ctx: Context = app.state.ctx
        calls = [h.stats.remote() for h in client().shards]
        calls += [
            ctx.analytics.stats.remote(),
            ctx.reconciler.status.remote(),
            ctx.notifier.stats.remote(),
        ]

        async def bounded(call: Any) -> Any:
            # Each on its own clock: one busy actor must not blank the others' figures.
            try:
                return await asyncio.wait_for(call, 3)
            except Exception:  # a dead or busy actor: its series is absent this scrape
                return None

        raw = await asyncio.gather(*(bounded(c) for c in calls))
        *shard_raw, analytics_raw, recon_raw, notifier_raw = raw
        stats = [decode_stats(r) if isinstance(r, bytes) else None for r in shard_raw]
        text = render(metrics, client().queue_depths(), stats)
        helpers = render_helpers(
            decode_analytics(analytics_raw) if isinstance(analytics_raw, bytes) else None,
            decode_recon(recon_raw) if isinstance(recon_raw, bytes) else None,
            decode_notifier(notifier_raw) if isinstance(notifier_raw, bytes) else None,
        )
        helpers += ctx.risk_stats.render()
        text += "\n".join(helpers) + "\n"
        return Response(text, media_type="text/plain; version=0.0.4")

    assert set(TRANSFER_COLUMNS) == set(JournalRow.__struct_fields__)
    return app
