"""APNs and FCM simulators that speak the real protocols, for the push tests.

* :class:`ApnsSim`: HTTP/2 in the clear with prior knowledge (the ``h2`` library on an
  asyncio server), ``POST /3/device/<token>``. It verifies the provider token (ES256
  against the test key's public half, ``kid``, ``iss``, age under an hour), the
  ``apns-*`` headers and the JSON payload, and answers as Apple does.
* :class:`FcmSim`: HTTP/1.1 (uvicorn), an OAuth token endpoint that verifies the
  service account's RS256 assertion and ``messages:send`` that verifies the bearer.

Both answer by the device token: ``dead...`` is unregistered (APNs 410, FCM 404
UNREGISTERED), ``bad...`` malformed (APNs 400 BadDeviceToken, FCM 400
INVALID_ARGUMENT), ``flaky...`` fails its first ``flaky_failures`` requests (APNs 503,
FCM 429 with Retry-After). Sockets are bound in the constructor and handed to the
server (never released and bound again). Keys are generated here, at test time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

MAX_BODY = 8192  # both services refuse bigger payloads (APNs: 4 KiB, FCM: 4 KiB of data)


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@dataclass
class Received:
    """One request a simulator took, whatever it answered."""

    token: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int
    reason: str
    at: float = field(default_factory=time.monotonic)
    jwt_claims: dict[str, Any] = field(default_factory=dict)


class _Loop:
    """An event loop in a daemon thread, for servers the (synchronous) tests start."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class _Tokens:
    """Answers by token prefix, and the flaky tokens' failures left."""

    def __init__(self, flaky_failures: int) -> None:
        self.flaky_failures = flaky_failures
        self._failed: dict[str, int] = {}
        self.lock = threading.Lock()

    def flaky_now(self, token: str) -> bool:
        if not token.startswith("flaky"):
            return False
        with self.lock:
            n = self._failed.get(token, 0)
            if n >= self.flaky_failures:
                return False
            self._failed[token] = n + 1
            return True


# -- APNs ---------------------------------------------------------------------------------


