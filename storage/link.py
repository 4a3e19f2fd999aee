"""Linked bank items (one login at one institution, through an aggregator) in PostgreSQL.

The item's access token reads the user's bank data for as long as the item
lives, so it is sealed like an account number (:mod:`storage.pii`) and never
leaves the node: not in an answer, not in a log, not in an event. The bank
accounts an item brings are rows of ``bank_accounts`` (``storage/ach.py``)
with ``link_item_id`` set.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from paynode.storage import pii
from paynode.storage.events import event_id, insert_statement
from paynode.storage.keyring import Keyring
from paynode.storage.rows import record


class Item(msgspec.Struct, kw_only=True):
    id: str
    owner_user_id: str
    provider: str
    external_item_id: str
    institution_id: str
    institution_name: str
    status: str
    error_code: str | None
    consent_expires_at: dt.datetime | None
    balances_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


_COLS = ", ".join(Item.__struct_fields__)


def _row(row: Sequence) -> Item:
    return record(Item, row)


async def create_item(
    conn: AsyncConnection, keys: Keyring, item_id: str, owner: str, provider: str,
    external_item_id: str, access_token: str, institution_id: str, institution_name: str,
) -> tuple[Item, bool]:  # fmt: skip
    """A new item, or the one already made for this aggregator item: (item, created)."""
    row = (
        await conn.execute(
            sa.text(
                "INSERT INTO link_items (id, owner_user_id, provider, external_item_id,"
                " access_ct, institution_id, institution_name, status, balances_at)"
                " VALUES (:id, :owner, :provider, :ext, :access, :ins, :name, 'active', now())"
                f" ON CONFLICT (provider, external_item_id) DO NOTHING RETURNING {_COLS}"
            ),
            {
                "id": item_id, "owner": owner, "provider": provider, "ext": external_item_id,
                "access": pii.seal(keys, access_token, "link_items", "access_ct", item_id),
                "ins": institution_id, "name": institution_name,
            },
        )
    ).first()  # fmt: skip
    if row is not None:
        return _row(row), True
    found = await by_external(conn, provider, external_item_id, lock=True)
    assert found is not None
    return found, False


async def get_item(conn: AsyncConnection, item_id: str, lock: bool = False) -> Item | None:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT {_COLS} FROM link_items WHERE id = :id" + (" FOR UPDATE" if lock else "")
            ),
            {"id": item_id},
        )
    ).first()
    return None if row is None else _row(row)


async def by_external(
    conn: AsyncConnection, provider: str, external_item_id: str, lock: bool = False
) -> Item | None:
    row = (
        await conn.execute(
            sa.text(
                f"SELECT {_COLS} FROM link_items WHERE provider = :p AND external_item_id = :e"
                + (" FOR UPDATE" if lock else "")
            ),
            {"p": provider, "e": external_item_id},
        )
    ).first()
    return None if row is None else _row(row)


async def list_items(conn: AsyncConnection, owner: str | None) -> list[Item]:
    where = "true" if owner is None else "owner_user_id = :owner"
    rows = await conn.execute(
        sa.text(f"SELECT {_COLS} FROM link_items WHERE {where} ORDER BY created_at, id LIMIT 1000"),
        {"owner": owner},
    )
    return [_row(r) for r in rows]


async def access_token(conn: AsyncConnection, keys: Keyring, item_id: str) -> str:
    """The item's access token, opened (in memory only, for one call to the aggregator)."""
    sealed: bytes = (
        await conn.execute(
            sa.text("SELECT access_ct FROM link_items WHERE id = :id"), {"id": item_id}
        )
    ).scalar_one()
    return pii.open_(keys, bytes(sealed), "link_items", "access_ct", item_id)


async def set_status(
    conn: AsyncConnection, item_id: str, status: str, error_code: str | None = None,
    consent_expires_at: dt.datetime | None = None, balances_read: bool = False,
) -> Item:  # fmt: skip
    row = (
        await conn.execute(
            sa.text(
                "UPDATE link_items SET status = :s, error_code = :e, updated_at = now(),"
                " consent_expires_at = COALESCE(:c, consent_expires_at),"
                " balances_at = CASE WHEN :b THEN now() ELSE balances_at END"
                f" WHERE id = :id RETURNING {_COLS}"
            ),
            {"s": status, "e": error_code, "c": consent_expires_at, "b": balances_read,
             "id": item_id},
        )
    ).one()  # fmt: skip
    return _row(row)


async def payment_block(conn: AsyncConnection, bank_account_id: str) -> str | None:
    """The state of the item a bank account was linked through, when it is not usable
    for new payments (``login_required``); None otherwise (or not linked)."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT i.status FROM bank_accounts b JOIN link_items i ON i.id = b.link_item_id"
                " WHERE b.id = :id"
            ),
            {"id": bank_account_id},
        )
    ).first()
    return None if row is None or row[0] == "active" else row[0]


async def emit(conn: AsyncConnection, kind: str, item: Item, extra: dict | None = None) -> None:
    """A ``bank_link.*`` event for the item's owner, in ``conn``'s transaction."""
    now = time.time_ns()
    data = {
        "bank_link": {
            "id": item.id, "status": item.status, "institution_id": item.institution_id,
            "institution_name": item.institution_name, "error_code": item.error_code,
        }
        | (extra or {})
    }  # fmt: skip
    await conn.execute(
        sa.text(insert_statement()),
        {
            "id": event_id(now, f"{item.id}:{kind}:{now}"),
            "type": kind,
            "subject": item.id,
            "owner": item.owner_user_id,
            "debit": None,
            "credit": None,
            "data": msgspec.json.encode(data).decode(),
            "created": now,
        },
    )
