"""Access tokens, refresh rotation, logout, login failures, key rotation and rate limits.

Everything goes through real HTTP to a running node. Forged tokens are signed
with the node's own JWT key (from the fixture's keyring) where a test needs
"the right key", and a forged token with every claim right is accepted: that
positive control is what makes each refusal next to it mean something.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from paynode.storage.keyring import rotated, write_file
from tests.support.asserts import problem, unauthorized
from tests.support.node import RunningNode, wait_until

# One node for the module's tests (tests/conftest.py shared_node): each uses its own ids.
# Many sign-ups from one address: the auth rate limit is tested elsewhere, on nodes of
# their own.
SHARED_NODE_SETTINGS: dict = {"auth_rate_burst": 1_000}

PASSWORD = "correct horse battery"
ISSUER = "paynode"
AUDIENCE = "paynode-api"
_DROP = object()  # a claim value meaning "leave this claim out"


# -- helpers ---------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def retry_after(r: httpx.Response) -> int:
    value = r.headers.get("retry-after")
    assert value is not None and value.isdigit(), r.headers
    assert int(value) >= 1, value
    return int(value)


def register(c: httpx.Client, email: str, password: str = PASSWORD) -> str:
    r = c.post("/v1/auth/register", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    return r.json()["user_id"]


def login(c: httpx.Client, email: str, password: str = PASSWORD) -> dict:
    r = c.post("/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    pair = r.json()
    assert pair["token_type"] == "bearer"
    return pair


def refresh(c: httpx.Client, refresh_token: str) -> httpx.Response:
    return c.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


def me(c: httpx.Client, token: str) -> httpx.Response:
    return c.get("/v1/auth/me", headers=bearer(token))


def me_ok(c: httpx.Client, token: str, user_id: str) -> None:
    r = me(c, token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "user" and body["id"] == user_id and body["user_id"] == user_id


def unverified(token: str) -> tuple[dict, dict]:
    """(header, claims) of a token, without checking anything."""
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def encode(header: dict, payload: dict, key: bytes | None, digest=hashlib.sha256) -> str:
    """A JWT built by hand: HMAC with ``digest`` over header.payload, or no signature."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(sig)}"


def claims(sub: str, sid: str, /, **changes: object) -> dict:
    """Claims as the node issues them (valid now), with ``changes`` applied."""
    now = int(time.time())
    out: dict = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "sid": sid,
        "scope": "users:read users:write",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not _DROP}


def hs256(kid: str) -> dict:
    return {"alg": "HS256", "typ": "JWT", "kid": kid}


# -- 1. forgery ------------------------------------------------------------------------


