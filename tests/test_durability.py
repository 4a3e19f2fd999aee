"""SIGKILL the whole node during a transfer load, restart it, and audit.

Every transfer that got a 2xx must be in the journal, and every balance the
restarted node reports must equal the journal aggregate. The node runs as
the real ``paynode run`` process tree (Ray, shard workers, the embedded
PostgreSQL when DATABASE_URL is unset: all killed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from storage.audit import currency_totals, journal_balances
from storage.database import libpq_url
from tests.conftest import free_port, wait_until

pytestmark = pytest.mark.slow

ACCOUNTS = 16
CLIENTS = 64


def _start(data_dir: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    log = open(data_dir.parent / f"node-{port}-{time.time_ns()}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "node.cli", "run", "--data-dir", str(data_dir),
         "--port", str(port), "--shards", "2"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip


def _wait_ready(url: str, proc: subprocess.Popen) -> None:
    def ready() -> bool:
        assert proc.poll() is None, "node exited during start-up"
        try:
            return httpx.get(url + "/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=120, interval=0.2, what="the node to be ready")


def _kill_tree(proc: subprocess.Popen, pgdata: Path | None) -> int:
    """SIGKILL the node and every descendant, and the embedded postmaster, at once."""
    victims = [psutil.Process(proc.pid)]
    victims += victims[0].children(recursive=True)
    pidfile = pgdata / "postmaster.pid" if pgdata else None
    if pidfile is not None and pidfile.exists():
        postmaster = psutil.Process(int(pidfile.read_text().split()[0]))
        victims += [postmaster, *postmaster.children(recursive=True)]
    for v in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            v.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)
    proc.wait(timeout=30)
    return len(victims)


async def _load(url: str, ids: list[str], acked: list[str], stop: asyncio.Event) -> None:
    rng = random.Random(11)
    counter = iter(range(10**9))

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            dr, cr = rng.sample(ids, 2)
            tid = f"k{next(counter)}"
            body = {"id": tid, "debit_account_id": dr, "credit_account_id": cr,
                    "amount": rng.randint(1, 50), "currency": "USD"}  # fmt: skip
            try:
                r = await http.post("/v1/transfers", json=body)
            except httpx.HTTPError:
                continue  # the node died under us: no acknowledgement
            if r.status_code in (200, 201):
                acked.append(tid)

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))


def test_sigkill_during_load_loses_no_acknowledged_transfer(tmp_path: Path, request) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    data_dir = tmp_path / "data"
    if os.environ.get("DATABASE_URL"):
        database_url = request.getfixturevalue("database_url")
        env["DATABASE_URL"] = database_url
        pgdata = None
    else:
        env.pop("DATABASE_URL", None)
        pgdata = data_dir / "pg"
        database_url = f"postgresql://postgres:@/postgres?host={pgdata}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    proc = _start(data_dir, port, env)
    try:
        _wait_ready(url, proc)
        ids = [f"d{i}" for i in range(ACCOUNTS)]
        with httpx.Client(base_url=url, timeout=30) as http:
            for i, a in enumerate(ids):
                flags = ["debits_must_not_exceed_credits"] if i % 2 else []
                body = {"id": a, "currency": "USD", "flags": flags}
                assert http.post("/v1/accounts", json=body).status_code == 201

        acked: list[str] = []

        async def run() -> None:
            stop = asyncio.Event()
            load = asyncio.create_task(_load(url, ids, acked, stop))
            deadline = time.monotonic() + 20
            while len(acked) < 1500 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            killed = await asyncio.to_thread(_kill_tree, proc, pgdata)
            assert killed >= 3
            stop.set()
            await load

        asyncio.run(run())
        assert len(acked) >= 200, "the load never got going"
    finally:
        if proc.poll() is None:
            _kill_tree(proc, pgdata)

    proc = _start(data_dir, port, env)
    try:
        _wait_ready(url, proc)
        with psycopg.connect(libpq_url(database_url)) as conn:
            journaled = {r[0] for r in conn.execute("SELECT id FROM transfers")}
        lost = set(acked) - journaled
        assert not lost, f"{len(lost)} acknowledged transfers lost, e.g. {sorted(lost)[:5]}"
        journal = journal_balances(database_url)
        with httpx.Client(base_url=url, timeout=30) as http:
            for a in ids:
                b = http.get(f"/v1/accounts/{a}").json()
                mem = (b["debits_posted"], b["credits_posted"], b["debits_pending"],
                       b["credits_pending"])  # fmt: skip
                assert mem == journal[a], a
                if "debits_must_not_exceed_credits" in b["flags"]:
                    assert b["available"] >= 0
            # the restarted node keeps working on the same data
            r = http.post("/v1/transfers", json={"id": "after", "debit_account_id": ids[0],
                          "credit_account_id": ids[1], "amount": 1, "currency": "USD"})  # fmt: skip
            assert r.status_code == 201
        assert currency_totals(database_url) == {"USD": 0}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=60) == 0, "SIGTERM should stop the node cleanly"
        finally:
            if proc.poll() is None:
                _kill_tree(proc, pgdata)
    if pgdata is not None:
        assert not (pgdata / "postmaster.pid").exists(), "embedded PostgreSQL left running"
