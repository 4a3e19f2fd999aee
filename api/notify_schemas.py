"""The HTTP contract for events, webhook endpoints, devices and inbound webhooks.

A webhook signing secret appears exactly twice: in the answer that creates
the endpoint and in the answer that rotates it. A device token goes in and
only its last 4 characters come out.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from paynode.actors.notify.destinations import MAX_URL
from paynode.storage.events import EVENT_TYPES, MAX_TYPES_PER_SUBSCRIPTION

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
Subscription = Literal[(*EVENT_TYPES, "*")]  # type: ignore[valid-type]
Subscriptions = Annotated[
    list[Subscription],
    Meta(
        min_length=1,
        max_length=MAX_TYPES_PER_SUBSCRIPTION,
        description='Event types to receive; "*" for all',
    ),
]
Url = Annotated[str, Meta(min_length=8, max_length=MAX_URL, description="https URL")]
MaxInFlight = Annotated[
    int,
    Meta(
        ge=1,
        le=16,
        description="Requests in flight to this endpoint. 1 (default): strictly in order; more: "
        "in order per account",
    ),
]


EventId = Annotated[
    str,
    Meta(
        description="Stable across restarts; dedupe on it. `evt_a_<account id>` "
        "(account.created), `evt_t_<transfer id>` (transfer.*), `evt_<32 hex>` (the others, "
        "and ledger events recorded before version 9 of the schema)"
    ),
]


class EventOut(msgspec.Struct):
    """The webhook body, and one item of the event list."""

    id: EventId
    type: EventType
    created: Annotated[int, Meta(description="Unix seconds")]
    data: dict[str, Any]


class EventPage(msgspec.Struct):
    """Oldest first (in commit order). Pass ``next_after`` as ``after`` for the next page.

    A page may be empty with ``has_more`` true: a bounded number of events is
    scanned per request, and none of those were yours. ``next_after`` is an
    event id, or an opaque cursor (``evc_...``, usable only by you) when the
    last event scanned was not yours.
    """

    events: list[EventOut]
    next_after: str | None
    has_more: bool


class WebhookEndpointIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    events: Subscriptions
    max_in_flight: MaxInFlight = 1


class WebhookEndpointPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    url: Url | msgspec.UnsetType = msgspec.UNSET
    events: Subscriptions | msgspec.UnsetType = msgspec.UNSET
    max_in_flight: MaxInFlight | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class WebhookEndpointOut(msgspec.Struct, kw_only=True):
    id: str
    url: str
    events: list[str]
    max_in_flight: int
    enabled: bool
    owner_user_id: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    previous_secret_valid_until: dt.datetime | None = None


class WebhookEndpointWithSecret(WebhookEndpointOut, kw_only=True):
    secret: str  # shown only in this answer


class WebhookEndpointList(msgspec.Struct):
    endpoints: list[WebhookEndpointOut]


class RotateSecretIn(msgspec.Struct, forbid_unknown_fields=True):
    """The old secret keeps signing beside the new one for ``overlap_s`` seconds."""

    overlap_s: Annotated[int, Meta(ge=0, le=30 * 86400)] = 86_400


class AttemptOut(msgspec.Struct):
    attempt: int
    at: dt.datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(msgspec.Struct, kw_only=True):
    id: int
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    history: list[AttemptOut]


class DeliveryPage(msgspec.Struct):
    deliveries: list[DeliveryOut]
    next_after: int | None


class RetryOut(msgspec.Struct):
    id: int
    status: Literal["pending"]


DeviceToken = Annotated[
    str,
    Meta(
        min_length=8,
        max_length=4096,
        pattern=r"^[A-Za-z0-9_:.\-]+$(?!\n)",
        description="APNs device token (hex) or FCM registration token",
    ),
]


class DeviceIn(msgspec.Struct, forbid_unknown_fields=True):
    platform: Literal["apns", "fcm"]
    token: DeviceToken
    events: Subscriptions = msgspec.field(
        default_factory=lambda: ["transfer.posted", "transfer.pending"]
    )


class DevicePatch(msgspec.Struct, forbid_unknown_fields=True):
    events: Subscriptions


class DeviceOut(msgspec.Struct, kw_only=True):
    id: str
    platform: str
    token_last4: str
    events: list[str]
    created_at: dt.datetime


class DeviceList(msgspec.Struct):
    devices: list[DeviceOut]


class InboundEvent(msgspec.Struct):
    """What a provider sends: the same envelope we send."""

    # No control characters: they have no place in an id, and PostgreSQL refuses NUL.
    id: Annotated[str, Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$(?!\n)")]
    type: Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$(?!\n)")]
    created: int
    data: dict[str, Any]


class InboundAck(msgspec.Struct):
    id: int  # our record of it
    status: Literal["accepted"]
    handled_by: str | None


class InboundRecordOut(msgspec.Struct, kw_only=True):
    """One inbound webhook as we recorded it: accepted (and which handler took it) or
    refused (and why). The payload stays sealed: a provider's event may name people."""

    id: int
    provider: str
    event_id: str | None
    event_type: str | None
    signed_at: int | None  # the signature's unix time
    received_at: dt.datetime
    status: Literal["accepted", "refused"]
    reason: str | None  # the refusal's problem code
    handled_at: dt.datetime | None
    handler: str | None


class InboundRecordPage(msgspec.Struct):
    """Newest first; pass ``next_before`` as ``before`` for the next page."""

    webhooks: list[InboundRecordOut]
    next_before: int | None


NOTIFY_TYPES = (
    InboundRecordOut,
    InboundRecordPage,
    EventOut,
    EventPage,
    WebhookEndpointIn,
    WebhookEndpointPatch,
    WebhookEndpointOut,
    WebhookEndpointWithSecret,
    WebhookEndpointList,
    RotateSecretIn,
    DeliveryOut,
    DeliveryPage,
    RetryOut,
    DeviceIn,
    DevicePatch,
    DeviceOut,
    DeviceList,
    InboundEvent,
    InboundAck,
)
