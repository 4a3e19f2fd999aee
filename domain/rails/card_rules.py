"""Pure card rules: the ledger's moves, the fee, the processor's answers, settlement.

A card payment brings money INTO a wallet from a card, through the operator's
processor clearing account ``card-clearing-usd`` (what the processor owes us):

* **authorization** (the processor approved): a pending transfer
  ``card-clearing-usd -> wallet`` (:func:`hold_transfer_id`); not yet available.
* **capture**: the hold is posted, linked with the **fee** ``wallet ->
  card-fees-usd`` (both or neither): the payee (the wallet's owner, a merchant or
  the payer topping up) pays the processor's fee, as with Stripe's net payouts.
* **void** (captured never): the hold is voided.
* **refund**: ``wallet -> card-clearing-usd`` for the refunded amount (never more
  than captured); the fee is not given back (the processor keeps it).
* **settlement** (the processor pays out a batch): ``card-settled-usd ->
  card-clearing-usd`` for what it paid (captures - refunds - its fees), and
  ``card-fees-usd -> card-clearing-usd`` for the fees it kept: once a charge is
  settled, it no longer counts in the clearing account's balance.

Every id derives from the payment's (or refund's, or batch's): each step is a replay.

Statuses (the payments API's, shared with the other rails): ``requires_action``
(3-D Secure, or the risk gate's one-time code) -> ``processing`` -> ``completed``
(the card's ``succeeded``) | ``failed`` (declined, with its decline code).
"""

from __future__ import annotations

import hashlib

import msgspec

CLEARING_ACCOUNT = "card-clearing-usd"
FEES_ACCOUNT = "card-fees-usd"
SETTLED_ACCOUNT = "card-settled-usd"  # the operator's cash the processor paid out
CURRENCY = "USD"
RAIL = "card"
PROCESSOR_LIMIT = 999_999_99  # the processor's per-charge maximum: $999,999.99

# Decline codes the processor answers with (Stripe's names); the payment fails with it.
CARD_DECLINED = "card_declined"
INSUFFICIENT_FUNDS = "insufficient_funds"
EXPIRED_CARD = "expired_card"
AUTHENTICATION_FAILED = "authentication_failed"  # 3-D Secure not completed
DECLINE_CODES = frozenset({CARD_DECLINED, INSUFFICIENT_FUNDS, EXPIRED_CARD,
                           AUTHENTICATION_FAILED})  # fmt: skip
# The node's own: a charge nobody is there to authenticate (a renewal) whose issuer asks
# for 3-D Secure (Stripe's name for it).
AUTHENTICATION_REQUIRED = "authentication_required"


class Card(msgspec.Struct, frozen=True):
    """What the node keeps of a card (never its number)."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int
    processor_ref: str


class Authorization(msgspec.Struct, frozen=True):
    """The processor's answer to an authorization (or to its 3-D Secure confirmation)."""

    status: str  # approved | declined | requires_action
    decline_code: str | None = None
    authorization_code: str | None = None


class SettlementLine(msgspec.Struct, frozen=True):
    kind: str  # charge | refund
    ref: str  # the charge's or the refund's id
    payment_id: str
    amount: int
    fee: int = 0


class Settlement(msgspec.Struct, frozen=True):
    id: str
    lines: list[SettlementLine]


class Expected(msgspec.Struct, frozen=True):
    """What our records say a settlement line should be (None: we know no such line)."""

    amount: int
    fee: int = 0


class Reconciled(msgspec.Struct, frozen=True):
    gross: int
    refunds: int
    fees: int
    net: int
    expected_gross: int
    expected_refunds: int
    expected_fees: int
    differences: list[dict]


def hold_transfer_id(payment_id: str) -> str:
    """The authorization's pending transfer (the payment's ``transfer_id``)."""
    return f"card:{payment_id}"


def post_transfer_id(payment_id: str) -> str:
    return f"card-post:{payment_id}"


def void_transfer_id(payment_id: str) -> str:
    return f"card-void:{payment_id}"


