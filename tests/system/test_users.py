"""User profiles and KYC through HTTP: the owner's view, changes, and the review trail."""

from __future__ import annotations

import httpx
import psycopg

from paynode.storage.database import libpq_url
from tests.support.asserts import problem

# One node for the module's tests (tests/conftest.py shared_node): each uses its own ids.
# Many sign-ups from one address: the auth rate limit is tested elsewhere, on nodes of
# their own.
SHARED_NODE_SETTINGS: dict = {"auth_rate_burst": 1_000}


def _login(node, email: str, password: str = "correct horse battery") -> tuple[str, httpx.Client]:
    with node.anonymous() as anon:
        r = anon.post(
            "/v1/auth/register", json={"email": email, "password": password, "name": "Ann"}
        )
        assert r.status_code == 201, r.text
        user_id = r.json()["user_id"]
        r = anon.post("/v1/auth/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    return user_id, httpx.Client(
        base_url=node.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def test_profile_read_and_change_by_its_owner(node) -> None:
    user_id, me = _login(node, "owner@example.org")
    with me:
        got = me.get(f"/v1/users/{user_id}").json()
        assert (got["email"], got["name"], got["kyc_status"]) == (
            "owner@example.org",
            "Ann",
            "unverified",
        )
        assert me.get("/v1/auth/me").json() == {
            "kind": "user", "id": user_id, "user_id": user_id, "scopes": sorted(got and [
                "accounts:read", "accounts:write", "transfers:read", "transfers:write",
                "users:read", "users:write", "api_keys:write", "events:read",
                "webhooks:read", "webhooks:write", "devices:read", "devices:write",
                "handles:read", "handles:write", "payments:read", "payments:write",
                "bank_accounts:read", "bank_accounts:write", "billing:read", "billing:write"])
        }  # fmt: skip

        r = me.patch(
            f"/v1/users/{user_id}",
            json={
                "name": None,
                "phone": "+447700900123",
                "birth_date": "1990-01-31",
                "address": {"line1": "1 High St", "city": "Leeds", "postal_code": "LS1 1AA",
                            "country": "GB"},
                "email": "Owner.New@example.org",
            },
        )  # fmt: skip
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["name"] is None and got["phone"] == "+447700900123"
        assert got["address"]["city"] == "Leeds" and got["birth_date"] == "1990-01-31"
        assert got["updated_at"] >= got["created_at"]

        # The login email moved with the profile (the blind index was updated).
        with node.anonymous() as anon:
            creds = {"password": "correct horse battery"}
            old = anon.post("/v1/auth/login", json={"email": "owner@example.org", **creds})
            problem(old, 401, "invalid_credentials")
            new = anon.post("/v1/auth/login", json={"email": "owner.new@example.org", **creds})
            assert new.status_code == 200

        # Bad values are refused without echoing them, and change nothing.
        r = me.patch(f"/v1/users/{user_id}", json={"phone": "0044 7700 900123"})
        assert problem(r, 422, "invalid_field")["field"] == "$.phone"
        assert "7700" not in r.text
        r = me.patch(f"/v1/users/{user_id}", json={"email": None})
        problem(r, 422, "invalid_field")
        r = me.patch(f"/v1/users/{user_id}", json={"birth_date": "1990-02-30"})
        problem(r, 422, "invalid_field")
        r = me.patch(f"/v1/users/{user_id}", json={"ssn": "219099999"})
        problem(r, 422, "unknown_field")
        assert "219099999" not in r.text
        assert me.get(f"/v1/users/{user_id}").json()["phone"] == "+447700900123"

    # An email that another user holds is refused, case-insensitively.
    other_id, other = _login(node, "second@example.org")
    with other:
        r = other.patch(f"/v1/users/{other_id}", json={"email": "OWNER.NEW@example.org"})
        problem(r, 409, "email_taken")


def test_kyc_submission_review_and_audit_trail(node) -> None:
    user_id, me = _login(node, "kyc@example.org")
    r = me.post(f"/v1/users/{user_id}/kyc", json={"id_type": "ssn", "id_number": "12345"})
    problem(r, 422, "invalid_field")
    assert "12345" not in r.text

    r = me.post(f"/v1/users/{user_id}/kyc", json={"id_type": "ssn", "id_number": "078-05-1120"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["id_last4"] == "1120"
    # The number's first five digits, in either spelling (not "078" alone: a random user
    # id or a timestamp can hold those three digits).
    assert "078-05" not in r.text and "07805" not in r.text

    again = me.post(f"/v1/users/{user_id}/kyc", json={"id_type": "ssn", "id_number": "078051120"})
    problem(again, 409, "kyc_in_review")
    # A user cannot review their own submission.
    r = me.post(f"/v1/users/{user_id}/kyc/review", json={"decision": "verified"})
    problem(r, 403, "insufficient_scope")

    reject = {"decision": "rejected", "reason": "document unreadable"}
    r = node.http.post(f"/v1/users/{user_id}/kyc/review", json=reject)
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = node.http.post(f"/v1/users/{user_id}/kyc/review", json={"decision": "verified"})
    problem(r, 409, "kyc_not_pending")

    r = me.post(f"/v1/users/{user_id}/kyc", json={"id_type": "passport", "id_number": "X1234567"})
    assert r.status_code == 200 and r.json()["id_last4"] == "4567"
    r = node.http.post(f"/v1/users/{user_id}/kyc/review", json={"decision": "verified"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "verified" and body["id_type"] == "passport"
    trail = [(e["from_status"], e["to_status"], e["actor"]) for e in body["history"]]
    assert trail == [
        ("unverified", "pending", user_id),
        ("pending", "rejected", "bootstrap"),
        ("rejected", "pending", user_id),
        ("pending", "verified", "bootstrap"),
    ]
    assert body["history"][1]["reason"] == "document unreadable"
    assert node.http.get(f"/v1/users/{user_id}").json()["kyc_status"] == "verified"

    r = me.post(f"/v1/users/{user_id}/kyc", json={"id_type": "ssn", "id_number": "078051120"})
    problem(r, 409, "kyc_already_verified")

    # The trail is in PostgreSQL, one row per transition, with no identity numbers.
    # Separation of duties: a reviewer key owned by the user cannot clear that user.
    r = node.http.post(
        "/v1/api-keys",
        json={"name": "reviewer", "scopes": ["kyc:review", "users:read"], "owner_user_id": user_id},
    )
    assert r.status_code == 201, r.text
    own_reviewer = {"Authorization": f"Bearer {r.json()['key']}"}
    r = node.http.post(
        f"/v1/users/{user_id}/kyc/review", json={"decision": "rejected"}, headers=own_reviewer
    )
    problem(r, 403, "forbidden")

    with psycopg.connect(libpq_url(node.database_url)) as conn:
        rows = conn.execute(
            "SELECT from_status, to_status, actor, coalesce(reason, '') FROM kyc_events"
            " WHERE user_id = %s ORDER BY id",
            (user_id,),
        ).fetchall()
    assert [r[:3] for r in rows] == trail
    assert not any("1120" in str(r) or "4567" in str(r) for r in rows)


def test_admin_creates_users_without_passwords_and_unknown_users_are_404(node) -> None:
    r = node.http.post("/v1/users", json={"email": "platform.customer@example.org"})
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    with node.anonymous() as anon:
        r = anon.post("/v1/auth/login", json={"email": "platform.customer@example.org",
                                              "password": "anything-at-all"})  # fmt: skip
        problem(r, 401, "invalid_credentials")
    problem(node.http.get("/v1/users/usr_" + "0" * 32), 404, "user_not_found")
    problem(node.http.get("/v1/users/not-a-user-id"), 404, "user_not_found")
    r = node.http.post("/v1/users", json={"email": "PLATFORM.customer@example.org"})
    problem(r, 409, "email_taken")
    assert node.http.get(f"/v1/users/{user_id}").json()["kyc_status"] == "unverified"
