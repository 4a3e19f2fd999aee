"""Cards end to end: payment methods, card payments, 3-D Secure, refunds, settlement.

The node charges cards through the simulated processor (actors/card_sim.py), which
knows Stripe's test tokens and signs its settlement and dispute events.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

from paynode.domain.notify.signature import HEADER, header
from paynode.storage import payments
from paynode.storage.database import async_engine, libpq_url
from tests.support.accounts import verified_user, wallet
from tests.support.asserts import problem, signup
from tests.support.bank import link_and_verify
from tests.support.node import RunningNode, wait_until

SHARED_NODE_SETTINGS: dict = {
    "auth_rate_burst": 1_000,
    "bank_sim_delay_s": 0.1,
    "ach_cutoff_interval_ms": 0,
    "card_recover_interval_ms": 200,
    "card_sim_dispute_delay_ms": 100,
}
CLEARING = "card-clearing-usd"


def _fee(amount: int) -> int:  # card.fee_fixed 30 + card.fee_bps 290, rounded up
    return 30 + (amount * 290 + 9_999) // 10_000


def _user(node: RunningNode, name: str) -> dict[str, str]:
    return verified_user(node, name)


def _wallet(node: RunningNode, user: dict, account_id: str, funded: int = 0) -> None:
    wallet(node, user, account_id, funded, "treasury-cards")


def _card(node: RunningNode, user: dict, token: str = "tok_visa") -> dict:
    r = node.http.post("/v1/payment-methods", json={"type": "card", "token": token}, headers=user)
    assert r.status_code == 201, r.text
    return r.json()


def _balance(node: RunningNode, account_id: str) -> int:
    r = node.http.get(f"/v1/accounts/{account_id}")
    if r.status_code == 404 and account_id == CLEARING:
        return 0  # made at the first card movement
    return r.json()["balance"]


def _pay(node: RunningNode, user: dict, pay_id: str, pm: str, to: str, amount: int,
         **extra: object) -> httpx.Response:  # fmt: skip
    body = {"id": pay_id, "rail": "card", "payment_method": pm, "to": to, "amount": amount,
            "currency": "USD", **extra}  # fmt: skip
    return node.http.post("/v1/payments", json=body, headers=user)


def test_card_payment_is_authorized_captured_and_receipted(node: RunningNode) -> None:
    alice = _user(node, "alice-card")
    _wallet(node, alice, "alice-card-w")
    pm = _card(node, alice)
    assert pm["type"] == "card" and pm["id"].startswith("pm_")
    assert pm["card"] == {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034}
    assert "tok_visa" not in json.dumps(pm)
    clearing_before = _balance(node, CLEARING)
    r = _pay(node, alice, "card-1", pm["id"], "alice-card-w", 10_000, memo="top-up")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["rail"] == "card" and body["status"] == "completed", body
    assert body["from"] == pm["id"] and body["debit_account_id"] == CLEARING
    assert [h["status"] for h in body["history"]] == ["processing", "completed"]
    card = body["card"]
    assert card["status"] == "captured" and card["brand"] == "visa" and card["last4"] == "4242"
    assert card["processor_fee"] == _fee(10_000) and card["receipt_number"]
    assert body["risk"] is not None  # scored like every user payment
    # The wallet got the amount and paid the fee; the clearing account owes it.
    assert _balance(node, "alice-card-w") == 10_000 - _fee(10_000)
    assert _balance(node, CLEARING) == clearing_before - 10_000
    receipt = node.http.get("/v1/payments/card-1/receipt", headers=alice).json()
    assert receipt["receipt_number"] == card["receipt_number"] and receipt["amount"] == 10_000
    assert receipt["card_last4"] == "4242" and receipt["memo"] == "top-up"
    # The same payment again is a replay; the same id with another body is refused.
    again = _pay(node, alice, "card-1", pm["id"], "alice-card-w", 10_000, memo="top-up")
    assert again.status_code == 200 and again.json()["status"] == "completed"
    problem(_pay(node, alice, "card-1", pm["id"], "alice-card-w", 9_000, memo="top-up"), 409,
            "exists_with_different_fields")  # fmt: skip
    assert _balance(node, "alice-card-w") == 10_000 - _fee(10_000)
    # Paying someone else's wallet by card works too (the payee pays the fee).
    bob = _user(node, "bob-card-payee")
    _wallet(node, bob, "bob-card-w")
    r = _pay(node, alice, "card-2", pm["id"], "bob-card-w", 2_500)
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text
    assert _balance(node, "bob-card-w") == 2_500 - _fee(2_500)


def test_declined_cards_fail_with_their_code_and_move_nothing(node: RunningNode) -> None:
    carol = _user(node, "carol-card")
    _wallet(node, carol, "carol-card-w")
    clearing_before = _balance(node, CLEARING)
    for i, (token, code) in enumerate([
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_chargeDeclinedExpiredCard", "expired_card"),
    ]):  # fmt: skip
        pm = _card(node, carol, token)
        r = _pay(node, carol, f"card-decl-{i}", pm["id"], "carol-card-w", 1_000)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "failed" and body["failure_code"] == code, body
        assert body["card"]["status"] == "declined" and body["card"]["decline_code"] == code
        problem(node.http.get(f"/v1/payments/card-decl-{i}/receipt", headers=carol), 409,
                "receipt_not_available")  # fmt: skip
    assert _balance(node, "carol-card-w") == 0
    assert _balance(node, CLEARING) == clearing_before


def test_three_d_secure_requires_action_then_confirm(node: RunningNode) -> None:
    dave = _user(node, "dave-card")
    _wallet(node, dave, "dave-card-w")
    pm = _card(node, dave, "tok_threeDSecureRequired")
    r = _pay(node, dave, "card-3ds-1", pm["id"], "dave-card-w", 5_000)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "requires_action" and body["card"]["status"] == "requires_action"
    assert body["next_action"]["type"] == "three_d_secure"
    assert body["next_action"]["confirm_url"] == "/v1/payments/card-3ds-1/confirm-card"
    assert _balance(node, "dave-card-w") == 0  # nothing moves before the cardholder does
    # Someone else cannot confirm it (it does not exist for them).
    eve = _user(node, "eve-card-3ds")
    problem(node.http.post("/v1/payments/card-3ds-1/confirm-card", json={}, headers=eve), 404,
            "payment_not_found")  # fmt: skip
    r = node.http.post("/v1/payments/card-3ds-1/confirm-card",
                       json={"three_d_secure": "succeeded"}, headers=dave)  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    assert [h["status"] for h in r.json()["history"]] == [
        "processing", "requires_action", "processing", "completed"]  # fmt: skip
    assert _balance(node, "dave-card-w") == 5_000 - _fee(5_000)
    problem(node.http.post("/v1/payments/card-3ds-1/confirm-card", json={}, headers=dave), 409,
            "no_card_action_required")  # fmt: skip
    # A failed challenge fails the payment.
    r = _pay(node, dave, "card-3ds-2", pm["id"], "dave-card-w", 5_000)
    assert r.json()["status"] == "requires_action"
    r = node.http.post("/v1/payments/card-3ds-2/confirm-card",
                       json={"three_d_secure": "failed"}, headers=dave)  # fmt: skip
    body = r.json()
    assert body["status"] == "failed" and body["failure_code"] == "authentication_failed", body
    assert _balance(node, "dave-card-w") == 5_000 - _fee(5_000)


def test_partial_and_full_refunds_never_beyond_the_capture(node: RunningNode) -> None:
    fay = _user(node, "fay-card")
    _wallet(node, fay, "fay-card-w", funded=1_000)  # covers the fee when all is refunded
    pm = _card(node, fay, "tok_mastercard")
    assert _pay(node, fay, "card-ref-1", pm["id"], "fay-card-w", 8_000).json()["status"] == (
        "completed")  # fmt: skip
    clearing = _balance(node, CLEARING)
    r = node.http.post("/v1/payments/card-ref-1/refunds", json={"id": "cref-1", "amount": 3_000},
                       headers=fay)  # fmt: skip
    assert r.status_code == 201 and r.json()["status"] == "completed", r.text
    problem(node.http.post("/v1/payments/card-ref-1/refunds",
                           json={"id": "cref-2", "amount": 5_001}, headers=fay),
            422, "refund_exceeds_payment")  # fmt: skip
    r = node.http.post("/v1/payments/card-ref-1/refunds", json={"id": "cref-3"}, headers=fay)
    assert r.status_code == 201 and r.json()["amount"] == 5_000, r.text
    again = node.http.post("/v1/payments/card-ref-1/refunds", json={"id": "cref-3"}, headers=fay)
    assert again.status_code == 200  # a replay
    problem(node.http.post("/v1/payments/card-ref-1/refunds",
                           json={"id": "cref-4", "amount": 1}, headers=fay),
            422, "refund_exceeds_payment")  # fmt: skip
    pay = node.http.get("/v1/payments/card-ref-1", headers=fay).json()
    assert pay["refunded_amount"] == 8_000
    # The fee is the processor's: the wallet keeps paying it.
    assert _balance(node, "fay-card-w") == 1_000 - _fee(8_000)
    assert _balance(node, CLEARING) == clearing + 8_000
    receipt = node.http.get("/v1/payments/card-ref-1/receipt", headers=fay).json()
    assert receipt["refunded_amount"] == 8_000 and len(receipt["refunds"]) == 2


def test_a_refund_left_processing_is_finished_by_the_front(node: RunningNode) -> None:
    """What a request killed right after reserving a refund leaves (the refund processing,
    no money moved): the front's recovery loop moves it back to the card and finishes it,
    without the client asking again."""
    gil = _user(node, "gil-card")
    _wallet(node, gil, "gil-card-w", funded=1_000)
    pm = _card(node, gil, "tok_visa")
    assert _pay(node, gil, "card-stuck-1", pm["id"], "gil-card-w", 4_000).json()["status"] == (
        "completed")  # fmt: skip
    wallet_before, clearing = _balance(node, "gil-card-w"), _balance(node, CLEARING)

    async def reserve() -> None:  # the request's first step, then it "dies"
        engine = async_engine(node.database_url, 1)
        try:
            async with engine.begin() as conn:
                _, new = await payments.reserve_refund(conn, "card-stuck-1", "cref-stuck", 1_500)
                assert new
                # Old enough for recovery (a live request would be done by now).
                await conn.execute(sa.text("UPDATE refunds SET updated_at = now() - interval"
                                           " '1 hour' WHERE id = 'cref-stuck'"))  # fmt: skip
        finally:
            await engine.dispose()

    asyncio.run(reserve())

    def refund() -> dict:
        return next(r for r in node.http.get("/v1/payments/card-stuck-1", headers=gil).json()[
            "refunds"] if r["id"] == "cref-stuck")  # fmt: skip

    assert wait_until(lambda: refund()["status"] == "completed", what="the refund finished")
    assert _balance(node, "gil-card-w") == wallet_before - 1_500
    assert _balance(node, CLEARING) == clearing + 1_500
    with psycopg.connect(libpq_url(node.database_url)) as conn:  # the processor took it
        rows = conn.execute("SELECT amount FROM card_refunds WHERE refund_id = 'cref-stuck'")
        assert rows.fetchall() == [(1_500,)]


def test_payment_methods_are_their_owners_and_bad_input_changes_nothing(
    node: RunningNode,
) -> None:
    gus = _user(node, "gus-card")
    hal = _user(node, "hal-card")
    _wallet(node, gus, "gus-card-w")
    pm = _card(node, gus)
    bank = link_and_verify(node, gus, "000123459999")
    listed = node.http.get("/v1/payment-methods", headers=gus).json()["data"]
    assert [(m["id"], m["type"]) for m in listed] == [(pm["id"], "card"), (bank, "bank_account")]
    assert node.http.get("/v1/payment-methods", headers=hal).json()["data"] == []
    # Someone else's payment method does not exist for them.
    for r in (
        node.http.get(f"/v1/payment-methods/{pm['id']}", headers=hal),
        node.http.delete(f"/v1/payment-methods/{pm['id']}", headers=hal),
        node.http.post(f"/v1/payment-methods/{pm['id']}/default", headers=hal),
        node.http.get(f"/v1/payment-methods/{bank}", headers=hal),
        _pay(node, hal, "card-foreign", pm["id"], "gus-card-w", 1_000),
    ):
        problem(r, 404, "payment_method_not_found")
    problem(node.http.get("/v1/payments/card-foreign", headers=gus), 404, "payment_not_found")
    # Bad input: nothing is attached or paid.
    problem(node.http.post("/v1/payment-methods", json={"type": "card", "token": "tok_nope"},
                           headers=gus), 422, "invalid_card_token")  # fmt: skip
    problem(node.http.post("/v1/payment-methods", json={"type": "card"}, headers=gus), 422,
            "missing_field")  # fmt: skip
    for i, amount in enumerate([-100, 0, 10.5, "100"]):
        r = _pay(node, gus, f"card-bad-{i}", pm["id"], "gus-card-w", amount)  # type: ignore[arg-type]
        assert r.status_code == 422, r.text
        problem(node.http.get(f"/v1/payments/card-bad-{i}", headers=gus), 404,
                "payment_not_found")  # fmt: skip
    problem(_pay(node, gus, "card-bad-ccy", pm["id"], "gus-card-w", 1_000, currency="EUR"),
            422, "currency_mismatch")  # fmt: skip
    problem(_pay(node, gus, "card-bad-min", pm["id"], "gus-card-w", 10), 422, "invalid_field")
    problem(_pay(node, gus, "card-bad-to", pm["id"], "no-such-wallet", 1_000), 422,
            "account_not_found")  # fmt: skip
    problem(_pay(node, gus, "card-bad-ba", bank, "gus-card-w", 1_000), 422,
            "payment_method_not_chargeable")  # fmt: skip
    problem(node.http.post("/v1/payments", headers=gus, json={
        "id": "card-bad-nopm", "rail": "card", "to": "gus-card-w", "amount": 1_000,
        "currency": "USD"}), 422, "missing_field")  # fmt: skip
    assert node.http.get("/v1/payment-methods", headers=gus).json()["data"] == listed
    assert _balance(node, "gus-card-w") == 0
    # Default, then detach: a detached card is gone (and no payment uses it).
    r = node.http.post(f"/v1/payment-methods/{bank}/default", headers=gus)
    assert r.status_code == 200 and r.json()["is_default"], r.text
    r = node.http.post(f"/v1/payment-methods/{pm['id']}/default", headers=gus)
    assert r.json()["is_default"]
    listed = node.http.get("/v1/payment-methods", headers=gus).json()["data"]
    assert [m["is_default"] for m in listed] == [True, False]
    problem(node.http.delete(f"/v1/payment-methods/{bank}", headers=gus), 409,
            "payment_method_not_detachable")  # fmt: skip
    r = node.http.delete(f"/v1/payment-methods/{pm['id']}", headers=gus)
    assert r.status_code == 200, r.text
    problem(node.http.get(f"/v1/payment-methods/{pm['id']}", headers=gus), 404,
            "payment_method_not_found")  # fmt: skip
    problem(_pay(node, gus, "card-detached", pm["id"], "gus-card-w", 1_000), 404,
            "payment_method_not_found")  # fmt: skip


def test_forged_processor_webhook_is_refused(node: RunningNode) -> None:
    before = node.http.get("/v1/cards/settlements").json()["data"]
    body = json.dumps({"id": f"forged-{time.time_ns()}", "type": "card.settlement",
                       "created": int(time.time()), "data": {"id": "st_forged", "lines": [
                           {"kind": "charge", "ref": "ch_x", "payment_id": "x",
                            "amount": 1_000_000, "fee": 0}]}}).encode()  # fmt: skip
    with httpx.Client(base_url=node.url, timeout=30) as anon:
        for sig in ("t=1,v1=00", header(["not-the-processor-secret"], body)):
            bad = anon.post("/v1/webhooks/cardsim", content=body, headers={HEADER: sig})
            assert bad.status_code in (400, 401), bad.text
    assert node.http.get("/v1/cards/settlements").json()["data"] == before


def test_settlement_reconciles_the_clearing_account(node: RunningNode) -> None:
    ida = _user(node, "ida-card")
    _wallet(node, ida, "ida-card-w")
    pm = _card(node, ida, "tok_createDispute")
    r = _pay(node, ida, "card-settle-1", pm["id"], "ida-card-w", 20_000)
    assert r.json()["status"] == "completed", r.text
    # The dispute event arrives later, signed; it is kept on the payment (and opens a
    # dispute: test_disputes_are_held_answered_and_settled).
    wait_until(lambda: node.http.get("/v1/payments/card-settle-1", headers=ida)
               .json()["card"]["events"] == ["charge.dispute.created"],
               timeout=30, what="dispute event")  # fmt: skip
    settlement = node.http.post("/v1/card-sim/settle").json()["settlement_id"]
    assert settlement

    def settled() -> dict | None:
        data = node.http.get("/v1/cards/settlements").json()["data"]
        return next((s for s in data if s["id"] == settlement), None)

    batch = wait_until(settled, timeout=30, what="settlement recorded")
    assert batch["status"] == "matched" and batch["differences"] == [], batch
    assert batch["gross"] == batch["expected_gross"] and batch["gross"] >= 20_000
    assert batch["net"] == batch["gross"] - batch["refunds"] - batch["fees"]
    report = node.http.get("/v1/cards/clearing").json()
    assert report["balanced"] and report["expected_outstanding"] == 0, report
    assert node.http.get(f"/v1/accounts/{CLEARING}").json()["balance"] == 0
    # Nothing new since: the simulator has nothing to settle.
    assert node.http.post("/v1/card-sim/settle").json()["settlement_id"] == ""


def test_a_risky_card_payment_steps_up_with_a_one_time_code(node: RunningNode) -> None:
    with node.anonymous() as anon:
        _, jan = signup(anon, "jan-card")  # KYC not verified (+40), a new payee (+10): HIGH
    kim = _user(node, "kim-card-payee")
    _wallet(node, kim, "kim-card-w")
    pm = _card(node, jan)
    r = _pay(node, jan, "card-otp-1", pm["id"], "kim-card-w", 1_000)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "requires_action" and body["next_action"]["type"] == "confirm_otp"
    assert body["card"]["status"] == "authorizing"  # the processor has not seen it yet
    mailbox = Path(node.settings.data_dir) / "email-sink.jsonl"
    mail = wait_until(lambda: mailbox.exists() and [
        m for m in map(json.loads, mailbox.read_text().splitlines()) if "card-otp-1" in m["text"]
    ], what="the code by email")[0]  # fmt: skip
    code = re.search(r"code is (\d{6})\.", mail["text"]).group(1)  # type: ignore[union-attr]
    problem(node.http.post("/v1/payments/card-otp-1/confirm-card", json={}, headers=jan), 409,
            "no_card_action_required")  # fmt: skip
    ok = node.http.post("/v1/payments/card-otp-1/confirm", json={"otp": code}, headers=jan)
    assert ok.status_code == 200 and ok.json()["status"] == "completed", ok.text
    assert _balance(node, "kim-card-w") == 1_000 - _fee(1_000)


def _dispute_of(node: RunningNode, user: dict, payment_id: str) -> dict:
    def opened() -> dict | None:
        found = node.http.get("/v1/disputes", headers=user).json()["disputes"]
        return next((d for d in found if d["payment_id"] == payment_id), None)

    return wait_until(opened, timeout=30, what=f"a dispute of {payment_id}")


def _available(node: RunningNode, account_id: str) -> int:
    return node.http.get(f"/v1/accounts/{account_id}").json()["available"]


def test_disputes_are_held_answered_and_settled(node: RunningNode) -> None:
    jo = _user(node, "jo-card")
    other = _user(node, "kim-card")
    _wallet(node, jo, "jo-card-w", funded=50_000)
    pm = _card(node, jo, "tok_createDispute")
    received = 50_000 + 2 * (10_000 - _fee(10_000))
    for pid in ("card-dispute-1", "card-dispute-2"):
        assert _pay(node, jo, pid, pm["id"], "jo-card-w", 10_000).json()["status"] == "completed"
    # Opened: the disputed amount is held out of the wallet at once.
    won = _dispute_of(node, jo, "card-dispute-1")
    lost = _dispute_of(node, jo, "card-dispute-2")
    assert won["status"] == "needs_response" and won["held"] and won["amount"] == 10_000
    assert wait_until(lambda: _available(node, "jo-card-w") == received - 20_000,
                      what="both holds")  # fmt: skip
    problem(node.http.get(f"/v1/disputes/{won['id']}", headers=other), 404, "dispute_not_found")
    problem(node.http.post(f"/v1/disputes/{won['id']}/accept", headers=other), 404,
            "dispute_not_found")  # fmt: skip
    assert node.http.get("/v1/disputes", headers=other).json()["disputes"] == []
    problem(node.http.post(f"/v1/disputes/{won['id']}/evidence", headers=jo, json={"text": ""}),
            422, "invalid_field")  # fmt: skip
    # Evidence goes to the issuer; it wins. Acceptance loses the other.
    r = node.http.post(f"/v1/disputes/{won['id']}/evidence", headers=jo,
                       json={"text": "winning_evidence: signed delivery receipt"})  # fmt: skip
    assert r.status_code == 200 and r.json()["status"] == "under_review", r.text
    problem(node.http.post(f"/v1/disputes/{won['id']}/evidence", headers=jo,
                           json={"text": "more"}), 409, "dispute_not_open")  # fmt: skip
    r = node.http.post(f"/v1/disputes/{lost['id']}/accept", headers=jo)
    assert r.status_code == 200, r.text

    def status(d: dict) -> str:
        return node.http.get(f"/v1/disputes/{d['id']}", headers=jo).json()["status"]

    wait_until(lambda: status(won) == "won" and status(lost) == "lost", timeout=30,
               what="the issuer's decisions")  # fmt: skip
    wallet = node.http.get("/v1/accounts/jo-card-w").json()
    # Won: the hold released. Lost: the amount gone to the cardholder.
    assert wallet["balance"] == wallet["available"] == received - 10_000
    assert wallet["debits_pending"] == 0
    assert _balance(node, "card-disputes-usd") >= 10_000
    kinds = [e["type"] for e in node.http.get("/v1/events", headers=jo).json()["events"]
             if e["type"].startswith("charge.dispute.")]  # fmt: skip
    assert kinds.count("charge.dispute.created") == 2 and kinds.count("charge.dispute.closed") == 2
    assert "charge.dispute.updated" in kinds
    problem(node.http.post(f"/v1/disputes/{lost['id']}/accept", headers=jo), 409,
            "dispute_not_open")  # fmt: skip
