"""Assertions on HTTP answers shared by the API tests."""

from __future__ import annotations

import httpx

PROBLEM_JSON = "application/problem+json"


def problem(r: httpx.Response, status: int, code: str) -> dict:
    """Assert ``r`` is a problem+json refusal with this status and code; return its body."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith(PROBLEM_JSON), r.headers
    body = r.json()
    assert body["code"] == code, body
    assert body["status"] == status, body
    return body


def signup(anon: httpx.Client, name: str) -> tuple[str, dict[str, str]]:
    """Register ``name@example.com`` and log in: (user id, its Authorization header)."""
    creds = {"email": f"{name}@example.com", "password": "a long enough passphrase"}
    r = anon.post("/v1/auth/register", json=creds)
    assert r.status_code == 201, r.text
    token = anon.post("/v1/auth/login", json=creds)
    assert token.status_code == 200, token.text
    return r.json()["user_id"], {"Authorization": f"Bearer {token.json()['access_token']}"}


def kyc_verified(admin: httpx.Client, user_id: str, headers: dict[str, str]) -> None:
    """Take a user through KYC: submitted with their token, verified by the admin credential."""
    r = admin.post(f"/v1/users/{user_id}/kyc", json={"id_type": "ssn", "id_number": "123456789"},
                   headers=headers)  # fmt: skip
    assert r.status_code == 200, r.text
    r = admin.post(f"/v1/users/{user_id}/kyc/review", json={"decision": "verified"})
    assert r.status_code == 200, r.text


def unauthorized(r: httpx.Response, code: str) -> None:
    """A 401 for a bearer credential: problem+json, the code, and a Bearer challenge."""
    problem(r, 401, code)
    assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers
