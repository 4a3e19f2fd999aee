"""Bank accounts, ACH entries and NACHA files in PostgreSQL.

Account numbers, holder names, micro-deposit amounts and whole NACHA files
(which hold account numbers) are sealed with :mod:`storage.pii`; responses
carry the last 4 digits only.

Routing numbers are stored in the clear, on purpose: a routing number names a
bank, not a person or an account. It is printed on every check and published
by the Federal Reserve in the FedACH directory (storage/data/), so sealing it
hides nothing an attacker cannot look up, while the node needs it in the
clear to name the bank (the directory join), to validate it, to group entries
by receiving bank and for operators to read. The account number is what
makes a debit possible, and it is sealed.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.storage import pii
from paynode.storage.keyring import Keyring
from paynode.storage.rows import record

MAX_VERIFY_ATTEMPTS = 3
FILE_LIMIT = 8 * 1024 * 1024  # sealed NACHA file size (about 80,000 entries)


class BankAccount(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str | None
    routing_number: str
    account_last4: str
    account_type: str
    holder_type: str
    status: str
    verify_attempts: int
    created_at: dt.datetime
    verified_at: dt.datetime | None
    is_default: bool = False
    # Linked through an aggregator (migration 22): verified without micro-deposits
    link_item_id: str | None = None
    account_name: str | None = None
    verification_method: str = "microdeposits"
    balance_available: int | None = None
    balance_current: int | None = None
    balances_at: dt.datetime | None = None


class BankDetails(msgspec.Struct, kw_only=True):
    """What a NACHA entry needs: in memory only."""

    routing_number: str
    account_number: str
    account_type: str
    holder_type: str
    holder_name: str


_COLS = ", ".join(BankAccount.__struct_fields__)


def _row(row: Sequence) -> BankAccount:
    return record(BankAccount, row)


def _seal(keys: Keyring, value: str, column: str, row_id: str) -> bytes:
    return pii.seal(keys, value, "bank_accounts", column, row_id)


async def create_bank_account(
    conn: AsyncConnection,
    keys: Keyring,
    account_id: str,
    owner: str | None,
    routing: str,
    account_number: str,
    account_type: str,
    holder_type: str,
    holder_name: str,
    micro: tuple[int, int],
) -> BankAccount:
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO bank_accounts (id, owner_user_id, routing_number, account_ct,"
                " account_last4, account_type, holder_type, holder_ct, status, micro_ct)"
                " VALUES (:id, :owner, :routing, :acct, :last4, :type, :htype, :holder,"
                f" 'pending_verification', :micro) RETURNING {_COLS}"
            ),
            {
                "id": account_id,
                "owner": owner,
                "routing": routing,
                "acct": _seal(keys, account_number, "account_ct", account_id),
                "last4": account_number[-4:],
                "type": account_type,
                "htype": holder_type,
                "holder": _seal(keys, holder_name, "holder_ct", account_id),
                "micro": _seal(keys, f"{micro[0]},{micro[1]}", "micro_ct", account_id),
            },
        )
    ).one()
    return _row(row)


async def create_linked_bank_account(
    conn: AsyncConnection,
    keys: Keyring,
    account_id: str,
    owner: str,
    link_item_id: str,
    external_account_id: str,
    routing: str,
    account_number: str,
    account_type: str,
    holder_name: str,
    account_name: str,
    balances: tuple[int | None, int],
) -> tuple[BankAccount, bool]:
    """An item's account, verified by the aggregator (the bank told it the numbers):
    (the account, created). The item's account already here is returned as it is."""
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO bank_accounts (id, owner_user_id, routing_number, account_ct,"
                " account_last4, account_type, holder_type, holder_ct, status, verified_at,"
                " link_item_id, external_account_id, account_name, verification_method,"
                " balance_available, balance_current, balances_at) VALUES (:id, :owner,"
                " :routing, :acct, :last4, :type, 'individual', :holder, 'verified', now(),"
                " :item, :ext, :name, 'instant', :avail, :cur, now())"
                " ON CONFLICT (link_item_id, external_account_id)"
                f" WHERE link_item_id IS NOT NULL DO NOTHING RETURNING {_COLS}"
            ),
            {
                "id": account_id,
                "owner": owner,
                "routing": routing,
                "acct": _seal(keys, account_number, "account_ct", account_id),
                "last4": account_number[-4:],
                "type": account_type,
                "holder": _seal(keys, holder_name, "holder_ct", account_id),
                "item": link_item_id,
                "ext": external_account_id,
                "name": account_name,
                "avail": balances[0],
                "cur": balances[1],
            },
        )
    ).first()
    if row is not None:
        return _row(row), True
    found = (
        await conn.execute(
            sa.text(
                f"SELECT {_COLS} FROM bank_accounts WHERE link_item_id = :item"
                " AND external_account_id = :ext"
            ),
            {"item": link_item_id, "ext": external_account_id},
        )
    ).one()
    return _row(found), False


