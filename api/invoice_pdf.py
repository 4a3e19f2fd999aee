"""An invoice as a PDF (fpdf2: pure Python, its built-in Helvetica).

Amounts are shown in major units with the currency's ISO 4217 exponent, converted
from integer minor units by string arithmetic (``domain/rails/fx.EXPONENTS``); the
built-in font is Latin-1, so a character it cannot draw is shown as ``?`` rather
than failing the document.
"""

from __future__ import annotations

from fpdf import FPDF

from paynode.domain.rails.fx import EXPONENTS
from paynode.storage.billing import Invoice

MAX_LINES = 200  # an invoice holds at most 100 (domain/billing/invoices.py)


def money(amount: int, currency: str) -> str:
    """``amount`` minor units as text: 123456 USD -> "1,234.56 USD"."""
    digits = EXPONENTS.get(currency, 2)
    sign, value = ("-", -amount) if amount < 0 else ("", amount)
    whole, frac = divmod(value, 10**digits) if digits else (value, 0)
    text = f"{whole:,}" + (f".{frac:0{digits}d}" if digits else "")
    return f"{sign}{text} {currency}"


def _latin1(text: str) -> str:
    return text.encode("latin-1", errors="replace").decode("latin-1")


def render(i: Invoice, issuer: str) -> bytes:
    """The invoice ``i`` of ``issuer`` (the node's company name) as PDF bytes."""
    cur = i.currency.strip()
    pdf = FPDF(format="A4")
    pdf.set_title(_latin1(f"Invoice {i.number}"))
    pdf.set_creator("paynode")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _latin1(f"Invoice {i.number}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    for label, value in (("Issued by", issuer), ("Invoice id", i.id),
                         ("Subscription", i.subscription_id), ("Status", i.status),
                         ("Date", f"{i.created_at:%Y-%m-%d}")):  # fmt: skip
        pdf.cell(0, 6, _latin1(f"{label}: {value}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 10)
    widths = (80, 60, 40)
    for width, title in zip(widths, ("Description", "Period", "Amount"), strict=True):
        pdf.cell(width, 7, title, border="B")
    pdf.ln()
    pdf.set_font("Helvetica", "", 10)
    for line in i.line_items()[:MAX_LINES]:
        period = f"{line.period_start:%Y-%m-%d} - {line.period_end:%Y-%m-%d}"
        pdf.cell(widths[0], 7, _latin1(line.description[:48]))
        pdf.cell(widths[1], 7, period)
        pdf.cell(widths[2], 7, money(line.amount, cur), align="R")
        pdf.ln()
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 11)
    for label, amount in (("Total", i.total), ("Amount due", i.amount_due)):
        pdf.cell(widths[0] + widths[1], 7, label)
        pdf.cell(widths[2], 7, money(amount, cur), align="R")
        pdf.ln()
    return bytes(pdf.output())
