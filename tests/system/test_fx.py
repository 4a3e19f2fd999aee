"""Multi-currency: rates, quotes that expire, and EUR -> USD conversions, over HTTP."""

from __future__ import annotations

import datetime as dt

import httpx
import psycopg

from paynode.storage.database import libpq_url
from tests.support.asserts import problem, signup
from tests.support.node import RunningNode

SHARED_NODE_SETTINGS: dict = {"fx_spread_bps": 50, "auth_rate_burst": 1_000}


def _user(node: RunningNode, name: str) -> httpx.Client:
    with node.anonymous() as anon:
        _, headers = signup(anon, name)
    return httpx.Client(base_url=node.url, headers=headers, timeout=30)


def _account(client: httpx.Client, account_id: str, currency: str) -> None:
    r = client.post("/v1/accounts", json={"id": account_id, "currency": currency,
                                          "flags": ["debits_must_not_exceed_credits"]})  # fmt: skip
    assert r.status_code == 201, r.text


def _balance(node: RunningNode, account_id: str) -> int:
    return node.http.get(f"/v1/accounts/{account_id}").json()["balance"]


def test_a_eur_to_usd_transfer_with_a_quote(node) -> None:
    pairs = [{"base": "EUR", "quote": "USD", "rate": "1.0845"},
             {"base": "USD", "quote": "JPY", "rate": "151.37"}]  # fmt: skip
    rates = {"rates": pairs, "source": "ecb"}
    r = node.http.put("/v1/fx/rates", json=rates)
    assert r.status_code == 200, r.text
    assert {(x["base"], x["quote"], x["rate"]) for x in r.json()["rates"]} >= {
        ("EUR", "USD", "1.0845"), ("USD", "JPY", "151.37")}  # fmt: skip
    eve = _user(node, "fx-eve")
    problem(eve.put("/v1/fx/rates", json=rates), 403, "insufficient_scope")
    # The node's FX position accounts: a user cannot take their names first.
    squat = eve.post("/v1/accounts", json={"id": "fx-usd", "currency": "USD"})
    problem(squat, 422, "account_id_reserved")

    ana = _user(node, "fx-ana")
    _account(ana, "ana-eur", "EUR")
    _account(ana, "ana-usd", "USD")
    node.http.post("/v1/accounts", json={"id": "fx-bank-eur", "currency": "EUR"})
    fund = {"id": "fx-fund", "debit_account_id": "fx-bank-eur", "credit_account_id": "ana-eur",
            "amount": 50_000, "currency": "EUR"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=fund).status_code == 201

    # 100.00 EUR at 1.0845 less 0.5%: 1.0790775 -> 107.90 USD (floored).
    q = ana.post("/v1/fx/quotes", json={"sell_currency": "EUR", "buy_currency": "USD",
                                         "sell_amount": 10_000})  # fmt: skip
    assert q.status_code == 201, q.text
    quote = q.json()
    assert (quote["sell_amount"], quote["buy_amount"]) == (10_000, 10_790)
    assert (quote["rate"], quote["mid_rate"]) == ("1.0790775", "1.0845")
    by_buy = ana.post("/v1/fx/quotes", json={"sell_currency": "USD", "buy_currency": "EUR",
                                              "buy_amount": 10_000}).json()  # fmt: skip
    assert by_buy["buy_amount"] == 10_000 and by_buy["sell_amount"] == 10_900  # 10,845 + spread

    conv = {"id": "conv-1", "quote_id": quote["id"], "debit_account_id": "ana-eur",
            "credit_account_id": "ana-usd"}  # fmt: skip
    r = ana.post("/v1/fx/conversions", json=conv)
    assert r.status_code == 201, r.text
    done = r.json()
    assert done["status"] == "completed"
    assert done["transfer_ids"] == ["fx:conv-1:sell", "fx:conv-1:buy"]
    assert (_balance(node, "ana-eur"), _balance(node, "ana-usd")) == (40_000, 10_790)
    assert _balance(node, "fx-eur") == 10_000 and _balance(node, "fx-usd") == -10_790
    again = ana.post("/v1/fx/conversions", json=conv)
    assert again.status_code == 200 and again.json() == done
    assert _balance(node, "ana-usd") == 10_790
    problem(ana.post("/v1/fx/conversions", json={**conv, "id": "conv-2"}), 409, "quote_used")

    # Refusals change nothing: another's quote, a wrong currency, an expired quote.
    theirs = {**conv, "id": "conv-3", "quote_id": by_buy["id"]}
    problem(eve.post("/v1/fx/conversions", json=theirs), 404, "quote_not_found")
    problem(ana.post("/v1/fx/conversions", json={**theirs, "debit_account_id": "ana-eur"}), 422,
            "currency_mismatch")  # fmt: skip
    late = ana.post("/v1/fx/quotes", json={"sell_currency": "EUR", "buy_currency": "USD",
                                            "sell_amount": 100}).json()  # fmt: skip
    with psycopg.connect(libpq_url(node.database_url), autocommit=True) as conn:
        conn.execute("UPDATE fx_quotes SET expires_at = now() - interval '1 second'"
                     " WHERE id = %s", (late["id"],))  # fmt: skip
    problem(ana.post("/v1/fx/conversions", json={**conv, "id": "conv-4", "quote_id": late["id"]}),
            409, "quote_expired")  # fmt: skip
    assert (_balance(node, "ana-eur"), _balance(node, "ana-usd")) == (40_000, 10_790)

    # Not enough EUR: the conversion fails whole, neither leg moves.
    big = ana.post("/v1/fx/quotes", json={"sell_currency": "EUR", "buy_currency": "USD",
                                           "sell_amount": 90_000}).json()  # fmt: skip
    failed = ana.post("/v1/fx/conversions", json={**conv, "id": "conv-5", "quote_id": big["id"]})
    assert (failed.status_code, failed.json()["status"]) == (201, "failed")
    assert failed.json()["failure_code"] == "insufficient_funds"
    assert (_balance(node, "ana-eur"), _balance(node, "ana-usd")) == (40_000, 10_790)
    assert _balance(node, "fx-usd") == -10_790

    # ISO 4217 exponents: 1.00 USD buys 150 JPY (0 decimals) at 151.37 less the spread.
    jpy = ana.post("/v1/fx/quotes", json={"sell_currency": "USD", "buy_currency": "JPY",
                                           "sell_amount": 100}).json()  # fmt: skip
    assert jpy["buy_amount"] == 150

    def quote(sell: str, buy: str) -> httpx.Response:
        body = {"sell_currency": sell, "buy_currency": buy, "sell_amount": 100}
        return ana.post("/v1/fx/quotes", json=body)

    problem(quote("EUR", "GBP"), 409, "rate_not_available")
    problem(quote("EUR", "XYZ"), 422, "currency_not_supported")
    three_days_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3)).isoformat()
    stale = {"rates": [{"base": "GBP", "quote": "USD", "rate": "1.27", "as_of": three_days_ago}]}
    assert node.http.put("/v1/fx/rates", json=stale).status_code == 200
    problem(quote("GBP", "USD"), 409, "rate_stale")

    # Analytics: the legs under rail fx, and the trade's volume and P&L (the spread kept,
    # in cents: 100.00 EUR at mid buy 108.45 USD, the customer got 107.90).
    import ray

    from paynode.storage.analytics import connect_views

    ray.get(node.analytics.sync.remote(), timeout=60)
    con = connect_views(node.settings.analytics_path())
    try:
        legs = con.execute("SELECT transfer_id, rail FROM transfers WHERE transfer_id LIKE"
                           " 'fx:conv-%' ORDER BY ALL").fetchall()  # fmt: skip
        assert legs == [("fx:conv-1:buy", "fx"), ("fx:conv-1:sell", "fx")]
        volume = con.execute(
            "SELECT pair, conversions, sold, bought, pnl FROM fx_volume"
        ).fetchall()
        assert volume == [("EUR/USD", 1, 10_000, 10_790, 55)]
    finally:
        con.close()
    ana.close()
    eve.close()
