"""Scopes and the principal a request acts as.

A user's access token carries :data:`USER_SCOPES`, acting only on what the
user owns. An API key carries the scopes it was created with; a key owned by
a user acts as that user, a key with ``admin`` acts on everything.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

Scope = Literal[
    "accounts:read",
    "accounts:write",
    "transfers:read",
    "transfers:write",
    "users:read",
    "users:write",
    "api_keys:write",
    "kyc:review",
    "events:read",
    "webhooks:read",
    "webhooks:write",
    "devices:read",
    "devices:write",
    "handles:read",
    "handles:write",
    "payments:read",
    "payments:write",
    "bank_accounts:read",
    "bank_accounts:write",
    "reconciliation:read",
    "reconciliation:write",
    "notifications:read",
    "notifications:write",
    "billing:read",
    "billing:write",
    "admin",
]
ALL_SCOPES: tuple[str, ...] = get_args(Scope)
# Operator scopes see or act on the whole node, not on one user's things.
# notifications:*: the send API reaches any user (a service sending receipts, alerts).
OPERATOR_SCOPES = frozenset({"admin", "kyc:review", "reconciliation:read", "reconciliation:write",
                             "notifications:read", "notifications:write"})  # fmt: skip
USER_SCOPES: tuple[str, ...] = tuple(s for s in ALL_SCOPES if s not in OPERATOR_SCOPES)


class Principal(msgspec.Struct, frozen=True):
    kind: Literal["user", "api_key", "bootstrap"]
    id: str  # user id, API key id, or "bootstrap" (PAYNODE_API_KEY)
    user_id: str | None  # whose resources it acts on; None = no user (admin keys)
    scopes: frozenset[str]
    session_id: str | None = None

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def has(self, scope: str) -> bool:
        return scope in self.scopes or self.admin

    def owns(self, owner_user_id: str) -> bool:
        """Whether this principal may act on a resource owned by ``owner_user_id``."""
        return self.admin or (self.user_id is not None and owner_user_id == self.user_id)

    @property
    def rate_key(self) -> str:
        return f"{self.kind}:{self.id}"