def fee_transfer_id(payment_id: str) -> str:
    return f"card-fee:{payment_id}"


def settlement_transfer_ids(settlement_id: str) -> tuple[str, str]:
    """The settlement's net-of-refunds and fee transfers into the clearing account."""
    return f"card-settle:{settlement_id}", f"card-settle-fee:{settlement_id}"


def charge_ref(payment_id: str) -> str:
    """The processor-side charge id (its idempotency key): derived, so a retried
    authorization is the same charge to the processor."""
    return "ch_" + hashlib.sha256(b"charge:" + payment_id.encode()).hexdigest()[:24]


def fee(amount: int, fixed: int, bps: int) -> int:
    """The processor's fee: ``fixed`` minor units plus ``bps`` basis points of the amount,
    rounded up (integer arithmetic only)."""
    assert amount > 0 and fixed >= 0 and bps >= 0, (amount, fixed, bps)
    return fixed + (amount * bps + 9_999) // 10_000


def chargeable(amount: int, minimum: int, limit: int, fixed: int, bps: int) -> bool:
    """Whether a charge of ``amount`` is possible: within the processor's bounds and above
    its own fee (the payee's wallet must get something)."""
    return max(1, minimum) <= amount <= min(limit, PROCESSOR_LIMIT) and (
        fee(amount, fixed, bps) < amount
    )


def receipt_number(day: str, sequence: int) -> str:
    """``YYYYMMDD-000042``: the day the payment succeeded and a node-wide sequence."""
    assert len(day) == 8 and day.isdigit() and sequence > 0, (day, sequence)
    return f"{day}-{sequence:06d}"


def reconcile(batch: Settlement, ours: dict[str, Expected]) -> Reconciled:
    """Compare a settlement batch with our records, line by line (``ours`` by line ref)."""
    gross = refunds = fees = exp_gross = exp_refunds = exp_fees = 0
    differences: list[dict] = []
    seen: set[str] = set()
    for line in batch.lines:
        if line.ref in seen:
            differences.append({"ref": line.ref, "problem": "duplicate_line"})
            continue
        seen.add(line.ref)
        if line.kind == "charge":
            gross += line.amount
            fees += line.fee
        else:
            refunds += line.amount
        mine = ours.get(line.ref)
        if mine is None:
            differences.append({"ref": line.ref, "problem": "unknown_to_us",
                                "amount": line.amount})  # fmt: skip
            continue
        if line.kind == "charge":
            exp_gross += mine.amount
            exp_fees += mine.fee
        else:
            exp_refunds += mine.amount
        if (mine.amount, mine.fee) != (line.amount, line.fee):
            differences.append({"ref": line.ref, "problem": "amount_mismatch",
                                "settled": line.amount, "expected": mine.amount,
                                "settled_fee": line.fee, "expected_fee": mine.fee})  # fmt: skip
    return Reconciled(
        gross=gross, refunds=refunds, fees=fees, net=gross - refunds - fees,
        expected_gross=exp_gross, expected_refunds=exp_refunds, expected_fees=exp_fees,
        differences=differences,
    )  # fmt: skip


# The simulator's test tokens (Stripe's names): what each card is and how it behaves.
# (brand, last4, behaviour); behaviour: approve | a decline code | 3ds | dispute.
TEST_TOKENS: dict[str, tuple[str, str, str]] = {
    "tok_visa": ("visa", "4242", "approve"),
    "tok_mastercard": ("mastercard", "4444", "approve"),
    "tok_amex": ("amex", "8431", "approve"),
    "tok_chargeDeclined": ("visa", "0002", CARD_DECLINED),
    "tok_chargeDeclinedInsufficientFunds": ("visa", "9995", INSUFFICIENT_FUNDS),
    "tok_chargeDeclinedExpiredCard": ("visa", "0069", EXPIRED_CARD),
    "tok_threeDSecureRequired": ("visa", "3220", "3ds"),
    "tok_createDispute": ("visa", "0259", "dispute"),
}
BEHAVIOURS = frozenset(b for _, _, b in TEST_TOKENS.values())
