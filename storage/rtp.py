"""RTP in PostgreSQL: each instant payment's exchange with the network, and the requests
for payment our users receive (migration 21).

A request's creditor name and account number are sealed with :mod:`storage.pii`;
what a payer reads of them is the name and the last 4 digits.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.domain.rails.iso20022 import Party
from paynode.storage import ach, pii
from paynode.storage.events import event_id, insert_statement
from paynode.storage.keyring import Keyring
from paynode.storage.rows import record


class RtpTransfer(msgspec.Struct, kw_only=True):
    payment_id: str
    end_to_end_id: str
    message_id: str
    bank_account_id: str | None
    request_id: str | None
    status: str  # sending | accepted | rejected
    reason: str | None
    sent_at: dt.datetime
    answered_at: dt.datetime | None


class Request(msgspec.Struct, kw_only=True):
    id: str
    end_to_end_id: str
    message_id: str
    owner_user_id: str
    account_id: str
    amount: int
    currency: str
    creditor_routing: str
    creditor_last4: str
    remittance: str
    expires_at: dt.datetime
    status: str  # pending | accepted | declined | expired
    payment_id: str | None
    created_at: dt.datetime


_T_COLS = ", ".join(RtpTransfer.__struct_fields__)
_R_COLS = ", ".join(Request.__struct_fields__)


# -- transfers ----------------------------------------------------------------------------


async def add_transfer(
    conn: AsyncConnection,
    payment_id: str,
    end_to_end_id: str,
    message_id: str,
    bank_account_id: str | None,
    request_id: str | None,
) -> None:
    """Record the payment's exchange (once; again is a no-op), before it is first sent."""
    await conn.execute(
        sa.text(
            "INSERT INTO rtp_transfers (payment_id, end_to_end_id, message_id, bank_account_id,"
            " request_id, status) VALUES (:p, :e, :m, :b, :r, 'sending')"
            " ON CONFLICT (payment_id) DO NOTHING"
        ),
        {"p": payment_id, "e": end_to_end_id, "m": message_id, "b": bank_account_id,
         "r": request_id},
    )  # fmt: skip


async def transfer_of(conn: AsyncConnection, payment_id: str) -> RtpTransfer | None:
    row = (
        await conn.execute(
            sa.text(f"SELECT {_T_COLS} FROM rtp_transfers WHERE payment_id = :p"),
            {"p": payment_id},
        )
    ).first()
    return None if row is None else record(RtpTransfer, row)


async def answer(conn: AsyncConnection, payment_id: str, status: str, reason: str | None) -> bool:
    """Record the network's final answer; False if one was recorded already (a replay)."""
    assert status in ("accepted", "rejected"), status
    row = (
        await conn.execute(
            sa.text(
                "UPDATE rtp_transfers SET status = :s, reason = :r, answered_at = now()"
                " WHERE payment_id = :p AND status = 'sending' RETURNING payment_id"
            ),
            {"s": status, "r": reason, "p": payment_id},
        )
    ).first()
    return row is not None


async def claim_unanswered(
    conn: AsyncConnection, older_than: dt.datetime, limit: int
) -> list[RtpTransfer]:
    """Exchanges sent before ``older_than`` and still unanswered, claimed for one pass:
    their ``sent_at`` moves to now, so another front's pass leaves them alone."""
    rows = await conn.execute(
        sa.text(
            "UPDATE rtp_transfers SET sent_at = now() WHERE payment_id IN ("
            " SELECT payment_id FROM rtp_transfers WHERE status = 'sending' AND sent_at < :t"
            " ORDER BY sent_at LIMIT :n FOR UPDATE SKIP LOCKED)"
            f" RETURNING {_T_COLS}"
        ),
        {"t": older_than, "n": limit},
    )
    return [record(RtpTransfer, r) for r in rows]


async def creditor(conn: AsyncConnection, keys: Keyring, t: RtpTransfer) -> Party:
    """Whom the payment credits, opened for the message (in memory only)."""
    if t.bank_account_id is not None:
        d = await ach.details(conn, keys, t.bank_account_id)
        return Party(d.holder_name, d.account_number, d.routing_number)
    assert t.request_id is not None
    row = (
        await conn.execute(
            sa.text(
                "SELECT creditor_name_ct, creditor_account_ct, creditor_routing"
                " FROM rtp_requests WHERE id = :id"
            ),
            {"id": t.request_id},
        )
    ).one()
    return Party(
        pii.open_(keys, bytes(row[0]), "rtp_requests", "creditor_name_ct", t.request_id),
        pii.open_(keys, bytes(row[1]), "rtp_requests", "creditor_account_ct", t.request_id),
        row[2],
    )


# -- requests for payment -----------------------------------------------------------------


