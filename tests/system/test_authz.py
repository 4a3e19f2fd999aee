"""Authentication and authorization end to end: who may see and move what.

Real HTTP, real Ray shards, real PostgreSQL. Two registered users, A and B,
each own one funded account; the bootstrap admin key owns nothing and sees
everything. Every refusal is checked by status *and* problem ``code``, and
every refused money movement is checked to have changed no balance and
journaled no row.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import jwt
import psycopg
import pytest

from paynode.storage.database import libpq_url
from tests.support.asserts import problem, unauthorized
from tests.support.node import ADMIN_KEY, RunningNode

USD = "USD"
PASSWORD = "correct horse battery staple"
FUNDING = 10_000
UNKNOWN_USER = "usr_" + "0" * 32
UNKNOWN_KEY = "pk_" + "0" * 32

# Reachable with no credentials at all; everything else under /v1 needs some.
PUBLIC_V1 = {
    ("POST", "/v1/auth/register"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/refresh"),
    # Authenticated by the provider's HMAC signature, not a bearer (tests/system/test_notify.py).
    ("POST", "/v1/webhooks/{provider}"),
    # The SMS provider's status callbacks: X-Twilio-Signature (tests/system/test_channels.py).
    ("POST", "/v1/callbacks/sms-status"),
}
# Operational endpoints outside /v1 (probes and Prometheus), unauthenticated by design.
# A new top-level path fails test_every_v1_endpoint_needs_credentials until it is listed
# here or moved under /v1.
OPERATIONAL = {"/health", "/ready", "/metrics"}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
# One node for the module (tests/conftest.py::shared_node): every test's users and ids
# carry a tag of its own (World.t). Sign-ups from one address exceed the default burst.
SHARED_NODE_SETTINGS = {"auth_rate_burst": 1000}


# -- helpers ----------------------------------------------------------------------------


def ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json() if r.content else {}


@dataclass
class User:
    id: str
    email: str
    http: httpx.Client  # Authorization: Bearer <access token>


def bearer(node: RunningNode, token: str) -> httpx.Client:
    return httpx.Client(base_url=node.url, timeout=30, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    """Clients a test opens; closed after it."""
    opened: list[httpx.Client] = []
    yield opened
    for c in opened:
        c.close()


@pytest.fixture
def signup(node: RunningNode, clients: list[httpx.Client]):
    """Register and log in a user (two scrypt runs, ~0.3 s each): a User with a bearer client."""

    def make(handle: str) -> User:
        email = f"{handle}@example.com"
        with node.anonymous() as anon:
            reg = ok(
                anon.post("/v1/auth/register", json={"email": email, "password": PASSWORD}), 201
            )
            pair = ok(anon.post("/v1/auth/login", json={"email": email, "password": PASSWORD}))
        http = bearer(node, pair["access_token"])
        clients.append(http)
        return User(reg["user_id"], email, http)

    return make


def journaled(node: RunningNode, ids: list[str]) -> set[str]:
    """Which of these transfer ids have a row in the journal (PostgreSQL, not a cache)."""
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        rows = conn.execute("SELECT id FROM transfers WHERE id = ANY(%s)", (ids,)).fetchall()
    return {r[0] for r in rows}


def balances(node: RunningNode, *account_ids: str) -> dict[str, tuple[int, int, int, int]]:
    """Posted and pending totals, as the admin sees them."""
    out = {}
    for a in account_ids:
        b = ok(node.http.get(f"/v1/accounts/{a}"))
        out[a] = (
            b["debits_posted"],
            b["credits_posted"],
            b["debits_pending"],
            b["credits_pending"],
        )
    return out


def xfer(id_: str, debit: str, credit: str, amount: int, **more: object) -> dict:
    return {
        "id": id_,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "currency": USD,
        **more,
    }


@dataclass
class World:
    """One test's users, accounts and ids: tests share the module's node, so every id a
    test makes carries its tag."""

    node: RunningNode
    a: User
    b: User
    tag: str

    def t(self, name: str) -> str:
        """A transfer or account id of this test's own."""
        return f"{name}-{self.tag}"

    @property
    def treasury(self) -> str:
        return self.t("treasury")

    @property
    def acct_a(self) -> str:
        return self.t("acct-a")

    @property
    def acct_b(self) -> str:
        return self.t("acct-b")