async def set_balances(
    conn: AsyncConnection, link_item_id: str, external_account_id: str,
    balances: tuple[int | None, int],
) -> None:  # fmt: skip
    await conn.execute(
        sa.text(
            "UPDATE bank_accounts SET balance_available = :avail, balance_current = :cur,"
            " balances_at = now() WHERE link_item_id = :item AND external_account_id = :ext"
        ),
        {"avail": balances[0], "cur": balances[1], "item": link_item_id,
         "ext": external_account_id},
    )  # fmt: skip


async def close_item_accounts(conn: AsyncConnection, link_item_id: str) -> list[str]:
    """Close every open bank account of an item (unlinked or consent revoked): their ids."""
    rows = await conn.execute(
        sa.text(
            "UPDATE bank_accounts SET status = 'closed', is_default = false"
            " WHERE link_item_id = :item AND status <> 'closed' RETURNING id"
        ),
        {"item": link_item_id},
    )
    return [r[0] for r in rows]


async def item_accounts(conn: AsyncConnection, link_item_id: str) -> list[BankAccount]:
    rows = await conn.execute(
        sa.text(
            f"SELECT {_COLS} FROM bank_accounts WHERE link_item_id = :item ORDER BY created_at, id"
        ),
        {"item": link_item_id},
    )
    return [_row(r) for r in rows]


async def get_bank_account(
    conn: AsyncConnection, account_id: str, lock: bool = False
) -> BankAccount | None:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT {_COLS} FROM bank_accounts WHERE id = :id"
                + (" FOR UPDATE" if lock else "")
            ),
            {"id": account_id},
        )
    ).first()
    return None if row is None else _row(row)


async def close_bank_account(conn: AsyncConnection, account_id: str) -> BankAccount:
    """Closed for good: no new payment uses it (entries already made go on)."""
    row = (
        await conn.execute(
            sa.text(
                "UPDATE bank_accounts SET status = 'closed', is_default = false"
                f" WHERE id = :id RETURNING {_COLS}"
            ),
            {"id": account_id},
        )
    ).one()
    return _row(row)


async def make_default(conn: AsyncConnection, account_id: str, owner: str | None) -> BankAccount:
    """The owner's default now; the previous one is not (one statement order: off first,
    so the unique index on open defaults never sees two)."""
    await conn.execute(
        sa.text(
            "UPDATE bank_accounts SET is_default = false WHERE is_default"
            " AND owner_user_id IS NOT DISTINCT FROM :owner AND id <> :id"
        ),
        {"owner": owner, "id": account_id},
    )
    row = (
        await conn.execute(
            sa.text(f"UPDATE bank_accounts SET is_default = true WHERE id = :id RETURNING {_COLS}"),
            {"id": account_id},
        )
    ).one()
    return _row(row)


async def list_bank_accounts(conn: AsyncConnection, owner: str | None) -> list[BankAccount]:
    where = "true" if owner is None else "owner_user_id = :owner"
    rows = await conn.execute(
        sa.text(f"SELECT {_COLS} FROM bank_accounts WHERE {where} ORDER BY created_at, id"),
        {"owner": owner},
    )
    return [_row(r) for r in rows]


