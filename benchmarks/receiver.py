"""A webhook receiver for local use, tests and benchmarks: verifies every signature.

    python -m benchmarks.receiver --port 9000 --secret whsec_...

prints one line per delivery (event id, type, attempt, signature verdict,
lag). For tests, :class:`Receiver` runs in a thread and can fail the first N
attempts of each event, or hang, to exercise retries and back-pressure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web

from paynode.domain.notify.signature import HEADER, SignatureError, verify_signature


@dataclass
class Received:
    event_id: str
    type: str
    attempt: int
    verified: bool
    reason: str  # "" when verified
    body: dict
    at: float  # unix seconds when it arrived
    created: int


@dataclass
class Receiver:
    """Records deliveries; answers 500 to the first ``fail_first`` attempts of each event."""

    secret: str = ""
    fail_first: int = 0
    hang: bool = False  # never answer (a dead endpoint that accepts connections)
    delay_s: float = 0.0  # answer this much later (a slow endpoint)
    received: list[Received] = field(default_factory=list)
    _attempts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.hang:
            await asyncio.sleep(3600)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        verified, reason = True, ""
        try:
            verify_signature(self.secret, request.headers.get(HEADER, ""), raw)
        except SignatureError as e:
            verified, reason = False, e.code
        body = json.loads(raw) if raw else {}
        eid = str(body.get("id", ""))
        with self._lock:
            n = self._attempts.get(eid, 0) + 1
            self._attempts[eid] = n
            self.received.append(
                Received(eid, str(body.get("type", "")), n, verified, reason, body, time.time(),
                         int(body.get("created", 0)))
            )  # fmt: skip
        if not verified:
            return web.Response(status=400, text=reason)
        if n <= self.fail_first:
            return web.Response(status=500, text="failing on purpose")
        return web.Response(status=204)

    def delivered(self) -> list[Received]:
        """Verified deliveries that were answered 2xx, in arrival order."""
        with self._lock:
            return [r for r in self.received if r.verified and r.attempt > self.fail_first]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/{tail:.*}", self.handle)
        return app


@contextlib.contextmanager
def serve(receiver: Receiver, port: int = 0) -> Iterator[str]:
    """Run ``receiver`` on 127.0.0.1 in a thread; yields its URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        runner = web.AppRunner(receiver.app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        box["port"] = runner.addresses[0][1]
        box["runner"] = runner
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(main()), loop.run_forever()),
                              daemon=True)  # fmt: skip
    thread.start()
    assert started.wait(10), "receiver did not start"
    try:
        yield f"http://127.0.0.1:{box['port']}/hooks"
    finally:
        fut = asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop)  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            fut.result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--secret", required=True, help="the endpoint's whsec_... secret")
    ap.add_argument("--fail-first", type=int, default=0, help="answer 500 to N attempts per event")
    args = ap.parse_args()
    receiver = Receiver(args.secret, args.fail_first)

    async def printed(request: web.Request) -> web.Response:
        response = await receiver.handle(request)
        r = receiver.received[-1]
        verdict = "signature ok" if r.verified else f"REFUSED ({r.reason})"
        print(f"{r.event_id} {r.type} attempt {r.attempt}: {verdict}, "
              f"lag {r.at - r.created:.1f}s -> {response.status}", flush=True)  # fmt: skip
        if r.verified:
            print(json.dumps(r.body["data"], indent=2), flush=True)
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", printed)
    print(f"listening on http://127.0.0.1:{args.port}/hooks", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
