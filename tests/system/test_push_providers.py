"""Push through real protocols: APNs over HTTP/2 with a provider JWT, FCM HTTP v1 with an
OAuth service account, each against its simulator (tests/support/push_sims.py).

A node configured with both providers sends every push to the simulators: a payment
event reaches an iOS and an Android device, a dead token unregisters its device, 429s
and 5xx are retried (FCM's Retry-After honoured), the APNs provider token is reused
and signed again when Apple calls it expired, FCM's access token after a 401. The
client-level tests at the end need no node. Every wait polls a deadline.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator

import httpx
import msgspec
import psycopg
import pytest

from paynode.actors.notify.apns import ApnsClient
from paynode.actors.notify.fcm import FcmClient
from paynode.domain.notify.channels import Message
from paynode.domain.settings import ApnsSettings, FcmSettings
from paynode.storage.database import libpq_url
from tests.support.node import RunningNode, wait_until
from tests.support.notify import FAST
from tests.support.push_sims import ApnsSim, FcmSim

PASSWORD = "correct horse battery staple"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# One node for the module (tests/conftest.py shared_node); the simulators' addresses and
# key files are added by the ``sims`` fixture before the node starts.
SHARED_NODE_SETTINGS: dict = {
    "auth_rate_burst": 1_000,
    **FAST,
    "push_backoff_base_s": 0.05,
    "push_backoff_cap_s": 0.2,
    "push_max_retry_after_s": 2.0,
}


class Sims:
    def __init__(self, apns: ApnsSim, fcm: FcmSim) -> None:
        self.apns, self.fcm = apns, fcm


@pytest.fixture(scope="module", autouse=True)
def sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sims]:
    keys = tmp_path_factory.mktemp("push-keys")  # generated now, never committed
    apns, fcm = ApnsSim(keys), FcmSim(keys)
    SHARED_NODE_SETTINGS.update(apns.settings() | fcm.settings())
    try:
        yield Sims(apns, fcm)
        assert apns.errors == [] and fcm.errors == [], (apns.errors, fcm.errors)
    finally:
        apns.close()
        fcm.close()


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    opened: list[httpx.Client] = []
    yield opened
    for c in opened:
        c.close()


class User:
    def __init__(self, node: RunningNode, clients: list[httpx.Client], tag: str) -> None:
        self.node = node
        email = f"{tag}-{secrets.token_hex(4)}@example.com"
        with node.anonymous() as anon:
            reg = anon.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
            assert reg.status_code == 201, reg.text
            login = anon.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, login.text
        self.id = reg.json()["user_id"]
        self.http = httpx.Client(
            base_url=node.url,
            timeout=30,
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
        clients.append(self.http)
        self.account = f"pp-{secrets.token_hex(6)}"
        r = self.http.post("/v1/accounts", json={"id": self.account, "currency": "USD"})
        assert r.status_code == 201, r.text

    def device(self, platform: str, token: str) -> str:
        r = self.http.post(
            "/v1/devices", json={"platform": platform, "token": token, "events": ["*"]}
        )
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def devices(self) -> set[str]:
        r = self.http.get("/v1/devices")
        assert r.status_code == 200, r.text
        return {d["id"] for d in r.json()["devices"]}

    def paid(self, amount: int = 125) -> str:
        """A transfer into the user's account (a transfer.posted event); its event id."""
        bank = f"pp-bank-{secrets.token_hex(6)}"
        r = self.node.http.post("/v1/accounts", json={"id": bank, "currency": "USD"})
        assert r.status_code == 201, r.text
        tid = f"pp-t-{secrets.token_hex(8)}"
        body = {"id": tid, "debit_account_id": bank, "credit_account_id": self.account,
                "amount": amount, "currency": "USD"}  # fmt: skip
        r = self.node.http.post("/v1/transfers", json=body)
        assert r.status_code == 201, r.text
        return f"evt_t_{tid}"


def _apns_token(prefix: str = "") -> str:
    return prefix + secrets.token_hex(32)


def _fcm_token(prefix: str = "") -> str:
    return f"{prefix}{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(96)}"


