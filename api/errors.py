"""Every exception a request can end in, as problem+json: one table for all routes.

FastAPI's routes reach it through the handlers :func:`install` registers; the
plain ASGI hot path (``api/transfers.py``) calls :func:`problem_for` itself.
Nothing here echoes what the client sent.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from paynode.api import problems as p
from paynode.api.batcher import Overloaded
from paynode.api.shard_calls import Unavailable
from paynode.domain.ledger.model import Code
from paynode.storage.pii import SealError

log = logging.getLogger("paynode.api")

# The database could not be reached (an outage, a restart, a full pool): nothing was
# written in the failed transaction; the client retries with the same ids.
_DATABASE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def problem_for(e: Exception) -> Response:
    """The answer for a request that raised ``e`` (logged when it needs a look)."""
    if isinstance(e, p.ApiError):
        return p.problem(e.code, e.detail, e.field, e.status, e.headers)
    if isinstance(e, Overloaded):
        return p.problem(p.OVERLOADED)
    if isinstance(e, Unavailable):
        return p.problem(e.code)
    if isinstance(e, StarletteHTTPException):
        return p.problem(p.METHOD_NOT_ALLOWED if e.status_code == 405 else p.NOT_FOUND)
    if isinstance(e, RequestValidationError):
        errors = e.errors()
        loc = ".".join(str(x) for x in errors[0]["loc"]) if errors else ""
        return p.problem(p.INVALID_FIELD, errors[0]["msg"] if errors else "", loc)
    if isinstance(e, _DATABASE_DOWN):
        # The SQLSTATE tells a lost lock race (40P01) from a timeout (57014) or a lost
        # connection (08xxx); the message could hold values, so it is not logged.
        log.warning(
            "database unavailable: %s sqlstate=%s",
            type(e).__name__,
            getattr(getattr(e, "orig", None), "sqlstate", None),
        )
        return p.problem(Code.STORAGE_UNAVAILABLE, "the database is unavailable")
    if isinstance(e, sa_exc.DataError):
        # Bodies holding NUL are refused when decoded; a path or query value holding it
        # reaches PostgreSQL, whose text cannot, so nothing can match it.
        if "NUL" in str(e.orig):
            return p.problem(p.INVALID_FIELD, "a value holds a NUL character")
        log.exception("database refused a value")
        return p.problem(p.INTERNAL)
    if isinstance(e, SealError):
        # Tampering, a value moved between rows, or a key removed too early: an
        # operator must look. The message names the column and key id, never data.
        log.error("sealed value unreadable: %s", e)
        return p.problem(p.SEALED_VALUE_UNREADABLE)
    if type(e).__module__.startswith("ray"):
        log.error("shard call failed: %s", type(e).__name__)
        return p.problem(Code.STORAGE_UNAVAILABLE, "a ledger shard is unavailable")
    log.error("unhandled error", exc_info=e)
    return p.problem(p.INTERNAL)


def install(app: FastAPI) -> None:
    """Route every exception type FastAPI may see to :func:`problem_for`."""

    async def handler(_: Request, e: Exception) -> Response:
        return problem_for(e)

    for kind in (p.ApiError, Overloaded, Unavailable, StarletteHTTPException,
                 RequestValidationError, *_DATABASE_DOWN, sa_exc.DataError, SealError,
                 Exception):  # fmt: skip
        app.add_exception_handler(kind, handler)