async def details(conn: AsyncConnection, keys: Keyring, account_id: str) -> BankDetails:
    row = (
        await conn.execute(
            sa.text(
                "SELECT routing_number, account_ct, account_type, holder_type, holder_ct"
                " FROM bank_accounts WHERE id = :id"
            ),
            {"id": account_id},
        )
    ).one()
    return BankDetails(
        routing_number=row[0],
        account_number=pii.open_(keys, bytes(row[1]), "bank_accounts", "account_ct", account_id),
        account_type=row[2],
        holder_type=row[3],
        holder_name=pii.open_(keys, bytes(row[4]), "bank_accounts", "holder_ct", account_id),
    )


async def verify(
    conn: AsyncConnection, keys: Keyring, account_id: str, amounts: Sequence[int]
) -> tuple[BankAccount, bool]:
    """Check the two micro-deposit amounts (any order); (account, matched). Attempts are capped."""
    row = (
        await conn.execute(
            sa.text(f"SELECT {_COLS}, micro_ct FROM bank_accounts WHERE id = :id FOR UPDATE"),
            {"id": account_id},
        )
    ).one()
    account, sealed = _row(row[:-1]), row[-1]
    if account.status != "pending_verification" or sealed is None:  # None: linked instantly
        return account, account.status == "verified"
    expected = pii.open_(keys, bytes(sealed), "bank_accounts", "micro_ct", account_id)
    given = ",".join(str(a) for a in sorted(amounts))
    want = ",".join(sorted(expected.split(","), key=int))
    matched = hmac.compare_digest(given, want)
    attempts = account.verify_attempts + 1
    if matched:
        status = "verified"
    else:
        status = "verification_failed" if attempts >= MAX_VERIFY_ATTEMPTS else account.status
    updated = (
        await conn.execute(
            sa.text(
                "UPDATE bank_accounts SET verify_attempts = :n, status = :s,"
                " verified_at = CASE WHEN :s = 'verified' THEN now() END"
                f" WHERE id = :id RETURNING {_COLS}"
            ),
            {"n": attempts, "s": status, "id": account_id},
        )
    ).one()
    return _row(updated), matched


# -- entries -------------------------------------------------------------------------------


class PendingEntry(msgspec.Struct, kw_only=True):
    id: int
    payment_id: str | None
    bank_account_id: str
    kind: str
    amount: int
    same_day: bool


async def add_entry(
    conn: AsyncConnection,
    bank_account_id: str,
    kind: str,
    amount: int,
    payment_id: str | None = None,
    same_day: bool = False,
) -> int:
    return (
        await conn.execute(
            sa.text(
                "INSERT INTO ach_entries (payment_id, bank_account_id, kind, amount, same_day,"
                " status) VALUES (:p, :b, :k, :a, :sd, 'pending') RETURNING id"
            ),
            {"p": payment_id, "b": bank_account_id, "k": kind, "a": amount, "sd": same_day},
        )
    ).scalar_one()


async def entry_of(conn: AsyncConnection, payment_id: str) -> int | None:
    row = (
        await conn.execute(
            sa.text("SELECT id FROM ach_entries WHERE payment_id = :p"), {"p": payment_id}
        )
    ).first()
    return None if row is None else row[0]


async def effective_date_of(conn: AsyncConnection, payment_id: str) -> dt.date | None:
    """The effective date of a payment's entry, once a file took it."""
    row = (
        await conn.execute(
            sa.text("SELECT effective_date FROM ach_entries WHERE payment_id = :p"),
            {"p": payment_id},
        )
    ).first()
    return None if row is None else row[0]