def _answered(sim: ApnsSim | FcmSim, token: str, status: int, event_id: str | None = None):
    """The requests for ``token`` answered ``status`` (about ``event_id``), once there is one."""

    def event_of(r) -> str:
        return r.body.get("event_id") or r.body.get("message", {}).get("data", {}).get("event_id")

    return wait_until(
        lambda: [
            r for r in sim.requests_for(token)
            if r.status == status and (event_id is None or event_of(r) == event_id)
        ],
        what=f"a {status} for the device about {event_id}",
    )  # fmt: skip


def _push_rows(node: RunningNode, device_id: str) -> list[tuple[str, int, str | None]]:
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        return conn.execute(
            "SELECT status, attempts, result FROM push_notifications WHERE device_id = %s"
            " ORDER BY id",
            (device_id,),
        ).fetchall()


def _metric(node: RunningNode, name: str) -> float:
    text = node.http.get("/metrics").text
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert m, name
    return float(m.group(1))


# -- through a node ---------------------------------------------------------------------------


def test_payment_event_reaches_ios_and_android(node: RunningNode, sims: Sims, clients) -> None:
    user = User(node, clients, "push-ok")
    apns_token, fcm_token = _apns_token(), _fcm_token()
    ios, android = user.device("apns", apns_token), user.device("fcm", fcm_token)
    started = time.time()
    event_id = user.paid(125)

    (got,) = _answered(sims.apns, apns_token, 200, event_id)
    h = got.headers
    assert (h[":method"], h[":path"], h[":scheme"]) == ("POST", f"/3/device/{apns_token}", "http")
    assert h["apns-topic"] == sims.apns.topic and h["apns-push-type"] == "alert"
    assert h["apns-priority"] == "10" and h["apns-collapse-id"] == event_id
    assert int(h["apns-expiration"]) >= started + 3600
    assert UUID.fullmatch(h["apns-id"])
    assert got.body["aps"]["alert"]["title"] == "Transfer posted"
    assert "125 USD" in got.body["aps"]["alert"]["body"]
    assert (got.body["event_id"], got.body["event_type"]) == (event_id, "transfer.posted")
    assert got.jwt_claims["iss"] == sims.apns.team_id  # the sim verified the ES256 signature

    (fcm,) = _answered(sims.fcm, fcm_token, 200, event_id)
    msg = fcm.body["message"]
    assert fcm.headers["authorization"].startswith("Bearer ya29.sim-")
    assert msg["token"] == fcm_token
    assert msg["notification"]["title"] == "Transfer posted"
    assert msg["data"] == {"event_id": event_id, "event_type": "transfer.posted"}
    assert msg["android"] == {"priority": "high", "collapse_key": event_id}
    assert sims.fcm.exchanges, "an access token was obtained with a verified assertion"

    for device in (ios, android):
        rows = wait_until(lambda d=device: [r for r in _push_rows(node, d) if r[0] == "sent"])
        assert rows[0][1] == 1
    assert ios in user.devices() and android in user.devices()


def test_dead_token_unregisters_the_device(node: RunningNode, sims: Sims, clients) -> None:
    user = User(node, clients, "push-dead")
    dead = {
        "apns": _apns_token("dead"), "fcm": _fcm_token("dead"),
    }  # fmt: skip
    bad = {"apns": _apns_token("bad"), "fcm": _fcm_token("bad")}
    alive = _apns_token()
    doomed = {user.device(p, t): (p, t) for p, t in (*dead.items(), *bad.items())}
    keeper = user.device("apns", alive)
    before = _metric(node, "paynode_push_devices_unregistered_total")

    first = user.paid(10)
    # Each provider refusal unregisters its device: no longer listed, no longer pushed to.
    wait_until(lambda: user.devices() == {keeper}, what="the dead devices unregistered")
    for device, (platform, token) in doomed.items():
        sim = sims.apns if platform == "apns" else sims.fcm
        assert len(sim.requests_for(token)) == 1, (platform, token[:4])
        assert _push_rows(node, device)[0][0] == "failed"
    assert _metric(node, "paynode_push_devices_unregistered_total") >= before + 4

    second = user.paid(20)
    _answered(sims.apns, alive, 200, second)
    assert [r.status for r in sims.apns.requests_for(alive)] == [200, 200]
    for _, (platform, token) in doomed.items():
        sim = sims.apns if platform == "apns" else sims.fcm
        assert len(sim.requests_for(token)) == 1, "nothing more went to a dead token"
    assert first != second
    # The same token registered again is a new device (the phone got a new install).
    assert user.device("apns", dead["apns"]) not in doomed


