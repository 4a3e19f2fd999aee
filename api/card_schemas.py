"""The HTTP contract for payment methods, card receipts and the card processor's side."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta


class PaymentMethodIn(msgspec.Struct, forbid_unknown_fields=True):
    """A card, as the processor's token for it (made by the processor's own client-side
    library: the card number never reaches this node)."""

    type: Literal["card"]
    token: Annotated[str, Meta(min_length=1, max_length=255)]


class CardOut(msgspec.Struct, kw_only=True):
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class BankAccountMethodOut(msgspec.Struct, kw_only=True):
    routing_number: str
    account_last4: str
    verification_method: str


class PaymentMethodOut(msgspec.Struct, kw_only=True):
    id: str  # pm_... for a card, ba_... for a verified bank account
    type: Literal["card", "bank_account"]
    is_default: bool
    created_at: dt.datetime
    card: CardOut | None = None
    bank_account: BankAccountMethodOut | None = None


class PaymentMethodPage(msgspec.Struct):
    data: list[PaymentMethodOut]


class CardConfirmIn(msgspec.Struct, forbid_unknown_fields=True):
    """The cardholder's result at the issuer's 3-D Secure page. With the simulated
    processor the client says it; a real processor knows it and ignores this field."""

    three_d_secure: Literal["succeeded", "failed"] = "succeeded"


class ReceiptRefundOut(msgspec.Struct):
    id: str
    amount: int
    status: str
    created_at: dt.datetime


class ReceiptOut(msgspec.Struct, kw_only=True):
    receipt_number: str
    payment_id: str
    amount: int
    currency: str
    paid_to: str  # the wallet credited
    card_brand: str
    card_last4: str
    memo: str
    paid_at: dt.datetime
    refunded_amount: int
    refunds: list[ReceiptRefundOut]


class SettlementOut(msgspec.Struct, kw_only=True):
    """A processor's settlement batch reconciled against our records: ``gross`` (captures),
    ``refunds`` and ``fees`` as settled, ``expected_*`` as our records say for the same
    lines; ``differences`` names each line that does not match."""

    id: str
    status: Literal["matched", "mismatched"]
    gross: int
    refunds: int
    fees: int
    net: int
    expected_gross: int
    expected_refunds: int
    expected_fees: int
    lines: int
    differences: list[dict]
    received_at: dt.datetime


class SettlementPage(msgspec.Struct):
    data: list[SettlementOut]


class ClearingOut(msgspec.Struct, kw_only=True):
    """The card clearing account: what our records expect it to hold (captured, not yet
    settled, minus refunds not yet settled) against the ledger's balance of it."""

    account_id: str
    captured: int
    refunded: int
    fees: int
    settled_captured: int
    settled_refunded: int
    settled_fees: int
    expected_outstanding: int  # what the processor still owes: the ledger's debit balance
    ledger_outstanding: int  # debits_posted - credits_posted of the clearing account
    balanced: bool


class CardSimSettleOut(msgspec.Struct):
    settlement_id: str  # "" when nothing was captured or refunded since the last batch


CARD_TYPES = (
    PaymentMethodIn, PaymentMethodOut, PaymentMethodPage, CardOut, BankAccountMethodOut,
    CardConfirmIn, ReceiptOut, ReceiptRefundOut, SettlementOut, SettlementPage, ClearingOut,
    CardSimSettleOut,
)  # fmt: skip
