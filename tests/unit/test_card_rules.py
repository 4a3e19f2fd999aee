"""The pure card rules: ids, fees, bounds, receipt numbers and settlement reconciliation."""

from __future__ import annotations

from paynode.domain.rails import card_rules as rules
from paynode.domain.rails.card_rules import Expected, Settlement, SettlementLine


def test_ids_derive_from_the_payment_and_never_collide() -> None:
    ids = [rules.hold_transfer_id("p1"), rules.post_transfer_id("p1"),
           rules.void_transfer_id("p1"), rules.fee_transfer_id("p1"),
           *rules.settlement_transfer_ids("p1")]  # fmt: skip
    assert len(set(ids)) == len(ids)
    assert rules.charge_ref("p1") == rules.charge_ref("p1") != rules.charge_ref("p2")


def test_fee_rounds_up_in_integers() -> None:
    assert rules.fee(10_000, 30, 290) == 320
    assert rules.fee(1, 30, 290) == 31  # 0.029 of a cent rounds up to a whole one
    assert rules.fee(100, 0, 0) == 0


def test_chargeable_bounds_and_the_fee() -> None:
    assert rules.chargeable(50, 50, 999_999_99, 30, 290)
    assert not rules.chargeable(49, 50, 999_999_99, 30, 290)
    assert not rules.chargeable(1_000_000_00, 50, 999_999_99, 30, 290)
    assert not rules.chargeable(30, 1, 999_999_99, 30, 0)  # the fee would take it all


def test_receipt_number() -> None:
    assert rules.receipt_number("20261204", 42) == "20261204-000042"


def test_reconcile_matches_and_names_differences() -> None:
    batch = Settlement("st_1", [
        SettlementLine("charge", "ch_a", "pa", 10_000, 320),
        SettlementLine("charge", "ch_b", "pb", 5_000, 175),
        SettlementLine("refund", "re_1", "pa", 3_000),
    ])  # fmt: skip
    ours = {"ch_a": Expected(10_000, 320), "ch_b": Expected(5_000, 175), "re_1": Expected(3_000)}
    r = rules.reconcile(batch, ours)
    assert (r.gross, r.refunds, r.fees, r.net) == (15_000, 3_000, 495, 11_505)
    assert (r.expected_gross, r.expected_refunds, r.expected_fees) == (15_000, 3_000, 495)
    assert r.differences == []
    off = rules.reconcile(batch, {"ch_a": Expected(9_000, 320), "re_1": Expected(3_000)})
    assert [d["problem"] for d in off.differences] == ["amount_mismatch", "unknown_to_us"]
    dup = rules.reconcile(Settlement("st_2", batch.lines + batch.lines[:1]), ours)
    assert [d["problem"] for d in dup.differences] == ["duplicate_line"]
    assert dup.gross == 15_000


def test_every_test_token_has_a_known_behaviour() -> None:
    assert {"approve", "3ds", "dispute"} | (
        rules.DECLINE_CODES - {rules.AUTHENTICATION_FAILED}
    ) == rules.BEHAVIOURS
