"""Invoice PDFs: amounts in major units by string arithmetic, any text drawable."""

from __future__ import annotations

import datetime as dt

import msgspec

from paynode.api.invoice_pdf import money, render
from paynode.domain.billing import invoices as inv
from paynode.storage.billing import Invoice

T = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_money_uses_the_currency_exponent() -> None:
    assert money(123456, "USD") == "1,234.56 USD"
    assert money(5, "USD") == "0.05 USD"
    assert money(-1500, "USD") == "-15.00 USD"
    assert money(1234, "JPY") == "1,234 JPY"
    assert money(1234, "KWD") == "1.234 KWD"


def test_render_is_a_pdf_with_non_latin_text() -> None:
    lines = [
        inv.Line(description="Plan Ünïcode ✓ 月", unit_amount=2_500, quantity=1,
                 period_start=T, period_end=T + dt.timedelta(days=31))
    ]  # fmt: skip
    i = Invoice(
        id="in_x_0", number="ABCD-0001", subscription_id="sub_x", customer_user_id="u1",
        merchant_user_id="u2", period_index=0, currency="USD",
        lines=msgspec.json.encode(lines).decode(), total=2_500, amount_due=2_500, credit=0,
        status="open", attempts=0, in_flight=None, due_at=T, last_code=None, paid_by=None,
        created_at=T, updated_at=T,
    )  # fmt: skip
    out = render(i, "PAYNODE")
    assert out.startswith(b"%PDF-") and out.rstrip().endswith(b"%%EOF")
