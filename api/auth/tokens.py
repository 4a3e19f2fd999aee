"""Access tokens (JWT, HS256) and opaque secrets (refresh tokens, API keys).

Access tokens are short-lived and signed with the keyring's active JWT key;
the header's ``kid`` picks the verification key, so rotating the signing key
logs nobody out. Verification pins the algorithm (no ``alg: none``, no
RS/HS confusion) and requires issuer, audience, expiry and subject.

Refresh tokens and API keys are ``<prefix>_<id>_<secret>``: the id finds the
row, the secret is compared by its SHA-256 (high-entropy secrets need no
slow hash), and only the hash is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

import jwt
import msgspec

from paynode.storage.keyring import Keyring

ISSUER = "paynode"
AUDIENCE = "paynode-api"
ALGORITHM = "HS256"
LEEWAY_S = 5  # clock skew between the node and itself across restarts; small on purpose


class TokenError(Exception):
    """Why a token was refused; ``code`` is the problem code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class AccessClaims(msgspec.Struct, frozen=True):
    sub: str  # user id
    sid: str  # session id: logout and refresh re-use end it
    scope: str  # space-separated scopes
    exp: int
    iat: int
    jti: str


def new_id(prefix: str) -> str:
    """Time-ordered, unguessable: 48-bit milliseconds then 80 random bits, as hex."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def issue_access(
    keys: Keyring, user_id: str, session_id: str, scopes: list[str], ttl_s: int
) -> str:
    keys.refresh()
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user_id,
        "sid": session_id,
        "scope": " ".join(scopes),
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    kid = keys.jwt_active
    return jwt.encode(claims, keys.jwt_keys[kid], algorithm=ALGORITHM, headers={"kid": kid})


def verify_access(keys: Keyring, token: str) -> AccessClaims:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("invalid_token") from None
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or not isinstance(kid, str):
        raise TokenError("invalid_token")
    key = keys.jwt_key(kid)
    if key is None:
        raise TokenError("invalid_token")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iat", "sub", "aud", "iss", "sid", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token_expired") from None
    except jwt.PyJWTError:
        raise TokenError("invalid_token") from None
    try:
        return msgspec.convert(
            {k: claims.get(k) for k in AccessClaims.__struct_fields__}, AccessClaims
        )
    except msgspec.ValidationError:
        raise TokenError("invalid_token") from None


# -- opaque secrets -------------------------------------------------------------

SECRET_BYTES = 32


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret(prefix: str) -> tuple[str, str, str]:
    """(row id, secret, the full token to hand out once)."""
    row_id = new_id(prefix)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return row_id, secret, f"{row_id}.{secret}"


def split_secret(token: str, prefix: str) -> tuple[str, str] | None:
    """(row id, secret) of a token we issued with ``prefix``, or None if it cannot be one."""
    row_id, dot, secret = token.partition(".")
    if not dot or not row_id.startswith(prefix + "_") or len(row_id) > 64 or len(secret) > 128:
        return None
    return row_id, secret
