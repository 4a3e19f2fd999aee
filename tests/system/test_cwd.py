"""`paynode run` works from any working directory, also one holding files named like ours.

Ray workers put the driver's working directory first on their import path; with
the package's folders installed under one name (`paynode.*`), a user's node.py or
api.py there can no longer stand in for ours.
"""

from __future__ import annotations

import os

import httpx
import pytest

from paynode.benchmarks.cpu import role
from paynode.benchmarks.node_process import NodeProcess
from tests.support.node import ADMIN_HEADERS, ADMIN_KEY

pytestmark = pytest.mark.slow

SHADOWS = ("node", "api", "storage", "actors", "domain", "benchmarks")


def test_node_runs_in_a_folder_holding_node_py_api_py_and_storage_py(tmp_path):
    cwd = tmp_path / "project"
    cwd.mkdir()
    for name in SHADOWS:
        (cwd / f"{name}.py").write_text(f'raise SystemExit("the user\'s {name}.py was imported")\n')
    env = {**os.environ, "PAYNODE_API_KEY": ADMIN_KEY}
    node = NodeProcess(tmp_path / "data", shards=2, env=env, cwd=cwd)
    node.start()
    try:
        # Lean by default: a local Ray without its dashboard and autoscaler monitor.
        roles = {role(p) for p in node.processes()}
        assert "ray:raylet" in roles and not roles & {"ray:dashboard", "ray:monitor"}, roles
        with httpx.Client(base_url=node.url, headers=ADMIN_HEADERS, timeout=30) as http:
            for account_id in ("cwd-a", "cwd-b"):
                r = http.post("/v1/accounts", json={"id": account_id, "currency": "USD"})
                assert r.status_code == 201, r.text
            r = http.post("/v1/transfers", json={
                "id": "cwd-t1", "debit_account_id": "cwd-a", "credit_account_id": "cwd-b",
                "amount": 5, "currency": "USD"})  # fmt: skip
            assert r.status_code == 201, r.text
            assert http.get("/v1/accounts/cwd-b").json()["credits_posted"] == 5
    finally:
        assert node.stop() == 0
