"""The send API over HTTP against a real node: email to an SMTP capture server, users'
preferences (opt-outs, quiet hours), retries, dead messages and replays, batches."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator

import pytest

from paynode.domain.notify.preferences import QuietHours, quiet_until
from tests.support.asserts import problem, signup
from tests.support.node import RunningNode, wait_until
from tests.support.smtp_capture import Server, SmtpCapture

# Bound once, here, and handed to the server below: its port is in the node's settings
# and nobody else can take it in between.
_SMTP_SOCKET = socket.create_server(("127.0.0.1", 0))
SHARED_NODE_SETTINGS: dict = {
    "auth_rate_burst": 1_000,
    "email_host": "127.0.0.1",
    "email_port": _SMTP_SOCKET.getsockname()[1],
    "email_tls": "none",
    "email_timeout_ms": 5_000,
    "notify_message_interval_ms": 50,
    "notify_message_backoff_base_s": 0.05,
    "notify_message_backoff_cap_s": 0.2,
    "notify_message_max_attempts": 3,
}


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpCapture]:
    server = Server(_SMTP_SOCKET).start()
    yield server.capture
    server.stop()


@pytest.fixture
def mail_node(node: RunningNode, smtp: SmtpCapture) -> RunningNode:
    return node


def _user(node: RunningNode, name: str) -> tuple[str, dict[str, str]]:
    with node.anonymous() as anon:
        return signup(anon, name)


def _send(node: RunningNode, **body: object):
    return node.http.post("/v1/notifications", json=body)


def _message(node: RunningNode, notification_id: str, channel: str) -> dict:
    r = node.http.get(f"/v1/notifications/{notification_id}")
    assert r.status_code == 200, r.text
    return next(m for m in r.json()["messages"] if m["channel"] == channel)


def _settled(node: RunningNode, notification_id: str, channel: str, status: str) -> dict:
    return wait_until(
        lambda: (m := _message(node, notification_id, channel))["status"] == status and m,
        timeout=20,
        what=f"{notification_id} {channel} {status}",
    )


GENERIC = {"subject": "Your receipt", "body": "Thanks for paying"}


def test_send_by_email_records_the_attempt_and_is_idempotent(
    mail_node: RunningNode, smtp: SmtpCapture
) -> None:
    node = mail_node
    user, _ = _user(node, "ntf-mail")
    body = {"id": "ntf-mail-1", "user_id": user, "template": "generic", "data": GENERIC}
    r = _send(node, **body)
    assert r.status_code == 201, r.text
    out = r.json()
    # The user's default channels, in order; only email reaches this user.
    assert [m["channel"] for m in out["messages"]] == ["push", "sms", "email"]
    sent = _settled(node, "ntf-mail-1", "email", "sent")
    assert [(a["attempt"], a["outcome"]) for a in sent["history"]] == [(1, "sent")]
    assert sent["attempts"] == 1 and sent["sent_at"] is not None
    mails = smtp.to("ntf-mail@example.com")
    assert len(mails) == 1 and mails[0].subject == "Your receipt"
    assert "Thanks for paying" in mails[0].text
    assert _settled(node, "ntf-mail-1", "push", "suppressed")["reason"] == "no_device"
    assert _settled(node, "ntf-mail-1", "sms", "suppressed")["reason"] == "no_phone"

    # The same id and body: the same notification, nothing sent again.
    again = _send(node, **body)
    assert again.status_code == 200 and again.json()["id"] == "ntf-mail-1"
    problem(_send(node, **{**body, "data": {**GENERIC, "body": "other"}}), 409,
            "notification_exists_with_different_fields")  # fmt: skip
    assert len(smtp.to("ntf-mail@example.com")) == 1
    # Bad input: problem+json, nothing stored.
    problem(_send(node, id="ntf-bad", user_id=user, template="nope"), 422, "unknown_template")
    problem(_send(node, id="ntf-bad", user_id=user, template="generic", data={"subject": "x"}),
            422, "template_data_missing")  # fmt: skip
    problem(_send(node, id="ntf-bad", user_id=user, template="generic", data=GENERIC,
                  channels=["fax"]), 422, "invalid_field")  # fmt: skip
    problem(_send(node, id="ntf-bad", user_id="usr_" + "0" * 32, template="generic",
                  data=GENERIC), 404, "user_not_found")  # fmt: skip
    problem(node.http.get("/v1/notifications/ntf-bad"), 404, "notification_not_found")


def test_opt_out_suppresses(mail_node: RunningNode, smtp: SmtpCapture) -> None:
    node = mail_node
    user, headers = _user(node, "ntf-optout")
    prefs = {"channels": ["email"], "opt_outs": {"marketing.promo": ["email"]}}
    r = node.http.put(f"/v1/users/{user}/notification-preferences", json=prefs, headers=headers)
    assert r.status_code == 200, r.text
    r = _send(node, id="ntf-optout-1", user_id=user, template="generic", type="marketing.promo",
              data=GENERIC)  # fmt: skip
    assert [m["channel"] for m in r.json()["messages"]] == ["email"]
    assert _settled(node, "ntf-optout-1", "email", "suppressed")["reason"] == "opted_out"
    # Another type still goes.
    _send(node, id="ntf-optout-2", user_id=user, template="generic", data=GENERIC)
    _settled(node, "ntf-optout-2", "email", "sent")
    assert len(smtp.to("ntf-optout@example.com")) == 1


def _zone_at_one_am(now: dt.datetime) -> str:
    """A fixed-offset zone where it is now between 01:00 and 02:00."""
    offset = (1 - now.hour) % 24
    offset = offset - 24 if offset > 12 else offset
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def test_quiet_hours_defer_non_urgent_only(mail_node: RunningNode, smtp: SmtpCapture) -> None:
    node = mail_node
    user, headers = _user(node, "ntf-quiet")
    now = dt.datetime.now(dt.UTC)
    qh = {"start": "22:00", "end": "06:00", "time_zone": _zone_at_one_am(now)}
    r = node.http.put(f"/v1/users/{user}/notification-preferences", headers=headers,
                      json={"channels": ["email"], "quiet_hours": qh})  # fmt: skip
    assert r.status_code == 200, r.text
    _send(node, id="ntf-quiet-late", user_id=user, template="generic", data=GENERIC)
    _send(node, id="ntf-quiet-urgent", user_id=user, template="generic", data=GENERIC,
          urgent=True)  # fmt: skip
    _settled(node, "ntf-quiet-urgent", "email", "sent")
    waiting = wait_until(
        lambda: (m := _message(node, "ntf-quiet-late", "email"))["reason"] == "quiet_hours" and m,
        what="deferred",
    )
    assert waiting["status"] == "pending" and waiting["attempts"] == 0
    expected = quiet_until(dt.datetime.now(dt.UTC), QuietHours(**qh))
    assert expected is not None
    at = dt.datetime.fromisoformat(waiting["next_attempt_at"])
    assert abs((at - expected).total_seconds()) < 1
    assert len(smtp.to("ntf-quiet@example.com")) == 1  # the urgent one only


def test_failing_channel_retries_goes_dead_and_replay_sends(
    mail_node: RunningNode, smtp: SmtpCapture
) -> None:
    node = mail_node
    user, _ = _user(node, "ntf-dead")
    smtp.refuse.add("ntf-dead@example.com")
    r = _send(node, id="ntf-dead-1", user_id=user, template="generic", data=GENERIC,
              channels=["email"])  # fmt: skip
    assert r.status_code == 201, r.text
    dead = _settled(node, "ntf-dead-1", "email", "dead")
    assert [(a["attempt"], a["outcome"]) for a in dead["history"]] == [
        (1, "retry"), (2, "retry"), (3, "retry")
    ]  # fmt: skip
    assert all(a["detail"].startswith("smtp_451") for a in dead["history"])
    assert "ntf-dead@example.com" not in dead["reason"]  # never the address
    # A sent message is not replayable; an unknown one is not found.
    problem(node.http.post("/v1/notifications/messages/999999999/replay"), 404,
            "notification_message_not_found")  # fmt: skip
    smtp.refuse.discard("ntf-dead@example.com")
    r = node.http.post(f"/v1/notifications/messages/{dead['id']}/replay")
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text
    sent = _settled(node, "ntf-dead-1", "email", "sent")
    assert sent["replays"] == 1 and sent["history"][-1]["outcome"] == "sent"
    problem(node.http.post(f"/v1/notifications/messages/{dead['id']}/replay"), 409,
            "notification_message_not_replayable")  # fmt: skip
    assert len(smtp.to("ntf-dead@example.com")) == 1


def test_batch_all_or_nothing(mail_node: RunningNode, smtp: SmtpCapture) -> None:
    node = mail_node
    a, _ = _user(node, "ntf-batch-a")
    b, _ = _user(node, "ntf-batch-b")
    item = {"template": "generic", "data": GENERIC, "channels": ["email"]}
    bad = {
        "notifications": [
            {**item, "id": "ntf-b-x", "user_id": a},
            {**item, "id": "ntf-b-y", "user_id": b, "template": "nope"},
        ]
    }
    problem(node.http.post("/v1/notifications/batch", json=bad), 422, "unknown_template")
    problem(node.http.get("/v1/notifications/ntf-b-x"), 404, "notification_not_found")
    too_many = {"notifications": [{**item, "user_id": a}] * 1001}
    problem(node.http.post("/v1/notifications/batch", json=too_many), 422, "invalid_field")
    good = {"notifications": [{**item, "id": "ntf-b-1", "user_id": a},
                              {**item, "id": "ntf-b-2", "user_id": b},
                              {**item, "user_id": a}]}  # fmt: skip
    r = node.http.post("/v1/notifications/batch", json=good)
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 3
    for n in r.json()["data"]:
        _settled(node, n["id"], "email", "sent")
    assert len(smtp.to("ntf-batch-a@example.com")) == 2
    assert len(smtp.to("ntf-batch-b@example.com")) == 1


def test_preferences_are_the_users_own(node: RunningNode) -> None:
    alice, alice_h = _user(node, "ntf-own-a")
    bob, bob_h = _user(node, "ntf-own-b")
    url = f"/v1/users/{alice}/notification-preferences"
    r = node.http.get(url, headers=alice_h)
    assert r.status_code == 200 and r.json()["channels"] == ["push", "sms", "email"], r.text
    problem(node.http.get(url, headers=bob_h), 403, "forbidden")
    problem(node.http.put(url, json={"locale": "fr"}, headers=bob_h), 403, "forbidden")
    problem(node.http.get("/v1/users/nobody/notification-preferences", headers=bob_h), 404,
            "user_not_found")  # fmt: skip
    bad_zone = {"quiet_hours": {"start": "22:00", "end": "06:00", "time_zone": "Mars/Base"}}
    problem(node.http.put(url, json=bad_zone, headers=alice_h), 422, "invalid_field")
    problem(node.http.put(url, json={"channels": ["email", "email"]}, headers=alice_h), 422,
            "invalid_field")  # fmt: skip
    assert node.http.get(url, headers=alice_h).json()["locale"] == "en"  # nothing changed
    # An admin may set them; a user may not send notifications (an operator scope).
    r = node.http.put(url, json={"locale": "es", "channels": ["email"]})
    assert r.status_code == 200 and r.json()["locale"] == "es", r.text
    problem(node.http.post("/v1/notifications", headers=bob_h,
                           json={"user_id": bob, "template": "generic", "data": GENERIC}),
            403, "insufficient_scope")  # fmt: skip