async def add_request(
    conn: AsyncConnection, keys: Keyring, request_id: str, values: dict[str, Any],
    creditor: Party,
) -> tuple[Request, bool]:  # fmt: skip
    """Store a received request; (stored, new). The same end-to-end id again returns the
    first one (the network delivers at least once)."""
    sealed: dict[str, bytes] = {
        "name": pii.seal(keys, creditor.name, "rtp_requests", "creditor_name_ct", request_id),
        "acct": pii.seal(keys, creditor.account, "rtp_requests", "creditor_account_ct",
                         request_id),
    }  # fmt: skip
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO rtp_requests (id, end_to_end_id, message_id, owner_user_id,"
                " account_id, amount, currency, creditor_name_ct, creditor_routing,"
                " creditor_account_ct, creditor_last4, remittance, expires_at, status)"
                " VALUES (:id, :end_to_end_id, :message_id, :owner_user_id, :account_id,"
                " :amount, :currency, :name, :routing, :acct, :last4, :remittance,"
                " :expires_at, 'pending') ON CONFLICT (end_to_end_id) DO NOTHING"
                f" RETURNING {_R_COLS}"
            ),
            values
            | sealed
            | {
                "id": request_id,
                "routing": creditor.agent,
                "last4": creditor.account[-4:],
            },
        )
    ).first()
    if row is not None:
        return record(Request, row), True
    found = (
        await conn.execute(
            sa.text(f"SELECT {_R_COLS} FROM rtp_requests WHERE end_to_end_id = :e"),
            {"e": values["end_to_end_id"]},
        )
    ).one()
    return record(Request, found), False


async def get_request(conn: AsyncConnection, request_id: str, lock: bool = False) -> Request | None:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT {_R_COLS} FROM rtp_requests WHERE id = :id"
                + (" FOR UPDATE" if lock else "")
            ),
            {"id": request_id},
        )
    ).first()
    return None if row is None else record(Request, row)


async def creditor_name(conn: AsyncConnection, keys: Keyring, request_id: str) -> str:
    sealed: bytes = (
        await conn.execute(
            sa.text("SELECT creditor_name_ct FROM rtp_requests WHERE id = :id"), {"id": request_id}
        )
    ).scalar_one()
    return pii.open_(keys, bytes(sealed), "rtp_requests", "creditor_name_ct", request_id)


async def list_requests(
    conn: AsyncConnection, owner: str | None, status: str | None, after: str | None, limit: int
) -> list[Request]:
    where, params = ["true"], {"limit": limit, "owner": owner, "status": status, "after": after}
    if owner is not None:
        where.append("owner_user_id = :owner")
    if status is not None:
        where.append("status = :status")
    if after is not None:
        where.append("id > :after")
    rows = await conn.execute(
        sa.text(
            f"SELECT {_R_COLS} FROM rtp_requests WHERE {' AND '.join(where)}"
            " ORDER BY id LIMIT :limit"
        ),
        params,
    )
    return [record(Request, r) for r in rows]


async def decide_request(
    conn: AsyncConnection, request_id: str, status: str, payment_id: str | None
) -> Request:
    """pending -> accepted (with the payment that pays it), declined or expired."""
    assert status in ("accepted", "declined", "expired"), status
    row = (
        await conn.execute(
            sa.text(
                "UPDATE rtp_requests SET status = :s, payment_id = :p, updated_at = now()"
                f" WHERE id = :id AND status = 'pending' RETURNING {_R_COLS}"
            ),
            {"s": status, "p": payment_id, "id": request_id},
        )
    ).first()
    if row is None:
        found = await get_request(conn, request_id)
        assert found is not None
        return found
    return record(Request, row)


async def reopen_request(conn: AsyncConnection, request_id: str, payment_id: str) -> None:
    """The payment accepting a request was rejected by the network: the request waits for
    the payer again (a new accept makes a new payment)."""
    await conn.execute(
        sa.text(
            "UPDATE rtp_requests SET status = 'pending', payment_id = NULL, updated_at = now()"
            " WHERE id = :id AND status = 'accepted' AND payment_id = :p"
        ),
        {"id": request_id, "p": payment_id},
    )


async def request_paid_by(conn: AsyncConnection, payment_id: str) -> str | None:
    """The request for payment ``payment_id`` pays, if it pays one."""
    return (
        await conn.execute(
            sa.text("SELECT id FROM rtp_requests WHERE payment_id = :p"), {"p": payment_id}
        )
    ).scalar_one_or_none()


async def pending_requests(conn: AsyncConnection, owner: str) -> int:
    return (
        await conn.execute(
            sa.text(
                "SELECT count(*) FROM rtp_requests WHERE owner_user_id = :o AND status = 'pending'"
            ),
            {"o": owner},
        )
    ).scalar_one()


async def emit_received(conn: AsyncConnection, r: Request) -> None:
    """The ``rtp.request_received`` event to the payer (no creditor name: that is PII)."""
    now = time.time_ns()
    data = {
        "request": {
            "id": r.id, "account_id": r.account_id, "amount": r.amount, "currency": r.currency,
            "expires_at": r.expires_at.isoformat(),
        }
    }  # fmt: skip
    await conn.execute(
        sa.text(insert_statement()),
        {"id": event_id(now, f"{r.id}:received"), "type": "rtp.request_received",
         "subject": r.id, "owner": r.owner_user_id, "debit": r.account_id, "credit": None,
         "data": msgspec.json.encode(data).decode(), "created": now},
    )  # fmt: skip
