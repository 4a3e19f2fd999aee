"""The outermost layer of the HTTP front, as one plain ASGI callable.

For every request, in this order: count it by route and status (``/metrics``),
charge the client address's token bucket (429), bound the requests being
served and their declared bodies (503 ``overloaded``, before the body is
read), then hand it to the hot routes (``api/transfers.py``) or to FastAPI,
through ``api/idempotency.py`` for a POST carrying an ``Idempotency-Key``.
``/health`` and ``/ready`` are never limited: probes must see the truth.

One layer instead of three middlewares: each ASGI layer costs an await and a
closure per request, and these checks sit on the path of every transfer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from paynode.api import problems as p
from paynode.api.auth.ratelimit import TokenBuckets, retry_after
from paynode.api.idempotency import Idempotency, header_of
from paynode.api.metrics import FrontMetrics
from paynode.domain.settings import Settings

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
PUBLIC_PATHS = frozenset({"/health", "/ready"})


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
    ) -> None:
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

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan: FastAPI opens and closes the context
            await self.app(scope, receive, send)
            return
        status = 500
        handler = self.hot.get((scope["method"], scope["path"]))

        async def counted(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._limited(scope, receive, counted, handler)
        finally:
            if handler is not None:
                route = scope["path"]
            else:  # FastAPI's route template, not the raw path: bounded label values
                route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests[(scope["method"], route, status)] += 1

    async def _limited(self, scope: dict[str, Any], receive: Any, send: Any, handler: Any) -> None:
        if scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
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
