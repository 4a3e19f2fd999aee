"""Invoices: lines, totals, statuses, numbers (domain/billing/invoices.py)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paynode.domain.billing import invoices as inv
from paynode.domain.billing.errors import BillingError
from paynode.domain.billing.proration import MAX_QUANTITY, ProrationLine

UTC = dt.UTC
T0 = dt.datetime(2027, 1, 1, tzinfo=UTC)
T1 = dt.datetime(2027, 2, 1, tzinfo=UTC)


def line(unit: int, quantity: int = 1) -> inv.Line:
    return inv.Line(description="Plan", unit_amount=unit, quantity=quantity, period_start=T0,
                    period_end=T1)  # fmt: skip


def invoice(*lines: inv.Line, status: inv.Status = "draft") -> inv.Invoice:
    return inv.Invoice(id="in_s1_0", number="CUST01-0001", customer="c1", currency="USD",
                       created_at=T0, lines=list(lines), status=status)  # fmt: skip


def test_totals_credits_and_amount_due() -> None:
    i = invoice(line(1000, 3), line(-250))
    assert (inv.subtotal(i), inv.amount_due(i), inv.credit(i)) == (2750, 2750, 0)
    c = invoice(line(100), line(-400))
    assert (inv.subtotal(c), inv.amount_due(c), inv.credit(c)) == (-300, 0, 300)
    assert inv.subtotal(invoice()) == 0
    pl = ProrationLine(description="Unused time", amount=-120, start=T0, end=T1)
    assert inv.line_from_proration(pl).proration and inv.line_from_proration(pl).amount == -120


@given(st.lists(st.tuples(st.integers(-inv.MAX_UNIT, inv.MAX_UNIT), st.integers(1, MAX_QUANTITY)),
                max_size=inv.MAX_LINES))  # fmt: skip
def test_totals_are_exact_integers(items: list[tuple[int, int]]) -> None:
    i = invoice(*(line(u, q) for u, q in items))
    total = sum(u * q for u, q in items)
    assert inv.subtotal(i) == total
    assert inv.amount_due(i) - inv.credit(i) == total
    assert inv.amount_due(i) >= 0 and inv.credit(i) >= 0
    assert abs(total) < 2**63  # fits the ledger's bigint


def test_every_status_transition_allowed_and_refused() -> None:
    allowed = {("draft", "open"), ("open", "paid"), ("open", "void"),
               ("open", "uncollectible"), ("uncollectible", "paid"),
               ("uncollectible", "void")}  # fmt: skip
    for a, b in itertools.product(inv.STATUSES, repeat=2):
        i = invoice(line(100), status=a)
        if (a, b) in allowed:
            assert inv.move(i, b).status == b
        else:
            with pytest.raises(BillingError) as e:
                inv.move(i, b)
            assert e.value.code == "transition_refused", (a, b)


def test_finalize_and_lines_only_on_drafts() -> None:
    assert inv.finalize(invoice(line(100))).status == "open"
    assert inv.finalize(invoice(line(100), line(-100))).status == "paid"  # asks nothing
    assert inv.finalize(invoice()).status == "paid"
    opened = inv.finalize(invoice(line(100)))
    with pytest.raises(BillingError) as e:
        inv.add_line(opened, line(1))
    assert e.value.code == "invoice_not_draft"
    full = invoice(*[line(1)] * inv.MAX_LINES)
    with pytest.raises(BillingError) as e:
        inv.add_line(full, line(1))
    assert e.value.code == "too_many_lines"
    with pytest.raises(BillingError):
        invoice(*[line(1)] * (inv.MAX_LINES + 1))
    assert len(inv.add_line(invoice(), line(5)).lines) == 1


def test_line_bounds() -> None:
    for bad in ({"description": ""}, {"description": "x" * 201}, {"unit_amount": 1.0},
                {"unit_amount": inv.MAX_UNIT + 1}, {"quantity": 0},
                {"period_end": T0}, {"period_start": T0.replace(tzinfo=None)}):  # fmt: skip
        fields = {"description": "Plan", "unit_amount": 1, "quantity": 1, "period_start": T0,
                  "period_end": T1, **bad}  # fmt: skip
        with pytest.raises(BillingError):
            inv.Line(**fields)  # type: ignore[arg-type]


def test_numbers_and_derived_ids() -> None:
    assert inv.number("ACME01", 7) == "ACME01-0007"
    assert inv.number("ACME01", 123_456) == "ACME01-123456"
    assert inv.parse_number("ACME01-0007") == ("ACME01", 7)
    for bad in ("acme-0001", "AC-0001", "ACME01-7", "ACME01-0000", "ACME01-00007", "ACME010001"):
        with pytest.raises(BillingError):
            inv.parse_number(bad)
    with pytest.raises(BillingError):
        inv.number("ACME01", inv.MAX_SEQUENCE + 1)
    with pytest.raises(BillingError):
        invoice(line(1)).__class__(id="x", number="bad", customer="c", currency="USD",
                                   created_at=T0, lines=[])  # fmt: skip
    assert inv.renewal_invoice_id("sub_1", 4) == "in_sub_1_4"
    assert inv.change_invoice_id("sub_1", 2) == "in_sub_1_c2"
    assert inv.payment_transfer_id("in_sub_1_4", 0) == "bill:in_sub_1_4:0"
    # a subscription id of the longest kind still makes a valid invoice id
    long = "s" * 64
    invoice(line(1)).__class__(id=inv.renewal_invoice_id(long, 10_000), number="CUST01-0001",
                               customer="c", currency="USD", created_at=T0, lines=[])  # fmt: skip
