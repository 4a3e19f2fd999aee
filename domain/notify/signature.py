"""Webhook signatures: ``Paynode-Signature: t=<unix>,v1=<hex>``.

``v1`` is HMAC-SHA256, under the endpoint's secret, of ``"<t>.<raw body>"``.
Signing the timestamp with the body lets a receiver refuse a replay of an old
delivery; during a secret rotation the header carries one ``v1`` per live
secret, and a receiver accepts any that matches the secret it holds.
The same scheme verifies webhooks we receive from banks and processors.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

HEADER = "Paynode-Signature"
DEFAULT_TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"
MAX_HEADER = 1024  # a longer header is refused before any parsing


class SignatureError(ValueError):
    """Why a signature was refused; ``code`` is stable (stored with refused events)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex ``v1`` for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def header(secrets_: Sequence[str], body: bytes, timestamp: int | None = None) -> str:
    """The header value signing ``body`` under every secret in ``secrets_``."""
    assert secrets_, "at least one secret signs"
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"v1={sign(s, t, body)}" for s in secrets_)])


def verify_signature(
    secret: str,
    header_value: str,
    body: bytes,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check a ``Paynode-Signature`` header; return its timestamp or raise SignatureError.

    ``body`` must be the raw bytes received, before any JSON parsing.
    """
    if not header_value or len(header_value) > MAX_HEADER:
        raise SignatureError("signature_missing")
    t: int | None = None
    candidates: list[str] = []
    for part in header_value.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit() and len(value) <= 12:
            t = int(value)
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates:
        raise SignatureError("signature_malformed")
    current = time.time() if now is None else now
    if abs(current - t) > tolerance_s:
        raise SignatureError("signature_timestamp_outside_tolerance")
    expected = sign(secret, t, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("signature_mismatch")
    return t
