"""The HTTP contract for bank accounts and ACH.

An account number goes in and only its last 4 digits come out; a NACHA file
(which holds account numbers) is served only to operators.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Routing = Annotated[str, Meta(pattern=r"^[0-9]{9}$(?!\n)", description="ABA routing number")]
AccountNumber = Annotated[str, Meta(pattern=r"^[0-9]{4,17}$(?!\n)", description="4-17 digits")]


class BankAccountIn(msgspec.Struct, forbid_unknown_fields=True):
    routing_number: Routing
    account_number: AccountNumber
    account_type: Literal["checking", "savings"]
    holder_name: Annotated[str, Meta(min_length=1, max_length=100)]
    holder_type: Literal["individual", "company"] = "individual"


class BankBalancesOut(msgspec.Struct, kw_only=True):
    """In minor units of ``currency``; ``available`` is None when the bank does not say."""

    available: int | None
    current: int
    currency: str = "USD"
    as_of: dt.datetime | None


class BankAccountOut(msgspec.Struct, kw_only=True):
    id: str
    routing_number: str
    account_last4: str
    account_type: str
    holder_type: str
    status: Literal["pending_verification", "verified", "verification_failed", "closed"]
    verify_attempts_left: int
    created_at: dt.datetime
    verified_at: dt.datetime | None
    # From the FedACH directory (PAYNODE_ACH_DIRECTORY); None: a routing number it lacks
    bank_name: str | None = None
    default: bool = False  # the owner's default bank account
    # "instant": linked through the aggregator (api/link_routes.py), no micro-deposits
    verification_method: Literal["microdeposits", "instant"] = "microdeposits"
    link_item_id: str | None = None
    account_name: str | None = None  # the bank's name for it (linked accounts)
    balances: BankBalancesOut | None = None  # as the bank last reported (linked accounts)


class BankAccountList(msgspec.Struct):
    bank_accounts: list[BankAccountOut]


class VerifyIn(msgspec.Struct, forbid_unknown_fields=True):
    """The two micro-deposit amounts, in cents, in any order."""

    amounts: Annotated[list[Annotated[int, Meta(ge=1, le=99)]], Meta(min_length=2, max_length=2)]


class AchFileOut(msgspec.Struct, kw_only=True):
    id: str
    direction: Literal["outbound", "return"]
    entries: int
    total_debit: int
    total_credit: int
    created_at: dt.datetime
    transmitted_at: dt.datetime | None


class AchFileList(msgspec.Struct):
    files: list[AchFileOut]


class CutoffOut(msgspec.Struct):
    file_id: str | None  # None: nothing was pending
    entries: int
    total_debit: int
    total_credit: int
    transmitted: bool


class ReturnsOut(msgspec.Struct):
    returned: int  # entries returned now
    already: int  # returned before (the same file again)
    unknown: int  # trace numbers that are not ours
    dead_lettered: int = 0  # refused by the ledger: kept in /v1/ach/dead-letters to replay


class DeadLetterOut(msgspec.Struct, kw_only=True):
    """An ACH status update the ledger refused (a settlement's post, a return's void or
    reversal), kept to be replayed; ``replayed_at`` is set once a replay applied it."""

    id: int
    kind: Literal["settlement", "return"]
    payment_id: str | None
    trace_number: str
    return_code: str | None
    last_error: str
    attempts: int
    created_at: dt.datetime
    last_attempt_at: dt.datetime
    replayed_at: dt.datetime | None


class DeadLetterList(msgspec.Struct):
    dead_letters: list[DeadLetterOut]


class StatementIn(msgspec.Struct, forbid_unknown_fields=True):
    routing_number: Routing
    account_number: AccountNumber


class StatementLineOut(msgspec.Struct):
    amount: int
    direction: Literal["credit", "debit"]
    company_name: str
    effective_date: str
    trace_number: str


class StatementOut(msgspec.Struct):
    lines: list[StatementLineOut]


ACH_TYPES = (
    BankAccountIn, BankBalancesOut, BankAccountOut, BankAccountList, VerifyIn, AchFileOut,
    AchFileList, CutoffOut, ReturnsOut, StatementIn, StatementLineOut, StatementOut, DeadLetterOut,
    DeadLetterList,
)  # fmt: skip
