"""Foreign exchange: rates, quotes and conversions (request and answer bodies)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.api.schemas import Amount, Currency, Id

RateText = Annotated[
    str, Meta(pattern=r"^\d{1,9}(\.\d{1,9})?$(?!\n)", description='A decimal, e.g. "1.0845"')
]


class RateIn(msgspec.Struct, forbid_unknown_fields=True):
    """One unit of ``base`` costs ``rate`` units of ``quote`` (mid market)."""

    base: Currency
    quote: Currency
    rate: RateText
    as_of: dt.datetime | None = None  # the source's time (with its offset); default now


class RatesIn(msgspec.Struct, forbid_unknown_fields=True):
    rates: Annotated[list[RateIn], Meta(min_length=1, max_length=500)]
    source: Annotated[str, Meta(min_length=1, max_length=100)] = "operator"


class RateOut(msgspec.Struct):
    base: str
    quote: str
    rate: str
    as_of: dt.datetime
    source: str


class RatesOut(msgspec.Struct):
    rates: list[RateOut]


class QuoteIn(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of ``sell_amount`` and ``buy_amount`` (minor units of its currency)."""

    sell_currency: Currency
    buy_currency: Currency
    sell_amount: Amount | None = None
    buy_amount: Amount | None = None


class QuoteOut(msgspec.Struct):
    id: str
    sell_currency: str
    buy_currency: str
    sell_amount: int
    buy_amount: int
    rate: str  # buy-currency units per sell-currency unit, the spread included
    mid_rate: str
    rate_as_of: dt.datetime
    expires_at: dt.datetime


class ConversionIn(msgspec.Struct, forbid_unknown_fields=True):
    """Execute a quote: ``sell_amount`` leaves the debit account (in the sell currency),
    ``buy_amount`` reaches the credit account (in the buy currency), both or neither."""

    id: Id
    quote_id: Annotated[str, Meta(min_length=1, max_length=64)]
    debit_account_id: Id
    credit_account_id: Id


class ConversionOut(msgspec.Struct):
    id: str
    quote_id: str
    status: Literal["processing", "completed", "failed"]
    failure_code: str | None
    debit_account_id: str
    credit_account_id: str
    sell_currency: str
    sell_amount: int
    buy_currency: str
    buy_amount: int
    rate: str
    transfer_ids: list[str]  # the two linked transfers
    created_at: dt.datetime


FX_TYPES = (RateIn, RatesIn, RateOut, RatesOut, QuoteIn, QuoteOut, ConversionIn, ConversionOut)
