"""Twilio's request signature (``X-Twilio-Signature``): pure.

Twilio signs each callback with the account's auth token: base64 of
HMAC-SHA1 over the full URL it called (scheme, host, path and query) followed
by every POST parameter, sorted by name, as name then value with no
separators. The receiver recomputes it from the URL it is known by (the public
one: a proxy in between changes the host the server sees) and the parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable

HEADER = "X-Twilio-Signature"
MAX_PARAMS = 100  # a status callback carries about 15; more is not a callback
# Terminal and intermediate message states Twilio reports (MessageStatus)
STATUSES = frozenset(
    {"accepted", "queued", "sending", "sent", "delivered", "undelivered", "failed",
     "receiving", "received", "read", "canceled", "scheduled"}
)  # fmt: skip


def signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The signature Twilio sends for a POST of ``params`` to ``url``."""
    payload = url + "".join(k + v for k, v in sorted(params, key=lambda kv: kv[0]))
    mac = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def valid(auth_token: str, url: str, params: Iterable[tuple[str, str]], given: str) -> bool:
    """Whether ``given`` is the signature of this request (constant-time compare)."""
    if not auth_token or not given:
        return False
    return hmac.compare_digest(signature(auth_token, url, params).encode(), given.encode())
