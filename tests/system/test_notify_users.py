"""Notifications as a user sees them: devices and push, and events scoped to one's accounts.

Real node, real PostgreSQL, real HTTP both ways. Users register and log in,
create their own accounts with their own access tokens, and register devices
and webhook endpoints; the notifier writes push requests to the sink file
(actors/notify/push.py) and POSTs webhooks to a receiver (benchmarks/receiver.py).
Every wait polls; nothing sleeps and hopes.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from paynode.benchmarks.receiver import Receiver, serve
from paynode.storage.database import libpq_url
from tests.support.asserts import problem
from tests.support.node import RunningNode, wait_until
from tests.support.notify import FAST, fingerprint, push_target, pushes, sink, sink_path

PASSWORD = "correct horse battery staple"
FCM_URL = re.compile(r"https://fcm\.googleapis\.com/v1/projects/[A-Za-z0-9_.-]+/messages:send")
UNKNOWN_DEVICE = "dev_" + "0" * 32
UNKNOWN_ENDPOINT = "we_" + "0" * 32


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    opened: list[httpx.Client] = []
    yield opened
    for c in opened:
        c.close()


def _signup(
    node: RunningNode, clients: list[httpx.Client], handle: str
) -> tuple[str, httpx.Client]:
    """Register and log in a user: (user id, a client carrying the user's access token)."""
    email = f"{handle}@example.com"
    with node.anonymous() as anon:
        reg = anon.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert reg.status_code == 201, reg.text
        login = anon.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
    http = httpx.Client(
        base_url=node.url,
        timeout=30,
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    clients.append(http)
    return reg.json()["user_id"], http


def _account(client: httpx.Client, account_id: str, owner: str | None) -> None:
    r = client.post("/v1/accounts", json={"id": account_id, "currency": "USD"})
    assert r.status_code == 201, r.text
    assert r.json()["owner_user_id"] == owner


def _pay(client: httpx.Client, tid: str, dr: str, cr: str, amount: int, **extra) -> dict:
    body = {"id": tid, "debit_account_id": dr, "credit_account_id": cr, "amount": amount,
            "currency": "USD", **extra}  # fmt: skip
    r = client.post("/v1/transfers", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _all_events(client: httpx.Client) -> list[dict]:
    """Every event this credential may see, following the cursor to the end."""
    seen: list[dict] = []
    after = None
    while True:
        params = {"limit": 1000} | ({"after": after} if after else {})
        r = client.get("/v1/events", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["events"]
        after = page["next_after"]
        if not page["has_more"]:
            return seen


def _subject(event: dict) -> tuple[str, str]:
    """(type, id of the transfer or account it is about); other kinds: (type, event id)."""
    data = event["data"]
    about = data.get("transfer") or data.get("account") or {"id": event["id"]}
    return event["type"], about["id"]


def _event_of(client: httpx.Client, etype: str, subject: str) -> dict:
    """The one event about ``subject``, once it is visible to readers of the outbox."""
    found = wait_until(
        lambda: [e for e in _all_events(client) if _subject(e) == (etype, subject)],
        what=f"the {etype} event of {subject}",
    )
    assert len(found) == 1, (etype, subject, found)
    return found[0]


def _device(client: httpx.Client, platform: str, token: str, events: list[str]) -> httpx.Response:
    return client.post("/v1/devices", json={"platform": platform, "token": token, "events": events})


def _endpoint(client: httpx.Client, url: str, events=("*",)) -> dict:
    r = client.post("/v1/webhook-endpoints", json={"url": url, "events": list(events)})
    assert r.status_code == 201, r.text
    return r.json()


def _recorded(node: RunningNode, endpoint_id: str) -> list[tuple[str, str]]:
    """(event id, status) of the endpoint's deliveries, as the notifier stored them."""
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        return conn.execute(
            "SELECT event_id, status FROM webhook_deliveries WHERE endpoint_id = %s ORDER BY id",
            (endpoint_id,),
        ).fetchall()


def _delivered(receiver: Receiver) -> list[tuple[str, str]]:
    return [_subject(r.body) for r in receiver.delivered()]


# -- 1. devices and push ------------------------------------------------------------------


def test_devices_register_push_preferences_and_unregister(make_node, clients) -> None:
    node = make_node(**FAST)
    a_id, a = _signup(node, clients, "dev-alice")
    _, b = _signup(node, clients, "dev-bob")
    _account(a, "dv-a", a_id)
    _account(node.http, "dv-bank", None)

    apns_token = secrets.token_hex(32)
    apns2_token = secrets.token_hex(32)
    fcm_token = f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(96)}"
    tokens = (apns_token, apns2_token, fcm_token)

    # Registered: 201, the last 4 characters back and never the token.
    r = _device(a, "apns", apns_token, ["transfer.pending"])
    assert r.status_code == 201, r.text
    apns = r.json()
    assert set(apns) == {"id", "platform", "token_last4", "events", "created_at"}
    assert (apns["platform"], apns["token_last4"]) == ("apns", apns_token[-4:])
    assert apns["events"] == ["transfer.pending"]
    assert apns_token not in r.text
    r = _device(a, "fcm", fcm_token, ["transfer.posted", "transfer.pending"])
    assert r.status_code == 201, r.text
    fcm = r.json()
    assert (fcm["platform"], fcm["token_last4"]) == ("fcm", fcm_token[-4:])
    assert fcm_token not in r.text
    r = _device(a, "apns", apns2_token, ["transfer.pending"])
    assert r.status_code == 201, r.text
    pending_only = r.json()
    # The same token again: 200, the same device, its events replaced.
    r = _device(a, "apns", apns_token, ["transfer.posted"])
    assert r.status_code == 200, r.text
    assert r.json()["id"] == apns["id"] and r.json()["events"] == ["transfer.posted"]
    assert apns_token not in r.text

    listed = a.get("/v1/devices")
    assert listed.status_code == 200
    assert {d["id"]: d["events"] for d in listed.json()["devices"]} == {
        apns["id"]: ["transfer.posted"],
        fcm["id"]: ["transfer.pending", "transfer.posted"],
        pending_only["id"]: ["transfer.pending"],
    }
    assert not any(t in listed.text for t in tokens)
    assert b.get("/v1/devices").json()["devices"] == []

    # Devices belong to users: the bootstrap admin key has none and registers none.
    problem(_device(node.http, "apns", secrets.token_hex(32), ["*"]), 403, "forbidden")
    problem(node.http.get("/v1/devices"), 403, "forbidden")
    # Another user can neither change nor remove A's device; an unknown id is 404.
    problem(b.patch(f"/v1/devices/{apns['id']}", json={"events": ["*"]}), 403, "forbidden")
    problem(b.delete(f"/v1/devices/{apns['id']}"), 403, "forbidden")
    problem(a.patch(f"/v1/devices/{UNKNOWN_DEVICE}", json={"events": ["*"]}), 404,
            "device_not_found")  # fmt: skip
    problem(a.delete(f"/v1/devices/{UNKNOWN_DEVICE}"), 404, "device_not_found")
    assert a.get("/v1/devices").json() == listed.json(), "the refusals changed nothing"

    # The raw tokens are nowhere in PostgreSQL: not as text, not as bytes (nor hex-decoded).
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        rows = conn.execute("SELECT * FROM devices").fetchall()
        as_text = [r[0] for r in conn.execute("SELECT d::text FROM devices d")]
        tables = [
            t for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]  # fmt: skip
        everything = [
            r[0] for t in tables for r in conn.execute(f'SELECT x::text FROM "{t}" x')
        ]  # fmt: skip
    assert len(rows) == 3 and len(as_text) == 3
    for token in tokens:
        assert not any(token in row for row in as_text)
        assert not any(token in row for row in everything)
        raw = [token.encode()] + ([bytes.fromhex(token)] if token != fcm_token else [])
        for row in rows:
            for value in row:
                if isinstance(value, bytes | memoryview):
                    assert not any(x in bytes(value) for x in raw)
                else:
                    assert token not in str(value)

    # Money moves into A's account: one push per device subscribed to transfer.posted.
    _pay(node.http, "dv-1", "dv-bank", "dv-a", 250)
    posted = _event_of(a, "transfer.posted", "dv-1")
    fp = {apns["id"]: fingerprint(apns_token), fcm["id"]: fingerprint(fcm_token),
          pending_only["id"]: fingerprint(apns2_token)}  # fmt: skip
    want = {(fp[apns["id"]], "transfer.posted", posted["id"]),
            (fp[fcm["id"]], "transfer.posted", posted["id"])}  # fmt: skip
    wait_until(lambda: want <= set(pushes(node)), what="the posted transfer's pushes")
    # A pending transfer next: it reaches the pending-only device, and is the marker
    # after which a posted push to that device would have shown.
    _pay(node.http, "dv-2", "dv-bank", "dv-a", 40, flags=["pending"], timeout_s=3600)
    pending = _event_of(a, "transfer.pending", "dv-2")
    want_pending = {(fp[pending_only["id"]], "transfer.pending", pending["id"]),
                    (fp[fcm["id"]], "transfer.pending", pending["id"])}  # fmt: skip
    wait_until(lambda: want_pending <= set(pushes(node)), what="the pending transfer's pushes")
    assert sorted(pushes(node)) == sorted(want | want_pending)

    lines = sink(node)
    by_target = {(push_target(x), x["platform"]): x["request"] for x in lines[:2]}
    apns_req = by_target[(fp[apns["id"]], "apns")]
    assert apns_req["method"] == "POST"
    assert apns_req["url"] == f"https://api.push.apple.com/3/device/{fp[apns['id']]}"
    headers = apns_req["headers"]
    assert headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "10"
    assert isinstance(headers["apns-topic"], str) and headers["apns-topic"]
    assert headers["apns-collapse-id"] == posted["id"]
    assert int(headers["apns-expiration"]) > posted["created"]
    alert = apns_req["body"]["aps"]["alert"]
    assert alert["title"] == "Transfer posted"
    assert "250 USD" in alert["body"] and "dv-1" in alert["body"]
    assert apns_req["body"]["event_type"] == "transfer.posted"

    fcm_req = by_target[(fp[fcm["id"]], "fcm")]
    assert fcm_req["method"] == "POST"
    assert FCM_URL.fullmatch(fcm_req["url"]), fcm_req["url"]
    assert fcm_req["headers"]["content-type"].startswith("application/json")
    message = fcm_req["body"]["message"]
    assert message["token"] == fp[fcm["id"]]
    assert message["notification"]["title"] == "Transfer posted"
    assert "250 USD" in message["notification"]["body"]
    assert message["data"] == {"event_id": posted["id"], "event_type": "transfer.posted"}

    # The preference changes with PATCH; a deleted device hears nothing more.
    r = a.patch(f"/v1/devices/{pending_only['id']}", json={"events": ["transfer.posted"]})
    assert r.status_code == 200, r.text
    assert r.json()["events"] == ["transfer.posted"] and r.json()["id"] == pending_only["id"]
    assert a.delete(f"/v1/devices/{apns['id']}").status_code == 204
    problem(a.delete(f"/v1/devices/{apns['id']}"), 404, "device_not_found")
    problem(a.patch(f"/v1/devices/{apns['id']}", json={"events": ["*"]}), 404, "device_not_found")
    assert {d["id"] for d in a.get("/v1/devices").json()["devices"]} == {
        fcm["id"],
        pending_only["id"],
    }
    _pay(node.http, "dv-3", "dv-bank", "dv-a", 3)
    third = _event_of(a, "transfer.posted", "dv-3")
    want_third = {(fp[fcm["id"]], "transfer.posted", third["id"]),
                  (fp[pending_only["id"]], "transfer.posted", third["id"])}  # fmt: skip
    wait_until(lambda: want_third <= set(pushes(node)), what="pushes after the changes")
    # A last marker, so that a push to the deleted device would have been written by now.
    _pay(node.http, "dv-4", "dv-bank", "dv-a", 4, flags=["pending"], timeout_s=3600)
    marker = _event_of(a, "transfer.pending", "dv-4")
    wait_until(lambda: (fp[fcm["id"]], "transfer.pending", marker["id"]) in set(pushes(node)),
               what="the marker push")  # fmt: skip
    sent = pushes(node)
    assert sorted(sent) == sorted(
        want | want_pending | want_third | {(fp[fcm["id"]], "transfer.pending", marker["id"])}
    )
    assert [p for p in sent if p[0] == fp[apns["id"]]] == [
        (fp[apns["id"]], "transfer.posted", posted["id"])
    ]

    # The sink never holds a raw token, and is private to the node's user.
    text = sink_path(node).read_text()
    assert not any(t in text for t in tokens)
    assert stat.S_IMODE(os.stat(sink_path(node)).st_mode) == 0o600


# -- 2. events and endpoints scoped to a user -----------------------------------------------


def test_events_and_webhooks_are_scoped_to_the_users_accounts(make_node, clients) -> None:
    node = make_node(**FAST)
    a_id, a = _signup(node, clients, "scope-alice")
    b_id, b = _signup(node, clients, "scope-bob")
    ra, rb = Receiver(), Receiver()
    with serve(ra) as url_a, serve(rb) as url_b:
        ep_a = _endpoint(a, url_a)
        ra.secret = ep_a["secret"]
        ep_b = _endpoint(b, url_b)
        rb.secret = ep_b["secret"]
        assert (ep_a["owner_user_id"], ep_b["owner_user_id"]) == (a_id, b_id)

        _account(a, "us-a1", a_id)
        _account(a, "us-a2", a_id)
        _account(b, "us-b1", b_id)
        _account(node.http, "us-t1", None)
        _account(node.http, "us-t2", None)
        _pay(a, "us-ab", "us-a1", "us-b1", 100)  # A pays B
        _pay(a, "us-at", "us-a2", "us-t1", 50)  # A pays the bank
        _pay(node.http, "us-tt", "us-t1", "us-t2", 7)  # nobody's business but the bank's

        mine_a = {("account.created", "us-a1"), ("account.created", "us-a2"),
                  ("transfer.posted", "us-ab"), ("transfer.posted", "us-at")}  # fmt: skip
        mine_b = {("account.created", "us-b1"), ("transfer.posted", "us-ab")}
        bank_only = {("account.created", "us-t1"), ("account.created", "us-t2"),
                     ("transfer.posted", "us-tt")}  # fmt: skip
        ours = mine_a | mine_b | bank_only

        def visible() -> list[dict]:
            got = [e for e in _all_events(node.http) if _subject(e) in ours]
            return got if {_subject(e) for e in got} == ours else []

        everything = wait_until(visible, what="all eight events visible")
        ids = {_subject(e): e["id"] for e in everything}

        # Polling: each user sees the events of their own accounts, and no other.
        seen_a = _all_events(a)
        seen_b = _all_events(b)
        assert sorted(_subject(e) for e in seen_a) == sorted(mine_a)
        assert sorted(_subject(e) for e in seen_b) == sorted(mine_b)
        assert [e["id"] for e in seen_a] == [e["id"] for e in everything if e in seen_a]
        only = a.get("/v1/events", params={"type": "account.created"}).json()["events"]
        assert sorted(_subject(e) for e in only) == sorted(
            s for s in mine_a if s[0] == "account.created"
        )
        one = a.get(f"/v1/events/{ids['transfer.posted', 'us-ab']}")
        assert one.status_code == 200 and _subject(one.json()) == ("transfer.posted", "us-ab")
        assert b.get(f"/v1/events/{ids['transfer.posted', 'us-ab']}").status_code == 200
        problem(b.get(f"/v1/events/{ids['transfer.posted', 'us-at']}"), 404, "event_not_found")
        problem(b.get(f"/v1/events/{ids['account.created', 'us-a1']}"), 404, "event_not_found")
        problem(a.get(f"/v1/events/{ids['transfer.posted', 'us-tt']}"), 404, "event_not_found")
        problem(a.get(f"/v1/events/{ids['account.created', 'us-b1']}"), 404, "event_not_found")
        assert node.http.get(f"/v1/events/{ids['transfer.posted', 'us-tt']}").status_code == 200

        # Webhooks: each user's endpoint hears exactly the events about that user.
        wait_until(lambda: mine_a <= set(_delivered(ra)), what="A's events at A's endpoint")
        wait_until(lambda: mine_b <= set(_delivered(rb)), what="B's events at B's endpoint")
        # Later markers, one per user: delivered in outbox order, so once they are in,
        # anything else fanned out to these endpoints would have arrived before them.
        _pay(a, "us-mark-a", "us-a1", "us-t2", 1)
        _pay(b, "us-mark-b", "us-b1", "us-t2", 2)
        wait_until(lambda: ("transfer.posted", "us-mark-a") in _delivered(ra), what="A's marker")
        wait_until(lambda: ("transfer.posted", "us-mark-b") in _delivered(rb), what="B's marker")
        got_a, got_b = _delivered(ra), _delivered(rb)
        assert sorted(got_a) == sorted(mine_a | {("transfer.posted", "us-mark-a")}), got_a
        assert sorted(got_b) == sorted(mine_b | {("transfer.posted", "us-mark-b")}), got_b
        assert all(r.verified for r in ra.received + rb.received)
        assert [r.body["id"] for r in ra.delivered()][:4] == [
            e["id"] for e in everything if _subject(e) in mine_a
        ], "in outbox order"

        # B can neither see nor touch A's endpoint, nor its deliveries.
        eid = ep_a["id"]
        problem(b.get(f"/v1/webhook-endpoints/{eid}"), 403, "forbidden")
        problem(b.patch(f"/v1/webhook-endpoints/{eid}", json={"enabled": False}), 403,
                "forbidden")  # fmt: skip
        problem(b.delete(f"/v1/webhook-endpoints/{eid}"), 403, "forbidden")
        problem(b.get(f"/v1/webhook-endpoints/{eid}/deliveries"), 403, "forbidden")
        problem(b.post(f"/v1/webhook-endpoints/{eid}/rotate-secret", json={}), 403, "forbidden")
        mine = a.get(f"/v1/webhook-endpoints/{eid}")
        assert mine.status_code == 200 and mine.json()["enabled"] is True
        assert "secret" not in mine.json()
        # (A's own delivery history: test_delivery_history_lists_every_attempt below.)
        recorded = _recorded(node, eid)
        assert {e for e, _ in recorded} == {r.event_id for r in ra.delivered()}
        assert {st for _, st in recorded} == {"delivered"}

        # Listing: one's own only; the admin sees every endpoint (its own too).
        bank = _endpoint(node.http, "http://127.0.0.1:9/bank")
        assert bank["owner_user_id"] is None

        def listed(client: httpx.Client) -> set[str]:
            r = client.get("/v1/webhook-endpoints")
            assert r.status_code == 200, r.text
            assert ep_a["secret"] not in r.text and ep_b["secret"] not in r.text
            assert not any("secret" in e for e in r.json()["endpoints"])
            return {e["id"] for e in r.json()["endpoints"]}

        assert listed(a) == {ep_a["id"]}
        assert listed(b) == {ep_b["id"]}
        assert listed(node.http) == {ep_a["id"], ep_b["id"], bank["id"]}
        problem(a.get(f"/v1/webhook-endpoints/{bank['id']}"), 403, "forbidden")


# -- 3. changing and removing an endpoint -----------------------------------------------------


def test_endpoint_disable_filter_change_and_delete(make_node, clients) -> None:
    node = make_node(**FAST)
    a_id, a = _signup(node, clients, "patch-alice")
    r1, r2 = Receiver(), Receiver()
    with serve(r1) as url1, serve(r2) as url2:
        ep1 = _endpoint(a, url1)
        r1.secret = ep1["secret"]
        ep2 = _endpoint(a, url2)
        r2.secret = ep2["secret"]
        _account(a, "pe-a", a_id)
        _account(node.http, "pe-bank", None)
        _pay(node.http, "pe-1", "pe-bank", "pe-a", 10)
        first = {("account.created", "pe-a"), ("transfer.posted", "pe-1")}
        wait_until(lambda: first <= set(_delivered(r1)), what="the first events at endpoint 1")
        wait_until(lambda: first <= set(_delivered(r2)), what="the first events at endpoint 2")

        # Disabled: no further deliveries, while the other endpoint carries on.
        r = a.patch(f"/v1/webhook-endpoints/{ep1['id']}", json={"enabled": False})
        assert r.status_code == 200, r.text
        assert r.json()["enabled"] is False and r.json()["events"] == ["*"]
        assert a.get(f"/v1/webhook-endpoints/{ep1['id']}").json()["enabled"] is False
        _pay(node.http, "pe-2", "pe-bank", "pe-a", 20)
        wait_until(
            lambda: ("transfer.posted", "pe-2") in {_subject(e) for e in _all_events(a)},
            what="pe-2 in the events",
        )
        wait_until(lambda: ("transfer.posted", "pe-2") in _delivered(r2), what="pe-2 at ep2")
        assert sorted(_subject(r.body) for r in r1.received) == sorted(first)
        # Nor was a delivery of pe-2 recorded for it.
        assert sorted(st for _, st in _recorded(node, ep1["id"])) == ["delivered"] * 2

        # A narrower filter: only transfer.pending from now on.
        r = a.patch(f"/v1/webhook-endpoints/{ep2['id']}", json={"events": ["transfer.pending"]})
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["transfer.pending"] and r.json()["enabled"] is True
        _pay(node.http, "pe-3", "pe-bank", "pe-a", 30)
        _pay(node.http, "pe-4", "pe-bank", "pe-a", 40, flags=["pending"], timeout_s=3600)
        wait_until(lambda: ("transfer.pending", "pe-4") in _delivered(r2), what="pe-4 at ep2")
        assert _delivered(r2) == [
            *sorted(first, key=lambda s: s[0]),
            ("transfer.posted", "pe-2"),
            ("transfer.pending", "pe-4"),
        ], "pe-3 (posted) was filtered out; order is the outbox's"
        assert ("transfer.posted", "pe-3") not in {_subject(r.body) for r in r1.received}
        assert len(r1.received) == 2, "the disabled endpoint still hears nothing"

        # Deleted: 204, then gone for every verb.
        eid = ep2["id"]
        assert a.delete(f"/v1/webhook-endpoints/{eid}").status_code == 204
        problem(a.get(f"/v1/webhook-endpoints/{eid}"), 404, "webhook_endpoint_not_found")
        problem(a.patch(f"/v1/webhook-endpoints/{eid}", json={"enabled": True}), 404,
                "webhook_endpoint_not_found")  # fmt: skip
        problem(a.delete(f"/v1/webhook-endpoints/{eid}"), 404, "webhook_endpoint_not_found")
        problem(a.get(f"/v1/webhook-endpoints/{eid}/deliveries"), 404,
                "webhook_endpoint_not_found")  # fmt: skip
        problem(a.get(f"/v1/webhook-endpoints/{UNKNOWN_ENDPOINT}"), 404,
                "webhook_endpoint_not_found")  # fmt: skip
        assert {e["id"] for e in a.get("/v1/webhook-endpoints").json()["endpoints"]} == {ep1["id"]}
        # A deleted endpoint hears nothing more: a pending transfer (its filter) after the
        # delete, and the admin's endpoint as the marker that fan-out has passed it.
        marker = Receiver()
        with serve(marker) as url_m:
            admin_ep = _endpoint(node.http, url_m, events=["transfer.pending"])
            marker.secret = admin_ep["secret"]
            _pay(node.http, "pe-5", "pe-bank", "pe-a", 50, flags=["pending"], timeout_s=3600)
            wait_until(lambda: ("transfer.pending", "pe-5") in _delivered(marker),
                       what="pe-5 at the admin's endpoint")  # fmt: skip
        assert ("transfer.pending", "pe-5") not in _delivered(r2)
        assert len(r1.received) == 2


# -- 4. the owner's delivery history ----------------------------------------------------------


def test_delivery_history_lists_every_attempt(make_node, clients) -> None:
    node = make_node(**FAST)
    a_id, a = _signup(node, clients, "history-alice")
    _, b = _signup(node, clients, "history-bob")
    receiver = Receiver(fail_first=1)
    with serve(receiver) as url:
        ep = _endpoint(a, url, events=["transfer.posted"])
        receiver.secret = ep["secret"]
        _account(a, "hi-a", a_id)
        _account(node.http, "hi-bank", None)
        _pay(node.http, "hi-1", "hi-bank", "hi-a", 10)
        got = wait_until(receiver.delivered, what="the delivery after one failure")
    assert [_subject(r.body) for r in got] == [("transfer.posted", "hi-1")]
    problem(b.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries"), 403, "forbidden")

    def recorded() -> httpx.Response | None:
        # The receiver answers before the node records that answer: wait for the record.
        r = a.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries")
        assert r.status_code == 200, r.text
        return r if [d["status"] for d in r.json()["deliveries"]] == ["delivered"] else None

    r = wait_until(recorded, what="the delivery recorded as delivered")
    (delivery,) = r.json()["deliveries"]
    assert (delivery["event_id"], delivery["status"]) == (got[0].event_id, "delivered")
    assert [h["status_code"] for h in delivery["history"]] == [500, 204]
    admin = node.http.get(f"/v1/webhook-endpoints/{ep['id']}/deliveries")
    assert admin.status_code == 200 and admin.json() == r.json()
