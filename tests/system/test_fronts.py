"""Several front processes on one node (``paynode run --workers``) share the shards and
agree on credentials: a key revoked through one front is refused by every front at once,
whatever their caches hold. The node serves HTTPS (``--tls-cert``/``--tls-key``) and
logs JSON lines."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from paynode.benchmarks.node_process import NodeProcess
from tests.support.node import ADMIN_HEADERS, ADMIN_KEY
from tests.support.tls import self_signed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CONNECTIONS = 24  # fresh connections: the kernel spreads them over the fronts


def _fresh(url: str, headers: dict[str, str], verify: str | bool) -> list[int]:
    codes = []
    for _ in range(CONNECTIONS):
        with httpx.Client(base_url=url, headers=headers, timeout=30, verify=verify) as c:
            codes.append(c.get("/v1/accounts/fr-a").status_code)
    return codes


def test_two_fronts_share_shards_and_drop_a_revoked_key_at_once(tmp_path) -> None:
    # A cache this long would keep a revoked key usable for minutes on a front that
    # did not revoke it, if fronts did not hear of revocations.
    env = {**os.environ, "PAYNODE_API_KEY": ADMIN_KEY, "PAYNODE_WORKERS": "2",
           "PAYNODE_AUTH_CACHE_S": "300", "PAYNODE_LOG_FORMAT": "json"}  # fmt: skip
    node = NodeProcess(tmp_path / "data", shards=2, env=env, tls=self_signed(tmp_path))
    assert node.url.startswith("https://")
    node.start()
    try:
        fronts = [p for p in node.processes() if "multiprocessing.spawn" in " ".join(p.cmdline())]
        assert len(fronts) == 2, "two front processes"
        with httpx.Client(base_url=node.url, headers=ADMIN_HEADERS, timeout=30,
                          verify=node.verify) as admin:  # fmt: skip
            # Over TLS: HSTS with the other security headers.
            r = admin.get("/v1/accounts/none")
            assert r.headers["strict-transport-security"].startswith("max-age=")
            assert r.headers["x-content-type-options"] == "nosniff"
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
        # cached on both fronts now
        assert _fresh(node.url, bearer, node.verify) == [200] * CONNECTIONS
        with httpx.Client(base_url=node.url, headers=ADMIN_HEADERS, timeout=30,
                          verify=node.verify) as admin:  # fmt: skip
            assert admin.delete(f"/v1/api-keys/{key['id']}").status_code == 204
        assert _fresh(node.url, bearer, node.verify) == [401] * CONNECTIONS
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(node.url.replace("https://", "http://") + "/health", timeout=5)
    finally:
        assert node.stop() == 0
    # --log-format json (PAYNODE_LOG_FORMAT): every line the node wrote is one JSON object.
    lines = [x for f in (tmp_path / "data").glob("node-*.log")
             for x in f.read_text().splitlines() if x.startswith("{")]  # fmt: skip
    assert lines, "the node logged JSON lines"
    for line in lines:
        record = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(record)
