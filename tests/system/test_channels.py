"""Step-up codes wherever the user is, over real channels: email through a local SMTP
server (aiosmtpd), SMS through a Twilio-shaped simulator with signed status callbacks,
fallback between them, resend limits, and the code kept out of logs and events.

The SMTP server and the SMS simulator are started by this module on sockets bound once
and handed over; the node is the module's shared one (tests/conftest.py), pointed at them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from paynode.storage.database import libpq_url
from tests.support.asserts import problem
from tests.support.node import RunningNode, wait_until
from tests.support.sms_sim import BROKEN, INVALID_TO, Simulator
from tests.support.smtp_capture import Server

SMS_SID = "AC" + "0123456789abcdef" * 2
SMS_TOKEN = secrets.token_hex(16)
# One node for the module; its email and SMS settings are filled in by ``channels``
# (autouse, so it runs before the node starts) once the servers' sockets are bound.
SHARED_NODE_SETTINGS: dict = {"auth_rate_burst": 1_000}
CODES: list[str] = []  # every code this module received: none may show up in logs
CODE_IN_EMAIL = re.compile(r"one-time code is (\d{6})")
CODE_IN_EMAIL_ES = re.compile(r"código de un solo uso es (\d{6})")
CODE_IN_SMS = re.compile(r"code (\d{6}) ")


class Servers:
    smtp: Server
    sms: Simulator


SERVERS = Servers()


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a record that cannot format is not ours
            self.lines.append(self.format(record))


FRONT_LOGS = _Records()


@pytest.fixture(scope="module", autouse=True)
def channels() -> Iterator[None]:
    SERVERS.smtp = Server(_bound()).start()
    SERVERS.sms = Simulator(_bound(), SMS_SID, SMS_TOKEN).start()
    SHARED_NODE_SETTINGS.update(
        email_host="127.0.0.1",
        email_port=SERVERS.smtp.port,
        email_tls="none",
        email_timeout_ms=5_000,
        sms_base_url=SERVERS.sms.base_url,
        sms_account_sid=SMS_SID,
        sms_auth_token=SMS_TOKEN,
        sms_from_number="+15005550006",
        sms_timeout_ms=5_000,
    )
    root = logging.getLogger("paynode")  # the front runs in this process
    root.addHandler(FRONT_LOGS)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.setLevel(old_level)
        root.removeHandler(FRONT_LOGS)
        SERVERS.sms.stop()
        SERVERS.smtp.stop()


# -- helpers ------------------------------------------------------------------------------


def _register(node: RunningNode, name: str, phone: str | None = None) -> tuple[str, str, dict]:
    email = f"{name}-{secrets.token_hex(3)}@example.com"
    creds = {"email": email, "password": "a long enough passphrase"}
    with node.anonymous() as anon:
        r = anon.post("/v1/auth/register", json=creds)
        assert r.status_code == 201, r.text
        token = anon.post("/v1/auth/login", json=creds).json()["access_token"]
    uid, headers = r.json()["user_id"], {"Authorization": f"Bearer {token}"}
    if phone:
        r = node.http.patch(f"/v1/users/{uid}", json={"phone": phone}, headers=headers)
        assert r.status_code == 200, r.text
    return uid, email, headers


def _high_risk_payment(node: RunningNode, tag: str, payer: dict, pid: str) -> dict:
    """Unverified (+40) paying someone new (+10): HIGH, so the payment asks for a code."""
    _, _, payee = _register(node, f"{tag}-payee")
    for acct, headers in ((f"{tag}-w", payer), (f"{tag}-payee-w", payee)):
        body = {"id": acct, "currency": "USD", "flags": ["debits_must_not_exceed_credits"]}
        assert node.http.post("/v1/accounts", json=body, headers=headers).status_code == 201
    node.http.post("/v1/accounts", json={"id": "treasury-chan", "currency": "USD"})
    fund = {"id": f"fund-{tag}", "debit_account_id": "treasury-chan",
            "credit_account_id": f"{tag}-w", "amount": 100_000, "currency": "USD"}  # fmt: skip
    assert node.http.post("/v1/transfers", json=fund).status_code == 201
    body = {"id": pid, "from": f"{tag}-w", "to": f"{tag}-payee-w", "amount": 1_000,
            "currency": "USD"}  # fmt: skip
    r = node.http.post("/v1/payments", json=body, headers=payer)
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["status"] == "requires_action" and out["risk"]["level"] == "HIGH", out
    return out


def _emailed_code(email: str, count: int = 1) -> str:
    def arrived() -> list:
        mails = SERVERS.smtp.capture.to(email)
        return mails if len(mails) >= count else []

    mail = wait_until(arrived, what=f"{count} email(s) to {email}")[-1]
    m = CODE_IN_EMAIL.search(mail.text)
    assert m, mail.text
    assert m.group(1) in mail.html and m.group(1) in mail.subject
    CODES.append(m.group(1))
    return m.group(1)


def _confirm(node: RunningNode, pid: str, code: str, headers: dict) -> dict:
    r = node.http.post(f"/v1/payments/{pid}/confirm", json={"otp": code}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _db(node: RunningNode) -> psycopg.Connection:
    return psycopg.connect(libpq_url(node.database_url), autocommit=True)


def _sends(node: RunningNode, pid: str) -> list[tuple]:
    """The payment's code sends, once none is pending (a send is recorded after it went)."""

    def settled() -> list[tuple]:
        rows = _rows(node, pid)
        return rows if rows and all(r[1] != "pending" for r in rows) else []

    return wait_until(settled, what=f"the code sends of {pid}")


