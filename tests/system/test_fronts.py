"""Several front processes on one node (``paynode run --workers``) share the shards and
agree on credentials: a key revoked through one front is refused by every front at once,
whatever their caches hold."""

from __future__ import annotations

import os

import httpx
import pytest

from paynode.benchmarks.node_process import NodeProcess
from tests.support.node import ADMIN_HEADERS, ADMIN_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONNECTIONS = 24  # fresh connections: the kernel spreads them over the fronts


def _fresh(url: str, headers: dict[str, str]) -> list[int]:
    codes = []
    for _ in range(CONNECTIONS):
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            codes.append(c.get("/v1/accounts/fr-a").status_code)
    return codes


def test_two_fronts_share_shards_and_drop_a_revoked_key_at_once(tmp_path) -> None:
    # A cache this long would keep a revoked key usable for minutes on a front that
    # did not revoke it, if fronts did not hear of revocations.
    env = {**os.environ, "PAYNODE_API_KEY": ADMIN_KEY, "PAYNODE_WORKERS": "2",
           "PAYNODE_AUTH_CACHE_S": "300"}  # fmt: skip
    node = NodeProcess(tmp_path / "data", shards=2, env=env)
    node.start()
    try:
        fronts = [p for p in node.processes() if "multiprocessing.spawn" in " ".join(p.cmdline())]
        assert len(fronts) == 2, "two front processes"
        with httpx.Client(base_url=node.url, headers=ADMIN_HEADERS, timeout=30) as admin:
            for account_id in ("fr-a", "fr-b"):
                r = admin.post("/v1/accounts", json={"id": account_id, "currency": "USD"})
                assert r.status_code == 201, r.text
            for i in range(20):  # every front decides some: they share the shards
                r = admin.post("/v1/transfers", json={
                    "id": f"fr-t{i}", "debit_account_id": "fr-a", "credit_account_id": "fr-b",
                    "amount": 1, "currency": "USD"})  # fmt: skip
                assert r.status_code == 201, r.text
            assert admin.get("/v1/accounts/fr-b").json()["credits_posted"] == 20
            key = admin.post("/v1/api-keys", json={"name": "k", "scopes": ["admin"]}).json()
        bearer = {"Authorization": f"Bearer {key['key']}"}
        assert _fresh(node.url, bearer) == [200] * CONNECTIONS  # cached on both fronts now
        with httpx.Client(base_url=node.url, headers=ADMIN_HEADERS, timeout=30) as admin:
            assert admin.delete(f"/v1/api-keys/{key['id']}").status_code == 204
        assert _fresh(node.url, bearer) == [401] * CONNECTIONS
    finally:
        assert node.stop() == 0
