"""What routes depend on: the node's shared state and the caller's identity.

``Depends(require("transfers:write"))`` authenticates the request, charges the
caller's rate limit and checks the scope, in that order: a request with no
valid credential is 401 before anything else, one without the scope is 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from paynode.api import problems as p
from paynode.api.auth.ratelimit import retry_after
from paynode.api.auth.scopes import Principal
from paynode.api.context import Context
from paynode.api.http import client_ip

# Declares the scheme in /openapi.json; the header is read by Authenticator.
_bearer = HTTPBearer(auto_error=False, description="Access token, API key or PAYNODE_API_KEY")


def context(request: Request) -> Context:
    return request.app.state.ctx


Ctx = Annotated[Context, Depends(context)]  # what a route takes to reach the node's state


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
