"""What routes depend on: the node's shared state and the caller's identity.

``Depends(require("transfers:write"))`` authenticates the request, charges the
caller's rate limit and checks the scope, in that order: a request with no
valid credential is 401 before anything else, one without the scope is 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from paynode.actors.risk.actor import RiskPolicy
from paynode.api import problems as p
from paynode.api.auth.authenticate import Authenticator
from paynode.api.auth.ratelimit import TokenBuckets, retry_after
from paynode.api.auth.scopes import Principal
from paynode.api.http import client_ip
from paynode.api.ledger_client import LedgerClient
from paynode.domain.settings import Settings
from paynode.storage.keyring import Keyring

if TYPE_CHECKING:
    from paynode.api.audit_writer import AuditWriter
    from paynode.api.metrics import RiskStats

# Declares the scheme in /openapi.json; the header is read by Authenticator.
_bearer = HTTPBearer(auto_error=False, description="Access token, API key or PAYNODE_API_KEY")


@dataclass
class Context:
    settings: Settings
    keys: Keyring
    engine: AsyncEngine
    client: LedgerClient
    auth: Authenticator
    per_principal: TokenBuckets
    per_ip_auth: TokenBuckets  # register, login, refresh: password and token guessing
    analytics: Any  # Ray actor handles
    reconciler: Any
    notifier: Any
    handles: Any
    ach: Any
    bank_sim: Any  # None when the simulator is off
    risk: Any
    policy: RiskPolicy  # the risk actor's rules, limits and list digest, taken at start
    risk_stats: RiskStats
    audit: AuditWriter  # group commit of the transfers' audit records


def context(request: Request) -> Context:
    return request.app.state.ctx


def rate_limited(wait: float) -> p.ApiError:
    return p.ApiError(p.RATE_LIMITED, headers={"Retry-After": retry_after(wait)})


def require(scope: str | None = None):
    async def dependency(request: Request, _: object = Security(_bearer)) -> Principal:
        ctx = context(request)
        principal = await ctx.auth(request.headers.get("authorization"))
        wait = ctx.per_principal.take(principal.rate_key)
        if wait:
            raise rate_limited(wait)
        if scope is not None and not principal.has(scope):
            raise p.ApiError(p.INSUFFICIENT_SCOPE, f"needs {scope}")
        return principal

    dependency.required_scope = scope or "any"  # type: ignore[attr-defined] # for the contract
    return dependency


def limit_auth_attempts(request: Request) -> None:
    wait = context(request).per_ip_auth.take(client_ip(request))
    if wait:
        raise rate_limited(wait)


def check_owner(principal: Principal, owner_user_id: str) -> None:
    """403 unless the caller may act on something owned by ``owner_user_id``."""
    if not principal.owns(owner_user_id):
        raise p.ApiError(p.FORBIDDEN)
