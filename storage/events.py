"""The event outbox: what clients are told, written with the change it reports.

Every journal row and every new account produces exactly one event row, in
the same COPY transaction (:func:`storage.journal.commit`), so an event
exists if and only if its change committed. Journal rows and accounts never
change, so their events carry no ``data`` column: the body is rendered from
the subject when it is read. Events of other writers (payments, ACH) store
their ``data``.

Readers follow the outbox in ``(txid, id)`` order and only below
``pg_snapshot_xmin``: an id handed out earlier may commit later, and a cursor
past it would skip it for good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from paynode.domain.ledger.model import (
    ACCOUNT_FLAGS,
    TRANSFER_FLAGS,
    AccountSpec,
    JournalRow,
    Status,
    flag_names,
)

# Types a webhook endpoint or device may subscribe to ("*" = all).
TRANSFER_EVENT = {
    Status.POSTED: "transfer.posted",
    Status.PENDING: "transfer.pending",
    Status.VOIDED: "transfer.voided",
    Status.EXPIRED: "transfer.expired",
}
ACCOUNT_CREATED = "account.created"
PAYMENT_EVENTS = (
    "payment.created", "payment.completed", "payment.failed",
    "payment.refunded", "payment.refund_failed",
    # ACH: held, in a file sent to the bank, settled, or returned with a NACHA code.
    "payment.pending", "payment.submitted", "payment.settled", "payment.returned",
    # Risk: waiting for the payer's one-time code (pushed to their devices), or held for
    # a sanctions review; then processing again once confirmed or approved.
    "payment.requires_action", "payment.in_review", "payment.processing",
)  # fmt: skip
# Pushed to every device of the user whatever the device's event choice: the code is in it.
STEP_UP_EVENT = "payment.requires_action"
EVENT_TYPES: tuple[str, ...] = (*TRANSFER_EVENT.values(), ACCOUNT_CREATED, *PAYMENT_EVENTS)
MAX_TYPES_PER_SUBSCRIPTION = 64


def event_id(ts_ns: int, subject: str) -> str:
    """Time-ordered, and unique without coordination between writers.

    Shards stamp ``ts_ns`` from their own clocks (a two-phase group's rows
    come from several), so the time alone may repeat across shards; with a
    64-bit digest of the subject beside it, two events collide only if they
    share the nanosecond and the digest.
    """
    assert ts_ns >= 0
    digest = hashlib.blake2b(subject.encode(), digest_size=8).hexdigest()
    return f"evt_{ts_ns:016x}{digest}"


EVENT_ID_LENGTH = 36


def created_of(event_id_: str) -> int:
    """Unix seconds the event was created (its id holds the nanoseconds)."""
    return int(event_id_[4:20], 16) // 1_000_000_000


_NULL = "\\N"
EVENT_COLUMNS = (
    "id", "type", "subject_id", "owner_user_id", "debit_account_id", "credit_account_id",
    "data", "created",
)  # fmt: skip


def event_lines(accounts: Sequence[AccountSpec], rows: Sequence[JournalRow]) -> bytes:
    """COPY text lines of the events for new ``accounts`` and journal ``rows``."""
    n = _NULL
    out = [
        f"{event_id(a.ts, a.id)}\t{ACCOUNT_CREATED}\t{a.id}\t{a.owner or n}\t{n}\t{n}\t{n}"
        f"\t{a.ts}\n"
        for a in accounts
    ]
    out.extend(
        f"{event_id(r.ts, r.id)}\t{TRANSFER_EVENT[r.status]}\t{r.id}\t{n}"
        f"\t{r.debit_account_id}\t{r.credit_account_id}\t{n}\t{r.ts}\n"
        for r in rows
    )
    return "".join(out).encode()


def insert_statement() -> str:
    """One event written by a writer other than the shards (payments, ACH), with its body.

    Run it in the transaction of the change it reports.
    """
    return (
        "INSERT INTO events (id, type, subject_id, owner_user_id, debit_account_id,"
        " credit_account_id, data, created) VALUES (:id, :type, :subject, :owner, :debit,"
        " :credit, :data, :created)"
    )


# -- bodies -------------------------------------------------------------------


def transfer_data(r: JournalRow) -> dict[str, Any]:
    """A journal row as clients see it (``TransferOut`` in the API)."""
    return {
        "id": r.id,
        "status": r.status,
        "debit_account_id": r.debit_account_id,
        "credit_account_id": r.credit_account_id,
        "amount": r.amount,
        "currency": r.currency,
        "flags": flag_names(r.flags, TRANSFER_FLAGS),
        "pending_id": r.pending_id,
        "timeout_s": r.timeout_s or None,
        "metadata": msgspec.json.decode(r.metadata),
        "timestamp": r.ts,
    }


def account_data(a: AccountSpec) -> dict[str, Any]:
    """An account as created (balances change; the event reports the creation)."""
    return {
        "id": a.id,
        "currency": a.currency,
        "flags": flag_names(a.flags, ACCOUNT_FLAGS),
        "metadata": msgspec.json.decode(a.metadata),
        "owner_user_id": a.owner or None,
        "timestamp": a.ts,
    }


class Event(msgspec.Struct):
    """The public event: the webhook body, and one item of ``GET /v1/events``."""

    id: str
    type: str
    created: int  # unix seconds
    data: dict[str, Any]


# Reading events with their bodies and the users they concern. A transfer's
# event concerns both account owners; an account's, its owner; a payment's,
# the owner_user_id stored with it.
_TRANSFER_COLS = ", ".join(
    f"t.{c}::text" if c == "metadata" else f"t.{c}" for c in JournalRow.__struct_fields__
)
SELECT_EVENTS = f"""
SELECT e.id, e.type, e.subject_id, e.data::text, e.txid, e.owner_user_id,
       da.owner_user_id, ca.owner_user_id,
       {_TRANSFER_COLS},
       a.id, a.currency, a.flags, a.metadata::text, a.ts, coalesce(a.owner_user_id, '')
FROM events e
LEFT JOIN transfers t ON e.type LIKE 'transfer.%%' AND t.id = e.subject_id
LEFT JOIN accounts a ON e.type = 'account.created' AND a.id = e.subject_id
LEFT JOIN accounts da ON da.id = t.debit_account_id
LEFT JOIN accounts ca ON ca.id = t.credit_account_id
"""
VISIBLE = "e.txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_N_TRANSFER = len(JournalRow.__struct_fields__)


class StoredEvent(msgspec.Struct):
    event: Event
    txid: int
    users: frozenset[str]  # owners it concerns; empty = admins only
    order_keys: tuple[str, ...]  # accounts (or the subject) it is about


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """One row of :data:`SELECT_EVENTS` as an event with its audience."""
    eid, etype, subject, data, txid, owner, d_owner, c_owner = row[:8]
    t = row[8 : 8 + _N_TRANSFER]
    a = row[8 + _N_TRANSFER :]
    keys: tuple[str, ...]
    if t[0] is not None:
        jr = JournalRow(*t)
        body = {"transfer": transfer_data(jr)}
        keys = (jr.debit_account_id, jr.credit_account_id)
    elif a[0] is not None:
        spec = AccountSpec(*a)
        body = {"account": account_data(spec)}
        keys = (spec.id,)
        d_owner = spec.owner or None
    else:
        body = msgspec.json.decode(data) if data is not None else {}
        keys = (subject,)
    users = frozenset(u for u in (owner, d_owner, c_owner) if u)
    return StoredEvent(Event(eid, etype, created_of(eid), body), txid, users, keys)