@pytest.fixture
def world(node: RunningNode, signup) -> World:
    """A and B with an account each (created with their own tokens), funded by the admin."""
    tag = uuid.uuid4().hex[:8]
    w = World(node, signup(f"alice-{tag}"), signup(f"bob-{tag}"), tag)
    treasury = ok(node.http.post("/v1/accounts", json={"id": w.treasury, "currency": USD}), 201)
    assert treasury["owner_user_id"] is None
    for user, acct in ((w.a, w.acct_a), (w.b, w.acct_b)):
        body = {"id": acct, "currency": USD, "flags": ["debits_must_not_exceed_credits"]}
        created = ok(user.http.post("/v1/accounts", json=body), 201)
        assert created["owner_user_id"] == user.id
        fund = xfer(f"fund-{acct}", w.treasury, acct, FUNDING)
        assert ok(node.http.post("/v1/transfers", json=fund), 201)["status"] == "posted"
    return w


# -- 1. authentication ------------------------------------------------------------------


def _operations(spec: dict) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    )


_PATH_PARAM = re.compile(r"\{([^}]+)\}")
_PARAM_VALUES = {
    "account_id": "acct-unknown",
    "transfer_id": "transfer-unknown",
    "user_id": UNKNOWN_USER,
    "key_id": UNKNOWN_KEY,
}


def _concrete(path: str) -> str:
    return _PATH_PARAM.sub(lambda m: _PARAM_VALUES.get(m.group(1), "x"), path)


def test_every_v1_endpoint_needs_credentials(node: RunningNode) -> None:
    keys_before = ok(node.http.get("/v1/api-keys"))["data"]
    with node.anonymous() as anon:
        spec = ok(anon.get("/openapi.json"))
    operations = _operations(spec)
    top_level = {path for _, path in operations if not path.startswith("/v1/")}
    assert top_level <= OPERATIONAL, f"new unversioned endpoints: {top_level - OPERATIONAL}"
    protected = [(m, p) for m, p in operations if p.startswith("/v1/") and (m, p) not in PUBLIC_V1]
    # The enumeration found the real API, not an empty or truncated document.
    for expected in [
        ("GET", "/v1/accounts/{account_id}"),
        ("POST", "/v1/transfers/batch"),
        ("DELETE", "/v1/api-keys/{key_id}"),
        ("POST", "/v1/users/{user_id}/kyc/review"),
        ("GET", "/v1/auth/me"),
    ]:
        assert expected in protected
    assert set(operations) >= PUBLIC_V1
    # Every protected operation says which scope it needs (the contract clients read).
    unscoped = [(m, p) for m, p in protected
                if not spec["paths"][p][m.lower()].get("x-required-scope")]  # fmt: skip
    assert not unscoped, f"operations without x-required-scope: {unscoped}"

    # A JWT in the right shape, with the node's own key id, signed with the wrong key.
    now = int(time.time())
    claims = {
        "iss": "paynode", "aud": "paynode-api", "sub": UNKNOWN_USER, "sid": "ses_x",
        "scope": "admin", "iat": now, "nbf": now, "exp": now + 600, "jti": "x",
    }  # fmt: skip
    forged = jwt.encode(
        claims, "not-the-node-key-0123456789abcdef", "HS256", headers={"kid": node.keys.jwt_active}
    )
    unsigned = jwt.encode(claims, None, "none")
    # Signed with the node's real key: valid tokens, but of no session, or expired.
    kid = node.keys.jwt_active
    real_key = node.keys.jwt_keys[kid]
    no_session = jwt.encode(claims, real_key, "HS256", headers={"kid": kid})
    old = {**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}
    expired = jwt.encode(old, real_key, "HS256", headers={"kid": kid})
    bad_credentials: list[tuple[dict[str, str], str]] = [
        ({}, "unauthenticated"),
        ({"Authorization": ""}, "unauthenticated"),
        ({"Authorization": "Bearer"}, "unauthenticated"),
        ({"Authorization": "Bearer not-a-token-or-key"}, "invalid_token"),
        ({"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, "unauthenticated"),
        # The valid admin key under another scheme is still no credential.
        ({"Authorization": f"Basic {ADMIN_KEY}"}, "unauthenticated"),
        ({"Authorization": f"Token {ADMIN_KEY}"}, "unauthenticated"),
        ({"Authorization": f"Bearer {UNKNOWN_KEY}.not-its-secret"}, "invalid_api_key"),
        ({"Authorization": "Bearer pk_garbage"}, "invalid_api_key"),
        ({"Authorization": f"Bearer {forged}"}, "invalid_token"),
        ({"Authorization": f"Bearer {unsigned}"}, "invalid_token"),
        ({"Authorization": f"Bearer {no_session}"}, "session_revoked"),
        ({"Authorization": f"Bearer {expired}"}, "token_expired"),
        ({"Authorization": f"Bearer {ADMIN_KEY}x"}, "invalid_token"),
    ]
    with node.anonymous() as anon:
        for method, path in protected:
            url = _concrete(path)
            body = {} if method in ("POST", "PATCH", "PUT") else None
            for headers, code in bad_credentials:
                r = anon.request(method, url, headers=headers, json=body)
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                unauthorized(r, code)
    # Nothing was created by any of those requests.
    assert ok(node.http.get("/v1/api-keys"))["data"] == keys_before


def test_public_endpoints_stay_reachable(node: RunningNode) -> None:
    email = "carol@example.com"
    with node.anonymous() as anon:
        assert ok(anon.get("/health")) == {"status": "ok"}
        assert ok(anon.get("/ready"))["status"] == "ready"
        reg = ok(anon.post("/v1/auth/register", json={"email": email, "password": PASSWORD}), 201)
        assert re.fullmatch(r"usr_[0-9a-f]{32}", reg["user_id"])
        pair = ok(anon.post("/v1/auth/login", json={"email": email, "password": PASSWORD}))
        assert pair["token_type"] == "bearer"
        wrong = anon.post("/v1/auth/login", json={"email": email, "password": PASSWORD + "x"})
        problem(wrong, 401, "invalid_credentials")
        fresh = ok(anon.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}))
        assert fresh["refresh_token"] != pair["refresh_token"]
        problem(anon.post("/v1/auth/refresh", json={"refresh_token": "rt_x.y"}), 401,
                "invalid_refresh_token")  # fmt: skip

        token = {"Authorization": f"Bearer {fresh['access_token']}"}
        me = ok(anon.get("/v1/auth/me", headers=token))
        assert (me["kind"], me["user_id"]) == ("user", reg["user_id"])
        assert "admin" not in me["scopes"] and "kyc:review" not in me["scopes"]
        # After logout the session's access tokens stop working at once.
        assert anon.post("/v1/auth/logout", headers=token).status_code == 204
        unauthorized(anon.get("/v1/auth/me", headers=token), "session_revoked")


# -- 2. per-account authorization ---------------------------------------------------------


