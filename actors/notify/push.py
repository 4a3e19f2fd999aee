"""Push requests: their shapes, and the development sink that writes them.

The real clients (``apns.py``, ``fcm.py``, chosen in ``push_send.py`` when
configured) and :class:`SinkProvider` share the builders below. The sink builds the
HTTP/2 request each service documents (APNs: ``POST /3/device/<token>`` with
``apns-*`` headers; FCM HTTP v1: ``POST /v1/projects/<p>/messages:send``) and
appends it to a JSON-lines file instead of sending it. The device token and
the provider credential are secrets: the sink records their SHA-256
fingerprints in their places, never the values.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

import msgspec

from paynode.storage.events import Event

APNS_HOST = "api.push.apple.com"
FCM_HOST = "fcm.googleapis.com"


class PushResult(msgspec.Struct):
    ok: bool
    detail: str  # provider's answer (status and reason); no token, no payload


class PushProvider(Protocol):
    def send(
        self, platform: str, token: str, event: Event, code: str | None = None
    ) -> PushResult: ...


def _fingerprint(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


APNS_COLLAPSE_ID_MAX_BYTES = 64  # APNs refuses a longer apns-collapse-id (BadCollapseId)


def collapse_id(event_id: str) -> str:
    """The event id, or for one too long for APNs (``evt_t_<a long transfer id>``) a
    digest of it: still one per event, and the same for every push of that event."""
    if len(event_id.encode()) <= APNS_COLLAPSE_ID_MAX_BYTES:
        return event_id
    return "evt_h_" + hashlib.blake2b(event_id.encode(), digest_size=24).hexdigest()


def alert(event: Event, code: str | None = None) -> tuple[str, str]:
    """Title and body of the notification: amounts and ids only, no personal data.

    ``code`` is a step-up one-time code: it is the point of that notification, so it
    is in the body (and so in the sink, which stands for the user's device).
    """
    data = event.data
    if code is not None:
        pay = data["payment"]
        return "Confirm your payment", (
            f"Code {code} confirms payment {pay['id']} of {pay['amount']} {pay['currency']}"
            " (minor units). Never share it."
        )
    if "transfer" in data:
        t = data["transfer"]
        verb = {
            "transfer.posted": "Transfer posted",
            "transfer.pending": "Transfer pending",
            "transfer.voided": "Transfer voided",
            "transfer.expired": "Transfer expired",
        }.get(event.type, event.type)
        return verb, f"{t['amount']} {t['currency']} (minor units), transfer {t['id']}"
    if "account" in data:
        return "Account created", f"Account {data['account']['id']}"
    return event.type, f"Event {event.id}"


APNS_EXPIRATION_S = 86400  # APNs stores an undeliverable push this long, then drops it


def event_data(event: Event) -> dict[str, str]:
    """The custom keys every push carries: the app fetches the rest by event id."""
    return {"event_id": event.id, "event_type": event.type}


# The builders below are shared by the sink and the real clients (apns.py, fcm.py): one
# shape for both.
def apns_headers(collapse_key: str, topic: str, now_s: float) -> dict[str, str]:
    """APNs request headers but ``authorization`` (the client adds its provider token)."""
    return {
        "apns-push-type": "alert",
        "apns-topic": topic,
        "apns-priority": "10",
        "apns-expiration": str(int(now_s) + APNS_EXPIRATION_S),
        "apns-collapse-id": collapse_id(collapse_key),
    }


def apns_payload(title: str, body: str, data: dict[str, str]) -> dict[str, Any]:
    return {"aps": {"alert": {"title": title, "body": body}, "sound": "default"}, **data}


def fcm_message(
    token: str, title: str, body: str, data: dict[str, str], collapse_key: str
) -> dict[str, Any]:
    """The body of an FCM HTTP v1 ``messages:send``."""
    return {
        "message": {
            "token": token,
            "notification": {"title": title, "body": body},
            "data": data,
            "android": {"priority": "high", "collapse_key": collapse_key},
        }
    }


def apns_request(token: str, event: Event, topic: str, code: str | None = None) -> dict[str, Any]:
    title, body = alert(event, code)
    return {
        "method": "POST",
        "url": f"https://{APNS_HOST}/3/device/{_fingerprint(token)}",
        "headers": {
            "authorization": "bearer <provider token " + _fingerprint(topic) + ">",
            **apns_headers(event.id, topic, time.time()),
        },
        "body": apns_payload(title, body, event_data(event)),
    }


def fcm_request(token: str, event: Event, project: str, code: str | None = None) -> dict[str, Any]:
    title, body = alert(event, code)
    return {
        "method": "POST",
        "url": f"https://{FCM_HOST}/v1/projects/{project}/messages:send",
        "headers": {
            "authorization": "Bearer <oauth2 access token>",
            "content-type": "application/json; UTF-8",
        },
        "body": fcm_message(_fingerprint(token), title, body, event_data(event), event.id),
    }


class SinkProvider:
    """Writes each request it would send to ``path`` (JSON lines, mode 0600)."""

    def __init__(
        self, path: Path, apns_topic: str = "dev.paynode.app", fcm_project: str = "paynode"
    ):
        self.path = path
        self.apns_topic = apns_topic
        self.fcm_project = fcm_project
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)

    def send(self, platform: str, token: str, event: Event, code: str | None = None) -> PushResult:
        if platform == "apns":
            request = apns_request(token, event, self.apns_topic, code)
        elif platform == "fcm":
            request = fcm_request(token, event, self.fcm_project, code)
        else:
            return PushResult(False, f"unknown platform {platform}")
        line = json.dumps({"platform": platform, "request": request}, sort_keys=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return PushResult(True, "200 written to sink")
