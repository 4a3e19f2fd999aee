"""Push as a :class:`Channel` over the local sink: the APNs or FCM request that would be
sent, written to ``<data_dir>/push-sink.jsonl`` (the sink stands for the device).

Used for messages rendered before they reach push (step-up codes) until the APNs and
FCM clients are wired as channels; the token is fingerprinted as in push.py.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from paynode.actors.notify.sink import JsonLinesSink
from paynode.domain.notify.channels import Channel, ChannelName, Message, Outcome

SINK_FILE = "push-sink.jsonl"


def _fingerprint(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


class SinkPushChannel:
    name: ChannelName = "push"

    def __init__(self, data_dir: Path) -> None:
        self._sink = JsonLinesSink(data_dir / SINK_FILE)

    async def send(self, message: Message) -> Outcome:
        alert = {"title": message.subject, "body": message.text}
        if message.platform in ("ios", "apns"):
            platform = "apns"
            request = {
                "method": "POST",
                "url": f"https://api.push.apple.com/3/device/{_fingerprint(message.to)}",
                "headers": {"apns-push-type": "alert",
                            "apns-priority": "10" if message.urgent else "5",
                            "apns-expiration": str(int(time.time()) + 600)},
                "body": {"aps": {"alert": alert, "sound": "default"}, **message.data},
            }  # fmt: skip
        elif message.platform in ("android", "fcm"):
            platform = "fcm"
            request = {
                "method": "POST",
                "url": "https://fcm.googleapis.com/v1/projects/paynode/messages:send",
                "body": {"message": {"token": _fingerprint(message.to), "notification": alert,
                                     "data": message.data,
                                     "android": {"priority": "high" if message.urgent
                                                 else "normal"}}},
            }  # fmt: skip
        else:
            return Outcome(ok=False, detail=f"unknown platform {message.platform[:16]}")
        await self._sink.write({"platform": platform, "message_id": message.id, "request": request})
        return Outcome(ok=True, provider_id=message.id, detail="200 written to sink")

    async def close(self) -> None:
        return None


class PushChannel:
    """Push for messages rendered before they reach push (step-up codes): the configured
    APNs or FCM client for the message's platform, else the sink."""

    name: ChannelName = "push"

    def __init__(self, clients: dict[str, Channel | None], data_dir: Path) -> None:
        """``clients``: by Message platform ("ios", "android"); None = not configured."""
        self._clients = clients
        self._sink = SinkPushChannel(data_dir)

    async def send(self, message: Message) -> Outcome:
        client = self._clients.get(message.platform)
        return await (client or self._sink).send(message)

    async def close(self) -> None:
        return None  # the clients belong to the notifier's push sender
