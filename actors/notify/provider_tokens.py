"""Credentials the push providers take: APNs provider tokens and Google OAuth assertions.

Both are JWTs signed with a key read from a file the operator configures; the
key and the tokens are secrets and never logged. Apple refuses a provider token
older than an hour, and also one regenerated too often
(``TooManyProviderTokenUpdates``): a token is kept and reused until
``refresh_s`` has passed, or until Apple calls it expired.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
ASSERTION_LIFE_S = 3600  # Google's maximum for a service account's assertion
MAX_KEY_FILE_BYTES = 64 * 1024  # a key file is a few KiB; refuse anything else unread


class CredentialError(Exception):
    """A key or service-account file is missing or unusable (the message names no secret)."""


def _read_limited(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise CredentialError(f"{path}: {type(e).__name__}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise CredentialError(f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes")
    return data


def load_apns_key(path: Path) -> EllipticCurvePrivateKey:
    """Apple's .p8 file: a PKCS#8 PEM P-256 key (ES256)."""
    try:
        key = load_pem_private_key(_read_limited(path), password=None)
    except (ValueError, TypeError):
        raise CredentialError(f"{path}: not a PEM private key") from None
    if not isinstance(key, EllipticCurvePrivateKey) or not isinstance(key.curve, SECP256R1):
        raise CredentialError(f"{path}: not a P-256 key (APNs signs with ES256)")
    return key


def apns_provider_token(
    team_id: str, key_id: str, key: EllipticCurvePrivateKey, issued_at: int
) -> str:
    """Apple's provider authentication token: ES256, ``kid`` header, ``iss`` and ``iat`` only."""
    return jwt.encode(
        {"iss": team_id, "iat": issued_at}, key, algorithm="ES256", headers={"kid": key_id}
    )


class ApnsTokens:
    """The current provider token, signed again after ``refresh_s`` or when Apple expires it."""

    def __init__(
        self,
        team_id: str,
        key_id: str,
        key: EllipticCurvePrivateKey,
        refresh_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._team_id, self._key_id, self._key = team_id, key_id, key
        self._refresh_s = refresh_s
        self._clock = clock
        self._token = ""
        self._issued_at = 0
        self.signed = 0  # tokens signed so far (stats, tests)

    def current(self) -> str:
        if not self._token or self._clock() - self._issued_at >= self._refresh_s:
            self._sign()
        return self._token

    def expired(self, token: str) -> None:
        """Apple answered ExpiredProviderToken to ``token``: sign a new one (once, however
        many requests in flight got the same answer)."""
        if token == self._token:
            self._sign()

    def _sign(self) -> None:
        # Never an iat ahead of the clock: Apple refuses those. A token refused within the
        # second it was signed comes back the same; the caller retries later.
        self._issued_at = int(self._clock())
        self._token = apns_provider_token(self._team_id, self._key_id, self._key, self._issued_at)
        self.signed += 1


class ServiceAccount(msgspec.Struct, frozen=True):
    """The fields of a Google service-account JSON key that the FCM client uses."""

    project_id: str
    client_email: str
    private_key: str
    private_key_id: str = ""
    token_uri: str = GOOGLE_TOKEN_URI

    def __repr__(self) -> str:  # never the key
        return f"ServiceAccount(project_id={self.project_id!r}, client_email={self.client_email!r})"


def load_service_account(path: Path) -> tuple[ServiceAccount, RSAPrivateKey]:
    try:
        info = msgspec.json.decode(_read_limited(path), type=ServiceAccount)
    except (msgspec.DecodeError, json.JSONDecodeError):
        raise CredentialError(f"{path}: not a service-account JSON key") from None
    try:
        key = load_pem_private_key(info.private_key.encode(), password=None)
    except (ValueError, TypeError):
        raise CredentialError(f"{path}: private_key is not a PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise CredentialError(f"{path}: private_key is not an RSA key (RS256)")
    return info, key


def google_assertion(
    account: ServiceAccount, key: RSAPrivateKey, token_uri: str, issued_at: int
) -> str:
    """The signed JWT a service account trades at ``token_uri`` for an access token
    (OAuth 2.0 JWT bearer grant, RFC 7523)."""
    claims = {
        "iss": account.client_email,
        "scope": FCM_SCOPE,
        "aud": token_uri,
        "iat": issued_at,
        "exp": issued_at + ASSERTION_LIFE_S,
    }
    headers = {"kid": account.private_key_id} if account.private_key_id else None
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)