def test_other_user_cannot_read_accounts_or_transfers(world: World) -> None:
    node, a, b = world.node, world.a, world.b
    ok(
        a.http.post(
            "/v1/transfers", json=xfer(world.t("a-pays-b"), world.acct_a, world.acct_b, 300)
        ),
        201,
    )

    # Account, its transfer list, and a transfer between A and the treasury.
    problem(b.http.get(f"/v1/accounts/{world.acct_a}"), 403, "forbidden")
    problem(b.http.get(f"/v1/accounts/{world.acct_a}/transfers"), 403, "forbidden")
    problem(b.http.get(f"/v1/accounts/{world.acct_a}/transfers?limit=1"), 403, "forbidden")
    problem(b.http.get(f"/v1/transfers/fund-{world.acct_a}"), 403, "forbidden")
    # The unowned treasury is admins' only.
    problem(b.http.get(f"/v1/accounts/{world.treasury}"), 403, "forbidden")
    problem(b.http.get(f"/v1/accounts/{world.treasury}/transfers"), 403, "forbidden")
    # Re-creating A's account id is a conflict, never a 200 that echoes A's balances.
    same = {"id": world.acct_a, "currency": USD, "flags": ["debits_must_not_exceed_credits"]}
    conflict = problem(b.http.post("/v1/accounts", json=same), 409, "exists_with_different_fields")
    assert "balance" not in conflict

    # Either side of a transfer may look at it: B is the payee of a-pays-b.
    seen = ok(b.http.get(f"/v1/transfers/{world.t('a-pays-b')}"))
    assert (seen["debit_account_id"], seen["credit_account_id"]) == (world.acct_a, world.acct_b)
    assert ok(b.http.get(f"/v1/transfers/fund-{world.acct_b}"))["amount"] == FUNDING
    mine = ok(b.http.get(f"/v1/accounts/{world.acct_b}"))
    assert (mine["owner_user_id"], mine["balance"]) == (b.id, FUNDING + 300)
    listed = ok(b.http.get(f"/v1/accounts/{world.acct_b}/transfers"))
    assert [t["id"] for t in listed["data"]] == [world.t("a-pays-b"), f"fund-{world.acct_b}"]

    # Not found stays not found (and is not turned into 403).
    problem(b.http.get("/v1/accounts/no-such-account"), 404, "account_not_found")
    problem(b.http.get("/v1/accounts/no-such-account/transfers"), 404, "account_not_found")
    problem(b.http.get("/v1/transfers/no-such-transfer"), 404, "transfer_not_found")

    # A sees all of it on its own account.
    own = ok(a.http.get(f"/v1/accounts/{world.acct_a}"))
    assert (own["owner_user_id"], own["balance"]) == (a.id, FUNDING - 300)
    assert ok(a.http.get(f"/v1/transfers/fund-{world.acct_a}"))["amount"] == FUNDING
    assert ok(a.http.get(f"/v1/transfers/{world.t('a-pays-b')}"))["amount"] == 300
    listed = ok(a.http.get(f"/v1/accounts/{world.acct_a}/transfers"))
    assert [t["id"] for t in listed["data"]] == [world.t("a-pays-b"), f"fund-{world.acct_a}"]
    # ... and none of B's.
    problem(a.http.get(f"/v1/accounts/{world.acct_b}"), 403, "forbidden")
    problem(a.http.get(f"/v1/transfers/fund-{world.acct_b}"), 403, "forbidden")
    assert node.http.get(f"/v1/accounts/{world.acct_b}").json()["balance"] == FUNDING + 300


def test_other_user_cannot_debit_an_account(world: World) -> None:
    node, a, b = world.node, world.a, world.b
    accounts = (world.treasury, world.acct_a, world.acct_b)
    before = balances(node, *accounts)

    steal = xfer(world.t("steal"), world.acct_a, world.acct_b, 100)
    problem(b.http.post("/v1/transfers", json=steal), 403, "forbidden")
    from_treasury = xfer(world.t("mint"), world.treasury, world.acct_b, 100)
    problem(b.http.post("/v1/transfers", json=from_treasury), 403, "forbidden")
    # A pending hold on A's money is a debit too.
    hold = xfer(
        world.t("hold-steal"), world.acct_a, world.acct_b, 100, flags=["pending"], timeout_s=3600
    )
    problem(b.http.post("/v1/transfers", json=hold), 403, "forbidden")

    # One foreign debit refuses the whole batch: B's own legitimate transfers stay unapplied,
    # those before and after it, linked or not.
    batch = [
        xfer(world.t("b-legit-1"), world.acct_b, world.acct_a, 5),
        xfer(world.t("b-steal"), world.acct_a, world.acct_b, 7),
        xfer(world.t("b-legit-2"), world.acct_b, world.treasury, 3, flags=["linked"]),
        xfer(world.t("b-legit-3"), world.acct_b, world.acct_a, 2),
    ]
    r = b.http.post("/v1/transfers/batch", json={"transfers": batch})
    problem(r, 403, "forbidden")
    ids = [world.t("steal"), world.t("mint"), world.t("hold-steal"), *(t["id"] for t in batch)]
    assert journaled(node, ids) == set()
    for id_ in ids:
        problem(node.http.get(f"/v1/transfers/{id_}"), 404, "transfer_not_found")
    assert balances(node, *accounts) == before

    # Crediting someone else's account from your own is allowed.
    gift = ok(
        b.http.post("/v1/transfers", json=xfer(world.t("gift"), world.acct_b, world.acct_a, 250)),
        201,
    )
    assert gift["status"] == "posted"
    # A moves its own money, one by one and in a batch.
    ok(
        a.http.post("/v1/transfers", json=xfer(world.t("a-own"), world.acct_a, world.acct_b, 40)),
        201,
    )
    own_batch = [
        xfer(world.t("a-batch-1"), world.acct_a, world.treasury, 10, flags=["linked"]),
        xfer(world.t("a-batch-2"), world.acct_a, world.acct_b, 20),
    ]
    results = ok(a.http.post("/v1/transfers/batch", json={"transfers": own_batch}))["results"]
    assert results == [
        {"id": world.t("a-batch-1"), "status": "posted"},
        {"id": world.t("a-batch-2"), "status": "posted"},
    ]
    after = balances(node, *accounts)
    assert after[world.acct_a][:2] == (before[world.acct_a][0] + 70, before[world.acct_a][1] + 250)
    assert after[world.acct_b][:2] == (before[world.acct_b][0] + 250, before[world.acct_b][1] + 60)
    moved = [world.t(n) for n in ("gift", "a-own", "a-batch-1", "a-batch-2")]
    assert journaled(node, moved) == set(moved)


