"""Pure ACH rules: entry codes, SEC codes, batching, effective dates, the ledger's moves.

How the ledger sees ACH (one operator clearing account per currency,
``ach-clearing-usd``, whose balance is the node's position with its bank):

* a **push** (wallet -> bank, NACHA credit) holds the wallet: a pending
  transfer wallet -> clearing; settled, it is posted; returned, it is voided
  (the wallet gets its money back);
* a **pull** (bank -> wallet, NACHA debit) is a pending transfer clearing ->
  wallet: the credit is not available until settled (posted); returned (R01
  and the like), it is voided and the wallet is as before the debit;
* a **micro-deposit** is a posted transfer from the operator's expense
  account to clearing when it is queued.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from paynode.domain.rails.calendar import EASTERN, settlement_date
from paynode.domain.rails.nacha import Batch, Entry, FileHeader, build_file, trace_number

CLEARING_ACCOUNT = "ach-clearing-usd"
MICRODEPOSIT_ACCOUNT = "ach-microdeposits-usd"
SAME_DAY_LIMIT = 1_000_000_00  # NACHA's per-entry cap for same-day ACH


def transaction_code(kind: str, account_type: str) -> int:
    """22/32 credit checking/savings, 27/37 debit."""
    credit = kind in ("credit", "microdeposit")
    if account_type == "checking":
        return 22 if credit else 27
    assert account_type == "savings", account_type
    return 32 if credit else 37


def sec_code(kind: str, holder_type: str) -> str:
    """CCD for companies; consumers: WEB for debits they authorized online, else PPD."""
    if holder_type == "company":
        return "CCD"
    return "WEB" if kind == "debit" else "PPD"


def hold_transfer_id(payment_id: str) -> str:
    return f"ach:{payment_id}"


def microdeposit_transfer_id(bank_account_id: str, n: int) -> str:
    """The ``n``-th (1 or 2) micro-deposit to a bank account being verified."""
    assert n in (1, 2), n
    return f"micro:{bank_account_id}:{n}"


def settle_transfer_id(payment_id: str) -> str:
    return f"ach-settle:{payment_id}"


def cancel_transfer_id(payment_id: str) -> str:
    """The void of a canceled payment's hold."""
    return f"ach-cancel:{payment_id}"


def return_transfer_id(payment_id: str) -> str:
    return f"ach-return:{payment_id}"


@dataclass(frozen=True)
class Outgoing:
    """An entry ready for a file: our row plus the bank details (in memory only)."""

    entry_id: int
    kind: str
    amount: int
    same_day: bool
    routing: str
    account_number: str
    account_type: str
    holder_type: str
    holder_name: str
    individual_id: str  # the payment id (or the bank account id for micro-deposits)


@dataclass(frozen=True)
class Originator:
    odfi_routing: str
    company_name: str
    company_id: str
    destination_name: str = "FEDERAL RESERVE BANK"
    origin_name: str = "PAYNODE"
    description: str = "PAYNODE"


@dataclass(frozen=True)
class BuiltFile:
    text: str
    traces: dict[int, tuple[str, dt.date]]  # entry id -> (trace number, effective date)
    total_debit: int
    total_credit: int


def effective(now: dt.datetime, same_day: bool) -> tuple[dt.date, bool]:
    """The effective entry date and whether the entry is still same-day.

    A same-day entry that missed today's window rolls to the next business
    day as a standard entry.
    """
    today = now.astimezone(EASTERN).date()
    if same_day:
        day = settlement_date(now, same_day=True)
        if day == today:
            return day, True
    return settlement_date(now, same_day=False), False


def build(
    entries: Sequence[Outgoing], origin: Originator, now: dt.datetime, file_id_modifier: str
) -> BuiltFile:
    """One NACHA file for ``entries``: a batch per (SEC code, effective date, same-day)."""
    assert entries, "a file holds at least one entry"
    groups: dict[tuple[str, dt.date, bool], list[Outgoing]] = {}
    for e in entries:
        day, same_day = effective(now, e.same_day and e.amount <= SAME_DAY_LIMIT)
        groups.setdefault((sec_code(e.kind, e.holder_type), day, same_day), []).append(e)
    batches, traces = [], {}
    debit = credit = 0
    for number, ((sec, day, same_day), group) in enumerate(sorted(groups.items()), start=1):
        rendered = []
        for e in group:
            trace = trace_number(origin.odfi_routing, e.entry_id % 10_000_000)
            traces[e.entry_id] = (trace, day)
            code = transaction_code(e.kind, e.account_type)
            rendered.append(
                Entry(
                    transaction_code=code,
                    routing=e.routing,
                    account_number=e.account_number,
                    amount=e.amount,
                    individual_id=e.individual_id[:15],
                    individual_name=_ascii(e.holder_name)[:22],
                    trace_number=trace,
                )
            )
            if e.kind == "debit":
                debit += e.amount
            else:
                credit += e.amount
        batches.append(
            Batch(
                sec_code=sec,
                company_name=origin.company_name,
                company_id=origin.company_id,
                entry_description=origin.description,
                effective_date=day,
                same_day=same_day,
                odfi_routing=origin.odfi_routing,
                entries=tuple(sorted(rendered, key=lambda x: x.trace_number)),
                batch_number=number,
            )
        )
    header = FileHeader(
        immediate_destination=origin.odfi_routing,
        immediate_origin=origin.odfi_routing,
        destination_name=origin.destination_name,
        origin_name=origin.origin_name,
        created=now.astimezone(EASTERN).replace(tzinfo=None),
        file_id_modifier=file_id_modifier,
    )
    return BuiltFile(build_file(header, batches), traces, debit, credit)


def _ascii(name: str) -> str:
    """NACHA fields are upper-case ASCII: fold what cannot be sent."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(c if 32 <= ord(c) < 127 else " " for c in folded).strip() or "ACCOUNT HOLDER"