async def cancel_entry(conn: AsyncConnection, payment_id: str) -> str | None:
    """Cancel a payment's entry if no file has taken it; its status afterwards (None: the
    payment has no entry yet). Under the entry's row lock: the cutoff, which takes
    pending entries FOR UPDATE SKIP LOCKED, either took it first or never will."""
    row = (
        await conn.execute(
            sa.text("SELECT id, status FROM ach_entries WHERE payment_id = :p FOR UPDATE"),
            {"p": payment_id},
        )
    ).first()
    if row is None:
        return None
    if row[1] != "pending":
        return str(row[1])
    await conn.execute(
        sa.text("UPDATE ach_entries SET status = 'canceled' WHERE id = :id"), {"id": row[0]}
    )
    return "canceled"


async def pending_entries(conn: AsyncConnection, limit: int) -> list[PendingEntry]:
    rows = await conn.execute(
        sa.text(
            "SELECT id, payment_id, bank_account_id, kind, amount, same_day FROM ach_entries"
            " WHERE status = 'pending' ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
        ),
        {"limit": limit},
    )
    return [record(PendingEntry, r) for r in rows]


async def mark_submitted(
    conn: AsyncConnection, file_id: str, traces: dict[int, tuple[str, dt.date]]
) -> None:
    await conn.execute(
        sa.text(
            "UPDATE ach_entries SET status = 'submitted', file_id = :f, trace_number = :t,"
            " effective_date = :d, submitted_at = now() WHERE id = :id AND status = 'pending'"
        ),
        [{"f": file_id, "t": t, "d": d, "id": i} for i, (t, d) in traces.items()],
    )


class EntryRef(msgspec.Struct, kw_only=True):
    id: int
    payment_id: str | None
    kind: str
    amount: int
    status: str


async def entries_by_trace(conn: AsyncConnection, traces: Sequence[str]) -> dict[str, EntryRef]:
    rows = await conn.execute(
        sa.text(
            "SELECT trace_number, id, payment_id, kind, amount, status FROM ach_entries"
            " WHERE trace_number = ANY(:t) FOR UPDATE"
        ),
        {"t": list(traces)},
    )
    return {r[0]: EntryRef(id=r[1], payment_id=r[2], kind=r[3], amount=r[4], status=r[5])
            for r in rows}  # fmt: skip


async def entries_of_file(conn: AsyncConnection, file_id: str) -> list[str]:
    rows = await conn.execute(
        sa.text("SELECT trace_number FROM ach_entries WHERE file_id = :f ORDER BY id"),
        {"f": file_id},
    )
    return [r[0] for r in rows]


async def set_entry_status(
    conn: AsyncConnection, entry_id: int, status: str, return_code: str | None = None
) -> None:
    column = {"settled": "settled_at", "returned": "returned_at"}[status]
    await conn.execute(
        sa.text(
            f"UPDATE ach_entries SET status = :s, return_code = :c, {column} = now() WHERE id = :id"
        ),
        {"s": status, "c": return_code, "id": entry_id},
    )


async def fail_verification(conn: AsyncConnection, trace: str) -> None:
    """A micro-deposit came back: the account cannot be verified."""
    await conn.execute(
        sa.text(
            "UPDATE bank_accounts SET status = 'verification_failed' WHERE id = (SELECT"
            " bank_account_id FROM ach_entries WHERE trace_number = :t)"
            " AND status = 'pending_verification'"
        ),
        {"t": trace},
    )


# -- files ----------------------------------------------------------------------------------


class AchFile(msgspec.Struct, kw_only=True):
    id: str
    direction: str
    entries: int
    total_debit: int
    total_credit: int
    created_at: dt.datetime
    transmitted_at: dt.datetime | None


_FILE_COLS = ", ".join(AchFile.__struct_fields__)


async def store_file(
    conn: AsyncConnection,
    keys: Keyring,
    file_id: str,
    direction: str,
    text: str,
    entries: int,
    total_debit: int,
    total_credit: int,
) -> None:
    await conn.execute(
        sa.text(
            "INSERT INTO ach_files (id, direction, content_ct, entries, total_debit,"
            " total_credit) VALUES (:id, :d, :ct, :n, :dr, :cr)"
        ),
        {
            "id": file_id,
            "d": direction,
            "ct": pii.seal(keys, text, "ach_files", "content_ct", file_id, limit=FILE_LIMIT),
            "n": entries,
            "dr": total_debit,
            "cr": total_credit,
        },
    )


