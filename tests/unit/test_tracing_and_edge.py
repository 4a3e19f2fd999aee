"""Trace context parsing, log lines carrying the trace, and who may say a request came
over TLS: pure parts of tracing and the edge, without a node."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from paynode.actors import tracing
from paynode.api.edge import Edge
from paynode.api.metrics import FrontMetrics
from paynode.domain.settings import Settings, from_env
from paynode.node import logs


def test_traceparent_round_trip_and_refusals() -> None:
    value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ctx = tracing.parse_traceparent(value)
    assert ctx is not None and ctx.is_remote
    assert tracing.traceparent(ctx) == value
    for bad in ("", "garbage", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-zzzzzzzzzzzzzzzz-01", None):  # fmt: skip
        assert tracing.parse_traceparent(bad) is None


def test_tracing_off_costs_no_tracer() -> None:
    assert tracing.tracer("paynode-front", "") is None


def test_json_log_lines_carry_the_running_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("json", stream=stream)
        monkeypatch.setattr(tracing, "_on", True)
        span = TracerProvider().get_tracer("t").start_span("request")
        with trace.use_span(span, end_on_exit=True):
            logging.getLogger("paynode.test").info("inside %d", 1)
        logging.getLogger("paynode.test").warning("outside")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    inside, outside = (json.loads(x) for x in stream.getvalue().splitlines())
    ctx = span.get_span_context()
    assert inside["msg"] == "inside 1" and inside["level"] == "INFO"
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert "trace_id" not in outside and outside["logger"] == "paynode.test"


async def _app(scope: dict, receive: object, send: object) -> None:
    return None


def test_only_a_trusted_proxy_may_say_https() -> None:
    edge = Edge(_app, {}, Settings(), FrontMetrics())
    forwarded = [(b"x-forwarded-proto", b"https")]
    assert edge._is_tls({"scheme": "https", "client": ("10.0.0.9", 1)})
    assert not edge._is_tls({"scheme": "http", "client": ("10.0.0.9", 1), "headers": forwarded})
    trusting = Edge(_app, {}, from_env(trusted_proxies="10.0.0.0/8"), FrontMetrics())
    assert trusting._is_tls({"scheme": "http", "client": ("10.1.2.3", 1), "headers": forwarded})
    assert not trusting._is_tls({"scheme": "http", "client": ("192.168.0.1", 1),
                                 "headers": forwarded})  # fmt: skip
    assert not trusting._is_tls({"scheme": "http", "client": ("10.1.2.3", 1), "headers": []})
    assert not trusting._is_tls({"scheme": "http", "client": None, "headers": forwarded})
