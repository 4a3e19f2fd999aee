"""Bank linking through an account aggregator (Plaid's model), the pure part.

The aggregator (``actors/aggregator_sim.py`` here; Plaid in production) logs the
user in at their bank and hands back a *public token*; the node exchanges it
for an *item* (one login at one institution) and the item's accounts, with
their ACH numbers and balances. Later the aggregator tells us about the item
by webhook. This module holds what both sides agree on (the wire structs
between the node and the aggregator) and the rules the node applies to a
webhook: which item state follows, whether balances are read again, whether
the accounts close.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# Item states on the node. ``login_required``: the bank wants the user to log in again
# (their accounts move no new money until they re-link); ``revoked``: the user withdrew
# consent at the bank or the aggregator; ``removed``: the user unlinked it here.
ItemStatus = Literal["active", "login_required", "revoked", "removed"]
CLOSED_STATES = frozenset({"revoked", "removed"})

# Aggregator error codes (Plaid's names), as the aggregator answers a call.
ITEM_LOGIN_REQUIRED = "ITEM_LOGIN_REQUIRED"
INVALID_LINK_TOKEN = "INVALID_LINK_TOKEN"
INVALID_PUBLIC_TOKEN = "INVALID_PUBLIC_TOKEN"
INVALID_ACCESS_TOKEN = "INVALID_ACCESS_TOKEN"
INVALID_INSTITUTION = "INVALID_INSTITUTION"
ITEM_NOT_FOUND = "ITEM_NOT_FOUND"


class LinkToken(msgspec.Struct, frozen=True):
    link_token: str
    expiration: int  # unix seconds


class LinkAccount(msgspec.Struct, frozen=True, kw_only=True):
    """One account of an item, with its ACH numbers (only ever in memory on our side:
    the account number is sealed the moment it is stored)."""

    account_id: str  # the aggregator's id, stable for the item
    name: str
    mask: str  # last 4 digits
    type: str  # depository
    subtype: Literal["checking", "savings"]
    routing: str
    account: str
    owner_name: str
    available: int | None  # minor units
    current: int
    currency: str = "USD"


class Exchanged(msgspec.Struct, frozen=True, kw_only=True):
    """What a public token is worth: the item and the access token that reads it."""

    item_id: str
    access_token: str
    institution_id: str
    institution_name: str
    client_user_id: str  # whom the link token was made for
    update_mode: bool = False  # made with an item's access token: a re-link


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """The aggregator's reply to a call: a value or an error code (never both)."""

    error: str | None = None
    token: LinkToken | None = None
    public_token: str | None = None
    exchanged: Exchanged | None = None
    accounts: list[LinkAccount] = []
    institution_name: str | None = None


encode = msgspec.msgpack.encode
decode_answer = msgspec.msgpack.Decoder(Answer).decode


# -- webhooks ----------------------------------------------------------------------------

# (webhook_type, webhook_code) -> what the node does. An ITEM ERROR is acted on by its
# error code; other errors are recorded on the item only.
Action = Literal["login_required", "repaired", "refresh", "revoke", "expiring", "ignore"]
_ACTIONS: dict[tuple[str, str], Action] = {
    ("ITEM", "LOGIN_REPAIRED"): "repaired",
    ("ITEM", "PENDING_EXPIRATION"): "expiring",
    ("ITEM", "PENDING_DISCONNECT"): "expiring",
    ("ITEM", "USER_PERMISSION_REVOKED"): "revoke",
    ("ITEM", "USER_ACCOUNT_REVOKED"): "revoke",
    ("TRANSACTIONS", "DEFAULT_UPDATE"): "refresh",
    ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE"): "refresh",
    ("TRANSACTIONS", "INITIAL_UPDATE"): "refresh",
    ("TRANSACTIONS", "HISTORICAL_UPDATE"): "refresh",
    ("AUTH", "DEFAULT_UPDATE"): "refresh",
}
WEBHOOK_TYPES = ("ITEM", "TRANSACTIONS", "AUTH")


def action_for(webhook_type: str, webhook_code: str, error_code: str | None = None) -> Action:
    """What a webhook asks of the node. Unknown ones are ignored (stored, not acted on)."""
    if (webhook_type, webhook_code) == ("ITEM", "ERROR"):
        return "login_required" if error_code == ITEM_LOGIN_REQUIRED else "ignore"
    return _ACTIONS.get((webhook_type, webhook_code), "ignore")


def next_status(current: str, action: Action) -> str:
    """The item's state after ``action``. A closed item stays closed; ``repaired`` and
    ``refresh`` never revive one, and only a re-link clears ``login_required`` (a balance
    read that succeeds after a repair also does, see ``after_read``)."""
    if current in CLOSED_STATES:
        return current
    if action == "login_required":
        return "login_required"
    if action == "repaired":
        return "active"
    if action == "revoke":
        return "revoked"
    return current


def after_read(current: str, error: str | None) -> str:
    """The item's state after the node read its accounts: the aggregator's answer decides
    between ``active`` and ``login_required``; a closed item stays closed."""
    if current in CLOSED_STATES:
        return current
    if error == ITEM_LOGIN_REQUIRED:
        return "login_required"
    if error is None:
        return "active"
    return current


def webhook_event_type(webhook_type: str, webhook_code: str) -> str:
    """The inbound envelope's ``type`` for an aggregator webhook: ``ITEM.ERROR`` etc."""
    return f"{webhook_type}.{webhook_code}"


def usable_for_payments(status: str) -> bool:
    return status == "active"
