"""Products, prices, subscriptions, invoices and test clocks: request and answer bodies."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.api.schemas import Currency, Id
from paynode.domain.billing.periods import MAX_PRICE
from paynode.domain.billing.proration import MAX_QUANTITY
from paynode.domain.billing.subscriptions import MAX_TRIAL_DAYS

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Interval = Literal["day", "week", "month", "year"]
SubStatus = Literal["trialing", "active", "past_due", "paused", "canceled", "incomplete"]
InvoiceStatus = Literal["draft", "open", "paid", "void", "uncollectible"]


class ProductIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    name: Name


class ProductOut(msgspec.Struct):
    id: str
    name: str
    owner_user_id: str
    created_at: dt.datetime


class PriceIn(msgspec.Struct, forbid_unknown_fields=True):
    """``amount`` minor units of ``currency`` per ``interval_count`` intervals (a year at
    most), credited to ``payout_account_id`` (a wallet account of yours)."""

    id: Id
    product: Id
    amount: Annotated[int, Meta(ge=0, le=MAX_PRICE)]
    currency: Currency
    interval: Interval
    payout_account_id: Id
    interval_count: Annotated[int, Meta(ge=1, le=365)] = 1


class PriceOut(msgspec.Struct, kw_only=True):
    id: str
    product: str
    amount: int
    currency: str
    interval: Interval
    interval_count: int
    payout_account_id: str
    owner_user_id: str
    created_at: dt.datetime


class SubscriptionIn(msgspec.Struct, forbid_unknown_fields=True):
    """Subscribe to ``price``, paid from ``customer_account`` (a wallet account of yours in
    the price's currency) or charged to ``payment_method`` (a card of yours; USD prices);
    with neither, your default payment method. With ``trial_days`` nothing is billed until
    the trial ends; without, period 0 is billed and collected now. ``test_clock``: run on
    that clock."""

    price: Id
    customer_account: Id | None = None
    payment_method: Id | None = None
    trial_days: Annotated[int, Meta(ge=0, le=MAX_TRIAL_DAYS)] = 0
    quantity: Annotated[int, Meta(ge=1, le=MAX_QUANTITY)] = 1
    test_clock: Id | None = None


class PaymentSourceIn(msgspec.Struct, forbid_unknown_fields=True):
    """What pays a subscription from now on: ``customer_account`` (a wallet of yours in
    the price's currency) or ``payment_method`` (a card of yours; USD prices); with
    neither, your default payment method."""

    customer_account: Id | None = None
    payment_method: Id | None = None


class SubscriptionChange(msgspec.Struct, forbid_unknown_fields=True):
    """A plan change: another price of the same merchant and currency, prorated by default."""

    price: Id
    quantity: Annotated[int, Meta(ge=1, le=MAX_QUANTITY)] = 1
    prorate: bool = True


class CancelIn(msgspec.Struct, forbid_unknown_fields=True):
    """``at_period_end``: cancel when the current period ends (``false`` again takes it
    back); otherwise now, with a credit for the unused time that was paid."""

    at_period_end: bool = False


class SubscriptionOut(msgspec.Struct, kw_only=True):
    id: str
    status: SubStatus
    price: str
    quantity: int
    customer_user_id: str
    merchant_user_id: str
    customer_account: str | None  # the wallet paying (source_kind wallet)
    payment_method: str | None  # the card charged (source_kind card)
    merchant_account: str
    source_kind: Literal["wallet", "card"]
    current_period: int
    current_period_start: dt.datetime
    current_period_end: dt.datetime
    trial_end: dt.datetime | None
    cancel_at_period_end: bool
    canceled_at: dt.datetime | None
    paused_at: dt.datetime | None
    dunning_failures: int  # failed attempts of the invoice in dunning (0: none)
    next_event_at: dt.datetime | None
    test_clock: str | None
    created_at: dt.datetime


class SubscriptionPage(msgspec.Struct):
    subscriptions: list[SubscriptionOut]
    next_after: str | None


class LineOut(msgspec.Struct):
    description: str
    unit_amount: int
    quantity: int
    amount: int
    period_start: dt.datetime
    period_end: dt.datetime
    proration: bool


class InvoiceOut(msgspec.Struct, kw_only=True):
    id: str
    number: str
    subscription: str
    status: InvoiceStatus
    currency: str
    lines: list[LineOut]
    total: int  # tax-free: the sum of the lines
    amount_due: int
    credit: int  # what credits beyond the charges leave to the customer
    attempts: int
    collecting: bool  # an attempt is being moved
    last_code: str | None
    # The ledger transfer that paid it: bill:<invoice>:<attempt> from a wallet; by card,
    # card-post:bill:<invoice>:<attempt>, the post of the card payment bill:<invoice>:<attempt>.
    paid_by: str | None
    customer_user_id: str
    merchant_user_id: str
    created_at: dt.datetime


class InvoicePage(msgspec.Struct):
    invoices: list[InvoiceOut]
    next_after: str | None


class HostedLinkOut(msgspec.Struct):
    """The invoice's hosted page: anyone with the URL sees it (no login). A new link
    replaces the previous one; only its hash is stored."""

    url: str


class ClockIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    frozen_time: dt.datetime | None = None  # with a zone offset; now by default


class AdvanceIn(msgspec.Struct, forbid_unknown_fields=True):
    to: dt.datetime  # with a zone offset, later than the clock, two years at most


class ClockOut(msgspec.Struct):
    id: str
    frozen_time: dt.datetime
    status: Literal["ready", "advancing"]  # advancing: the fronts' scheduler finishes it


BILLING_TYPES = (
    ProductIn, ProductOut, PriceIn, PriceOut, SubscriptionIn, PaymentSourceIn,
    SubscriptionChange, CancelIn,
    SubscriptionOut, SubscriptionPage, LineOut, InvoiceOut, InvoicePage, HostedLinkOut, ClockIn,
    AdvanceIn, ClockOut,
)  # fmt: skip
