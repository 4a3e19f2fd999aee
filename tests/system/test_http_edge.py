"""The identity endpoints at the edge: body limits, bad input leaving no trace, CORS."""

from __future__ import annotations

import psycopg
import pytest

from paynode.storage.database import libpq_url
from tests.support.asserts import problem
from tests.support.node import ADMIN_KEY, RunningNode, wait_until

# One node for the module's tests (tests/conftest.py shared_node): each uses its own ids.
# Many sign-ups from one address: the auth rate limit is tested elsewhere, on nodes of
# their own.
SHARED_NODE_SETTINGS: dict = {"auth_rate_burst": 1_000}


def _counts(node: RunningNode) -> tuple[int, ...]:
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        return tuple(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("users", "sessions", "refresh_tokens", "api_keys", "kyc_events")
        )


SECRET = "hunter2-but-longer-Zq9"


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/auth/register", b'{"email": "a@b.co", "password": ', 400, "malformed_json"),
        ("/v1/auth/register", b"[]", 422, "invalid_field"),
        ("/v1/auth/register", b'{"email": "a@b.co"}', 422, "missing_field"),
        (
            "/v1/auth/register",
            f'{{"email": "a@b.co", "password": "{SECRET}", "role": "admin"}}'.encode(),
            422,
            "unknown_field",
        ),
        ("/v1/auth/register", f'{{"email": "{SECRET}", "password": "{SECRET}"}}'.encode(), 422,
         "invalid_field"),
        ("/v1/auth/register", b'{"email": "a@b.co", "password": "' + b"x" * 300 + b'"}', 422,
         "invalid_field"),
        ("/v1/auth/register", b'{"email": "a@b.co", "password": "' + b"x" * 20_000 + b'"}', 413,
         "body_too_large"),
        ("/v1/auth/login", f'{{"email": "a@b.co", "password": {SECRET!r}}}'.encode(), 400,
         "malformed_json"),
        ("/v1/auth/refresh", f'{{"refresh_token": "{SECRET}"}}'.encode(), 401,
         "invalid_refresh_token"),
    ],
)  # fmt: skip
def test_bad_identity_requests_change_nothing_and_echo_nothing(
    node: RunningNode, path: str, body: bytes, status: int, code: str
) -> None:
    before = _counts(node)
    with node.anonymous() as anon:
        r = anon.post(path, content=body, headers={"content-type": "application/json"})
    problem(r, status, code)
    assert SECRET not in r.text
    assert _counts(node) == before


def test_admin_only_bodies_are_checked_after_the_credential(node: RunningNode) -> None:
    """A request without the right to act is refused before its body is read."""
    with node.anonymous() as anon:
        r = anon.post(
            "/v1/users", content=b"{not json", headers={"content-type": "application/json"}
        )
    problem(r, 401, "unauthenticated")


def test_cors_allows_only_configured_origins(make_node) -> None:
    node = make_node(cors_origins="https://app.example.com, https://admin.example.com")
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    with node.anonymous() as anon:
        ok = anon.options(
            "/v1/transfers", headers={"Origin": "https://app.example.com", **preflight}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()

        bad = anon.options("/v1/transfers", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in bad.headers

        # Simple requests: the header is added for allowed origins only, errors included.
        r = anon.get("/v1/auth/me", headers={"Origin": "https://admin.example.com"})
        problem(r, 401, "unauthenticated")
        assert r.headers["access-control-allow-origin"] == "https://admin.example.com"
        r = anon.get("/v1/auth/me", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_cors_is_off_by_default(node: RunningNode) -> None:
    with node.anonymous() as anon:
        r = anon.get("/health", headers={"Origin": "https://app.example.com"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_requests_in_flight_are_bounded_before_bodies_are_read(make_node) -> None:
    """Two slow clients hold the only two places: the next request is refused 503
    ``overloaded`` at once, without its body being read; probes still answer; when the
    slow clients go, requests are served again."""
    import socket

    node = make_node(max_inflight_requests=2)
    host, port = node.url.removeprefix("http://").split(":")
    slow = []
    for _ in range(2):  # headers announce a body that never comes: the request stays open
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"POST /v1/transfers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nAuthorization: Bearer " + ADMIN_KEY.encode() +
                  b"\r\nContent-Length: 100\r\n\r\n")  # fmt: skip
        slow.append(s)

    def refused() -> bool:
        r = node.http.post("/v1/accounts", json={"id": "late", "currency": "USD"})
        return r.status_code == 503 and r.json()["code"] == "overloaded"

    wait_until(refused, what="a third request to be refused")  # the slow ones arrive async
    assert node.http.get("/ready").status_code == 200
    for s in slow:
        s.close()
    # 201, not 200: none of the refused attempts applied.
    wait_until(
        lambda: (
            node.http.post("/v1/accounts", json={"id": "late", "currency": "USD"}).status_code
            == 201
        ),
        what="requests to be served again",
    )