def test_other_user_cannot_post_or_void_a_pending(world: World) -> None:
    node, a, b = world.node, world.a, world.b
    for hold_id in (world.t("hold-1"), world.t("hold-2")):
        hold = xfer(hold_id, world.acct_a, world.treasury, 100, flags=["pending"], timeout_s=3600)
        assert ok(a.http.post("/v1/transfers", json=hold), 201)["status"] == "pending"
    before = balances(node, world.acct_a, world.acct_b, world.treasury)
    assert before[world.acct_a][2] == 200  # debits_pending

    attempts = []
    for n, flag in enumerate(("post_pending", "void_pending")):
        body = {"id": world.t(f"b-{flag}"), "flags": [flag], "pending_id": world.t("hold-1")}
        problem(b.http.post("/v1/transfers", json=body), 403, "forbidden")
        in_batch = {
            "id": world.t(f"b-batch-{flag}"),
            "flags": [flag],
            "pending_id": world.t("hold-1"),
        }
        own = xfer(world.t(f"b-batch-own-{n}"), world.acct_b, world.acct_a, 1)
        r = b.http.post("/v1/transfers/batch", json={"transfers": [own, in_batch]})
        problem(r, 403, "forbidden")
        attempts += [body["id"], in_batch["id"], own["id"]]
        # Naming its own account as the debit side does not get around it either: the shard
        # that decides is B's, which refuses a pending whose accounts are not these.
        spoof = {**xfer(world.t(f"b-spoof-{flag}"), world.acct_b, world.treasury, 100),
                 "flags": [flag], "pending_id": world.t("hold-1")}  # fmt: skip
        r = b.http.post("/v1/transfers", json=spoof)
        assert r.status_code == 422, r.text
        assert r.json()["code"] in ("pending_account_mismatch", "pending_not_found"), r.json()
        attempts.append(spoof["id"])

    assert journaled(node, attempts) == set()
    assert ok(node.http.get(f"/v1/transfers/{world.t('hold-1')}"))["status"] == "pending"
    problem(b.http.get(f"/v1/transfers/{world.t('hold-1')}"), 403, "forbidden")
    assert balances(node, world.acct_a, world.acct_b, world.treasury) == before

    # A, the payer, may post one and void the other with nothing but the pending id.
    posted = a.http.post(
        "/v1/transfers",
        json={"id": world.t("a-post"), "flags": ["post_pending"], "pending_id": world.t("hold-1")},
    )
    assert ok(posted, 201)["status"] == "posted"
    voided = a.http.post(
        "/v1/transfers",
        json={"id": world.t("a-void"), "flags": ["void_pending"], "pending_id": world.t("hold-2")},
    )
    assert ok(voided, 201)["status"] == "voided"
    mine = ok(a.http.get(f"/v1/accounts/{world.acct_a}"))
    assert (mine["debits_pending"], mine["balance"]) == (0, FUNDING - 100)


# -- 3. account ownership -------------------------------------------------------------------