def test_provider_errors_are_retried(node: RunningNode, sims: Sims, clients) -> None:
    user = User(node, clients, "push-retry")
    apns_token, fcm_token = _apns_token("flaky"), _fcm_token("flaky")
    ios, android = user.device("apns", apns_token), user.device("fcm", fcm_token)
    event_id = user.paid(30)

    _answered(sims.apns, apns_token, 200, event_id)
    assert [r.status for r in sims.apns.requests_for(apns_token)] == [503, 503, 200]
    _answered(sims.fcm, fcm_token, 200, event_id)
    tries = sims.fcm.requests_for(fcm_token)
    assert [r.status for r in tries] == [429, 200]
    # Retry-After: 1 outweighs the 0.05 s backoff (and is within push_max_retry_after_s).
    assert tries[1].at - tries[0].at >= 0.9
    assert wait_until(lambda: _push_rows(node, ios)[0][:2] == ("sent", 3))
    assert wait_until(lambda: _push_rows(node, android)[0][:2] == ("sent", 2))
    assert {ios, android} <= user.devices()


def test_apns_provider_token_reused_then_refreshed(node: RunningNode, sims: Sims, clients) -> None:
    user = User(node, clients, "push-jwt")
    token = _apns_token()
    user.device("apns", token)
    one, two = user.paid(1), user.paid(2)
    (a,) = _answered(sims.apns, token, 200, one)
    (b,) = _answered(sims.apns, token, 200, two)
    assert a.headers["authorization"] == b.headers["authorization"], "one token for both"

    sims.apns.expire_provider_tokens()
    three = user.paid(3)
    (c,) = _answered(sims.apns, token, 200, three)
    refused = [r for r in sims.apns.requests_for(token) if r.status == 403]
    assert refused and {r.reason for r in refused} == {"ExpiredProviderToken"}
    assert c.headers["authorization"] != a.headers["authorization"]
    assert c.jwt_claims["iat"] >= a.jwt_claims["iat"]


# -- the clients alone (no node) ----------------------------------------------------------


def _message(token: str, platform: str) -> Message:
    data = {"event_id": "evt_x", "event_type": "t"}
    return Message(
        id=f"m-{secrets.token_hex(4)}", channel="push", to=token, subject="Hi", text="Body",
        platform=platform, data=data,
    )  # fmt: skip


def _settings(prefix: str, values: dict[str, object]) -> dict[str, object]:
    return {k.removeprefix(prefix): v for k, v in values.items()}


def test_fcm_access_token_reused_and_exchanged_again_after_401(sims: Sims) -> None:
    async def run() -> None:
        client = FcmClient(FcmSettings(**_settings("fcm_", sims.fcm.settings())))  # type: ignore[arg-type]
        try:
            for _ in range(3):
                assert (await client.send(_message(_fcm_token(), "android"))).ok
            assert client.exchanges == 1
            sims.fcm.revoke_access_tokens()
            assert (await client.send(_message(_fcm_token(), "android"))).ok
            assert client.exchanges == 2
        finally:
            await client.close()

    asyncio.run(run())


def test_apns_client_outcomes(sims: Sims) -> None:
    async def run() -> None:
        client = ApnsClient(ApnsSettings(**_settings("apns_", sims.apns.settings())))  # type: ignore[arg-type]
        try:
            ok = await client.send(_message(_apns_token(), "ios"))
            assert ok.ok and ok.provider_id and UUID.fullmatch(ok.provider_id)
            dead = await client.send(_message(_apns_token("dead"), "ios"))
            assert (dead.ok, dead.invalid_to, dead.retry) == (False, True, False)
            assert dead.detail == "410 Unregistered"
            urgent = msgspec.structs.replace(_message(_apns_token(), "ios"), urgent=True)
            assert (await client.send(urgent)).ok
            assert sims.apns.requests_for(urgent.to)[0].headers["apns-expiration"] == "0"
            assert client.tokens.signed == 1
        finally:
            await client.close()

    asyncio.run(run())
