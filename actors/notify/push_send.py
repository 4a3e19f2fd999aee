"""Which push provider takes a device's pushes: the real APNs/FCM client when configured,
else the JSON-lines sink (development, and the tests that read it).

The notifier hands each pending push here; a real client gets it as a rendered
:class:`Message` (title, body and the event's custom keys, from
:mod:`actors.notify.push`) and answers an :class:`Outcome`.
"""

from __future__ import annotations

from pathlib import Path

from paynode.actors.notify.apns import ApnsClient
from paynode.actors.notify.fcm import FcmClient
from paynode.actors.notify.push import SinkProvider, alert, event_data
from paynode.domain.notify.channels import Channel, ChannelName, Message, Outcome
from paynode.domain.settings import ApnsSettings, FcmSettings
from paynode.storage.events import Event

_DEVICE_PLATFORM = {"apns": "ios", "fcm": "android"}  # devices' platform -> Message's


def push_message(
    push_id: int, platform: str, token: str, event: Event, code: str | None
) -> Message:
    """One push as a channel message; its id (one per device and event) is stable across
    retries, so providers that dedupe or echo it see the same one."""
    title, body = alert(event, code)
    return Message(
        id=f"push_{push_id}",
        channel="push",
        to=token,
        subject=title,
        text=body,
        platform=_DEVICE_PLATFORM.get(platform, platform),
        data=event_data(event),
        urgent=code is not None,
    )


class PushSender:
    """Event pushes (``send_push``) and, as the push :class:`Channel`, rendered messages
    (``send``, dispatched on ``Message.platform``): one APNs connection and provider
    token, one FCM access token, for both."""

    name: ChannelName = "push"

    def __init__(
        self,
        apns: ApnsSettings,
        fcm: FcmSettings,
        sink_path: Path,
        fallback: Channel | None = None,
    ) -> None:
        # A missing or unusable key stops the notifier's start: better than a node
        # that silently drops every push.
        self.apns = ApnsClient(apns) if apns.key_file else None
        self.fcm = FcmClient(fcm) if fcm.service_account_file else None
        self.sink = SinkProvider(sink_path, apns_topic=apns.topic)
        self.fallback = fallback  # rendered messages to a platform with no client

    def _client(self, platform: str) -> ApnsClient | FcmClient | None:
        if platform in ("apns", "ios"):
            return self.apns
        if platform in ("fcm", "android"):
            return self.fcm
        return None

    async def send_push(
        self, push_id: int, platform: str, token: str, event: Event, code: str | None = None
    ) -> Outcome:
        client = self._client(platform)
        if client is None:
            written = self.sink.send(platform, token, event, code)
            return Outcome(ok=written.ok, detail=written.detail)
        return await client.send(push_message(push_id, platform, token, event, code))

    async def send(self, message: Message) -> Outcome:
        client = self._client(message.platform)
        if client is not None:
            return await client.send(message)
        if self.fallback is not None:
            return await self.fallback.send(message)
        return Outcome(ok=False, detail="no push provider for this platform")

    def retry_after_s(self, platform: str) -> float | None:
        """The wait the provider asked for in its last answer (FCM's Retry-After)."""
        if platform in ("fcm", "android") and self.fcm is not None:
            return self.fcm.retry_after_s
        return None

    async def close(self) -> None:
        for client in (self.apns, self.fcm, self.fallback):
            if client is not None:
                await client.close()