def test_account_owner_is_chosen_only_by_admins(world: World) -> None:
    node, a, b = world.node, world.a, world.b
    for_b = {"id": world.t("a-made-for-b"), "currency": USD, "owner_user_id": b.id}
    body = problem(a.http.post("/v1/accounts", json=for_b), 403, "forbidden")
    assert body.get("field") == "$.owner_user_id"
    problem(node.http.get(f"/v1/accounts/{world.t('a-made-for-b')}"), 404, "account_not_found")
    # Naming yourself is the same as naming no one.
    for_self = {"id": world.t("a-for-self"), "currency": USD, "owner_user_id": a.id}
    assert ok(a.http.post("/v1/accounts", json=for_self), 201)["owner_user_id"] == a.id

    by_admin = {"id": world.t("admin-made-for-b"), "currency": USD, "owner_user_id": b.id}
    assert ok(node.http.post("/v1/accounts", json=by_admin), 201)["owner_user_id"] == b.id
    assert ok(b.http.get(f"/v1/accounts/{world.t('admin-made-for-b')}"))["owner_user_id"] == b.id
    problem(a.http.get(f"/v1/accounts/{world.t('admin-made-for-b')}"), 403, "forbidden")
    # ... and B, its owner, may debit it.
    gift = xfer(world.t("b-from-new"), world.acct_b, world.t("admin-made-for-b"), 50)
    ok(b.http.post("/v1/transfers", json=gift), 201)
    back = xfer(world.t("b-back"), world.t("admin-made-for-b"), world.acct_b, 50)
    ok(b.http.post("/v1/transfers", json=back), 201)

    nobody = {"id": world.t("for-nobody"), "currency": USD, "owner_user_id": UNKNOWN_USER}
    body = problem(node.http.post("/v1/accounts", json=nobody), 422, "user_not_found")
    assert body.get("field") == "$.owner_user_id"
    problem(node.http.get(f"/v1/accounts/{world.t('for-nobody')}"), 404, "account_not_found")


# -- 4. users and KYC -------------------------------------------------------------------------


def test_other_user_cannot_touch_profile_or_kyc(world: World) -> None:
    node, a, b = world.node, world.a, world.b
    kyc = {"id_type": "passport", "id_number": "X1234567"}
    problem(b.http.get(f"/v1/users/{a.id}"), 403, "forbidden")
    problem(b.http.patch(f"/v1/users/{a.id}", json={"name": "Mallory"}), 403, "forbidden")
    problem(b.http.post(f"/v1/users/{a.id}/kyc", json=kyc), 403, "forbidden")
    problem(b.http.get(f"/v1/users/{a.id}/kyc"), 403, "forbidden")
    # An id that does not exist looks the same as one that does: no user enumeration.
    problem(b.http.get(f"/v1/users/{UNKNOWN_USER}"), 403, "forbidden")
    problem(b.http.get("/v1/users/not-a-user-id"), 404, "user_not_found")

    profile = ok(a.http.get(f"/v1/users/{a.id}"))
    assert (profile["id"], profile["email"], profile["name"]) == (a.id, a.email, None)
    assert profile["kyc_status"] == "unverified"
    assert ok(a.http.get(f"/v1/users/{a.id}/kyc"))["history"] == []
    assert ok(node.http.get(f"/v1/users/{a.id}/kyc"))["status"] == "unverified"

    # A edits and submits its own; B's attempts above changed nothing.
    assert ok(a.http.patch(f"/v1/users/{a.id}", json={"name": "Alice"}))["name"] == "Alice"
    submitted = ok(a.http.post(f"/v1/users/{a.id}/kyc", json=kyc))
    assert (submitted["status"], submitted["id_last4"]) == ("pending", "4567")
    assert [e["actor"] for e in submitted["history"]] == [a.id]


# -- 5. API keys ------------------------------------------------------------------------------


