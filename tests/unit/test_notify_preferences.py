"""Quiet hours arithmetic (across midnight, across DST changes) and preference decisions."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from paynode.domain.notify.preferences import (
    DEFAULT,
    InvalidPreferences,
    Preferences,
    QuietHours,
    channels_for,
    check,
    decide,
    quiet_until,
)

UTC = dt.UTC


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


NIGHT_PARIS = QuietHours(start="22:00", end="07:00", time_zone="Europe/Paris")


def test_outside_quiet_hours_is_none() -> None:
    # 12:00 in Paris (UTC+1 in January).
    assert quiet_until(_utc(2026, 1, 15, 11, 0), NIGHT_PARIS) is None
    # 21:59 local: not yet.
    assert quiet_until(_utc(2026, 1, 15, 20, 59), NIGHT_PARIS) is None
    # 07:00 local exactly: over (the window is [start, end)).
    assert quiet_until(_utc(2026, 1, 16, 6, 0), NIGHT_PARIS) is None


def test_across_midnight_before_and_after() -> None:
    end = _utc(2026, 1, 16, 6, 0)  # 07:00 Paris on the 16th
    assert quiet_until(_utc(2026, 1, 15, 21, 0), NIGHT_PARIS) == end  # 22:00 local, start
    assert quiet_until(_utc(2026, 1, 15, 23, 30), NIGHT_PARIS) == end  # 00:30 local
    assert quiet_until(_utc(2026, 1, 16, 5, 59), NIGHT_PARIS) == end  # 06:59 local


def test_same_day_window() -> None:
    lunch = QuietHours(start="12:00", end="14:00", time_zone="America/New_York")
    # 13:00 EST = 18:00 UTC.
    assert quiet_until(_utc(2026, 1, 15, 18, 0), lunch) == _utc(2026, 1, 15, 19, 0)
    assert quiet_until(_utc(2026, 1, 15, 19, 0), lunch) is None
    assert quiet_until(_utc(2026, 1, 15, 16, 59), lunch) is None


def test_spring_forward_night_ends_at_local_seven() -> None:
    # Paris moves from UTC+1 to UTC+2 at 02:00 local on 2026-03-29: 07:00 is 05:00 UTC.
    assert quiet_until(_utc(2026, 3, 28, 23, 0), NIGHT_PARIS) == _utc(2026, 3, 29, 5, 0)
    # The night began at 22:00 UTC+1 (21:00 UTC): inside.
    assert quiet_until(_utc(2026, 3, 28, 21, 0), NIGHT_PARIS) == _utc(2026, 3, 29, 5, 0)


def test_fall_back_night_ends_at_local_seven() -> None:
    # Paris moves from UTC+2 to UTC+1 at 03:00 local on 2026-10-25: 07:00 is 06:00 UTC.
    assert quiet_until(_utc(2026, 10, 24, 21, 0), NIGHT_PARIS) == _utc(2026, 10, 25, 6, 0)
    # 05:30 UTC is 06:30 local: still quiet; the night lasted 10 hours.
    assert quiet_until(_utc(2026, 10, 25, 5, 30), NIGHT_PARIS) == _utc(2026, 10, 25, 6, 0)


def test_end_inside_the_spring_gap() -> None:
    # 01:00-02:30 New York on 2026-03-08: 02:30 does not exist (02:00 -> 03:00 EDT).
    qh = QuietHours(start="01:00", end="02:30", time_zone="America/New_York")
    until = quiet_until(_utc(2026, 3, 8, 6, 30), qh)  # 01:30 EST
    # Read with the offset before the jump: 02:30 EST = 07:30 UTC = 03:30 EDT, after the gap.
    assert until == _utc(2026, 3, 8, 7, 30)


def test_decide_opt_outs_channels_and_urgency() -> None:
    now = _utc(2026, 1, 15, 23, 0)  # 00:00 in Paris: quiet
    prefs = Preferences(
        channels=["email", "sms"],
        opt_outs={"marketing.promo": ["email"], "*": ["sms"]},
        quiet_hours=NIGHT_PARIS,
    )
    assert decide(prefs, "marketing.promo", "email", False, now).reason == "opted_out"
    assert decide(prefs, "payment.received", "sms", True, now).reason == "opted_out"
    assert decide(prefs, "payment.received", "push", False, now).reason == "channel_disabled"
    waits = decide(prefs, "payment.received", "email", False, now)
    assert waits.verdict == "wait" and waits.until == _utc(2026, 1, 16, 6, 0)
    assert decide(prefs, "payment.received", "email", True, now).verdict == "send"
    assert decide(DEFAULT, "anything", "push", False, now).verdict == "send"


def test_channels_for_orders_by_preference() -> None:
    prefs = Preferences(channels=["sms", "email"])
    assert channels_for(prefs, None) == ["sms", "email"]
    assert channels_for(prefs, ["email", "push", "sms", "email"]) == ["sms", "email", "push"]


def test_check_refuses_meaningless_preferences() -> None:
    check(DEFAULT)
    for bad, field in [
        (Preferences(channels=["email", "email"]), "channels"),
        (Preferences(opt_outs={"Bad Type": ["email"]}), "opt_outs"),
        (Preferences(quiet_hours=QuietHours(start="01:00", end="01:00", time_zone="UTC")),
         "quiet_hours"),
        (Preferences(quiet_hours=QuietHours(start="01:00", end="02:00", time_zone="Mars/Base")),
         "quiet_hours.time_zone"),
        (Preferences(quiet_hours=QuietHours(start="01:00", end="02:00",
                                            time_zone="../../etc/passwd")),
         "quiet_hours.time_zone"),
    ]:  # fmt: skip
        with pytest.raises(InvalidPreferences) as e:
            check(bad)
        assert e.value.field == field


def test_decoding_bounds() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"channels": []}', type=Preferences)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"channels": ["fax"]}', type=Preferences)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(
            b'{"quiet_hours": {"start": "24:00", "end": "07:00", "time_zone": "UTC"}}',
            type=Preferences,
        )
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"locale": "english"}', type=Preferences)
