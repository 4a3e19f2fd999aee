"""Invoices: lines, totals in integer minor units, statuses and numbers.

Pure. An invoice is a list of lines (at most ``MAX_LINES``), each an amount per
unit times a quantity for a period, in one currency; taxes are out of scope, so
the total is the sum of the lines. A credit line (proration for unused time) is
negative; an invoice whose total is negative asks nothing (``amount_due`` 0) and
leaves ``credit`` to the customer (where that credit lives is the next layer's
choice: a customer balance, as Stripe keeps).

Statuses (Stripe's): ``draft -> open -> paid | void | uncollectible``, and an
uncollectible invoice can still be paid or voided (a late payment is still
money). ``paid`` and ``void`` are final. Finalizing an invoice that asks nothing
makes it ``paid`` at once: there is nothing to collect.

Numbers are ``<PREFIX>-<NNNN>``: a customer's prefix (3-12 upper-case letters
or digits) and the customer's invoice sequence from 1, as Stripe numbers them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

import msgspec

from paynode.domain.billing.errors import BillingError
from paynode.domain.billing.periods import MAX_PRICE, check_id, check_utc
from paynode.domain.billing.proration import MAX_QUANTITY, ProrationLine, check_quantity

Status = Literal["draft", "open", "paid", "void", "uncollectible"]
STATUSES: tuple[Status, ...] = ("draft", "open", "paid", "void", "uncollectible")
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"open"}),
    "open": frozenset({"paid", "void", "uncollectible"}),
    "uncollectible": frozenset({"paid", "void"}),
    "paid": frozenset(),
    "void": frozenset(),
}
MAX_LINES = 100  # lines per invoice: a bound on the row, the PDF and the hosted page
MAX_DESCRIPTION = 200
MAX_SEQUENCE = 999_999  # invoices per customer
# |unit amount| per line: a price's amount, or a proration of up to MAX_QUANTITY units
MAX_UNIT = MAX_PRICE * MAX_QUANTITY
_PREFIX = re.compile(r"[A-Z0-9]{3,12}\Z")
_NUMBER = re.compile(r"([A-Z0-9]{3,12})-(\d{4,6})\Z")


class Line(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    description: str
    unit_amount: int  # minor units; negative for a credit
    quantity: int = 1
    period_start: dt.datetime
    period_end: dt.datetime
    proration: bool = False

    def __post_init__(self) -> None:
        if not 1 <= len(self.description) <= MAX_DESCRIPTION:
            raise BillingError("invalid_field", f"a line's description is 1..{MAX_DESCRIPTION}")
        if type(self.unit_amount) is not int or abs(self.unit_amount) > MAX_UNIT:
            raise BillingError("invalid_field", f"a line's unit amount is at most {MAX_UNIT}")
        check_quantity(self.quantity)
        check_utc(self.period_start, "period_start")
        check_utc(self.period_end, "period_end")
        if self.period_end <= self.period_start:
            raise BillingError("invalid_field", "a line's period ends after it starts")

    @property
    def amount(self) -> int:
        return self.unit_amount * self.quantity


class Invoice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    number: str
    customer: str
    currency: str
    created_at: dt.datetime
    lines: list[Line]
    subscription: str | None = None
    period_index: int | None = None  # the subscription period it bills, if a renewal
    status: Status = "draft"

    def __post_init__(self) -> None:
        check_id(self.id, "invoice id", 96)
        check_id(self.customer, "customer")
        parse_number(self.number)
        check_utc(self.created_at, "created_at")
        if len(self.lines) > MAX_LINES:
            raise BillingError("too_many_lines", f"an invoice has at most {MAX_LINES} lines")
        if self.status not in TRANSITIONS:
            raise BillingError("invalid_field", f"status is one of {', '.join(STATUSES)}")


def line_from_proration(p: ProrationLine) -> Line:
    return Line(
        description=p.description,
        unit_amount=p.amount,
        period_start=p.start,
        period_end=p.end,
        proration=True,
    )


def subtotal(invoice: Invoice) -> int:
    """The sum of the lines (tax-free: the total is the same)."""
    return sum(line.amount for line in invoice.lines)


def amount_due(invoice: Invoice) -> int:
    """What collecting the invoice asks: never below 0."""
    return max(subtotal(invoice), 0)


def credit(invoice: Invoice) -> int:
    """What the invoice leaves to the customer when its credits exceed its charges."""
    return max(-subtotal(invoice), 0)


def add_line(invoice: Invoice, line: Line) -> Invoice:
    """Only a draft takes lines: an open invoice is what the customer was shown."""
    if invoice.status != "draft":
        raise BillingError("invoice_not_draft", "lines are added to a draft invoice only")
    if len(invoice.lines) >= MAX_LINES:
        raise BillingError("too_many_lines", f"an invoice has at most {MAX_LINES} lines")
    return msgspec.structs.replace(invoice, lines=[*invoice.lines, line])


def can_move(current: str, target: str) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def move(invoice: Invoice, target: Status) -> Invoice:
    """``invoice`` in status ``target``, or ``transition_refused``. Moving to the status
    it already has is refused too: the caller replays by invoice id, not by status."""
    if not can_move(invoice.status, target):
        raise BillingError(
            "transition_refused", f"an invoice goes from {invoice.status} to {target} never"
        )
    return msgspec.structs.replace(invoice, status=target)


def finalize(invoice: Invoice) -> Invoice:
    """draft -> open, or straight to paid when it asks nothing (nothing to collect)."""
    opened = move(invoice, "open")
    return move(opened, "paid") if amount_due(opened) == 0 else opened


def number(prefix: str, sequence: int) -> str:
    """The customer's ``sequence``-th invoice number: ``ABC123-0007``."""
    if not _PREFIX.match(prefix):
        raise BillingError("invalid_field", "an invoice prefix is 3-12 of A-Z 0-9")
    if type(sequence) is not int or not 1 <= sequence <= MAX_SEQUENCE:
        raise BillingError("invalid_field", f"an invoice sequence is 1..{MAX_SEQUENCE}")
    return f"{prefix}-{sequence:04d}"


def parse_number(text: str) -> tuple[str, int]:
    """(prefix, sequence) of an invoice number; refuses anything ``number`` cannot make."""
    m = _NUMBER.match(text)
    if m is None or number(m.group(1), int(m.group(2))) != text:
        raise BillingError("invalid_field", "an invoice number is PREFIX-NNNN")
    return m.group(1), int(m.group(2))


def renewal_invoice_id(subscription: str, period_index: int) -> str:
    """The invoice of period ``period_index`` of a subscription: derived, so a renewal run
    repeated after a crash finds the same invoice instead of making a second one."""
    return f"in_{subscription}_{period_index}"


def change_invoice_id(subscription: str, change: int) -> str:
    """The invoice of the subscription's ``change``-th plan change (its prorations)."""
    return f"in_{subscription}_c{change}"


def payment_transfer_id(invoice_id: str, attempt: int) -> str:
    """The ledger transfer of collection attempt ``attempt`` (0 first, then the dunning
    retries): a retried run replays the same transfer id, the ledger moves money once."""
    return f"bill:{invoice_id}:{attempt}"