def _rows(node: RunningNode, pid: str) -> list[tuple]:
    with _db(node) as conn:
        return conn.execute(
            "SELECT seq, status, channel, result FROM otp_sends WHERE payment_id = %s ORDER BY seq",
            (pid,),
        ).fetchall()


def _twilio_signature(url: str, params: dict[str, str], token: str = SMS_TOKEN) -> str:
    payload = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(
        hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()
    ).decode()


# -- tests --------------------------------------------------------------------------------


def test_a_new_user_without_a_device_gets_the_code_by_email(node: RunningNode) -> None:
    _, email, user = _register(node, "mail-ann")
    out = _high_risk_payment(node, "mail", user, "chan-mail-1")
    assert out["next_action"]["resend_url"] == "/v1/payments/chan-mail-1/resend-code"
    code = _emailed_code(email)
    mail = SERVERS.smtp.capture.to(email)[-1]
    assert "chan-mail-1" in mail.text and "<code>chan-mail-1</code>" in mail.html
    assert mail.headers["Message-ID"].endswith("@paynode>")
    assert _confirm(node, "chan-mail-1", code, user)["status"] == "completed"
    assert [(s, st, ch) for s, st, ch, _ in _sends(node, "chan-mail-1")] == [(0, "sent", "email")]


def test_a_user_with_a_phone_gets_the_code_by_sms(node: RunningNode) -> None:
    phone = "+1415555" + f"{secrets.randbelow(10_000):04d}"
    _, email, user = _register(node, "sms-bob", phone)
    _high_risk_payment(node, "sms", user, "chan-sms-1")
    texts = wait_until(lambda: SERVERS.sms.to(phone), what="an SMS")
    m = CODE_IN_SMS.search(texts[0].body)
    assert m, texts[0].body
    CODES.append(m.group(1))
    assert texts[0].sender == "+15005550006"
    assert texts[0].callback == node.settings.front_url() + "/v1/callbacks/sms-status"
    assert not SERVERS.smtp.capture.to(email)  # SMS reached the user: no email
    assert _confirm(node, "chan-sms-1", m.group(1), user)["status"] == "completed"
    # The simulator reported sent, then delivered, to the signed callback; both recorded.
    sid = texts[0].sid
    wait_until(lambda: [c for c in texts[0].callbacks if c[0] == "delivered"], what="callbacks")
    assert texts[0].callbacks == [("sent", 204), ("delivered", 204)]
    with _db(node) as conn:
        row = conn.execute(
            "SELECT status FROM sms_status WHERE provider_id = %s", (sid,)
        ).fetchone()
    assert row == ("delivered",)
    assert [(s, st, ch) for s, st, ch, _ in _sends(node, "chan-sms-1")] == [(0, "sent", "sms")]


def test_sms_refused_by_the_provider_falls_back_to_email(node: RunningNode) -> None:
    _, email, user = _register(node, "fall-cy", INVALID_TO)
    _high_risk_payment(node, "fall", user, "chan-fall-1")
    code = _emailed_code(email)
    assert (INVALID_TO, 400) in SERVERS.sms.refused
    ((seq, status, channel, result),) = _sends(node, "chan-fall-1")
    assert (seq, status, channel) == (0, "sent", "email")
    assert result.startswith("sms:http_400 21211; email:"), result
    assert INVALID_TO not in result and code not in result
    assert _confirm(node, "chan-fall-1", code, user)["status"] == "completed"


def test_a_provider_outage_falls_back_and_preferences_pick_the_channel(
    node: RunningNode,
) -> None:
    # The SMS provider answers 500 (retryable, but a code must arrive now): email takes it.
    _, email, user = _register(node, "down-di", BROKEN)
    _high_risk_payment(node, "down", user, "chan-down-1")
    code = _emailed_code(email)
    ((_, status, channel, result),) = _sends(node, "chan-down-1")
    assert (status, channel) == ("sent", "email") and result.startswith("sms:http_500"), result
    assert _confirm(node, "chan-down-1", code, user)["status"] == "completed"
    # A user who puts email first, in Spanish, gets the code there though they have a phone.
    phone = "+1415556" + f"{secrets.randbelow(10_000):04d}"
    uid, email, user = _register(node, "pref-ed", phone)
    r = node.http.put(f"/v1/users/{uid}/notification-preferences", headers=user,
                      json={"channels": ["email", "sms", "push"], "locale": "es"})  # fmt: skip
    assert r.status_code == 200, r.text
    _high_risk_payment(node, "pref", user, "chan-pref-1")
    mails = wait_until(lambda: SERVERS.smtp.capture.to(email), what="the code by email")
    code = CODE_IN_EMAIL_ES.search(mails[-1].text)
    assert code, mails[-1].text
    CODES.append(code.group(1))
    assert SERVERS.sms.to(phone) == []  # never tried: email worked
    assert [(st, ch) for _, st, ch, _ in _sends(node, "chan-pref-1")] == [("sent", "email")]
    assert _confirm(node, "chan-pref-1", code.group(1), user)["status"] == "completed"


