"""A simulated account aggregator (Plaid's sandbox model), for development and tests.

It plays the part Plaid plays in production: link tokens the node asks for,
the user's login at a test institution (``sandbox_public_token``, Plaid's
``/sandbox/public_token/create``: no browser here), the exchange of a public
token for an item's access token, the item's accounts with their ACH numbers
and balances (``/auth/get``), and webhooks about the item, signed like the
bank simulator's and retried until the node answers, on
``POST /v1/webhooks/aggsim``. ``fire_webhook`` is Plaid's
``/sandbox/item/fire_webhook``: an operator (or a test) makes the bank ask for
a new login, revoke consent or post a transaction.

Test institutions (``INSTITUTIONS``) use routing numbers of the FedACH
directory the node ships, with valid ABA check digits. Everything is in
memory: it stands in for a third party, and is gone when the node stops.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from paynode.actors.signed_post import SimulatedParty
from paynode.domain.rails import link as rules
from paynode.domain.rails.link import Answer, Exchanged, LinkAccount, LinkToken

log = logging.getLogger("paynode.aggsim")

PROVIDER = "aggsim"
PUBLIC_TOKEN_TTL_S = 30 * 60  # Plaid's
MAX_ITEMS = 100_000
MAX_TOKENS = 100_000


@dataclass
class _Account:
    account_id: str
    name: str
    subtype: str
    routing: str
    number: str
    owner: str
    available: int
    current: int


# institution id -> (name, accounts: (name, subtype, routing, account number, available,
# current)). Routing numbers are in storage/data/fedach_directory.txt.
INSTITUTIONS: dict[str, tuple[str, tuple[tuple[str, str, str, str, int, int], ...]]] = {
    "ins_1": ("First Platypus Bank", (
        ("Plaid Checking", "checking", "121000248", "1111222233330000", 1_000_000, 1_100_000),
        ("Plaid Saving", "savings", "121000248", "1111222233331111", 20_000_000, 21_000_000),
    )),
    "ins_2": ("First Gingham Credit Union", (
        ("Gingham Checking", "checking", "021000089", "2222333344440000", 250_000, 250_000),
    )),
    "ins_3": ("Tattersall Federal Credit Union", (
        ("Tattersall Checking", "checking", "091000019", "3333444455550000", 50_000, 75_000),
        ("Tattersall Savings", "savings", "091000019", "3333444455551111", 500_000, 500_000),
    )),
}  # fmt: skip
SANDBOX_OWNER = "Alberta Bobbeth Charleson"  # Plaid sandbox's identity


@dataclass
class _Item:
    item_id: str
    institution_id: str
    client_user_id: str
    access_token: str
    accounts: list[_Account]
    login_required: bool = False
    revoked: bool = False


@dataclass
class _LinkToken:
    client_user_id: str
    expires: float
    item_id: str | None  # update mode: re-link this item


@dataclass
class _PublicToken:
    client_user_id: str
    expires: float
    item_id: str
    update_mode: bool


def _token(kind: str) -> str:
    return f"{kind}-sandbox-{secrets.token_hex(16)}"


def _answer(**values: object) -> bytes:
    return rules.encode(Answer(**values))  # type: ignore[arg-type]


class AggregatorSimulator(SimulatedParty):
    """Run under Ray (a service of the followers host). Every call answers an encoded
    ``domain.rails.link.Answer``: a value or a Plaid error code."""

    def __init__(self, node_url: str, secret: str, link_token_ttl_s: int) -> None:
        super().__init__(node_url, PROVIDER, secret)
        self._link_ttl = link_token_ttl_s
        self._link_tokens: dict[str, _LinkToken] = {}
        self._public_tokens: dict[str, _PublicToken] = {}
        self._items: dict[str, _Item] = {}
        self._by_access: dict[str, str] = {}
        self._fired = 0

    def _prune(self) -> None:
        now = time.time()
        for table in (self._link_tokens, self._public_tokens):
            for k in [k for k, v in table.items() if v.expires < now]:
                del table[k]

    # -- Link ------------------------------------------------------------------------------

    async def create_link_token(self, client_user_id: str, access_token: str | None) -> bytes:
        """``/link/token/create``; with an access token, update mode for its item."""
        self._prune()
        item_id = None
        if access_token is not None:
            item = self._item_of(access_token)
            if item is None:
                return _answer(error=rules.INVALID_ACCESS_TOKEN)
            item_id = item.item_id
        if len(self._link_tokens) >= MAX_TOKENS:
            return _answer(error="RATE_LIMIT_EXCEEDED")
        token, expires = _token("link"), time.time() + self._link_ttl
        self._link_tokens[token] = _LinkToken(client_user_id, expires, item_id)
        return _answer(token=LinkToken(token, int(expires)))

    async def sandbox_public_token(
        self, link_token: str, institution_id: str, client_user_id: str
    ) -> bytes:
        """The user logs in at ``institution_id`` in Link (sandbox credentials: always
        good). A new item, or in update mode the item's login repaired."""
        self._prune()
        made = self._link_tokens.get(link_token)
        if made is None or made.client_user_id != client_user_id:
            return _answer(error=rules.INVALID_LINK_TOKEN)
        if made.item_id is not None:
            item = self._items.get(made.item_id)
            if item is None or item.revoked:
                return _answer(error=rules.ITEM_NOT_FOUND)
            del self._link_tokens[link_token]  # one login per Link session
            if item.login_required:
                item.login_required = False
                self._send(item, "ITEM", "LOGIN_REPAIRED", {})
            return _answer(public_token=self._public_for(item, client_user_id, True))
        if institution_id not in INSTITUTIONS:
            return _answer(error=rules.INVALID_INSTITUTION)
        if len(self._items) >= MAX_ITEMS:
            return _answer(error="RATE_LIMIT_EXCEEDED")
        del self._link_tokens[link_token]
        item = self._new_item(institution_id, client_user_id)
        return _answer(public_token=self._public_for(item, client_user_id, False))

    def _new_item(self, institution_id: str, client_user_id: str) -> _Item:
        _, accounts = INSTITUTIONS[institution_id]
        item = _Item(
            item_id=f"item-{secrets.token_hex(12)}", institution_id=institution_id,
            client_user_id=client_user_id, access_token=_token("access"),
            accounts=[
                _Account(f"acc-{secrets.token_hex(10)}", name, subtype, routing, number,
                         SANDBOX_OWNER, available, current)
                for name, subtype, routing, number, available, current in accounts
            ],
        )  # fmt: skip
        self._items[item.item_id] = item
        self._by_access[item.access_token] = item.item_id
        return item

    def _public_for(self, item: _Item, client_user_id: str, update_mode: bool) -> str:
        token = _token("public")
        self._public_tokens[token] = _PublicToken(
            client_user_id, time.time() + PUBLIC_TOKEN_TTL_S, item.item_id, update_mode
        )
        return token

    async def exchange(self, public_token: str, client_user_id: str) -> bytes:
        """``/item/public_token/exchange``. Answered the same way again for the token's
        life (a caller that lost the answer may ask again); only for the user it was made
        for."""
        made = self._public_tokens.get(public_token)
        if made is None or made.expires < time.time() or made.client_user_id != client_user_id:
            return _answer(error=rules.INVALID_PUBLIC_TOKEN)
        item = self._items.get(made.item_id)
        if item is None or item.revoked:
            return _answer(error=rules.INVALID_PUBLIC_TOKEN)
        return _answer(exchanged=Exchanged(
            item_id=item.item_id, access_token=item.access_token,
            institution_id=item.institution_id,
            institution_name=INSTITUTIONS[item.institution_id][0],
            client_user_id=item.client_user_id, update_mode=made.update_mode,
        ))  # fmt: skip

    # -- items -----------------------------------------------------------------------------

    def _item_of(self, access_token: str) -> _Item | None:
        item_id = self._by_access.get(access_token)
        item = None if item_id is None else self._items.get(item_id)
        return None if item is None or item.revoked else item

    async def accounts(self, access_token: str) -> bytes:
        """``/auth/get``: the item's accounts with ACH numbers and current balances."""
        item = self._item_of(access_token)
        if item is None:
            return _answer(error=rules.INVALID_ACCESS_TOKEN)
        if item.login_required:
            return _answer(error=rules.ITEM_LOGIN_REQUIRED)
        return _answer(
            institution_name=INSTITUTIONS[item.institution_id][0],
            accounts=[
                LinkAccount(
                    account_id=a.account_id, name=a.name, mask=a.number[-4:],
                    type="depository", subtype=a.subtype,  # type: ignore[arg-type]
                    routing=a.routing, account=a.number, owner_name=a.owner,
                    available=a.available, current=a.current,
                )
                for a in item.accounts
            ],
        )  # fmt: skip

    async def remove(self, access_token: str) -> bytes:
        """``/item/remove``: the access token stops working."""
        item = self._item_of(access_token)
        if item is not None:
            item.revoked = True
            self._by_access.pop(access_token, None)
        return _answer()

    async def fire_webhook(self, item_id: str, code: str, amount: int = 0) -> bytes:
        """``/sandbox/item/fire_webhook`` (and ``/sandbox/item/reset_login``): the bank
        does something to the item, and the aggregator tells the node.

        ``ITEM_LOGIN_REQUIRED`` (an ITEM ERROR), ``PENDING_EXPIRATION``,
        ``USER_PERMISSION_REVOKED``, ``LOGIN_REPAIRED``, or ``DEFAULT_UPDATE`` (a
        TRANSACTIONS update: a transaction of ``amount`` minor units, signed, posted to the
        item's first account first).
        """
        item = self._items.get(item_id)
        if item is None or item.revoked:
            return _answer(error=rules.ITEM_NOT_FOUND)
        if code == rules.ITEM_LOGIN_REQUIRED:
            item.login_required = True
            data = {
                "error": {
                    "error_type": "ITEM_ERROR",
                    "error_code": code,
                    "error_message": "the login details of this item have changed",
                }
            }
            self._send(item, "ITEM", "ERROR", data)  # fmt: skip
        elif code == "PENDING_EXPIRATION":
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7 * 86_400))
            self._send(item, "ITEM", code, {"consent_expiration_time": expires})
        elif code == "USER_PERMISSION_REVOKED":
            item.revoked = True
            self._by_access.pop(item.access_token, None)
            self._send(item, "ITEM", code, {})
        elif code == "LOGIN_REPAIRED":
            item.login_required = False
            self._send(item, "ITEM", code, {})
        elif code == "DEFAULT_UPDATE":
            if item.accounts and amount:
                first = item.accounts[0]
                first.current += amount
                first.available += amount
            self._send(item, "TRANSACTIONS", code, {"new_transactions": 1 if amount else 0})
        else:
            return _answer(error="SANDBOX_WEBHOOK_INVALID")
        return _answer()

    # -- webhooks --------------------------------------------------------------------------

    def _send(self, item: _Item, webhook_type: str, code: str, extra: dict) -> None:
        self._fired += 1
        event_id = f"{item.item_id}-{code.lower()}-{self._fired}-{secrets.token_hex(4)}"
        data = {"webhook_type": webhook_type, "webhook_code": code, "item_id": item.item_id,
                "environment": "sandbox", **extra}  # fmt: skip
        kind = rules.webhook_event_type(webhook_type, code)
        self._spawn(self._post(event_id, kind, data))
