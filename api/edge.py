"""The outermost layer of the HTTP front, as one plain ASGI callable.

For every request, in this order: a span when tracing is on (``actors/tracing.py``),
security headers on the answer (HSTS over TLS), count it by route and status
(``/metrics``), the TLS requirement (``require_tls``: 403 ``tls_required`` over
plain HTTP), charge the client address's token bucket (429), bound the requests
being served and their declared bodies (503 ``overloaded``, before the body is
read), then hand it to the hot routes (``api/transfers.py``) or to FastAPI,
through ``api/idempotency.py`` for a POST carrying an ``Idempotency-Key``.
``/health`` and ``/ready`` are never limited: probes must see the truth.

One layer instead of three middlewares: each ASGI layer costs an await and a
closure per request, and these checks sit on the path of every transfer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from paynode.actors import tracing
from paynode.api import problems as p
from paynode.api.auth.ratelimit import TokenBuckets, retry_after
from paynode.api.idempotency import Idempotency, header_of
from paynode.api.metrics import FrontMetrics
from paynode.domain.settings import Settings

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
PUBLIC_PATHS = frozenset({"/health", "/ready"})
# Pages a browser renders (the API's documentation); everything else is JSON.
HOSTED_PAGES = {"/docs": "swagger", "/redoc": "redoc"}
# On every API response: no MIME sniffing, no framing, no referrer, no caching of
# balances and payments, and a CSP that lets a JSON body run nothing if opened as a page.
API_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
]
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def declared_length(scope: dict[str, Any], most: int) -> int:
    """The body size a request announces (no announcement: as large as allowed)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return min(max(int(value), 0), most)
            except ValueError:
                return most
    return 0 if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") else most


class Edge:
    def __init__(
        self,
        app: App,
        hot: Mapping[tuple[str, str], App],
        settings: Settings,
        metrics: FrontMetrics,
        idempotency: Idempotency | None = None,
        page_headers: Mapping[str, list[tuple[bytes, bytes]]] | None = None,
    ) -> None:
        """``page_headers``: the security headers of each hosted page (``HOSTED_PAGES``),
        whose CSP names its own scripts."""
        self.app = app
        self.idempotency = idempotency
        self.hot = hot
        self.metrics = metrics
        self.per_ip = TokenBuckets(settings.ip_rate.per_s, settings.ip_rate.burst)
        self.max_requests = settings.http.max_inflight_requests
        self.max_body_bytes = settings.http.max_inflight_body_bytes
        self.body_limit = settings.http.max_body_bytes
        self.requests = 0  # being served now
        self.body_bytes = 0  # their declared bodies
        self.tracer = tracing.tracer("paynode-front", settings.trace_endpoint)
        self.require_tls = settings.http.require_tls
        self.proxies = settings.proxy_networks()
        self.page_headers = page_headers or {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan: FastAPI opens and closes the context
            await self.app(scope, receive, send)
            return
        if self.tracer is not None:
            await self._traced(scope, receive, send)
            return
        await self._served(scope, receive, send)

    async def _traced(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The request as a server span, continuing a client's ``traceparent``."""
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanKind

        assert self.tracer is not None
        remote = tracing.parse_traceparent(header(scope, b"traceparent"))
        parent = trace.set_span_in_context(NonRecordingSpan(remote)) if remote else None
        span = self.tracer.start_span(
            f"HTTP {scope['method']}", context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        )  # fmt: skip
        status = 500

        async def seen(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with trace.use_span(span, end_on_exit=True):
            try:
                await self._served(scope, receive, seen)
            finally:
                span.set_attribute("http.response.status_code", status)
                route = getattr(scope.get("route"), "path", None)
                if route is None and (scope["method"], scope["path"]) in self.hot:
                    route = scope["path"]
                if route:
                    span.update_name(f"HTTP {scope['method']} {route}")

    async def _served(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        status = 500
        handler = self.hot.get((scope["method"], scope["path"]))
        secure = self._headers_for(scope)

        async def counted(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *secure]
            await send(message)

        try:
            await self._limited(scope, receive, counted, handler)
        finally:
            if handler is not None:
                route = scope["path"]
            else:  # FastAPI's route template, not the raw path: bounded label values
                route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests[(scope["method"], route, status)] += 1

    def _headers_for(self, scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        """Security headers of this response: the API's, or the hosted pages' (their CSP
        lets exactly their scripts run); HSTS only over TLS (a browser ignores it over
        plain HTTP, and it must never pin a host that has no certificate)."""
        page = HOSTED_PAGES.get(scope["path"])
        base = self.page_headers.get(page, API_HEADERS) if page else API_HEADERS
        return [*base, HSTS] if self._is_tls(scope) else base

    def _is_tls(self, scope: dict[str, Any]) -> bool:
        """Over TLS: to us, or to a trusted proxy that says so (X-Forwarded-Proto)."""
        if scope.get("scheme") == "https":
            return True
        if not self.proxies:
            return False
        client = scope.get("client")
        try:
            peer = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            return False
        if peer is None or not any(peer in net for net in self.proxies):
            return False
        return (header(scope, b"x-forwarded-proto") or "").strip().lower() == "https"

    async def _limited(self, scope: dict[str, Any], receive: Any, send: Any, handler: Any) -> None:
        if scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if self.require_tls and not self._is_tls(scope):
            await p.problem(p.TLS_REQUIRED)(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.per_ip.take(client[0] if client else "unknown")
        if wait:
            limited = p.problem(p.RATE_LIMITED, headers={"Retry-After": retry_after(wait)})
            await limited(scope, receive, send)
            return
        # Queues downstream are bounded, but every request is read and decoded before
        # it meets them: without this, memory grows with the open connections.
        size = declared_length(scope, self.body_limit)
        if self.requests >= self.max_requests or self.body_bytes + size > self.max_body_bytes:
            await p.problem(p.OVERLOADED)(scope, receive, send)
            return
        self.requests += 1
        self.body_bytes += size
        try:
            if (
                self.idempotency is not None
                and scope["method"] == "POST"
                and header_of(scope) is not None
            ):
                await self.idempotency(scope, receive, send, handler or self.app)
            else:
                await (handler or self.app)(scope, receive, send)
        finally:
            self.requests -= 1
            self.body_bytes -= size