def test_forged_access_tokens_are_refused(node: RunningNode) -> None:
    kid = node.keys.jwt_active
    key = node.keys.jwt_keys[kid]
    with node.anonymous() as c:
        alice = register(c, "alice@forge.example")
        bob = register(c, "bob@forge.example")
        pair = login(c, "alice@forge.example")
        assert pair["expires_in"] == node.settings.auth.access_token_ttl_s
        token = pair["access_token"]
        me_ok(c, token, alice)
        header, real = unverified(token)
        assert header["alg"] == "HS256" and header["kid"] == kid
        sid = real["sid"]
        assert real["sub"] == alice and real["iss"] == ISSUER and real["aud"] == AUDIENCE

        # Positive controls: the server's key with the right claims is accepted, whether
        # signed by pyjwt or by the hand encoder the negative cases below use.
        good = claims(alice, sid)
        me_ok(c, jwt.encode(good, key, algorithm="HS256", headers={"kid": kid}), alice)
        me_ok(c, encode(hs256(kid), good, key), alice)
        # exp 2 s ago is inside the 5 s leeway.
        me_ok(c, encode(hs256(kid), claims(alice, sid, exp=int(time.time()) - 2), key), alice)

        wrong_key = secrets.token_bytes(32)
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = {
            "alg none": encode({"alg": "none", "typ": "JWT", "kid": kid}, good, None),
            "alg None": encode({"alg": "None", "typ": "JWT", "kid": kid}, good, None),
            "HS256 header, no signature": encode(hs256(kid), good, None),
            "wrong key, same kid": encode(hs256(kid), good, wrong_key),
            "wrong audience": encode(hs256(kid), claims(alice, sid, aud="other-api"), key),
            "no audience": encode(hs256(kid), claims(alice, sid, aud=_DROP), key),
            "wrong issuer": encode(hs256(kid), claims(alice, sid, iss="evil"), key),
            "no issuer": encode(hs256(kid), claims(alice, sid, iss=_DROP), key),
            "missing exp": encode(hs256(kid), claims(alice, sid, exp=_DROP), key),
            "missing sid": encode(hs256(kid), claims(alice, sid, sid=_DROP), key),
            "missing sub": encode(hs256(kid), claims(alice, sid, sub=_DROP), key),
            "missing iat": encode(hs256(kid), claims(alice, sid, iat=_DROP), key),
            "missing jti": encode(hs256(kid), claims(alice, sid, jti=_DROP), key),
            "missing scope": encode(hs256(kid), claims(alice, sid, scope=_DROP), key),
            "exp not a number": encode(hs256(kid), claims(alice, sid, exp="soon"), key),
            "not yet valid (nbf)": encode(
                hs256(kid), claims(alice, sid, nbf=int(time.time()) + 600), key
            ),
            "unknown kid": encode(hs256("k20000101nosuch"), good, key),
            "no kid": encode({"alg": "HS256", "typ": "JWT"}, good, key),
            "kid not a string": encode({"alg": "HS256", "typ": "JWT", "kid": 7}, good, key),
            "HS512 with the right key": encode(
                {"alg": "HS512", "typ": "JWT", "kid": kid}, good, key, hashlib.sha512
            ),
            "RS256 header, HMAC with the right key": encode(
                {"alg": "RS256", "typ": "JWT", "kid": kid}, good, key
            ),
            "RS256, a real RSA signature": jwt.encode(
                good, rsa_key, algorithm="RS256", headers={"kid": kid}
            ),
            "not a JWT at all": "eyJhbGciOi.garbage.x",
        }
        # The real token with its payload swapped for one naming bob, signature kept.
        h, _, s = token.split(".")
        payload = b64url(json.dumps(real | {"sub": bob}).encode())
        forged["payload edited (sub -> bob)"] = f"{h}.{payload}.{s}"

        for what, bad in forged.items():
            r = me(c, bad)
            assert r.status_code == 401, (what, r.status_code, r.text)
            assert r.json()["code"] == "invalid_token", (what, r.json())
            unauthorized(r, "invalid_token")

        past = int(time.time()) - 60
        expired = encode(
            hs256(kid), claims(alice, sid, iat=past - 900, nbf=past - 900, exp=past), key
        )
        unauthorized(me(c, expired), "token_expired")

        # A right-key token naming a session that does not exist is still refused.
        unauthorized(me(c, encode(hs256(kid), claims(alice, "ses_nosuch"), key)), "session_revoked")

        # None of the above hurt the real session.
        me_ok(c, token, alice)


# -- 2. refresh rotation -----------------------------------------------------------------


def test_refresh_rotates_and_reuse_revokes_the_session(node: RunningNode) -> None:
    with node.anonymous() as c:
        user = register(c, "rotor@refresh.example")
        first = login(c, "rotor@refresh.example")
        other = login(c, "rotor@refresh.example")  # a second, separate session
        assert (
            unverified(first["access_token"])[1]["sid"]
            != (unverified(other["access_token"])[1]["sid"])
        )

        r = refresh(c, first["refresh_token"])
        assert r.status_code == 200, r.text
        second = r.json()
        assert second["token_type"] == "bearer"
        assert second["expires_in"] == node.settings.auth.access_token_ttl_s
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        assert (
            unverified(second["access_token"])[1]["sid"]
            == (unverified(first["access_token"])[1]["sid"])
        )
        me_ok(c, second["access_token"], user)
        me_ok(c, first["access_token"], user)  # same session, still live

        # The used token comes back: someone has a copy, so the whole family ends.
        problem(refresh(c, first["refresh_token"]), 401, "refresh_token_reused")
        problem(refresh(c, second["refresh_token"]), 401, "invalid_refresh_token")
        unauthorized(me(c, second["access_token"]), "session_revoked")
        unauthorized(me(c, first["access_token"]), "session_revoked")
        # Once the session is over, the dead token is just invalid.
        problem(refresh(c, first["refresh_token"]), 401, "invalid_refresh_token")

        # The other session of the same user is untouched, and still rotates.
        me_ok(c, other["access_token"], user)
        r = refresh(c, other["refresh_token"])
        assert r.status_code == 200, r.text
        me_ok(c, r.json()["access_token"], user)

        # Things that cannot be refresh tokens.
        rid = first["refresh_token"].partition(".")[0]
        for bad in ("nonsense", first["access_token"][:200], f"{rid}.wrong-secret", "rt_x.y"):
            problem(refresh(c, bad), 401, "invalid_refresh_token")


