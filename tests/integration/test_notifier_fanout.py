"""The notifier's fan-out when a subscriber appears while a fan-out pass is under way.

The notifier actor runs here as a plain object on a real PostgreSQL (no
Ray, no HTTP): its fan-out pass is called by hand, and a subscriber is
registered in the middle of that pass's reads, exactly where an await lets
the API in (and the API's call telling the notifier may come then, or be
lost).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from paynode.actors.notifier import Notifier
from paynode.domain.ledger.model import NO_METADATA, AccountSpec
from paynode.domain.settings import Settings
from paynode.storage import journal, notify, outbox
from paynode.storage.database import connect, libpq_url
from paynode.storage.keyring import load as load_keyring


def _user(conn: psycopg.Connection) -> str:
    uid = f"usr_{uuid.uuid4().hex}"
    conn.execute(
        "INSERT INTO users (id, email_index, email_ct) VALUES (%s, %s, %s)",
        (uid, uuid.uuid4().bytes, b"sealed"),
    )
    return uid


def _device(conn: psycopg.Connection, user: str) -> str:
    did = f"dev_{uuid.uuid4().hex}"
    conn.execute(
        "INSERT INTO devices (id, user_id, platform, token_ct, token_index, events)"
        " VALUES (%s, %s, 'apns', %s, %s, %s)",
        (did, user, b"sealed", uuid.uuid4().bytes, ["*"]),
    )
    return did


async def _account(url: str, account_id: str, owner: str) -> None:
    conn = await connect(url)
    try:
        await journal.commit(conn, [AccountSpec(account_id, "USD", 0, NO_METADATA, 1, owner)], [])
    finally:
        await conn.close()


def _pushed(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return set(conn.execute("SELECT device_id, event_id FROM push_notifications").fetchall())


def _notifier(url: str, tmp_path: Path) -> Notifier:
    load_keyring(tmp_path, create=True)
    s = Settings(data_dir=str(tmp_path), database_url=url)
    return Notifier(s.notify, s.webhook, s.otp, s.data_path(), "", url)


def _meanwhile(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str, act: Callable[[], Awaitable[None]]
) -> None:
    """Run ``act`` once, inside the next call of ``module.name`` (before it reads)."""
    real = getattr(module, name)

    async def wrapped(*args, **kwargs):
        monkeypatch.setattr(module, name, real)
        await act()
        return await real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_a_device_registered_during_a_pass_that_skips_ahead_misses_nothing(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = _notifier(database_url, tmp_path)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        user = _user(conn)
    device: list[str] = []

    async def register_then_commit() -> None:
        # The API registers a device (its call to tell the notifier is lost: the pass must
        # find it by itself); then the user's account commits.
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            device.append(_device(conn, user))
        await _account(database_url, "fan-a", user)

    async def main() -> None:
        await n.reload()
        assert await n._fanout_once() == 0  # nobody listens: skips to the horizon
        # The next pass starts with nobody listening too; the device appears while it
        # reads the horizon, and the account commits before that read.
        _meanwhile(monkeypatch, notify, "visible_horizon", register_then_commit)
        await n._fanout_once()
        for _ in range(3):
            await n._fanout_once()
        await n.stop()

    asyncio.run(main())
    assert (device[0], "evt_a_fan-a") in _pushed(database_url)


def test_a_device_registered_during_a_pass_that_reads_misses_nothing(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = _notifier(database_url, tmp_path)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        first, second = _user(conn), _user(conn)
        listening = _device(conn, first)
    device: list[str] = []

    async def register_then_commit() -> None:
        # The API registers a device and tells the notifier; then the user's account commits.
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            device.append(_device(conn, second))
        await n.reload()
        await _account(database_url, "fan-b", second)

    async def main() -> None:
        await n.reload()
        await _account(database_url, "fan-first", first)
        await n._fanout_once()
        assert (listening, "evt_a_fan-first") in _pushed(database_url)
        # A pass for the first device only; the second registers while it reads.
        _meanwhile(monkeypatch, outbox, "read_events", register_then_commit)
        await n._fanout_once()
        for _ in range(3):
            await n._fanout_once()
        await n.stop()

    asyncio.run(main())
    assert (device[0], "evt_a_fan-b") in _pushed(database_url)
