"""Pure ACH rules: entry and SEC codes, batching, effective dates, same-day."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from paynode.domain.rails.ach_rules import (
    Originator,
    Outgoing,
    build,
    effective,
    sec_code,
    transaction_code,
)
from paynode.domain.rails.nacha import parse_file
from tests.support import nacha_layout

ET = ZoneInfo("America/New_York")
ORIGIN = Originator(odfi_routing="011000015", company_name="PAYNODE", company_id="1000000001")


def _entry(i: int, kind: str, amount: int = 1000, same_day: bool = False, **kw) -> Outgoing:
    base = dict(entry_id=i, kind=kind, amount=amount, same_day=same_day, routing="021000021",
                account_number=f"0001234567{i:02d}", account_type="checking",
                holder_type="individual", holder_name="Zoë Example",
                individual_id=f"pay-{i}")  # fmt: skip
    return Outgoing(**(base | kw))


def test_codes() -> None:
    assert [transaction_code(k, t) for k in ("credit", "debit", "microdeposit")
            for t in ("checking", "savings")] == [22, 32, 27, 37, 22, 32]  # fmt: skip
    assert sec_code("debit", "individual") == "WEB"
    assert sec_code("credit", "individual") == "PPD"
    assert sec_code("debit", "company") == sec_code("credit", "company") == "CCD"


def test_effective_dates_follow_the_fed_calendar() -> None:
    tue_morning = dt.datetime(2026, 11, 24, 10, 0, tzinfo=ET)
    assert effective(tue_morning, same_day=False) == (dt.date(2026, 11, 25), False)
    assert effective(tue_morning, same_day=True) == (dt.date(2026, 11, 24), True)
    # After the cutoff a same-day entry rolls to the next business day, as a standard one;
    # Thanksgiving (Thu 26 Nov 2026) is skipped.
    wed_evening = dt.datetime(2026, 11, 25, 18, 0, tzinfo=ET)
    assert effective(wed_evening, same_day=True) == (dt.date(2026, 11, 30), False)
    assert effective(wed_evening, same_day=False) == (dt.date(2026, 11, 30), False)
    saturday = dt.datetime(2026, 11, 28, 12, 0, tzinfo=ET)
    assert effective(saturday, same_day=False) == (dt.date(2026, 12, 1), False)


def test_one_file_batches_by_sec_code_date_and_same_day() -> None:
    now = dt.datetime(2026, 11, 24, 10, 0, tzinfo=ET)
    entries = [
        _entry(1, "debit"),
        _entry(2, "credit"),
        _entry(3, "microdeposit", amount=12),
        _entry(4, "credit", same_day=True),
        _entry(5, "debit", holder_type="company"),
        _entry(6, "credit", amount=2_000_000_00, same_day=True),  # over the same-day cap
    ]
    built = build(entries, ORIGIN, now, "A")
    parsed = nacha_layout.parse(built.text)
    nacha_layout.check_controls(parsed)
    batches = {(b["header"]["standard_entry_class_code"], b["header"]["effective_entry_date"],
                b["header"]["company_descriptive_date"]): len(b["entries"])
               for b in parsed["batches"]}  # fmt: skip
    assert batches == {
        ("WEB", "261125", ""): 1,
        ("PPD", "261125", ""): 3,  # the credit, the micro-deposit, the one over the cap
        ("PPD", "261124", "SD1300"): 1,
        ("CCD", "261125", ""): 1,
    }
    assert built.total_debit == 2000 and built.total_credit == 1000 + 12 + 1000 + 2_000_000_00
    ours = parse_file(built.text)
    names = {e.individual_name for b in ours.batches for e in b.entries}
    assert names == {"ZOE EXAMPLE"}  # folded to ASCII, upper case
    assert set(built.traces) == {1, 2, 3, 4, 5, 6}
    assert all(t.startswith("01100001") for t, _ in built.traces.values())