def test_status_callbacks_are_verified(node: RunningNode) -> None:
    url = node.settings.front_url() + "/v1/callbacks/sms-status"
    sid = "SM" + secrets.token_hex(16)
    params = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003",
              "AccountSid": SMS_SID}  # fmt: skip
    with node.anonymous() as anon:
        problem(anon.post("/v1/callbacks/sms-status", data=params), 401, "signature_missing")
        forged = {"X-Twilio-Signature": _twilio_signature(url, params, "not-the-token")}
        r = anon.post("/v1/callbacks/sms-status", data=params, headers=forged)
        problem(r, 401, "signature_mismatch")
        # Signed, but the body was changed on the way: refused too.
        signed = {"X-Twilio-Signature": _twilio_signature(url, params)}
        r = anon.post("/v1/callbacks/sms-status", data=params | {"MessageStatus": "delivered"},
                      headers=signed)  # fmt: skip
        problem(r, 401, "signature_mismatch")
        with _db(node) as conn:
            found = conn.execute("SELECT 1 FROM sms_status WHERE provider_id = %s", (sid,))
            assert found.fetchall() == []
        r = anon.post("/v1/callbacks/sms-status", data=params, headers=signed)
        assert r.status_code == 204, r.text
        r = anon.post("/v1/callbacks/sms-status", data=params, headers=signed)  # a retry
        assert r.status_code == 204, r.text
    with _db(node) as conn:
        row = conn.execute("SELECT status, error_code FROM sms_status WHERE provider_id = %s",
                           (sid,)).fetchone()  # fmt: skip
        refused = conn.execute("SELECT count(*) FROM inbound_webhooks WHERE provider = 'sms'"
                               " AND status = 'refused'").fetchone()[0]  # fmt: skip
    assert row == ("undelivered", "30003")
    assert refused >= 3


def test_resends_are_limited(node: RunningNode) -> None:
    _, email, user = _register(node, "re-dee")
    _high_risk_payment(node, "resend", user, "chan-re-1")
    code = _emailed_code(email)
    url = "/v1/payments/chan-re-1/resend-code"
    r = node.http.post(url, headers=user)
    body = problem(r, 429, "otp_resend_too_soon")
    assert 0 < int(r.headers["retry-after"]) <= 30, r.headers
    assert code not in str(body)
    _, _, stranger = _register(node, "re-eve")
    problem(node.http.post(url, headers=stranger), 404, "payment_not_found")
    for n in (1, 2, 3):
        with _db(node) as conn:  # as if the interval had passed
            conn.execute("UPDATE otp_sends SET created_at = created_at - interval '1 minute'"
                         " WHERE payment_id = 'chan-re-1'")  # fmt: skip
        r = node.http.post(url, headers=user)
        assert r.status_code == 202, r.text
        assert r.json()["resends_left"] == 3 - n
        assert _emailed_code(email, 1 + n) == code  # the same code, sent again
    with _db(node) as conn:
        conn.execute("UPDATE otp_sends SET created_at = created_at - interval '1 minute'"
                     " WHERE payment_id = 'chan-re-1'")  # fmt: skip
    problem(node.http.post(url, headers=user), 429, "otp_resend_limit")
    assert _confirm(node, "chan-re-1", code, user)["status"] == "completed"
    problem(node.http.post(url, headers=user), 409, "no_action_required")


def test_codes_never_reach_logs_or_events(node: RunningNode) -> None:
    assert len(CODES) >= 4, "run with the module's other tests"
    import ray

    logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())  # type: ignore[attr-defined]
    seen = []
    for path in logs_dir.rglob("*"):
        if path.is_file() and path.suffix in (".out", ".err", ".log"):
            text = path.read_text(errors="replace")
            seen += [(path.name, c) for c in CODES if re.search(rf"\b{c}\b", text)]
    assert not seen, seen
    front = "\n".join(FRONT_LOGS.lines)
    assert not [c for c in CODES if c in front]
    with _db(node) as conn:
        tables = {
            "events": "SELECT data::text FROM events",
            "audit_log": "SELECT row_to_json(a)::text FROM audit_log a",
            "otp_sends": "SELECT row_to_json(o)::text FROM otp_sends o",
            "sms_status": "SELECT row_to_json(s)::text FROM sms_status s",
        }
        for table, sql in tables.items():
            text = "\n".join(r[0] or "" for r in conn.execute(sql))
            assert not [c for c in CODES if re.search(rf"\b{c}\b", text)], table
