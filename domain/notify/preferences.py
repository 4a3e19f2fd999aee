"""A user's notification preferences and what they mean for one message: pure.

Preferences hold the channels a user wants, in order; opt-outs per event type
(a notification's type is its template's name), per channel; quiet hours in the
user's own time zone; and a locale for templates. ``decide`` answers, for one
message about to be sent, whether it goes now, waits for the end of quiet hours,
or is suppressed, and why.

Quiet hours are wall-clock times in an IANA zone (``zoneinfo``), so they follow
daylight saving: 22:00-07:00 in Europe/Paris is 22:00-07:00 local in summer and
in winter. A window whose start is after its end runs across midnight.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta

from paynode.domain.notify.channels import CHANNELS, ChannelName

MAX_OPT_OUT_TYPES = 100  # event types a user may opt out of: a bound on the stored row
MAX_TYPE_LENGTH = 64
TYPE_PATTERN = r"^[a-z0-9][a-z0-9_.\-]*$"  # template names: payment.received, otp, ...
ALL_TYPES = "*"  # an opt-out under this key applies to every type
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")

EventType = Annotated[str, Meta(min_length=1, max_length=MAX_TYPE_LENGTH)]
Clock = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]  # "HH:MM", 24 h
Locale = Annotated[str, Meta(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")]  # "en", "fr-CA"


class QuietHours(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    start: Clock  # local time quiet hours begin
    end: Clock  # local time they end; before start: across midnight
    time_zone: Annotated[str, Meta(min_length=1, max_length=64)]  # IANA, e.g. "Europe/Paris"


class Preferences(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The channels notifications go to, in order (the first is the preferred one)
    channels: Annotated[list[ChannelName], Meta(min_length=1, max_length=3)] = msgspec.field(
        default_factory=lambda: list(CHANNELS)
    )
    # Event type (or "*") -> the channels it must not use
    opt_outs: Annotated[dict[EventType, list[ChannelName]], Meta(max_length=MAX_OPT_OUT_TYPES)] = (
        msgspec.field(default_factory=dict)
    )
    quiet_hours: QuietHours | None = None
    locale: Locale = "en"


DEFAULT = Preferences()

Verdict = Literal["send", "wait", "suppress"]


class Decision(msgspec.Struct, frozen=True):
    verdict: Verdict
    reason: str = ""  # suppress: "opted_out" | "channel_disabled"; wait: "quiet_hours"
    until: dt.datetime | None = None  # wait: when quiet hours end (UTC)


class InvalidPreferences(ValueError):
    """Preferences that decode but mean nothing: ``field`` names what is wrong."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(why)
        self.field = field


def check(prefs: Preferences) -> None:
    """Refuse what the types cannot: repeated channels, unknown zones, bad type names."""
    if len(set(prefs.channels)) != len(prefs.channels):
        raise InvalidPreferences("channels", "a channel is listed twice")
    for event_type, channels in prefs.opt_outs.items():
        if event_type != ALL_TYPES and not re.match(TYPE_PATTERN, event_type):
            raise InvalidPreferences("opt_outs", f"not an event type: {event_type[:64]!r}")
        if len(set(channels)) != len(channels):
            raise InvalidPreferences("opt_outs", "a channel is listed twice")
    qh = prefs.quiet_hours
    if qh is not None:
        if qh.start == qh.end:
            raise InvalidPreferences("quiet_hours", "start and end are the same time")
        if zone(qh.time_zone) is None:
            raise InvalidPreferences("quiet_hours.time_zone", "not an IANA time zone")


def zone(name: str) -> ZoneInfo | None:
    """The IANA zone ``name``, or None if there is none by that name."""
    # ZoneInfo reads a path built from the key: refuse anything but a zone name first.
    if not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name) or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _clock(text: str) -> dt.time:
    m = _HHMM.match(text)
    assert m, text
    return dt.time(int(m.group(1)), int(m.group(2)))


def _at(day: dt.date, t: dt.time, tz: ZoneInfo) -> dt.datetime:
    """``t`` on ``day`` in ``tz`` as a UTC instant.

    A wall time skipped by a spring-forward gap (02:30 on the night clocks jump
    from 02:00 to 03:00) is read with the offset before the jump, which lands
    after the gap: quiet hours ending in the gap end when the clocks resume.
    A repeated wall time (autumn) is its first occurrence (``fold=0``).
    """
    return dt.datetime.combine(day, t, tzinfo=tz).astimezone(dt.UTC)


def quiet_until(now: dt.datetime, qh: QuietHours) -> dt.datetime | None:
    """When the quiet period ``now`` falls in ends (UTC), or None if ``now`` is outside.

    ``now`` must be timezone-aware. The window is [start, end) in local wall time;
    with start > end it spans midnight: 22:00-07:00 is quiet from 22:00 to 07:00
    the next morning.
    """
    assert now.tzinfo is not None, "now must be aware"
    tz = zone(qh.time_zone)
    if tz is None:
        return None  # checked when stored; a zone removed from tzdata since then is ignored
    start, end = _clock(qh.start), _clock(qh.end)
    today = now.astimezone(tz).date()
    # The window that may hold ``now`` began today or yesterday (across midnight).
    for began in (today - dt.timedelta(days=1), today):
        lo = _at(began, start, tz)
        ends_on = began if start < end else began + dt.timedelta(days=1)
        hi = _at(ends_on, end, tz)
        if lo <= now < hi:
            return hi
    return None


def decide(
    prefs: Preferences, event_type: str, channel: ChannelName, urgent: bool, now: dt.datetime
) -> Decision:
    """Whether a message of ``event_type`` on ``channel`` goes now, waits or is suppressed.

    A channel the user no longer lists, or one opted out for this type (or for
    every type), suppresses the message. Otherwise a non-urgent message inside
    quiet hours waits for their end; an urgent one (a one-time code, a security
    alert) goes at once.
    """
    if channel not in prefs.channels:
        return Decision("suppress", "channel_disabled")
    if channel in prefs.opt_outs.get(event_type, ()) or channel in prefs.opt_outs.get(
        ALL_TYPES, ()
    ):
        return Decision("suppress", "opted_out")
    if not urgent and prefs.quiet_hours is not None:
        until = quiet_until(now, prefs.quiet_hours)
        if until is not None:
            return Decision("wait", "quiet_hours", until)
    return Decision("send")


def channels_for(prefs: Preferences, requested: list[ChannelName] | None) -> list[ChannelName]:
    """The channels a new notification gets a message on, in the user's order.

    The sender may name channels; each named one gets a message even if the user
    turned it off, so that the refusal is recorded (suppressed, with its reason).
    Without names, the user's channels.
    """
    if not requested:
        return list(prefs.channels)
    order = {c: i for i, c in enumerate(prefs.channels)}
    return sorted(dict.fromkeys(requested), key=lambda c: order.get(c, len(order)))
