"""What every notification channel (email, SMS, push) takes and answers: pure types.

A message is rendered before it reaches a channel (``subject``/``text``/``html``
from a template and its data, in the recipient's locale); the channel only
carries it. Channels live in ``actors/notify/`` (a real client each, and a local
sink or simulator for development and tests) and implement :class:`Channel`.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

ChannelName = Literal["email", "sms", "push"]
CHANNELS: tuple[ChannelName, ...] = ("push", "sms", "email")  # the default preference order


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One rendered message to one address.

    ``to`` is an email address, an E.164 phone number, or a device token (with
    ``platform`` "ios" or "android"): a secret or PII, never logged. ``urgent``
    messages (a one-time code, a security alert) ignore quiet hours.
    """

    id: str  # stable per (notification, recipient, channel): providers dedupe on it
    channel: ChannelName
    to: str
    subject: str = ""
    text: str
    html: str = ""
    platform: str = ""  # push only
    data: dict[str, str] = msgspec.field(default_factory=dict)  # push: custom keys
    urgent: bool = False


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """A channel's answer to one send.

    ``ok``: the provider accepted it. Otherwise ``retry`` says whether trying later
    may help (a timeout, a 5xx, a 429) or not (a refused address), and ``invalid_to``
    that the address itself is dead (an unregistered device token, a hard bounce): the
    caller stops using it (a device is unregistered). ``detail`` is the provider's
    status and reason, never the address or the content.
    """

    ok: bool
    retry: bool = False
    invalid_to: bool = False
    provider_id: str | None = None  # the provider's message id, for status callbacks
    detail: str = ""


class Channel(Protocol):
    name: ChannelName

    async def send(self, message: Message) -> Outcome: ...

    async def close(self) -> None: ...
