"""The HTTP contract of requests for payment received over RTP, and the simulator's."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.api.schemas import Id

Amount = Annotated[int, Meta(ge=1, le=2**63 - 1, description="Minor units")]
Routing = Annotated[str, Meta(pattern=r"^[0-9]{9}$(?!\n)", description="ABA routing number")]


class RtpRequestOut(msgspec.Struct, kw_only=True):
    """A creditor's request that you pay them (ISO 20022 pain.013), received over RTP.

    Accepting it pays it at once on RTP (a payment of ``amount`` plus the RTP fee);
    declining answers the creditor. Past ``expires_at`` it can only be ``expired``.
    """

    id: str
    status: Literal["pending", "accepted", "declined", "expired"]
    account_id: str  # the wallet asked to pay
    amount: int
    currency: str
    creditor_name: str
    creditor_routing_number: str
    creditor_account_last4: str
    remittance: str
    expires_at: dt.datetime
    payment_id: str | None  # the payment that pays it, once accepted
    end_to_end_id: str
    created_at: dt.datetime


class RtpRequestPage(msgspec.Struct):
    requests: list[RtpRequestOut]
    next_after: str | None


class RtpAcceptIn(msgspec.Struct, forbid_unknown_fields=True):
    payment_id: Id  # the id of the payment that pays it (idempotency key)
    memo: Annotated[str, Meta(max_length=140)] = ""


class RtpSimRequestIn(msgspec.Struct, forbid_unknown_fields=True):
    """Have the simulated network deliver a creditor's request for payment (pain.013)."""

    account_id: Annotated[str, Meta(min_length=1, max_length=64)]  # the wallet asked to pay
    amount: Amount
    creditor_name: Annotated[str, Meta(min_length=1, max_length=140)]
    creditor_routing_number: Routing
    creditor_account_number: Annotated[str, Meta(pattern=r"^[0-9]{4,17}$(?!\n)")]
    remittance: Annotated[str, Meta(max_length=140)] = ""
    expires_in_s: Annotated[int, Meta(ge=1, le=30 * 86_400)] = 86_400


class RtpSimRequestOut(msgspec.Struct):
    end_to_end_id: str  # the request's, delivered to the node as a webhook


class RtpSimStatementIn(msgspec.Struct, forbid_unknown_fields=True):
    routing_number: Routing
    account_number: Annotated[str, Meta(pattern=r"^[0-9]{4,17}$(?!\n)")]


class RtpCreditOut(msgspec.Struct):
    amount: int
    end_to_end_id: str
    debtor_agent: str
    at: str


class RtpStatementOut(msgspec.Struct):
    credits: list[RtpCreditOut]


RTP_TYPES = (
    RtpRequestOut, RtpRequestPage, RtpAcceptIn, RtpSimRequestIn, RtpSimRequestOut,
    RtpSimStatementIn, RtpCreditOut, RtpStatementOut,
)  # fmt: skip
