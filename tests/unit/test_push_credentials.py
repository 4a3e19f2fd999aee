"""The push providers' credentials and answers: APNs provider tokens (ES256), Google
service-account assertions (RS256), and how each provider's answer maps to an Outcome."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from paynode.actors.notify import apns, fcm
from paynode.actors.notify.provider_tokens import (
    FCM_SCOPE,
    ApnsTokens,
    CredentialError,
    apns_provider_token,
    google_assertion,
    load_apns_key,
    load_service_account,
)


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_apns_provider_token_is_es256_with_kid_iss_iat(ec_key) -> None:
    token = apns_provider_token("TEAM123", "KEY456", ec_key, 1_700_000_000)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEY456", "typ": "JWT"}
    claims = jwt.decode(
        token, ec_key.public_key(), algorithms=["ES256"], options={"verify_iat": False}
    )
    assert claims == {"iss": "TEAM123", "iat": 1_700_000_000}


def test_apns_tokens_reused_until_refresh_and_resigned_when_expired(ec_key) -> None:
    now = [1_700_000_000.0]
    tokens = ApnsTokens("T", "K", ec_key, refresh_s=3000, clock=lambda: now[0])
    first = tokens.current()
    now[0] += 2999
    assert tokens.current() == first and tokens.signed == 1
    now[0] += 1
    second = tokens.current()
    assert second != first and tokens.signed == 2
    # Apple calls a token expired: a new one, once, whoever else got the same answer.
    now[0] += 5
    tokens.expired(first)  # an old token's answer arriving late changes nothing
    assert tokens.current() == second
    tokens.expired(second)
    third = tokens.current()
    assert third != second and tokens.signed == 3
    assert jwt.decode(third, options={"verify_signature": False})["iat"] == int(now[0])


def test_apns_key_file_checks(tmp_path: Path, ec_key, rsa_key) -> None:
    good = tmp_path / "AuthKey.p8"
    good.write_bytes(_pem(ec_key))
    assert load_apns_key(good).curve.name == "secp256r1"
    wrong = tmp_path / "rsa.p8"
    wrong.write_bytes(_pem(rsa_key))
    with pytest.raises(CredentialError, match="P-256"):
        load_apns_key(wrong)
    with pytest.raises(CredentialError, match="FileNotFoundError"):
        load_apns_key(tmp_path / "missing.p8")
    junk = tmp_path / "junk.p8"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    with pytest.raises(CredentialError) as e:
        load_apns_key(junk)
    assert "not a key" not in str(e.value)


def test_google_assertion_claims(tmp_path: Path, rsa_key) -> None:
    path = tmp_path / "sa.json"
    path.write_text(
        json.dumps({
            "type": "service_account", "project_id": "p1", "private_key_id": "kid1",
            "private_key": _pem(rsa_key).decode(), "client_email": "svc@p1.iam.example",
            "token_uri": "https://oauth2.example/token",
        })
    )  # fmt: skip
    account, key = load_service_account(path)
    assert "PRIVATE" not in repr(account)
    token = google_assertion(account, key, account.token_uri, 1_700_000_000)
    assert jwt.get_unverified_header(token)["kid"] == "kid1"
    claims = jwt.decode(
        token, rsa_key.public_key(), algorithms=["RS256"], audience="https://oauth2.example/token",
        options={"verify_exp": False, "verify_iat": False},
    )  # fmt: skip
    assert claims == {
        "iss": "svc@p1.iam.example", "scope": FCM_SCOPE, "aud": "https://oauth2.example/token",
        "iat": 1_700_000_000, "exp": 1_700_003_600,
    }  # fmt: skip
    path.write_text(json.dumps({"project_id": "p1"}))
    with pytest.raises(CredentialError):
        load_service_account(path)


@pytest.mark.parametrize(
    ("status", "reason", "ok", "retry", "invalid"),
    [
        (200, "", True, False, False),
        (410, "Unregistered", False, False, True),
        (400, "BadDeviceToken", False, False, True),
        (400, "DeviceTokenNotForTopic", False, False, True),
        (400, "BadCollapseId", False, False, False),
        (403, "InvalidProviderToken", False, False, False),
        (403, "ExpiredProviderToken", False, True, False),
        (429, "TooManyProviderTokenUpdates", False, True, False),
        (503, "ServiceUnavailable", False, True, False),
    ],
)
def test_apns_answers(status: int, reason: str, ok: bool, retry: bool, invalid: bool) -> None:
    out = apns.outcome_of(status, reason, "id" if ok else None)
    assert (out.ok, out.retry, out.invalid_to) == (ok, retry, invalid)


def _err(status: str, code: str = "", message: str = "", field: str = "") -> fcm._Error:
    details = [fcm._Detail(errorCode=code)] if code else []
    if field:
        details.append(fcm._Detail(fieldViolations=[{"field": field}]))
    return fcm._Error(status=status, message=message, details=details)


def test_fcm_answers() -> None:
    assert fcm.outcome_of(404, _err("NOT_FOUND", "UNREGISTERED")).invalid_to
    assert fcm.outcome_of(400, _err("INVALID_ARGUMENT", field="message.token")).invalid_to
    payload = fcm.outcome_of(400, _err("INVALID_ARGUMENT", message="data too big"))
    assert (payload.invalid_to, payload.retry) == (False, False)
    for status in (429, 500, 503):
        assert fcm.outcome_of(status, _err("UNAVAILABLE")).retry
    assert fcm.retry_after_s("7", 0) == 7.0
    assert fcm.retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert fcm.retry_after_s("soon", 0) is None and fcm.retry_after_s(None, 0) is None
