"""Users and wallets for the rails' tests: a KYC-verified user (these tests are about
the rails, not the risk gate) and a no-overdraft wallet, funded from a treasury."""

from __future__ import annotations

from tests.support.asserts import kyc_verified, signup
from tests.support.node import RunningNode


def verified_user(node: RunningNode, name: str) -> dict[str, str]:
    """Register ``name``, take them through KYC; their Authorization header."""
    with node.anonymous() as anon:
        user_id, headers = signup(anon, name)
    kyc_verified(node.http, user_id, headers)
    return headers


def wallet(
    node: RunningNode, user: dict, account_id: str, funded: int = 0,
    treasury: str = "treasury-tests",
) -> None:  # fmt: skip
    """A wallet of ``user`` that cannot go below zero, with ``funded`` minor units."""
    body = {"id": account_id, "currency": "USD", "flags": ["debits_must_not_exceed_credits"]}
    r = node.http.post("/v1/accounts", json=body, headers=user)
    assert r.status_code == 201, r.text
    if funded:
        node.http.post("/v1/accounts", json={"id": treasury, "currency": "USD"})
        fund = {"id": f"fund-{account_id}", "debit_account_id": treasury,
                "credit_account_id": account_id, "amount": funded, "currency": "USD"}  # fmt: skip
        assert node.http.post("/v1/transfers", json=fund).status_code == 201