def test_api_key_scopes_listing_and_revocation(world: World, clients: list[httpx.Client]) -> None:
    node, a, b = world.node, world.a, world.b
    created = ok(a.http.post("/v1/api-keys", json={"name": "ro", "scopes": ["accounts:read"]}), 201)
    assert (created["owner_user_id"], created["scopes"]) == (a.id, ["accounts:read"])
    key = bearer(node, created["key"])
    clients.append(key)

    me = ok(key.get("/v1/auth/me"))
    assert (me["kind"], me["id"], me["user_id"]) == ("api_key", created["id"], a.id)
    assert ok(key.get(f"/v1/accounts/{world.acct_a}"))["owner_user_id"] == a.id
    problem(key.get(f"/v1/accounts/{world.acct_b}"), 403, "forbidden")
    spend = xfer(world.t("by-ro-key"), world.acct_a, world.acct_b, 1)
    problem(key.post("/v1/transfers", json=spend), 403, "insufficient_scope")
    problem(key.post("/v1/transfers/batch", json={"transfers": [spend]}), 403, "insufficient_scope")
    problem(key.get(f"/v1/transfers/fund-{world.acct_a}"), 403, "insufficient_scope")
    problem(key.get(f"/v1/users/{a.id}"), 403, "insufficient_scope")
    wider = {"name": "wider", "scopes": ["accounts:read", "transfers:write"]}
    problem(key.post("/v1/api-keys", json=wider), 403, "insufficient_scope")
    assert journaled(node, [world.t("by-ro-key")]) == set()

    # A user cannot hand out more than it has, nor keys for someone else.
    for scopes in (["admin"], ["kyc:review"], ["accounts:read", "admin"]):
        r = a.http.post("/v1/api-keys", json={"name": "up", "scopes": scopes})
        problem(r, 403, "scope_not_grantable")
    for_b = {"name": "for-b", "scopes": ["accounts:read"], "owner_user_id": b.id}
    problem(a.http.post("/v1/api-keys", json=for_b), 403, "forbidden")
    # Nor can a key: one that may make keys hands out at most its own scopes, as its user.
    maker = {"name": "maker", "scopes": ["accounts:read", "api_keys:write"]}
    maker = ok(a.http.post("/v1/api-keys", json=maker), 201)
    with bearer(node, maker["key"]) as k:
        wider = {"name": "wider", "scopes": ["accounts:read", "transfers:write"]}
        problem(k.post("/v1/api-keys", json=wider), 403, "scope_not_grantable")
        problem(k.post("/v1/api-keys", json={**wider, "owner_user_id": b.id}), 403,
                "scope_not_grantable")  # fmt: skip
        narrower = ok(k.post("/v1/api-keys", json={"name": "n", "scopes": ["accounts:read"]}), 201)
        assert narrower["owner_user_id"] == a.id
    for extra in (maker, narrower):
        assert a.http.delete(f"/v1/api-keys/{extra['id']}").status_code == 204

    b_key = ok(b.http.post("/v1/api-keys", json={"name": "b", "scopes": ["accounts:read"]}), 201)
    admin_key = ok(node.http.post("/v1/api-keys", json={"name": "ops", "scopes": ["admin"]}), 201)
    assert admin_key["owner_user_id"] is None

    # Revoked keys stay listed (with revoked_at), so A has three.
    listed_a = ok(a.http.get("/v1/api-keys"))["data"]
    revoked = {k["id"]: k.get("revoked_at") is not None for k in listed_a}
    assert revoked == {created["id"]: False, maker["id"]: True, narrower["id"]: True}
    assert {k["owner_user_id"] for k in listed_a} == {a.id}
    listed_b = ok(b.http.get("/v1/api-keys"))["data"]
    assert [k["id"] for k in listed_b] == [b_key["id"]]
    listed_all = ok(node.http.get("/v1/api-keys"))["data"]
    # (the admin sees every key of the node: other tests' too)
    assert {k["id"] for k in listed_all} >= {*revoked, b_key["id"], admin_key["id"]}
    for k in [*listed_a, *listed_b, *listed_all]:
        assert "key" not in k and "secret_hash" not in k, k

    # B cannot revoke A's key, nor A the admin's; both keep working.
    problem(b.http.delete(f"/v1/api-keys/{created['id']}"), 403, "forbidden")
    problem(a.http.delete(f"/v1/api-keys/{admin_key['id']}"), 403, "forbidden")
    problem(b.http.delete(f"/v1/api-keys/{UNKNOWN_KEY}"), 404, "api_key_not_found")
    assert ok(key.get(f"/v1/accounts/{world.acct_a}"))["id"] == world.acct_a
    with bearer(node, admin_key["key"]) as ops:
        assert ok(ops.get(f"/v1/accounts/{world.acct_b}"))["owner_user_id"] == b.id

    # Revoked by its owner: refused on the very next request.
    assert a.http.delete(f"/v1/api-keys/{created['id']}").status_code == 204
    unauthorized(key.get(f"/v1/accounts/{world.acct_a}"), "invalid_api_key")
    unauthorized(key.get("/v1/auth/me"), "invalid_api_key")
    listed_a = ok(a.http.get("/v1/api-keys"))["data"]
    assert all(k.get("revoked_at") is not None for k in listed_a), listed_a
    # The right id with the wrong secret is refused the same way.
    forged = bearer(node, b_key["key"].split(".")[0] + ".not-the-secret")
    clients.append(forged)
    unauthorized(forged.get(f"/v1/accounts/{world.acct_b}"), "invalid_api_key")


