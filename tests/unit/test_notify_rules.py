"""Pure rules of the notifier: which deliveries may start, backoff, event ids, URLs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from paynode.actors.notify.destinations import DestinationError, check_url
from paynode.actors.notify.push import apns_request
from paynode.domain.notify.outbox import Source
from paynode.domain.notify.schedule import backoff_s, ready
from paynode.storage.events import Event, EventRef, derived_id, event_id, parse_event_id


@dataclass
class D:
    id: int
    keys: tuple[str, ...]
    due: float = 0.0


def test_strict_order_with_one_in_flight() -> None:
    q = [D(1, ("a",)), D(2, ("b",)), D(3, ("a",))]
    assert [d.id for d in ready(q, set(), 1, now=1.0)] == [1]
    assert ready(q, {1}, 1, now=1.0) == []  # nothing else while the head is out
    q[0].due = 5.0  # the head failed and waits: everything behind it waits too
    assert ready(q, set(), 1, now=1.0) == []
    assert [d.id for d in ready(q, set(), 1, now=5.0)] == [1]


def test_more_in_flight_keeps_order_per_account() -> None:
    q = [D(1, ("a", "b")), D(2, ("c",)), D(3, ("b", "d")), D(4, ("e",)), D(5, ("c",))]
    # 3 shares b with 1, 5 shares c with 2: they wait; 2 and 4 are unrelated.
    assert [d.id for d in ready(q, set(), 4, now=0.0)] == [1, 2, 4]
    assert [d.id for d in ready(q, set(), 2, now=0.0)] == [1, 2]
    # 1 in flight: 3 still waits for it; a failed 2 (not due) still holds back 5.
    q[1].due = 9.0
    assert [d.id for d in ready(q, {1}, 4, now=0.0)] == [4]
    assert ready(q, {1, 4}, 2, now=0.0) == []


def test_backoff_is_exponential_capped_and_jittered() -> None:
    assert backoff_s(1, 1.0, 3600, rand=lambda: 0.0) == 0.5
    assert backoff_s(1, 1.0, 3600, rand=lambda: 1.0) == 1.0
    assert backoff_s(4, 1.0, 3600, rand=lambda: 1.0) == 8.0
    assert backoff_s(30, 1.0, 3600, rand=lambda: 1.0) == 3600
    assert backoff_s(10_000, 1.0, 60, rand=lambda: 0.5) == 45.0  # no overflow
    with pytest.raises(AssertionError):
        backoff_s(0, 1.0, 60)


def test_event_ids_are_time_ordered_and_distinct_per_subject() -> None:
    a, b = event_id(1_700_000_000_000_000_000, "t1"), event_id(1_700_000_000_000_000_000, "t2")
    assert a != b and len(a) == len(b) == 36
    assert event_id(1_700_000_000_000_000_001, "t1") > a
    assert a.startswith("evt_") and int(a[4:20], 16) == 1_700_000_000_000_000_000


def test_derived_event_ids_name_their_row() -> None:
    assert derived_id(Source.TRANSFERS, "t-1") == "evt_t_t-1"
    assert derived_id(Source.ACCOUNTS, "acct:1") == "evt_a_acct:1"
    expiry = derived_id(Source.TRANSFERS, "~expired:ach:pay.1")
    assert parse_event_id(expiry) == EventRef(Source.TRANSFERS, "~expired:ach:pay.1")
    assert parse_event_id("evt_a_acct:1") == EventRef(Source.ACCOUNTS, "acct:1")
    stored = event_id(1, "x")
    assert parse_event_id(stored) == EventRef(Source.EVENTS, stored)
    longest = "evt_t_" + "x" * 128
    assert parse_event_id(longest) == EventRef(Source.TRANSFERS, "x" * 128)
    for bad in ("", "evt_", "evt_t_", "evt_a_", "evt_nope", "evt_" + "g" * 32, "evt_" + "a" * 31,
                "evt_" + "A" * 32, "evt_t_a/b", "evt_t_a b", "evt_x_abc", longest + "x",
                "evt_t_\x00", "EVT_t_a"):  # fmt: skip
        assert parse_event_id(bad) is None, bad
    with pytest.raises(AssertionError):
        derived_id(Source.TRANSFERS, "has space")


def test_apns_collapse_id_fits_for_every_event_id() -> None:
    def collapse(eid: str) -> str:
        body = {"transfer": {"id": "t", "amount": 1, "currency": "USD"}}
        return apns_request("tok", Event(eid, "transfer.posted", 0, body), "topic")["headers"][
            "apns-collapse-id"
        ]

    short = derived_id(Source.TRANSFERS, "t-1")
    assert collapse(short) == short  # an id that fits is used as is
    long_a = derived_id(Source.TRANSFERS, "~expired:ach-settle:" + "p" * 64)
    long_b = derived_id(Source.TRANSFERS, "~expired:ach-settle:" + "p" * 63 + "q")
    assert len(collapse(long_a).encode()) <= 64
    assert collapse(long_a) == collapse(long_a) != collapse(long_b)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://hooks.example.com/x", None),
        ("http://hooks.example.com/x", "invalid_url"),  # https only in production
        ("https://user:pw@hooks.example.com/", "invalid_url"),
        ("https://hooks.example.com/#frag", "invalid_url"),
        ("ftp://hooks.example.com/", "invalid_url"),
        ("https:///nohost", "invalid_url"),
        ("https://127.0.0.1/x", "destination_not_allowed"),
        ("https://10.1.2.3/x", "destination_not_allowed"),
        ("https://192.168.0.1/x", "destination_not_allowed"),
        ("https://169.254.169.254/latest", "destination_not_allowed"),
        ("https://[::1]/x", "destination_not_allowed"),
        ("https://[fd00::1]/x", "destination_not_allowed"),
        ("https://localhost/x", "destination_not_allowed"),
        ("https://a.localhost/x", "destination_not_allowed"),
        ("https://" + "a" * 2050 + ".com/", "invalid_url"),
    ],
)
def test_endpoint_urls(url: str, code: str | None) -> None:
    if code is None:
        assert check_url(url, allow_private=False) == url
        return
    with pytest.raises(DestinationError) as e:
        check_url(url, allow_private=False)
    assert e.value.code == code
    assert url not in str(e.value)
