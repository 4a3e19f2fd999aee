"""Distributed tracing: OpenTelemetry spans, exported by OTLP/HTTP, or nothing at all.

Tracing is on in a process when it is given an OTLP endpoint (``trace.endpoint``,
which ``OTEL_EXPORTER_OTLP_ENDPOINT`` sets). Off, :func:`tracer` is ``None`` and
the hot path pays one ``is None`` test per request, batch and commit: no span
objects, no context lookups.

On, each process (a front, a shard) has its own ``TracerProvider`` (never the
global one: a test process may run several nodes) exporting in the background
with a ``BatchSpanProcessor``. A request's span context crosses to the shard as
a W3C ``traceparent`` string in the shard call. The spans:

- ``HTTP <method> <route>`` (the front's edge, a server span; continues a client's
  ``traceparent``),
- ``batch execute`` (the micro-batch carrying the requests to one shard: the first
  request is its parent, the others are links),
- ``shard execute`` (the shard deciding the batch; remote child of the batch),
- ``journal commit`` (the group commit making it durable: the first job's span is
  its parent, the others are links).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Span, SpanContext, Tracer

log = logging.getLogger("paynode.tracing")

EXPORT_INTERVAL_MS = 500  # how long a finished span waits for its export batch
MAX_QUEUED_SPANS = 8192  # beyond, spans are dropped (counted by the SDK), never blocking
_providers: dict[str, TracerProvider] = {}
_on = False  # a tracer exists in this process (what problem bodies and log lines ask)


def enabled() -> bool:
    return _on


def endpoint_from_env() -> str:
    """The OTLP endpoint the environment names ("" = tracing off)."""
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")


def tracer(service: str, endpoint: str) -> Tracer | None:
    """This process's tracer for ``service`` exporting to ``endpoint`` (the collector's
    base URL; spans go to ``<endpoint>/v1/traces``), or None when ``endpoint`` is ""."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    key = f"{service} {endpoint}"
    provider = _providers.get(key)
    if provider is None:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=10)
        provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=MAX_QUEUED_SPANS, schedule_delay_millis=EXPORT_INTERVAL_MS,
        ))  # fmt: skip
        _providers[key] = provider
        global _on
        _on = True
        log.info("tracing: %s exports spans by OTLP", service)
    return provider.get_tracer("paynode")


def shutdown(endpoint: str) -> None:
    """Export what is queued for ``endpoint`` and stop exporting there (a stopping front
    or shard); a tracer asked for again starts anew."""
    for key in [k for k in _providers if k.endswith(f" {endpoint}")]:
        _providers.pop(key).shutdown()


def current() -> SpanContext | None:
    """The span context of the running request, if a span is recording."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    return ctx if ctx.is_valid else None


def traceparent(ctx: SpanContext) -> str:
    """W3C ``traceparent`` of ``ctx`` (what crosses to a shard)."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The remote span context of a W3C ``traceparent``, or None if it is not one."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    from opentelemetry.trace import SpanContext, TraceFlags

    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))


def start_linked(t: Tracer, name: str, contexts: list[SpanContext | None]) -> Span:
    """A span for work done for several callers: the first caller's span is its parent
    (a single request's trace runs through), the others are links."""
    from opentelemetry import trace
    from opentelemetry.trace import Link, NonRecordingSpan

    found = [c for c in contexts if c is not None]
    parent = trace.set_span_in_context(NonRecordingSpan(found[0])) if found else None
    links: list[Link] = [Link(c) for c in found[1:]]
    return t.start_span(
        name, context=parent, links=links, attributes={"paynode.callers": len(contexts)}
    )


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the running span, if tracing is on and one runs."""
    if not _on:
        return None
    ctx = current()
    return None if ctx is None else (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