# -- 6. and 7. admins and non-admins ------------------------------------------------------------


def test_admin_key_sees_everything(world: World) -> None:
    node, a, b = world.node, world.a, world.b
    ok(
        a.http.post(
            "/v1/transfers", json=xfer(world.t("a-pays-b"), world.acct_a, world.acct_b, 300)
        ),
        201,
    )
    for acct, owner in ((world.acct_a, a.id), (world.acct_b, b.id), (world.treasury, None)):
        assert ok(node.http.get(f"/v1/accounts/{acct}"))["owner_user_id"] == owner
        assert ok(node.http.get(f"/v1/accounts/{acct}/transfers"))["data"]
    for tid in (f"fund-{world.acct_a}", f"fund-{world.acct_b}", world.t("a-pays-b")):
        assert ok(node.http.get(f"/v1/transfers/{tid}"))["id"] == tid
    for user in (a, b):
        assert ok(node.http.get(f"/v1/users/{user.id}"))["email"] == user.email
        assert ok(node.http.get(f"/v1/users/{user.id}/kyc"))["status"] == "unverified"
    problem(node.http.get(f"/v1/users/{UNKNOWN_USER}"), 404, "user_not_found")
    # The admin can debit anyone's account.
    ok(
        node.http.post(
            "/v1/transfers", json=xfer(world.t("clawback"), world.acct_b, world.treasury, 1)
        ),
        201,
    )
    me = ok(node.http.get("/v1/auth/me"))
    assert (me["kind"], me["user_id"], me["scopes"]) == ("bootstrap", None, ["admin"])
    # So does an admin API key made by it, which belongs to no user.
    made = ok(node.http.post("/v1/api-keys", json={"name": "ops", "scopes": ["admin"]}), 201)
    with bearer(node, made["key"]) as ops:
        assert ok(ops.get(f"/v1/accounts/{world.acct_a}"))["owner_user_id"] == a.id
        assert ok(ops.get(f"/v1/transfers/fund-{world.acct_b}"))["amount"] == FUNDING
        assert ok(ops.get(f"/v1/users/{b.id}"))["id"] == b.id


def test_user_cannot_call_admin_endpoints(world: World) -> None:
    node, a = world.node, world.a
    new_user = {"email": "dave@example.com", "name": "Dave"}
    problem(a.http.post("/v1/users", json=new_user), 403, "insufficient_scope")
    ok(a.http.post(f"/v1/users/{a.id}/kyc", json={"id_type": "ssn", "id_number": "123-45-6789"}))
    verdict = {"decision": "verified"}
    # Not even on its own pending submission.
    problem(a.http.post(f"/v1/users/{a.id}/kyc/review", json=verdict), 403, "insufficient_scope")
    problem(
        a.http.post(f"/v1/users/{world.b.id}/kyc/review", json=verdict), 403, "insufficient_scope"
    )
    assert ok(a.http.get(f"/v1/users/{a.id}/kyc"))["status"] == "pending"
    # The admin can do both.
    assert ok(node.http.post("/v1/users", json=new_user), 201)["email"] == new_user["email"]
    reviewed = ok(node.http.post(f"/v1/users/{a.id}/kyc/review", json=verdict))
    assert reviewed["status"] == "verified"
    assert ok(a.http.get(f"/v1/users/{a.id}"))["kyc_status"] == "verified"
