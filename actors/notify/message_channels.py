"""The channels the send API's messages and step-up codes go through.

Each is the real client when its provider is configured and the local sink
otherwise (actors/notify/email.py, sms.py; push: the notifier's PushSender, APNs
or FCM by the device's platform, else the push sink).
"""

from __future__ import annotations

from pathlib import Path

from paynode.actors.notify.email import EmailChannel
from paynode.actors.notify.sms import SmsChannel
from paynode.domain.notify.channels import Channel
from paynode.domain.settings import EmailSettings, SmsSettings


def build(
    data_dir: Path,
    email: EmailSettings,
    sms: SmsSettings,
    push: Channel,
    sms_callback_url: str = "",
) -> dict[str, Channel]:
    """Channels by name ("email", "sms", "push"). ``push`` is the notifier's own push
    sender (actors/notify/push_send.py): one APNs connection and provider token, and one
    FCM access token, for event pushes and messages alike (Apple refuses a provider that
    signs new tokens too often)."""
    return {
        "email": EmailChannel(email, data_dir),
        "sms": SmsChannel(sms, data_dir, sms_callback_url),
        "push": push,
    }


async def close_all(channels: dict[str, Channel]) -> None:
    for c in channels.values():
        await c.close()
