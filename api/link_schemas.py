"""The HTTP contract for bank linking through an account aggregator (Plaid's model).

Tokens go in and out as opaque strings; an item's access token never comes out.
Linked bank accounts are ``BankAccountOut`` (``api/ach_schemas.py``), verified
with ``verification_method`` ``instant``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.api.ach_schemas import BankAccountOut

Token = Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$(?!\n)")]
ItemId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$(?!\n)")]


class LinkTokenIn(msgspec.Struct, forbid_unknown_fields=True):
    """``item_id``: a re-link (update mode) of that item, after the bank asked for a new
    login; without it, a new link."""

    item_id: ItemId | None = None


class LinkTokenOut(msgspec.Struct, kw_only=True):
    link_token: str
    expiration: dt.datetime
    mode: Literal["create", "update"]
    item_id: str | None = None


class SandboxPublicTokenIn(msgspec.Struct, forbid_unknown_fields=True):
    """The user's login at a test institution (ins_1, ins_2, ins_3), standing in for the
    aggregator's Link screens (simulator only)."""

    link_token: Token
    institution_id: Annotated[str, Meta(min_length=1, max_length=64)] = "ins_1"


class PublicTokenOut(msgspec.Struct):
    public_token: str


class ExchangeIn(msgspec.Struct, forbid_unknown_fields=True):
    public_token: Token


class LinkItemOut(msgspec.Struct, kw_only=True):
    id: str
    institution_id: str
    institution_name: str
    # login_required: no new payment from or to its accounts until a re-link;
    # revoked/removed: its accounts are closed
    status: Literal["active", "login_required", "revoked", "removed"]
    error_code: str | None
    consent_expires_at: dt.datetime | None
    balances_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    bank_accounts: list[BankAccountOut]


class LinkItemList(msgspec.Struct):
    items: list[LinkItemOut]


class SandboxWebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    """Make the simulated bank act on an item, and the aggregator tell the node
    (Plaid's /sandbox/item/fire_webhook). ``amount``: for DEFAULT_UPDATE, a transaction
    of this many minor units (signed) posted to the item's first account."""

    webhook_code: Literal[
        "ITEM_LOGIN_REQUIRED", "PENDING_EXPIRATION", "USER_PERMISSION_REVOKED",
        "LOGIN_REPAIRED", "DEFAULT_UPDATE",
    ]  # fmt: skip
    amount: Annotated[int, Meta(ge=-(10**12), le=10**12)] = 0


class SandboxWebhookOut(msgspec.Struct):
    item_id: str
    webhook_code: str
    status: Literal["sent"]


LINK_TYPES = (
    LinkTokenIn, LinkTokenOut, SandboxPublicTokenIn, PublicTokenOut, ExchangeIn, LinkItemOut,
    LinkItemList, SandboxWebhookIn, SandboxWebhookOut,
)  # fmt: skip
