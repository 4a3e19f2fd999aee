"""Events: their types, ids and bodies, and how each source's rows render.

The outbox has three sources (domain/notify/outbox.py). Ledger events are
*derived*: an ``account.created`` is the ``accounts`` row, a ``transfer.*``
the ``transfers`` row (its type from the row's status). Those rows are
already durable, ordered by commit (``txid``) and immutable, so the shard's
group commit writes nothing else for them (storage/journal.py). Events of
other writers (payments, ACH, risk) are rows of ``events`` with their
``data``, written in the transaction of the change they report
(:func:`insert_statement`).

Ledger events written before migration 9 are ``events`` rows too; derived
events cover only rows above the boundary that migration recorded
(``outbox_boundary``), so none is listed twice and old ids stay valid.
"""

from __future__ import annotations

import hashlib
import re
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
from paynode.domain.notify.outbox import Position, Source

# Types a webhook endpoint or device may subscribe to ("*" = all).
TRANSFER_EVENT = {
    Status.POSTED: "transfer.posted",
    Status.PENDING: "transfer.pending",
    Status.VOIDED: "transfer.voided",
    Status.EXPIRED: "transfer.expired",
}
ACCOUNT_CREATED = "account.created"
LEDGER_EVENTS = (*TRANSFER_EVENT.values(), ACCOUNT_CREATED)  # derived, never new events rows
PAYMENT_EVENTS = (
    "payment.created", "payment.completed", "payment.failed",
    "payment.refunded", "payment.refund_failed",
    # ACH: held, in a file sent to the bank, settled, or returned with a NACHA code.
    "payment.pending", "payment.submitted", "payment.settled", "payment.returned",
    "payment.canceled",
    # A balance monitor's condition became true, or stopped being true.
    "balance.threshold_crossed", "balance.threshold_cleared",
    # Risk: waiting for the payer's one-time code (pushed to their devices), or held for
    # a sanctions review; then processing again once confirmed or approved.
    "payment.requires_action", "payment.in_review", "payment.processing",
)  # fmt: skip
# Bank linking (api/link_routes.py): the bank wants the user to log in again, the login
# was repaired, consent is about to expire, the item was revoked or unlinked (its bank
# accounts closed), balances were read again.
LINK_EVENTS = (
    "bank_link.created", "bank_link.login_required", "bank_link.repaired",
    "bank_link.pending_expiration", "bank_link.revoked", "bank_link.removed",
    "bank_link.balances_updated",
)  # fmt: skip
# RTP: a creditor's request for payment arrived for the user (api/rtp_routes.py).
RTP_EVENTS = ("rtp.request_received",)
# Card disputes (api/dispute_routes.py): opened, under review (evidence sent), won or lost.
DISPUTE_EVENTS = ("charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed")
# Billing (api/billing_service.py): subscriptions and their invoices.
BILLING_EVENTS = (
    "customer.subscription.created", "customer.subscription.updated",
    "customer.subscription.deleted", "invoice.created", "invoice.finalized", "invoice.paid",
    "invoice.payment_failed", "invoice.voided", "invoice.marked_uncollectible",
)  # fmt: skip
# Pushed to every device of the user whatever the device's event choice: the code is in it.
STEP_UP_EVENT = "payment.requires_action"
EVENT_TYPES: tuple[str, ...] = (
    *TRANSFER_EVENT.values(), ACCOUNT_CREATED, *PAYMENT_EVENTS, *LINK_EVENTS,
    *RTP_EVENTS, *BILLING_EVENTS,
)  # fmt: skip
MAX_TYPES_PER_SUBSCRIPTION = 64

# -- ids ----------------------------------------------------------------------------
#
# An events row's id is ``evt_<16 hex ns><16 hex digest>`` (36 characters).
# A derived event's id names its row: ``evt_a_<account id>``, ``evt_t_<transfer
# id>``. Both are computed from the row alone, so they are the same before and
# after any restart, and an id leads back to its row by primary key. The two
# forms cannot collide: a hex id has no ``_`` after ``evt_``.

