"""The HTTP contract of the send API (``/v1/notifications``) and users' notification
preferences. Addresses never appear: a message names its channel, not where it went."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from msgspec import Meta

from paynode.domain.notify.channels import ChannelName
from paynode.domain.notify.preferences import TYPE_PATTERN, Preferences, QuietHours

MAX_BATCH = 1000  # notifications per batch request
MAX_DATA_KEYS = 50
MAX_DATA_BYTES = 16 * 1024  # a notification's data as JSON (the table's CHECK too)
MAX_VALUE_CHARS = 2000  # a data value longer than this is refused (templates cut at this too)
BATCH_BODY_LIMIT = 4 * 1024 * 1024  # bytes of a batch request (1000 small notifications)

NotificationId = Annotated[
    str,
    Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$",
         description="Yours, for idempotency (the same id and body again is the same "
         "notification); omitted: the node makes one"),
]  # fmt: skip
TemplateName = Annotated[str, Meta(min_length=1, max_length=64, pattern=TYPE_PATTERN)]
Value = str | int | float | bool
Data = Annotated[dict[Annotated[str, Meta(min_length=1, max_length=64)], Value],
                 Meta(max_length=MAX_DATA_KEYS)]  # fmt: skip


class NotificationIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    user_id: Annotated[str, Meta(min_length=1, max_length=64)]
    template: Annotated[TemplateName, Meta(description="A template name (GET the list in docs)")]
    data: Data = msgspec.field(default_factory=dict)
    id: NotificationId | None = None
    # What users opt out of; the template's name by default
    type: TemplateName | None = None
    urgent: Annotated[bool, Meta(description="Ignores quiet hours (codes, security alerts)")] = (
        False
    )
    channels: (
        Annotated[
            list[ChannelName],
            Meta(min_length=1, max_length=3, description="Only these; omitted: the user's"),
        ]
        | None
    ) = None


class NotificationBatchIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    notifications: Annotated[list[NotificationIn], Meta(min_length=1, max_length=MAX_BATCH)]


class AttemptOut(msgspec.Struct, kw_only=True):
    attempt: int
    outcome: str  # sent | retry | failed
    detail: str
    duration_ms: int
    at: dt.datetime


class MessageOut(msgspec.Struct, kw_only=True):
    id: int
    channel: ChannelName
    status: str  # pending | sent | failed | dead | suppressed
    reason: str | None  # suppressed: why; pending: quiet_hours, or the last failure
    attempts: int
    replays: int
    next_attempt_at: dt.datetime | None
    sent_at: dt.datetime | None
    history: list[AttemptOut]


class NotificationOut(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    template: str
    type: str
    data: dict[str, Value]
    urgent: bool
    channels: list[ChannelName]
    created_at: dt.datetime
    messages: list[MessageOut]


class NotificationBatchOut(msgspec.Struct, kw_only=True):
    data: list[NotificationOut]
    created: int  # how many were new (the others were retries of earlier ones)


class ReplayOut(msgspec.Struct, kw_only=True):
    id: int
    notification_id: str
    status: str


NOTIFICATION_TYPES = (
    NotificationIn,
    NotificationBatchIn,
    AttemptOut,
    MessageOut,
    NotificationOut,
    NotificationBatchOut,
    ReplayOut,
    Preferences,
    QuietHours,
)