async def mark_transmitted(conn: AsyncConnection, file_id: str) -> None:
    await conn.execute(
        sa.text("UPDATE ach_files SET transmitted_at = now() WHERE id = :id"), {"id": file_id}
    )


async def get_file(
    conn: AsyncConnection, keys: Keyring, file_id: str
) -> tuple[AchFile, str] | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_FILE_COLS}, content_ct FROM ach_files WHERE id = :id"),
            {"id": file_id},
        )
    ).first()
    if row is None:
        return None
    meta = record(AchFile, row[:-1])
    return meta, pii.open_(keys, bytes(row[-1]), "ach_files", "content_ct", file_id)


async def list_files(conn: AsyncConnection, limit: int) -> list[AchFile]:
    rows = await conn.execute(
        sa.text(f"SELECT {_FILE_COLS} FROM ach_files ORDER BY created_at DESC LIMIT :l"),
        {"l": limit},
    )
    return [record(AchFile, r) for r in rows]


# -- status updates that could not be applied (migration 15) -------------------------


class DeadLetter(msgspec.Struct, kw_only=True):
    id: int
    kind: str  # settlement | return
    entry_id: int
    payment_id: str | None
    trace_number: str
    return_code: str | None
    last_error: str
    attempts: int
    created_at: dt.datetime
    last_attempt_at: dt.datetime
    replayed_at: dt.datetime | None


_LETTER_COLS = ", ".join(DeadLetter.__struct_fields__)


async def dead_letter(
    conn: AsyncConnection, kind: str, entry_id: int, payment_id: str | None, trace: str,
    return_code: str | None, error: str,
) -> None:  # fmt: skip
    """Keep a status update the ledger refused; a repeat counts an attempt on the open one."""
    assert kind in ("settlement", "return") and error
    await conn.execute(
        sa.text(
            "INSERT INTO ach_dead_letters (kind, entry_id, payment_id, trace_number, return_code,"
            " last_error) VALUES (:k, :e, :p, :t, :r, :err)"
            " ON CONFLICT (entry_id, kind) WHERE replayed_at IS NULL DO UPDATE SET"
            " attempts = ach_dead_letters.attempts + 1, last_error = EXCLUDED.last_error,"
            " return_code = coalesce(EXCLUDED.return_code, ach_dead_letters.return_code),"
            " last_attempt_at = now()"
        ),
        {"k": kind, "e": entry_id, "p": payment_id, "t": trace, "r": return_code, "err": error},
    )


async def close_dead_letters(conn: AsyncConnection, entry_id: int, kind: str) -> None:
    """The update is applied now: its open letter (if any) is done."""
    await conn.execute(
        sa.text(
            "UPDATE ach_dead_letters SET replayed_at = now()"
            " WHERE entry_id = :e AND kind = :k AND replayed_at IS NULL"
        ),
        {"e": entry_id, "k": kind},
    )


async def dead_letters(conn: AsyncConnection, state: str, limit: int) -> list[DeadLetter]:
    """Letters, oldest first: ``open``, ``replayed`` or ``all``."""
    where = {"open": "replayed_at IS NULL", "replayed": "replayed_at IS NOT NULL",
             "all": "true"}[state]  # fmt: skip
    rows = await conn.execute(
        sa.text(f"SELECT {_LETTER_COLS} FROM ach_dead_letters WHERE {where} ORDER BY id LIMIT :n"),
        {"n": limit},
    )
    return [record(DeadLetter, r) for r in rows]


async def get_dead_letter(conn: AsyncConnection, letter_id: int) -> DeadLetter | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_LETTER_COLS} FROM ach_dead_letters WHERE id = :id"),
            {"id": letter_id},
        )
    ).first()
    return None if row is None else record(DeadLetter, row)
