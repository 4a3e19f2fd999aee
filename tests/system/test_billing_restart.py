"""SIGKILL the node in the middle of a renewal run; after the restart every renewal is
paid exactly once: none charged twice, none missed.

The node runs as the real ``paynode run`` process tree (with its embedded PostgreSQL,
killed with it). A test clock makes every subscription due at once; its advance drains
them in small passes (``billing_batch``), and the kill lands while it does. The restarted
node's scheduler finishes the run: an attempt recorded in flight is moved again under the
same transfer id (the ledger answers a replay), a pass that never committed is claimed
again.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import psycopg
import pytest

from paynode.benchmarks.node_process import NodeProcess
from paynode.storage.database import libpq_url
from tests.support.asserts import signup
from tests.support.node import ADMIN_HEADERS, process_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SUBSCRIPTIONS = 200
PRICE = 700
FUNDED = 2 * PRICE  # a second charge would go through: nothing hides a double charge


def _count(url: str, sql: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_sigkill_mid_renewal_run_then_each_renewal_is_paid_once(tmp_path: Path, request) -> None:
    # Small passes, and only the advance drains (the scheduler's loop waits an hour).
    env = process_env(request, PAYNODE_BILLING_BATCH="2", PAYNODE_BILLING_INTERVAL_MS="3600000")
    node = NodeProcess(tmp_path / "data", shards=1, env=env)
    node.start()
    try:
        with httpx.Client(base_url=node.url, timeout=60) as http:
            _, merchant = signup(http, "merchant-kr")
            _, customer = signup(http, "customer-kr")
            body = {"id": "kr-mw", "currency": "USD"}
            assert http.post("/v1/accounts", json=body, headers=merchant).status_code == 201
            r = http.post("/v1/products", json={"id": "kr", "name": "Pro"}, headers=merchant)
            assert r.status_code == 201, r.text
            price = {"id": "kr-month", "product": "kr", "amount": PRICE, "currency": "USD",
                     "interval": "month", "payout_account_id": "kr-mw"}  # fmt: skip
            assert http.post("/v1/prices", json=price, headers=merchant).status_code == 201
            wallets = [f"kr-w{i}" for i in range(SUBSCRIPTIONS)]
            for w in wallets:
                body = {"id": w, "currency": "USD", "flags": ["debits_must_not_exceed_credits"]}
                assert http.post("/v1/accounts", json=body, headers=customer).status_code == 201
            assert http.post("/v1/accounts", json={"id": "kr-treasury", "currency": "USD"},
                             headers=ADMIN_HEADERS).status_code == 201  # fmt: skip
            funding = [{"id": f"kr-fund-{w}", "debit_account_id": "kr-treasury",
                        "credit_account_id": w, "amount": FUNDED, "currency": "USD"}
                       for w in wallets]  # fmt: skip
            r = http.post("/v1/transfers/batch", json={"transfers": funding},
                          headers=ADMIN_HEADERS)  # fmt: skip
            assert r.status_code == 200 and all("code" not in x for x in r.json()["results"])
            clock = {"id": "kr-clock", "frozen_time": "2026-05-01T00:00:00Z"}
            assert http.post("/v1/test-clocks", json=clock, headers=customer).status_code == 201
            for w in wallets:
                body = {"price": "kr-month", "customer_account": w, "trial_days": 1,
                        "test_clock": "kr-clock"}  # fmt: skip
                r = http.post("/v1/subscriptions", json=body, headers=customer)
                assert r.status_code == 201, r.text

        answered: list[int] = []

        def advance() -> None:  # drains every renewal before it answers, unless killed
            try:
                with httpx.Client(base_url=node.url, timeout=60) as http:
                    to = {"to": "2026-05-03T00:00:00Z"}
                    r = http.post("/v1/test-clocks/kr-clock/advance", json=to, headers=customer)
                answered.append(r.status_code)
            except httpx.HTTPError:
                pass

        paid_sql = "SELECT count(*) FROM billing_invoices WHERE status = 'paid'"
        runner = threading.Thread(target=advance, daemon=True)
        runner.start()
        wait_until(lambda: _count(node.database_url, paid_sql) >= SUBSCRIPTIONS // 10,
                   interval=0.005, what="the renewal run under way")  # fmt: skip
        node.kill()
        runner.join(timeout=60)
        assert not answered, "the kill must land mid-run (the advance answers when done)"
    finally:
        node.kill()
    # The restarted node's scheduler finishes the run (every 100 ms).
    node.env["PAYNODE_BILLING_INTERVAL_MS"] = "100"
    node.env["PAYNODE_BILLING_BATCH"] = "50"
    node.start()
    try:
        url = node.database_url
        wait_until(lambda: _count(url, paid_sql) == SUBSCRIPTIONS, timeout=120,
                   what="every renewal paid after the restart")  # fmt: skip
        # One transfer per invoice (attempt 0), each wallet debited once.
        assert _count(url, "SELECT count(*) FROM transfers WHERE id LIKE 'bill:%'") == SUBSCRIPTIONS
        assert _count(url, "SELECT count(DISTINCT debit_account_id) FROM transfers"
                           " WHERE id LIKE 'bill:%'") == SUBSCRIPTIONS  # fmt: skip
        assert _count(url, "SELECT count(*) FROM billing_invoices WHERE attempts <> 1") == 0
        # One paid version and one invoice.paid event per invoice, none twice.
        assert _count(url, "SELECT count(*) FROM billing_invoice_history"
                           " WHERE status = 'paid'") == SUBSCRIPTIONS  # fmt: skip
        assert _count(url, "SELECT count(*) FROM events WHERE type = 'invoice.paid'") == (
            SUBSCRIPTIONS)  # fmt: skip
        with httpx.Client(base_url=node.url, timeout=60, headers=ADMIN_HEADERS) as http:
            assert http.get("/v1/accounts/kr-mw").json()["balance"] == SUBSCRIPTIONS * PRICE
            for w in ("kr-w0", f"kr-w{SUBSCRIPTIONS // 2}", f"kr-w{SUBSCRIPTIONS - 1}"):
                assert http.get(f"/v1/accounts/{w}").json()["balance"] == FUNDED - PRICE
    finally:
        assert node.stop() == 0
