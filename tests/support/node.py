"""A node for tests: started in this process (shards, helpers, the HTTP front on a bound
socket), its handles, and the polling helper tests wait with."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from paynode.domain.settings import Settings, build
from paynode.storage.keyring import Keyring


def wait_until(check, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``check`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


@dataclass
class RunningNode:
    url: str
    database_url: str
    settings: Settings
    shards: list
    http: httpx.Client  # authenticated with the admin key
    keys: Keyring
    helpers: list  # the service hosts' actor handles (node.runtime.start_helpers)

    def service(self, name: str) -> Any:
        from paynode.actors.host import find_service

        return find_service(name, self.settings.namespace)

    @property
    def analytics(self) -> Any:
        from paynode.actors.names import ANALYTICS_NAME

        return self.service(ANALYTICS_NAME)

    @property
    def reconciler(self) -> Any:
        from paynode.actors.names import RECONCILER_NAME

        return self.service(RECONCILER_NAME)

    @property
    def notifier(self) -> Any:
        from paynode.actors.names import NOTIFIER_NAME

        return self.service(NOTIFIER_NAME)

    def anonymous(self) -> httpx.Client:
        """A client with no credentials (close it, or use it in a with block)."""
        return httpx.Client(base_url=self.url, timeout=30)

    def balances(self) -> dict[str, tuple[int, int, int, int]]:
        """Every account's in-memory balances, from the shards, at a durable point."""
        import ray

        from paynode.domain.ledger.wire import decode_balances

        out = {}
        for raw in ray.get([s.balances.remote() for s in self.shards]):
            for b in decode_balances(raw) or []:
                assert b is not None
                out[b.id] = (b.debits_posted, b.credits_posted, b.debits_pending, b.credits_pending)
        return out


ADMIN_KEY = "test-admin-key-not-a-secret-0123456789"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}


class NodeStarter:
    """Starts nodes (shards, helpers and the HTTP front) on one database, and stops them all."""

    def __init__(self, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.database_url = database_url
        self.tmp_path_factory = tmp_path_factory
        self.running: list[tuple[Any, threading.Thread, list]] = []

    def __call__(self, shards: int = 2, **overrides: object) -> RunningNode:
        import uvicorn

        from paynode.api.app import create_app
        from paynode.node.runtime import start_helpers, start_shards, with_bank_secret
        from paynode.storage.keyring import load

        # Bound now and handed to uvicorn: a port picked, released and bound later can be
        # taken in between (by Ray's own ports, say).
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        values: dict = {
            "shards": shards,
            "database_url": self.database_url,
            "namespace": f"t{uuid.uuid4().hex[:10]}",
            "port": sock.getsockname()[1],
            "api_key": ADMIN_KEY,
            "data_dir": str(self.tmp_path_factory.mktemp("node")),
        }
        settings = with_bank_secret(build(**(values | overrides)))
        names, handles = start_shards(settings, self.database_url)
        helpers = start_helpers(settings, self.database_url, names)
        keys = load(settings.data_path(), settings.keyring)
        app = create_app(settings, names, keys)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        self.running.append((server, thread, helpers + handles))
        wait_until(lambda: server.started, what="uvicorn to start")
        url = f"http://127.0.0.1:{settings.port}"
        http = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {settings.api_key}"}
        )
        return RunningNode(url, self.database_url, settings, handles, http, keys, helpers)

    def stop_all(self) -> None:
        import ray

        for server, thread, handles in self.running:
            server.should_exit = True
            thread.join(timeout=15)
            for h in handles:
                with contextlib.suppress(Exception):
                    ray.get(h.stop.remote(), timeout=5)
                ray.kill(h)
        self.running.clear()


def process_env(request: pytest.FixtureRequest, **settings: str) -> dict[str, str]:
    """The environment of a ``paynode run`` process tree (benchmarks.NodeProcess) for a
    test: the admin key and ``settings``; the external PostgreSQL's test database when
    ``DATABASE_URL`` is set, else none (the node starts its embedded one)."""
    env = dict(os.environ, PAYNODE_API_KEY=ADMIN_KEY, **settings)
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = request.getfixturevalue("database_url")
    else:
        env.pop("DATABASE_URL", None)
    return env