class ApnsSim:
    """Apple's push service as far as a provider can tell, over h2c."""

    def __init__(self, key_dir: Path, topic: str = "dev.paynode.test", flaky_failures: int = 2):
        self.team_id = "TEAM" + secrets.token_hex(3).upper()
        self.key_id = "KEY" + secrets.token_hex(4).upper()
        self.topic = topic
        key = ec.generate_private_key(ec.SECP256R1())
        self._public = key.public_key()
        self.key_file = key_dir / f"AuthKey_{self.key_id}.p8"
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.key_file.chmod(0o600)
        self._tokens = _Tokens(flaky_failures)
        self.received: list[Received] = []
        self.errors: list[str] = []  # requests that broke the protocol (a test fails on any)
        self._expired: set[str] = set()  # provider tokens answered ExpiredProviderToken
        self._lock = threading.Lock()
        self._sock = _bound_socket()
        self.port = self._sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._loop = _Loop()
        self._conns: set[asyncio.Task[None]] = set()
        self._server = self._loop.run(asyncio.start_server(self._serve, sock=self._sock))

    def settings(self) -> dict[str, object]:
        return {
            "apns_endpoint": self.endpoint,
            "apns_team_id": self.team_id,
            "apns_key_id": self.key_id,
            "apns_key_file": str(self.key_file),
            "apns_topic": self.topic,
            "apns_timeout_ms": 5000,
        }

    def requests_for(self, token: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.token == token]

    def expire_provider_tokens(self) -> None:
        """Every provider token seen so far is answered ExpiredProviderToken from now on."""
        with self._lock:
            self._expired |= {r.headers.get("authorization", "") for r in self.received}

    def close(self) -> None:
        self._loop.run(self._shutdown())
        self._loop.stop()

    async def _shutdown(self) -> None:
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    # -- the protocol --

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        headers = {_s(k): _s(v) for k, v in ev.headers or []}
                        streams[ev.stream_id] = (headers, bytearray())
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id][1].extend(ev.data or b"")
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        headers, body = streams.pop(ev.stream_id)
                        status, answer, extra = self._answer(headers, bytes(body))
                        conn.send_headers(
                            ev.stream_id,
                            [(":status", str(status)), ("content-type", "application/json"),
                             *extra.items()],
                        )  # fmt: skip
                        conn.send_data(ev.stream_id, answer, end_stream=True)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError) as e:
            self.errors.append(f"connection: {type(e).__name__}")
        finally:
            writer.close()

    def _answer(self, headers: dict[str, str], raw: bytes) -> tuple[int, bytes, dict[str, str]]:
        path = headers.get(":path", "")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            return self._refuse(headers, "", 405, "MethodNotAllowed", {})
        token = unquote(path.removeprefix("/3/device/"))
        apns_id = headers.get("apns-id") or "00000000-0000-0000-0000-000000000000"
        try:
            claims = self._check(headers, raw)
        except _Refused as r:
            self.errors.append(r.reason)
            return self._refuse(headers, token, r.status, r.reason, {})
        body = json.loads(raw)
        auth = headers["authorization"]
        if auth in self._expired:
            return self._refuse(headers, token, 403, "ExpiredProviderToken", body, claims)
        if token.startswith("dead"):
            return self._refuse(headers, token, 410, "Unregistered", body, claims)
        if token.startswith("bad"):
            return self._refuse(headers, token, 400, "BadDeviceToken", body, claims)
        if self._tokens.flaky_now(token):
            return self._refuse(headers, token, 503, "ServiceUnavailable", body, claims)
        self._record(Received(token, headers, body, 200, "", jwt_claims=claims))
        return 200, b"", {"apns-id": apns_id}

    def _check(self, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
        """The provider token and the request, as Apple checks them; their claims."""
        auth = headers.get("authorization", "")
        if not auth.startswith("bearer "):
            raise _Refused(403, "MissingProviderToken")
        token = auth.removeprefix("bearer ")
        try:
            head = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token, self._public, algorithms=["ES256"], options={"require": ["iss", "iat"]}
            )
        except jwt.PyJWTError:
            raise _Refused(403, "InvalidProviderToken") from None
        if head.get("kid") != self.key_id or claims["iss"] != self.team_id:
            raise _Refused(403, "InvalidProviderToken")
        if time.time() - claims["iat"] > 3600:
            raise _Refused(403, "ExpiredProviderToken")
        if headers.get("apns-topic") != self.topic:
            raise _Refused(400, "DeviceTokenNotForTopic" if headers.get("apns-topic") else
                           "MissingTopic")  # fmt: skip
        if headers.get("apns-push-type") != "alert":
            raise _Refused(400, "InvalidPushType")
        if headers.get("apns-priority") not in ("5", "10"):
            raise _Refused(400, "BadPriority")
        if not headers.get("apns-expiration", "").isdigit():
            raise _Refused(400, "BadExpirationDate")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            raise _Refused(400, "BadCollapseId")
        if len(raw) > 4096:
            raise _Refused(413, "PayloadTooLarge")
        try:
            body = json.loads(raw)
            alert = body["aps"]["alert"]
            assert isinstance(alert["title"], str) and isinstance(alert["body"], str)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise _Refused(400, "PayloadEmpty") from None
        return claims

    def _refuse(
        self,
        headers: dict[str, str],
        token: str,
        status: int,
        reason: str,
        body: dict[str, Any],
        claims: dict[str, Any] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        self._record(Received(token, headers, body, status, reason, jwt_claims=claims or {}))
        answer = {"reason": reason}
        if status == 410:
            answer["timestamp"] = int(time.time() * 1000)  # type: ignore[assignment]
        return status, json.dumps(answer).encode(), {}

    def _record(self, r: Received) -> None:
        with self._lock:
            self.received.append(r)


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _s(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


# -- FCM ----------------------------------------------------------------------------------


class FcmSim:
    """Google's OAuth token endpoint and FCM HTTP v1 ``messages:send``, over HTTP/1.1."""

    def __init__(self, key_dir: Path, flaky_failures: int = 1, retry_after_s: int = 1):
        self.project = "paynode-test-" + secrets.token_hex(3)
        self.client_email = f"push@{self.project}.iam.gserviceaccount.com"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public = key.public_key()
        self.key_id = secrets.token_hex(20)
        self._tokens = _Tokens(flaky_failures)
        self.retry_after_s = retry_after_s
        self.received: list[Received] = []
        self.exchanges: list[dict[str, Any]] = []  # verified assertions' claims
        self.errors: list[str] = []
        self._access: set[str] = set()
        self._lock = threading.Lock()
        self._sock = _bound_socket()
        self.port = self._sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.token_uri = f"{self.endpoint}/token"
        self.service_account_file = key_dir / "service-account.json"
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.service_account_file.write_text(
            json.dumps({
                "type": "service_account", "project_id": self.project,
                "private_key_id": self.key_id, "private_key": pem,
                "client_email": self.client_email, "client_id": "1",
                "token_uri": self.token_uri,
            })
        )  # fmt: skip
        self.service_account_file.chmod(0o600)
        self._loop = _Loop()
        config = uvicorn.Config(
            self._app, interface="asgi3", lifespan="off", log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._serving = asyncio.run_coroutine_threadsafe(
            self._server.serve(sockets=[self._sock]), self._loop.loop
        )
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the FCM simulator did not start"
            time.sleep(0.01)

    def settings(self) -> dict[str, object]:
        return {
            "fcm_endpoint": self.endpoint,
            "fcm_service_account_file": str(self.service_account_file),
            "fcm_timeout_ms": 5000,
        }

    def requests_for(self, token: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.token == token]

    def revoke_access_tokens(self) -> None:
        """Every access token issued so far is refused (401) from now on."""
        with self._lock:
            self._access.clear()

    def close(self) -> None:
        self._server.should_exit = True
        try:
            self._serving.result(5)
        finally:
            self._loop.stop()

    # -- the protocol --

    async def _app(self, scope: dict, receive: Callable, send: Callable) -> None:
        assert scope["type"] == "http"
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if len(raw) > MAX_BODY or not msg.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status, answer, extra = self._answer(scope["method"], scope["path"], headers, raw)
        await send({
            "type": "http.response.start", "status": status,
            "headers": [(b"content-type", b"application/json"),
                        *((k.encode(), v.encode()) for k, v in extra.items())],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    def _answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if method == "POST" and path == "/token":
            return self._token(raw)
        if method == "POST" and path == f"/v1/projects/{self.project}/messages:send":
            return self._send(headers, raw)
        self.errors.append(f"unexpected {method} {path}")
        return 404, _google_error(404, "NOT_FOUND", "no such method"), {}

    def _token(self, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self.errors.append("token: grant_type")
            return 400, {"error": "unsupported_grant_type"}, {}
        try:
            head = jwt.get_unverified_header(form.get("assertion", ""))
            claims = jwt.decode(
                form["assertion"], self._public, algorithms=["RS256"],
                audience=self.token_uri, issuer=self.client_email,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )  # fmt: skip
        except (jwt.PyJWTError, KeyError) as e:
            self.errors.append(f"token: {type(e).__name__}")
            return 400, {"error": "invalid_grant"}, {}
        if claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging":
            self.errors.append("token: scope")
            return 400, {"error": "invalid_scope"}, {}
        if head.get("kid") != self.key_id or claims["exp"] - claims["iat"] > 3600:
            self.errors.append("token: kid or lifetime")
            return 400, {"error": "invalid_grant"}, {}
        access = "ya29.sim-" + secrets.token_urlsafe(24)
        with self._lock:
            self._access.add(access)
            self.exchanges.append(claims)
        return 200, {"access_token": access, "expires_in": 3599, "token_type": "Bearer"}, {}

    def _send(
        self, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        with self._lock:
            known = bearer in self._access
        if not known:
            self._record(Received("", headers, {}, 401, "UNAUTHENTICATED"))
            return 401, _google_error(401, "UNAUTHENTICATED", "invalid credentials"), {}
        try:
            body = json.loads(raw)
            msg = body["message"]
            token = msg["token"]
            assert isinstance(msg["notification"]["title"], str)
            assert all(isinstance(v, str) for v in msg.get("data", {}).values())
        except (ValueError, KeyError, TypeError, AssertionError):
            self.errors.append("send: malformed message")
            return 400, _google_error(400, "INVALID_ARGUMENT", "bad message"), {}
        if token.startswith("dead"):
            self._record(Received(token, headers, body, 404, "UNREGISTERED"))
            return 404, _google_error(
                404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"
            ), {}  # fmt: skip
        if token.startswith("bad"):
            self._record(Received(token, headers, body, 400, "INVALID_ARGUMENT"))
            err = _google_error(
                400, "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            )  # fmt: skip
            err["error"]["details"].append({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "message.token", "description": "Invalid"}],
            })  # fmt: skip
            return 400, err, {}
        if self._tokens.flaky_now(token):
            self._record(Received(token, headers, body, 429, "QUOTA_EXCEEDED"))
            return (429, _google_error(429, "RESOURCE_EXHAUSTED", "quota", "QUOTA_EXCEEDED"),
                    {"retry-after": str(self.retry_after_s)})  # fmt: skip
        self._record(Received(token, headers, body, 200, ""))
        return 200, {"name": f"projects/{self.project}/messages/{secrets.token_hex(8)}"}, {}

    def _record(self, r: Received) -> None:
        with self._lock:
            self.received.append(r)


def _google_error(code: int, status: str, message: str, fcm_code: str = "") -> dict[str, Any]:
    details = []
    if fcm_code:
        details.append({
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": fcm_code,
        })  # fmt: skip
    return {"error": {"code": code, "message": message, "status": status, "details": details}}