# -- 3. logout ---------------------------------------------------------------------------


def test_logout_ends_the_session(node: RunningNode) -> None:
    with node.anonymous() as c:
        user = register(c, "leaver@logout.example")
        pair = login(c, "leaver@logout.example")
        kept = login(c, "leaver@logout.example")
        me_ok(c, pair["access_token"], user)

        r = c.post("/v1/auth/logout", headers=bearer(pair["access_token"]))
        assert r.status_code == 204, r.text
        assert r.content == b""

        unauthorized(me(c, pair["access_token"]), "session_revoked")
        problem(refresh(c, pair["refresh_token"]), 401, "invalid_refresh_token")
        unauthorized(
            c.post("/v1/auth/logout", headers=bearer(pair["access_token"])), "session_revoked"
        )
        unauthorized(c.post("/v1/auth/logout"), "unauthenticated")

        # Logging out one session leaves the user's other session alone.
        me_ok(c, kept["access_token"], user)
        r = refresh(c, kept["refresh_token"])
        assert r.status_code == 200, r.text


# -- 4. login and registration failures ---------------------------------------------------


def test_login_and_register_failures(node: RunningNode) -> None:
    with node.anonymous() as c:
        user = register(c, "Casey@Example.io", "0123456789")  # exactly the 10-char minimum

        wrong_password = c.post(
            "/v1/auth/login", json={"email": "casey@example.io", "password": "not the password"}
        )
        unknown_email = c.post(
            "/v1/auth/login", json={"email": "nobody@example.io", "password": "not the password"}
        )
        problem(wrong_password, 401, "invalid_credentials")
        problem(unknown_email, 401, "invalid_credentials")
        assert wrong_password.content == unknown_email.content  # no user enumeration
        assert wrong_password.headers["content-type"] == unknown_email.headers["content-type"]

        # Email is case-insensitive for login and for uniqueness.
        pair = login(c, "CASEY@example.IO", "0123456789")
        me_ok(c, pair["access_token"], user)
        taken = c.post(
            "/v1/auth/register", json={"email": "casey@example.io", "password": PASSWORD}
        )
        problem(taken, 409, "email_taken")

        weak = c.post(
            "/v1/auth/register", json={"email": "weak@example.io", "password": "123456789"}
        )
        assert problem(weak, 422, "weak_password")["field"] == "$.password"
        # The refused registration created nothing: the address is still free.
        register(c, "weak@example.io")


# -- 5. signing-key rotation -----------------------------------------------------------------


def test_signing_key_rotation_logs_nobody_out(node: RunningNode) -> None:
    keys = node.keys
    assert keys.path is not None
    old_kid = keys.jwt_active
    with node.anonymous() as c:
        user = register(c, "rotate@keys.example")
        before = login(c, "rotate@keys.example")
        assert unverified(before["access_token"])[0]["kid"] == old_kid

        doc = rotated(keys.doc, pii=False, jwt=True)
        new_kid = doc.jwt.active
        assert new_kid != old_kid and old_kid in doc.jwt.keys
        assert doc.pii == keys.doc.pii
        write_file(keys.path, doc)

        # The node re-reads the file at most once a second: new logins sign with the new key.
        def new_login() -> dict | None:
            pair = login(c, "rotate@keys.example")
            return pair if unverified(pair["access_token"])[0]["kid"] == new_kid else None

        after = wait_until(new_login, timeout=10, interval=0.3, what="a token under the new kid")
        me_ok(c, after["access_token"], user)
        me_ok(c, before["access_token"], user)  # the old key still verifies
        r = refresh(c, before["refresh_token"])
        assert r.status_code == 200, r.text
        assert unverified(r.json()["access_token"])[0]["kid"] == new_kid

        # Rotated again elsewhere: a token under a kid the node has never seen makes it
        # re-read the file at once, with no wait for the periodic check.
        doc2 = rotated(doc, pii=False, jwt=True)
        write_file(keys.path, doc2)
        newest_kid = doc2.jwt.active
        newest_key = base64.b64decode(doc2.jwt.keys[newest_kid])
        sid = unverified(after["access_token"])[1]["sid"]
        me_ok(c, encode(hs256(newest_kid), claims(user, sid), newest_key), user)
        for token in (before["access_token"], after["access_token"]):
            me_ok(c, token, user)


# -- 6. access-token lifetime ------------------------------------------------------------------


