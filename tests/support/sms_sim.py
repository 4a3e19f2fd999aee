"""A Twilio-shaped SMS provider for tests: accepts messages, stores them, calls back.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic auth
(SID, auth token) and form fields ``To``, ``From``, ``Body``, ``StatusCallback``.
Test numbers answer like Twilio's: ``INVALID_TO`` 400 with error 21211,
``THROTTLED`` 429, ``BROKEN`` 500; any other number is accepted (201 with a
``sid``) and kept in :attr:`Simulator.messages`, then the simulator POSTs
signed status callbacks (``sent``, then ``delivered``) to ``StatusCallback``.
Serves on a socket the caller bound.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import uuid
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from paynode.domain.notify.twilio import HEADER, signature

INVALID_TO = "+15005550001"
THROTTLED = "+15005550429"
BROKEN = "+15005550500"
MAX_MESSAGES = 10_000


@dataclass
class Sms:
    sid: str
    to: str
    sender: str
    body: str
    callback: str
    callbacks: list[tuple[str, int]] = field(default_factory=list)  # (status, HTTP answer)


class Simulator:
    def __init__(self, sock: socket.socket, account_sid: str, auth_token: str) -> None:
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: list[Sms] = []
        self.refused: list[tuple[str, int]] = []  # (To, status) of refused requests
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sms-sim")
        self._tasks: set[asyncio.Task[None]] = set()

    def to(self, number: str) -> list[Sms]:
        with self._lock:
            return [m for m in self.messages if m.to == number]

    # -- the API -------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        basic = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if (
            request.match_info["sid"] != self.account_sid
            or request.headers.get("Authorization") != f"Basic {basic}"
        ):
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401},
                                     status=401)  # fmt: skip
        form = await request.post()
        to, body = str(form.get("To", "")), str(form.get("Body", ""))
        answers = {INVALID_TO: (400, 21211, "The 'To' number is not a valid phone number."),
                   THROTTLED: (429, 20429, "Too Many Requests"),
                   BROKEN: (500, 20500, "Internal Server Error")}  # fmt: skip
        if to in answers or not body:
            status, code, message = answers.get(to, (400, 21602, "Message body is required."))
            with self._lock:
                self.refused.append((to, status))
            return web.json_response({"code": code, "message": message, "status": status},
                                     status=status)  # fmt: skip
        sms = Sms("SM" + uuid.uuid4().hex, to, str(form.get("From", "")), body,
                  str(form.get("StatusCallback", "")))  # fmt: skip
        with self._lock:
            if len(self.messages) < MAX_MESSAGES:
                self.messages.append(sms)
        if sms.callback:
            task = asyncio.create_task(self._report(sms))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(
            {"sid": sms.sid, "status": "queued", "to": to, "from": sms.sender, "body": body},
            status=201,
        )

    async def _report(self, sms: Sms) -> None:
        async with aiohttp.ClientSession() as http:
            for status in ("sent", "delivered"):
                params = {
                    "MessageSid": sms.sid,
                    "MessageStatus": status,
                    "AccountSid": self.account_sid,
                    "To": sms.to,
                    "From": sms.sender,
                }
                sig = signature(self.auth_token, sms.callback, params.items())
                try:
                    async with http.post(
                        sms.callback,
                        data=params,
                        headers={HEADER: sig},
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as resp:
                        sms.callbacks.append((status, resp.status))
                except (aiohttp.ClientError, TimeoutError):
                    sms.callbacks.append((status, 0))

    # -- life cycle ----------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        self._runner = web.AppRunner(app, access_log=None)

        async def serve() -> None:
            await self._runner.setup()
            await web.SockSite(self._runner, self.sock).start()
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def start(self) -> Simulator:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("SMS simulator did not start")
        return self

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(close(), self._loop)
        self._thread.join(5)
