"""Tracing and the front's hardening, on one node.

Traces: one request followed from the HTTP edge through the micro-batch and the shard
to the group commit, exported by OTLP to a collector this test runs, and its trace id
in the problem body of a refused request. Hardening: security headers on every answer
(HSTS only over TLS), plain HTTP refused when TLS is required (a trusted proxy's
X-Forwarded-Proto counts), the hosted pages' CSP naming their own scripts, and the
inbound webhook log for operators.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.asserts import problem
from tests.support.node import ADMIN_HEADERS, wait_until
from tests.support.otlp import Collector

HTTPS = {"X-Forwarded-Proto": "https"}  # as a TLS-terminating proxy on 127.0.0.1 says


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.stop()  # after the node (fixtures end in reverse): it exports what is left first


def test_traced_request_and_hardened_edge(collector: Collector, make_node) -> None:
    node = make_node(shards=2, trace_endpoint=collector.url, require_tls=True,
                     trusted_proxies="127.0.0.1")  # fmt: skip
    _traced(node, collector)
    _hardened(node)


def _traced(node, collector: Collector) -> None:
    with httpx.Client(base_url=node.url, headers=ADMIN_HEADERS | HTTPS, timeout=30) as http:
        for account_id in ("tr-a", "tr-b"):
            r = http.post("/v1/accounts", json={"id": account_id, "currency": "USD"})
            assert r.status_code == 201, r.text
        # A client's own trace continues through the node.
        client_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        parent = f"00-{client_trace}-00f067aa0ba902b7-01"
        r = http.post("/v1/transfers", headers={"traceparent": parent},
                      json={"id": "tr-1", "debit_account_id": "tr-a", "credit_account_id": "tr-b",
                            "amount": 5, "currency": "USD"})  # fmt: skip
        assert r.status_code == 201, r.text
        # A refusal names its trace, for the client to quote.
        bad = http.post("/v1/transfers", json={"id": "tr-2", "debit_account_id": "tr-a",
                                               "credit_account_id": "tr-nope", "amount": 5,
                                               "currency": "USD"})  # fmt: skip
        body = problem(bad, 422, "account_not_found")
        assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"]), body

    wanted = ("HTTP POST /v1/transfers", "batch execute", "shard execute", "journal commit")
    trace_id = bytes.fromhex(client_trace)
    spans = wait_until(
        lambda: (t := collector.trace(trace_id)) and set(wanted) <= set(t) and t,
        timeout=30, what="the request's spans from the front and the shard",
    )  # fmt: skip
    http_span, batch, shard, commit = (spans[n] for n in wanted)
    # One chain: the edge's span, the batch it rode, the shard's call, the group commit.
    assert http_span.parent_span_id == bytes.fromhex("00f067aa0ba902b7")
    assert batch.parent_span_id == http_span.span_id
    assert shard.parent_span_id == batch.span_id
    assert commit.parent_span_id == shard.span_id
    services = {s for s, span in collector.spans if span.trace_id == trace_id}
    assert "paynode-front" in services and any(s.startswith("paynode-shard-") for s in services)
    # The refused request's trace is the one its problem body named.
    assert collector.trace(bytes.fromhex(body["trace_id"]))


def _hardened(node) -> None:
    with httpx.Client(base_url=node.url, headers=ADMIN_HEADERS, timeout=30) as plain:
        # Plain HTTP is refused when TLS is required; probes still answer.
        problem(plain.get("/v1/accounts/tr-a"), 403, "tls_required")
        assert plain.get("/health").status_code == 200
        r = plain.get("/v1/accounts/tr-a", headers=HTTPS)  # through the trusted proxy
        assert r.status_code == 200, r.text
        for header, value in (
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
        ):
            assert r.headers[header] == value, header  # fmt: skip
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["strict-transport-security"].startswith("max-age=")
        refused = plain.get("/v1/accounts/tr-a")
        assert "strict-transport-security" not in refused.headers  # never over plain HTTP
        assert refused.headers["x-frame-options"] == "DENY"  # the refusal is hardened too
        # The documentation page: its CSP allows exactly its inline script.
        page = plain.get("/docs", headers=HTTPS)
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        for script in re.findall(rb"<script>(.*?)</script>", page.content, re.DOTALL):
            digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
            assert f"'sha256-{digest}'" in csp
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        # The inbound webhook log: a refused (unsigned) event is listed for operators.
        r = plain.post("/v1/webhooks/banksim", headers=HTTPS, content=b'{"id":"x"}')
        assert r.status_code in (400, 401), r.text
        log = plain.get("/v1/webhooks/inbound", headers=HTTPS,
                        params={"provider": "banksim", "status": "refused"})  # fmt: skip
        assert log.status_code == 200, log.text
        first = log.json()["webhooks"][0]
        assert first["status"] == "refused" and first["reason"] and "payload" not in first
