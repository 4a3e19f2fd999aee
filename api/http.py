"""Reading request bodies and writing JSON answers, shared by every router."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from fastapi import Request
from starlette.responses import Response

from paynode.api import problems as p

T = TypeVar("T")
JSON = "application/json"
# Bodies of every route but the transfer routes are small: a big one is a mistake or an
# attack (413 beyond this).
SMALL_BODY_LIMIT = 16 * 1024


def public(t: type[T], record: msgspec.Struct) -> T:
    """A stored record as its public type (same field names, nested too; checked by msgspec)."""
    return msgspec.convert(record, t, from_attributes=True)


def json_response(obj: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(obj), status, media_type=JSON)


def client_ip(request: Request) -> str:
    # uvicorn runs with proxy_headers off: this is the TCP peer, not a header.
    return request.client.host if request.client else "unknown"


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise p.ApiError(p.BODY_TOO_LARGE, f"at most {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise p.ApiError(p.BODY_TOO_LARGE, f"at most {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(request: Request, t: type[T], limit: int) -> T:
    """The body as ``t``, read with a size limit; problems for anything else."""
    raw = await read_body(request, limit)
    if b"\\u0000" in raw:  # JSON's spelling of NUL: no field may hold it (PostgreSQL text cannot)
        raise p.ApiError(p.INVALID_FIELD, "text fields may not hold NUL (\\u0000)")
    try:
        return msgspec.json.decode(raw, type=t)
    except msgspec.ValidationError as e:
        raise p.from_validation(e) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise p.ApiError(p.MALFORMED_JSON) from None
