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


def unauthorized(r: httpx.Response, code: str) -> None:
    """A 401 for a bearer credential: problem+json, the code, and a Bearer challenge."""
    problem(r, 401, code)
    assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers
