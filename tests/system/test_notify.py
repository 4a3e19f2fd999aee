"""Events and webhooks: the outbox, signed deliveries with retries, devices, inbound.

Real node, real PostgreSQL, real HTTP both ways: the node POSTs to a
receiver (benchmarks/receiver.py) that verifies every signature.
"""

from __future__ import annotations

import json
import time

import httpx
import psycopg
import pytest

from paynode.benchmarks.receiver import Receiver, serve
from paynode.domain.notify.signature import HEADER, header, verify_signature
from paynode.storage.database import libpq_url
from tests.support.asserts import problem
from tests.support.node import RunningNode, wait_until
from tests.support.notify import FAST, OUTBOX_SQL

PROVIDER_SECRET = "bank-sim-signing-secret-0123456789"


def _accounts(node: RunningNode, *ids: str, owner: str | None = None) -> None:
    for i in ids:
        body = {"id": i, "currency": "USD"}
        if owner:
            body["owner_user_id"] = owner
        r = node.http.post("/v1/accounts", json=body)
        assert r.status_code in (200, 201), r.text


def _pay(node: RunningNode, tid: str, dr: str, cr: str, amount: int, **extra) -> httpx.Response:
    body = {"id": tid, "debit_account_id": dr, "credit_account_id": cr, "amount": amount,
            "currency": "USD", **extra}  # fmt: skip
    return node.http.post("/v1/transfers", json=body)


def _outbox(node: RunningNode, prefix: str) -> list[tuple[str, str, str]]:
    """This test's events (not the operator accounts every node creates at start)."""
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        return conn.execute(OUTBOX_SQL, (prefix + "%",)).fetchall()


def _endpoint(node: RunningNode, url: str, events=("*",), client=None, **extra) -> dict:
    r = (client or node.http).post(
        "/v1/webhook-endpoints", json={"url": url, "events": list(events), **extra}
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_one_event_per_committed_change_none_for_refusals(make_node) -> None:
    node = make_node(**FAST)
    _accounts(node, "ob-a", "ob-b")
    assert _pay(node, "ob-1", "ob-a", "ob-b", 500).status_code == 201
    # Refused: overdraft on a guarded account, unknown account, malformed: no event.
    node.http.post("/v1/accounts", json={"id": "ob-guard", "currency": "USD",
                                         "flags": ["debits_must_not_exceed_credits"]})  # fmt: skip
    assert _pay(node, "ob-2", "ob-guard", "ob-a", 1).status_code == 422
    assert _pay(node, "ob-3", "ob-a", "ob-missing", 1).status_code == 422
    assert _pay(node, "ob-4", "ob-a", "ob-b", -1).status_code == 422
    # Replay of a committed transfer: no second event.
    assert _pay(node, "ob-1", "ob-a", "ob-b", 500).status_code == 200
    # Pending, then post: two changes, two events.
    assert _pay(node, "ob-5", "ob-a", "ob-b", 70, flags=["pending"]).status_code == 201
    r = node.http.post("/v1/transfers", json={"id": "ob-6", "pending_id": "ob-5",
                                              "flags": ["post_pending"]})  # fmt: skip
    assert r.status_code == 201, r.text
    rows = _outbox(node, "ob-")
    subjects = [(t, s) for _, t, s in rows]
    assert sorted(subjects) == sorted([
        ("account.created", "ob-a"), ("account.created", "ob-b"),
        ("account.created", "ob-guard"), ("transfer.posted", "ob-1"),
        ("transfer.pending", "ob-5"), ("transfer.posted", "ob-6"),
    ])  # fmt: skip
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        journal = conn.execute("SELECT count(*) FROM transfers").fetchone()[0]
        accounts = conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
        # The journal is the outbox: the commit wrote no second row per change.
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    events = journal + accounts  # one each, the operator accounts' included

    # The same events through the polling API, stable ids, oldest first, paginated.
    seen: list[dict] = []
    after = None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = node.http.get("/v1/events", params=params).json()
        seen += page["events"]
        after = page["next_after"]
        if not page["has_more"]:
            break
    assert len(seen) == events
    mine = {r[0] for r in rows}
    assert [e["id"] for e in seen if e["id"] in mine] == [r[0] for r in rows]
    posted = [e for e in seen if e["type"] == "transfer.posted"]
    assert posted[0]["data"]["transfer"]["amount"] == 500
    one = node.http.get(f"/v1/events/{posted[0]['id']}")
    assert one.status_code == 200 and one.json() == posted[0]
    only = node.http.get("/v1/events", params={"type": "transfer.pending"}).json()["events"]
    assert [e["data"]["transfer"]["id"] for e in only] == ["ob-5"]
    problem(node.http.get("/v1/events", params={"after": "evt_nope"}), 400, "invalid_cursor")
    problem(node.http.get("/v1/events", params={"type": "transfer.nope"}), 422, "invalid_field")


def test_signed_delivery_with_retries_after_failures(make_node) -> None:
    node = make_node(**FAST)
    receiver = Receiver(fail_first=3)
    with serve(receiver) as url:
        created = _endpoint(node, url, events=["transfer.posted"])
        receiver.secret = created["secret"]
        assert created["secret"].startswith("whsec_")
        listed = node.http.get(f"/v1/webhook-endpoints/{created['id']}").json()
        assert "secret" not in listed
        _accounts(node, "wr-a", "wr-b")
        assert _pay(node, "wr-1", "wr-a", "wr-b", 1234).status_code == 201
        got = wait_until(receiver.delivered, what="the event after 3 failures")
    attempts = [r for r in receiver.received if r.event_id == got[0].event_id]
    assert [r.attempt for r in attempts] == [1, 2, 3, 4]
    assert all(r.verified for r in attempts), "every attempt carries a valid signature"
    event = got[0].body
    assert event["type"] == "transfer.posted" and set(event) == {"id", "type", "created", "data"}
    assert event["data"]["transfer"]["amount"] == 1234
    history = wait_until(
        lambda: [d for d in node.http.get(
            f"/v1/webhook-endpoints/{created['id']}/deliveries").json()["deliveries"]
            if d["status"] == "delivered"],
        what="the delivery recorded",
    )  # fmt: skip
    assert [a["status_code"] for a in history[0]["history"]] == [500, 500, 500, 204]


def test_order_per_endpoint_and_replay(make_node) -> None:
    node = make_node(**FAST)
    receiver = Receiver(fail_first=1)  # every event fails once: order must still hold
    with serve(receiver) as url:
        created = _endpoint(node, url)
        receiver.secret = created["secret"]
        _accounts(node, "or-a", "or-b")
        ids = [f"or-{i}" for i in range(20)]
        for tid in ids:
            assert _pay(node, tid, "or-a", "or-b", 10).status_code == 201
        wait_until(lambda: len(receiver.delivered()) >= 22, what="22 events")
        delivered = [r.body for r in receiver.delivered()]
        outbox = [r[0] for r in _outbox(node, "or-")]
        assert [e["id"] for e in delivered] == outbox, "delivered in outbox order"
        # Arrival order, all attempts: an event's retry comes before the next event.
        firsts = [r.event_id for r in receiver.received if r.attempt == 1]
        assert firsts == outbox
        # Replay one delivery by hand.
        deliveries = node.http.get(f"/v1/webhook-endpoints/{created['id']}/deliveries").json()
        target = deliveries["deliveries"][5]
        r = node.http.post(f"/v1/webhook-endpoints/{created['id']}/deliveries/{target['id']}/retry")
        assert r.status_code == 202
        wait_until(
            lambda: sum(1 for x in receiver.received if x.event_id == target["event_id"]) == 3,
            what="the replay",
        )


def test_dead_letter_and_secret_rotation(make_node) -> None:
    node = make_node(**FAST, webhook_max_attempts=3)
    receiver = Receiver(fail_first=100)
    with serve(receiver) as url:
        created = _endpoint(node, url, events=["account.created"])
        receiver.secret = created["secret"]
        _accounts(node, "dl-a")
        eid = created["id"]
        dead = wait_until(
            lambda: node.http.get(f"/v1/webhook-endpoints/{eid}/deliveries",
                                  params={"status": "dead"}).json()["deliveries"],
            what="a dead delivery",
        )  # fmt: skip
        assert dead[0]["attempts"] == 3 and len(dead[0]["history"]) == 3
        time.sleep(0.3)  # no further attempt is made after the last one
        assert len(receiver.received) == 3

        rotated = node.http.post(f"/v1/webhook-endpoints/{eid}/rotate-secret", json={})
        assert rotated.status_code == 200 and rotated.json()["secret"] != created["secret"]
        assert rotated.json()["previous_secret_valid_until"] is not None
        # During the overlap a receiver holding either secret verifies the delivery.
        receiver.fail_first = 0
        receiver.secret = rotated.json()["secret"]
        node.http.post(f"/v1/webhook-endpoints/{eid}/deliveries/{dead[0]['id']}/retry")
        got = wait_until(receiver.delivered, what="the replayed delivery")
        assert got[0].verified
        assert got[0].body["data"]["account"]["id"] == "dl-a"


def test_hanging_receiver_times_out_and_payments_go_on(make_node) -> None:
    node = make_node(**FAST | {"webhook_timeout_s": 0.3})
    receiver = Receiver(hang=True)
    with serve(receiver) as url:
        created = _endpoint(node, url)
        receiver.secret = created["secret"]
        _accounts(node, "hg-a", "hg-b")
        t0 = time.monotonic()
        for i in range(30):
            assert _pay(node, f"hg-{i}", "hg-a", "hg-b", 1).status_code == 201
        assert time.monotonic() - t0 < 10
        eid = created["id"]
        pending = wait_until(
            lambda: [d for d in node.http.get(f"/v1/webhook-endpoints/{eid}/deliveries").json()
                     ["deliveries"] if d["last_error"] == "timeout"],
            what="a timed-out attempt",
        )  # fmt: skip
        assert pending[0]["status"] == "pending"


def test_endpoint_ownership_and_validation(make_node) -> None:
    node = make_node(**FAST)
    r = node.http.post("/v1/webhook-endpoints", json={"url": "ftp://x.example", "events": ["*"]})
    problem(r, 422, "invalid_url")
    r = node.http.post("/v1/webhook-endpoints", json={"url": "https://a.example", "events": []})
    problem(r, 422, "invalid_field")
    r = node.http.post("/v1/webhook-endpoints",
                       json={"url": "https://a.example", "events": ["nope"]})  # fmt: skip
    problem(r, 422, "invalid_field")


def test_private_destinations_refused_by_default(make_node) -> None:
    node = make_node()
    for url in ("http://127.0.0.1:9/x", "https://127.0.0.1/x", "https://localhost/x",
                "https://10.0.0.1/x", "https://169.254.169.254/latest/meta-data",
                "https://[::1]/x"):  # fmt: skip
        r = node.http.post("/v1/webhook-endpoints", json={"url": url, "events": ["*"]})
        assert r.status_code == 422, (url, r.text)
        assert r.json()["code"] in ("invalid_url", "destination_not_allowed")
        assert url not in r.text


def test_inbound_webhooks_verified_stored_and_replays_refused(make_node) -> None:
    providers = json.dumps({"processor": PROVIDER_SECRET})
    node = make_node(webhook_providers=providers)
    client = node.anonymous()

    def send(body: dict, secret: str = PROVIDER_SECRET, t: int | None = None, tamper=False):
        raw = json.dumps(body).encode()
        sig = header([secret], raw, t)
        if tamper:
            raw = raw.replace(b"100", b"900")
        return client.post("/v1/webhooks/processor", content=raw,
                           headers={HEADER: sig, "Content-Type": "application/json"})  # fmt: skip

    ev = {"id": "bank-evt-1", "type": "ach.settled", "created": int(time.time()),
          "data": {"amount": 100}}  # fmt: skip
    ok = send(ev)
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "accepted"
    problem(send(ev), 409, "webhook_replayed")
    problem(send({**ev, "id": "bank-evt-2"}, tamper=True), 401, "signature_mismatch")
    problem(send({**ev, "id": "bank-evt-3"}, t=int(time.time()) - 3600), 401,
            "signature_timestamp_outside_tolerance")  # fmt: skip
    problem(send({**ev, "id": "bank-evt-4"}, secret="wrong-secret-0123456789"), 401,
            "signature_mismatch")  # fmt: skip
    r = client.post("/v1/webhooks/processor", json=ev)
    problem(r, 401, "signature_missing")
    r = client.post("/v1/webhooks/nobank", json=ev)
    problem(r, 404, "unknown_provider")
    # A provider name with nothing storable in it (PostgreSQL text holds no NUL) is still
    # refused and recorded, under the empty name.
    r = client.post("/v1/webhooks/%00", json={**ev, "id": "bank-evt-5"})
    problem(r, 404, "unknown_provider")
    with psycopg.connect(libpq_url(node.database_url)) as conn:
        stored = conn.execute(
            "SELECT event_id, status, reason FROM inbound_webhooks ORDER BY id"
        ).fetchall()
    assert stored == [
        ("bank-evt-1", "accepted", None),
        ("bank-evt-1", "refused", "webhook_replayed"),
        ("bank-evt-2", "refused", "signature_mismatch"),
        ("bank-evt-3", "refused", "signature_timestamp_outside_tolerance"),
        ("bank-evt-4", "refused", "signature_mismatch"),
        ("bank-evt-1", "refused", "signature_missing"),
        ("bank-evt-1", "refused", "unknown_provider"),
        ("bank-evt-5", "refused", "unknown_provider"),
    ]
    client.close()


def test_verify_signature_helper() -> None:
    body = b'{"id":"evt_1"}'
    now = 1_700_000_000
    h = header(["whsec_a", "whsec_b"], body, now)
    assert verify_signature("whsec_b", h, body, now=now) == now
    with pytest.raises(ValueError, match="signature_mismatch"):
        verify_signature("whsec_c", h, body, now=now)
    with pytest.raises(ValueError, match="outside_tolerance"):
        verify_signature("whsec_a", h, body, now=now + 301)
    with pytest.raises(ValueError, match="signature_malformed"):
        verify_signature("whsec_a", "v1=00", body, now=now)


def test_reenabled_endpoint_gets_only_what_commits_after(make_node) -> None:
    node = make_node(**FAST)
    receiver = Receiver()
    with serve(receiver) as url:
        created = _endpoint(node, url, events=["transfer.posted"])
        receiver.secret = created["secret"]
        eid = created["id"]
        _accounts(node, "re-a", "re-b")
        assert _pay(node, "re-1", "re-a", "re-b", 1).status_code == 201
        wait_until(lambda: len(receiver.delivered()) == 1, what="re-1")
        off = node.http.patch(f"/v1/webhook-endpoints/{eid}", json={"enabled": False})
        assert off.status_code == 200 and off.json()["enabled"] is False
        assert _pay(node, "re-2", "re-a", "re-b", 1).status_code == 201  # while it is off
        on = node.http.patch(f"/v1/webhook-endpoints/{eid}", json={"enabled": True})
        assert on.status_code == 200
        assert _pay(node, "re-3", "re-a", "re-b", 1).status_code == 201
        wait_until(lambda: len(receiver.delivered()) >= 2, what="re-3")
        got = [r.body["data"]["transfer"]["id"] for r in receiver.delivered()]
        assert got == ["re-1", "re-3"]
