"""The HTTP contract for handles, payments and refunds."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.api.schemas import Id

HandleIn_ = Annotated[str, Meta(min_length=1, max_length=64, description="alice or @alice")]
Ref = Annotated[
    str,
    Meta(min_length=1, max_length=65, description="@handle, an account id or a bank account id"),
]
Amount = Annotated[int, Meta(ge=1, le=2**63 - 1, description="Minor units")]
Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}$(?!\n)")]


class HandleIn(msgspec.Struct, forbid_unknown_fields=True):
    handle: HandleIn_
    account_id: Id


class HandleOut(msgspec.Struct):
    handle: str  # normalized, without "@"
    account_id: str
    created_at: float  # unix seconds


class PaymentIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Id  # idempotency key: the same id and body again returns the payment
    to: Ref
    amount: Amount
    currency: Currency
    # Required except with rail "card" (there: the payment method, which may stand here)
    from_: Annotated[str, Meta(max_length=65)] = msgspec.field(default="", name="from")
    # auto: wallet between wallets; with a bank account, RTP if instant else ACH;
    # card: from payment_method (your card) into the wallet ``to``
    rail: Literal["auto", "wallet", "ach", "rtp", "card"] = "auto"
    memo: Annotated[str, Meta(max_length=140)] = ""
    same_day: bool = False  # ACH only: settle today if before the same-day cutoff
    # To a bank account: now, on RTP (24x7, final, with rtp.fee_* on top), or refused
    instant: bool = False
    # rail "card": your card's payment method id (pm_...)
    payment_method: Annotated[str, Meta(min_length=1, max_length=64)] | None = None


class StatusChangeOut(msgspec.Struct):
    status: str
    reason: str | None
    at: dt.datetime


class RefundOut(msgspec.Struct, kw_only=True):
    id: str
    payment_id: str
    amount: int
    status: Literal["processing", "completed", "failed"]
    failure_code: str | None
    transfer_id: str
    created_at: dt.datetime


PaymentStatus = Literal[
    "processing",
    "completed",
    "failed",
    "pending",
    "submitted",
    "settled",
    "returned",
    "requires_action",
    "in_review",
    "canceled",
]


class RiskReasonOut(msgspec.Struct):
    rule: str
    points: int
    detail: str


class RiskOut(msgspec.Struct):
    """The risk decision made before the payment moved money (user payments only)."""

    score: int
    level: Literal["LOW", "HIGH"]
    reasons: list[RiskReasonOut]


class NextActionOut(msgspec.Struct):
    """What the payer must do: confirm with the code sent to them (push, SMS or email);
    ``resend_url`` asks for it again."""

    type: Literal["confirm_otp", "three_d_secure"]
    confirm_url: str
    expires_at: dt.datetime | None  # None for three_d_secure (the issuer's own limit)
    attempts_left: int | None  # None for three_d_secure
    resend_url: str | None = None


class RtpOut(msgspec.Struct, kw_only=True):
    """An RTP payment's exchange with the network. RTP is final: an accepted payment is
    never returned (its status never becomes ``returned``); a rejected one is ``failed``
    with every cent of amount and fee back in the wallet."""

    end_to_end_id: str
    status: Literal["sending", "accepted", "rejected"]
    reason_code: str | None  # ISO 20022 status reason (AC03, ...) of a rejection
    reason: str | None
    request_id: str | None  # the request for payment this pays, if any


class CardChargeOut(msgspec.Struct, kw_only=True):
    """A card payment's side at the processor. The payee's wallet gets ``amount`` and pays
    ``processor_fee`` out of it (a separate ledger transfer to card-fees-usd)."""

    payment_method_id: str
    brand: str
    last4: str
    status: Literal["authorizing", "requires_action", "authorized", "captured", "declined",
                    "voided"]  # fmt: skip
    decline_code: str | None  # card_declined, insufficient_funds, expired_card, ...
    processor_fee: int
    receipt_number: str | None  # set once the payment completed
    events: list[str]  # the processor's asynchronous events about it (e.g. a dispute)


class ConfirmIn(msgspec.Struct, forbid_unknown_fields=True):
    otp: Annotated[str, Meta(min_length=1, max_length=16, description="The 6-digit code")]


class PaymentOut(msgspec.Struct, kw_only=True):
    id: str
    status: PaymentStatus
    from_: str = msgspec.field(name="from")
    to: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    currency: str
    rail: Literal["wallet", "ach", "rtp", "card"]
    memo: str
    failure_code: str | None
    transfer_id: str | None
    refunded_amount: int
    created_at: dt.datetime
    history: list[StatusChangeOut]
    refunds: list[RefundOut]
    bank_account_id: str | None = None
    ach_direction: Literal["credit", "debit"] | None = None
    same_day: bool = False
    return_code: str | None = None
    return_reason: str | None = None  # the NACHA meaning of return_code
    # ACH: the entry's effective date once in a file, else the date it would have if the
    # next cutoff took it now (None once failed or canceled)
    estimated_settlement_date: dt.date | None = None
    risk: RiskOut | None = None  # None: an operator's payment (not gated)
    next_action: NextActionOut | None = None  # set while status is requires_action
    review_id: str | None = None  # set while status is in_review
    fee: int = 0  # paid on top of amount (RTP), minor units
    rtp: RtpOut | None = None  # set for RTP payments
    card: CardChargeOut | None = None  # set for card payments


class PaymentPage(msgspec.Struct):
    payments: list[PaymentOut]
    next_after: str | None


class RefundIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Id  # idempotency key of the refund
    amount: Amount | None = None  # None: whatever is left to refund


RAILS_TYPES = (
    HandleIn, HandleOut, PaymentIn, PaymentOut, PaymentPage, RefundIn, RefundOut, StatusChangeOut,
    ConfirmIn, RiskOut, RiskReasonOut, NextActionOut, RtpOut, CardChargeOut,
)  # fmt: skip