def test_short_access_token_ttl(make_node) -> None:
    node = make_node(access_token_ttl_s=60)
    with node.anonymous() as c:
        user = register(c, "brief@ttl.example")
        pair = login(c, "brief@ttl.example")
        assert pair["expires_in"] == 60
        header, body = unverified(pair["access_token"])
        assert header["alg"] == "HS256" and header["kid"] == node.keys.jwt_active
        assert body["exp"] - body["iat"] == 60 and body["nbf"] == body["iat"]
        assert abs(body["iat"] - time.time()) < 30
        me_ok(c, pair["access_token"], user)

        r = refresh(c, pair["refresh_token"])
        assert r.status_code == 200, r.text
        assert r.json()["expires_in"] == 60
        body = unverified(r.json()["access_token"])[1]
        assert body["exp"] - body["iat"] == 60


# -- 7. rate limits -------------------------------------------------------------------------------


def test_auth_endpoints_are_rate_limited_per_address(make_node) -> None:
    # One token per 4 s: no refill between the attempts below, however slow the machine.
    node = make_node(auth_rate_per_s=0.25, auth_rate_burst=3)
    attempt = {"email": "nobody@limits.example", "password": "guess guess guess"}

    def try_login(_: int) -> httpx.Response:
        with node.anonymous() as c:
            return c.post("/v1/auth/login", json=attempt)

    # Three at once (each spends ~0.15 s in scrypt; sequential ones would refill the bucket).
    with ThreadPoolExecutor(3) as pool:
        first = list(pool.map(try_login, range(3)))
    for r in first:
        problem(r, 401, "invalid_credentials")

    with node.anonymous() as c:
        fourth = c.post("/v1/auth/login", json=attempt)
        problem(fourth, 429, "rate_limited")
        assert fourth.json()["retryable"] is True
        assert retry_after(fourth) <= 4
        # register and refresh share the address's bucket.
        problem(
            c.post("/v1/auth/register", json={"email": "x@limits.example", "password": PASSWORD}),
            429,
            "rate_limited",
        )
        problem(refresh(c, "rt_x.y"), 429, "rate_limited")

    # Other endpoints are not charged to this bucket.
    r = node.http.get("/v1/auth/me")
    assert r.status_code == 200 and r.json()["kind"] == "bootstrap", r.text

    # The bucket refills: an attempt soon goes through to the password check again.
    with node.anonymous() as c:
        wait_until(
            lambda: c.post("/v1/auth/login", json=attempt).status_code == 401,
            timeout=30,
            interval=0.5,
            what="the login limit to refill",
        )


def test_requests_are_rate_limited_per_credential(make_node) -> None:
    # One token per 100 s: the admin key's bucket stays empty to the end of the test.
    node = make_node(rate_per_s=0.01, rate_burst=5)
    with node.anonymous() as c:
        user = register(c, "own@bucket.example")
        token = login(c, "own@bucket.example")["access_token"]

    for _ in range(5):
        r = node.http.get("/v1/auth/me")
        assert r.status_code == 200, r.text
    limited = node.http.get("/v1/auth/me")
    problem(limited, 429, "rate_limited")
    retry_after(limited)

    # The user's token has its own bucket, untouched by the admin key's.
    with node.anonymous() as c:
        me_ok(c, token, user)
        # A request with no valid credential is refused as such, not as rate limited.
        unauthorized(c.get("/v1/auth/me"), "unauthenticated")
    problem(node.http.get("/v1/auth/me"), 429, "rate_limited")


def test_requests_are_rate_limited_per_address(make_node) -> None:
    node = make_node(ip_rate_per_s=0.01, ip_rate_burst=5)  # no refill during the test
    with node.anonymous() as c:
        # Five requests from one address across three kinds of credential.
        assert node.http.get("/v1/auth/me").status_code == 200
        assert node.http.get("/v1/auth/me").status_code == 200
        unauthorized(c.get("/v1/auth/me"), "unauthenticated")
        unauthorized(c.get("/v1/auth/me", headers=bearer("a.b.c")), "invalid_token")
        assert node.http.get("/v1/auth/me").status_code == 200

        limited = c.get("/v1/auth/me")
        problem(limited, 429, "rate_limited")
        retry_after(limited)
        admin = node.http.get("/v1/auth/me")
        problem(admin, 429, "rate_limited")
        retry_after(admin)
        problem(
            c.post("/v1/auth/login", json={"email": "a@b.io", "password": "x"}), 429, "rate_limited"
        )

        # Probes are never limited.
        for _ in range(10):
            r = c.get("/health")
            assert r.status_code == 200, r.text