ACCOUNT_PREFIX = "evt_a_"
TRANSFER_PREFIX = "evt_t_"
# Client ids are 1-64 of [A-Za-z0-9._:-]; the node derives longer ones from them
# ("ach-settle:<payment id>", "~expired:<pending id>"), all well under this.
MAX_SUBJECT_ID = 128
MAX_EVENT_ID = len(TRANSFER_PREFIX) + MAX_SUBJECT_ID
_SUBJECT = re.compile(rf"[A-Za-z0-9._:~-]{{1,{MAX_SUBJECT_ID}}}")
_STORED = re.compile(r"evt_[0-9a-f]{32}")
_PREFIXES = {ACCOUNT_PREFIX: Source.ACCOUNTS, TRANSFER_PREFIX: Source.TRANSFERS}
_PREFIX_OF = {s: p for p, s in _PREFIXES.items()}


def event_id(ts_ns: int, subject: str) -> str:
    """The id of an ``events`` row: time-ordered, and unique without coordination.

    Writers stamp ``ts_ns`` from their own clocks, so the time alone may
    repeat; with a 64-bit digest of the subject beside it, two events
    collide only if they share the nanosecond and the digest.
    """
    assert ts_ns >= 0
    digest = hashlib.blake2b(subject.encode(), digest_size=8).hexdigest()
    return f"evt_{ts_ns:016x}{digest}"


def derived_id(source: Source, subject_id: str) -> str:
    """The id of the event derived from an account or journal row."""
    assert _SUBJECT.fullmatch(subject_id), "account and transfer ids are validated at the edge"
    return _PREFIX_OF[source] + subject_id


class EventRef(msgspec.Struct, frozen=True):
    """Where an event lives: its source and that source's primary key."""

    source: Source
    key: str


def parse_event_id(value: str) -> EventRef | None:
    """The row an event id names, or None if it is not an event id at all."""
    if len(value) > MAX_EVENT_ID:
        return None
    source = _PREFIXES.get(value[: len(ACCOUNT_PREFIX)])
    if source is not None:
        key = value[len(ACCOUNT_PREFIX) :]
        return EventRef(source, key) if _SUBJECT.fullmatch(key) else None
    return EventRef(Source.EVENTS, value) if _STORED.fullmatch(value) else None


def id_at(position: Position) -> str:
    """The id of the event at ``position`` (a position of a real row, not an END)."""
    if position.source == Source.EVENTS:
        return position.key
    return derived_id(position.source, position.key)


def insert_statement() -> str:
    """One event written by a writer other than the shards (payments, ACH), with its body.

    Run it in the transaction of the change it reports. Ledger types are
    refused by the table (migration 9): they are derived from the journal.
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


class StoredEvent(msgspec.Struct):
    event: Event
    position: Position  # where it is in the outbox (its txid: the commit that made it)
    created_ns: int  # unix nanoseconds (``created`` is whole seconds): delivery lag
    users: frozenset[str]  # owners it concerns; empty = admins only
    order_keys: tuple[str, ...]  # accounts (or the subject) it is about


_NS = 1_000_000_000

# -- rendering, one query shape per source ------------------------------------------
#
# Each selects the rows named by ``:keys`` (primary keys) with what the event
# needs: the row itself and the owners it concerns. A transfer's event
# concerns both account owners; an account's, its owner; an events row's, the
# owner_user_id stored with it and the owners of the accounts it names (a
# payment's: payer and payee), or, for a ledger event written before
# migration 9, the owners of the row it names. The same audience as a reader's
# filter (storage/outbox._CONCERNS), so what a user may list is what reaches
# the user's endpoints and devices.

# Derived events exist only above the upgrade boundary (migration 9): below it
# the same change already has an events row, with its own id.
ABOVE_BOUNDARY = "txid > (SELECT txid FROM outbox_boundary)"

_TRANSFER_COLS = ", ".join(
    f"t.{c}::text" if c == "metadata" else f"t.{c}" for c in JournalRow.__struct_fields__
)
_ACCOUNT_COLS = "a.id, a.currency, a.flags, a.metadata::text, a.ts, coalesce(a.owner_user_id, '')"
_N_TRANSFER = len(JournalRow.__struct_fields__)
_N_ACCOUNT = len(AccountSpec.__struct_fields__)

SELECT_ACCOUNT_EVENTS = f"""
SELECT a.txid, {_ACCOUNT_COLS} FROM accounts a
WHERE a.id = ANY(:keys) AND a.{ABOVE_BOUNDARY}
"""
SELECT_TRANSFER_EVENTS = f"""
SELECT t.txid, da.owner_user_id, ca.owner_user_id, {_TRANSFER_COLS}
FROM transfers t
LEFT JOIN accounts da ON da.id = t.debit_account_id
LEFT JOIN accounts ca ON ca.id = t.credit_account_id
WHERE t.id = ANY(:keys) AND t.{ABOVE_BOUNDARY}
"""
SELECT_EVENTS = f"""
SELECT e.id, e.type, e.subject_id, e.data::text, e.txid, e.created, e.owner_user_id,
       da.owner_user_id, ca.owner_user_id,
       {_TRANSFER_COLS},
       {_ACCOUNT_COLS}
FROM events e
LEFT JOIN transfers t ON e.type LIKE 'transfer.%%' AND t.id = e.subject_id
LEFT JOIN accounts a ON e.type = 'account.created' AND a.id = e.subject_id
LEFT JOIN accounts da ON da.id = coalesce(t.debit_account_id, e.debit_account_id)
LEFT JOIN accounts ca ON ca.id = coalesce(t.credit_account_id, e.credit_account_id)
WHERE e.id = ANY(:keys)
"""
SELECT_BY_SOURCE = {
    Source.ACCOUNTS: SELECT_ACCOUNT_EVENTS,
    Source.TRANSFERS: SELECT_TRANSFER_EVENTS,
    Source.EVENTS: SELECT_EVENTS,
}


def type_sql(event_id_column: str) -> str:
    """SQL for the type of the event an id column names, by primary key (NULL: none)."""
    c = event_id_column
    n = len(ACCOUNT_PREFIX)
    assert n == len(TRANSFER_PREFIX)
    return (
        f"CASE WHEN starts_with({c}, '{ACCOUNT_PREFIX}') THEN '{ACCOUNT_CREATED}'"
        f" WHEN starts_with({c}, '{TRANSFER_PREFIX}') THEN (SELECT 'transfer.' || s.status"
        f" FROM transfers s WHERE s.id = substr({c}, {n + 1}))"
        f" ELSE (SELECT s.type FROM events s WHERE s.id = {c}) END"
    )


def _owners(*users: str | None) -> frozenset[str]:
    return frozenset(u for u in users if u)


def account_event(row: Sequence[Any]) -> StoredEvent:
    """One row of :data:`SELECT_ACCOUNT_EVENTS` as its ``account.created`` event."""
    assert len(row) == 1 + _N_ACCOUNT
    spec = AccountSpec(*row[1:])
    return StoredEvent(
        Event(derived_id(Source.ACCOUNTS, spec.id), ACCOUNT_CREATED, spec.ts // _NS,
              {"account": account_data(spec)}),
        Position(row[0], Source.ACCOUNTS, spec.id),
        spec.ts,
        _owners(spec.owner),
        (spec.id,),
    )  # fmt: skip


def transfer_event(row: Sequence[Any]) -> StoredEvent:
    """One row of :data:`SELECT_TRANSFER_EVENTS` as its ``transfer.*`` event."""
    assert len(row) == 3 + _N_TRANSFER
    txid, d_owner, c_owner = row[:3]
    jr = JournalRow(*row[3:])
    return StoredEvent(
        Event(derived_id(Source.TRANSFERS, jr.id), TRANSFER_EVENT[jr.status], jr.ts // _NS,
              {"transfer": transfer_data(jr)}),
        Position(txid, Source.TRANSFERS, jr.id),
        jr.ts,
        _owners(d_owner, c_owner),
        (jr.debit_account_id, jr.credit_account_id),
    )  # fmt: skip


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """One row of :data:`SELECT_EVENTS` as an event with its audience."""
    assert len(row) == 9 + _N_TRANSFER + _N_ACCOUNT
    eid, etype, subject, data, txid, created_ns, owner, d_owner, c_owner = row[:9]
    t = row[9 : 9 + _N_TRANSFER]
    a = row[9 + _N_TRANSFER :]
    keys: tuple[str, ...]
    if t[0] is not None:  # a ledger event from before migration 9: the body is its row's
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
    return StoredEvent(
        Event(eid, etype, created_ns // _NS, body),
        Position(txid, Source.EVENTS, eid),
        created_ns,
        _owners(owner, d_owner, c_owner),
        keys,
    )


RENDER_BY_SOURCE = {
    Source.ACCOUNTS: account_event,
    Source.TRANSFERS: transfer_event,
    Source.EVENTS: stored_event,
}
