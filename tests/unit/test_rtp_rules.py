"""ISO 20022 messages of the RTP rail, and its pure rules (no network, no I/O)."""

from __future__ import annotations

import datetime as dt

import pytest

from paynode.domain.rails import iso20022 as iso
from paynode.domain.rails import rtp_rules as rules

NOW = dt.datetime(2026, 12, 5, 3, 4, 5, tzinfo=dt.UTC)  # a Saturday night: RTP runs 24x7
ALICE = iso.Party("Alice Example", "alice-w", "011000015")
ACME = iso.Party("Acme Utilities", "000777000111", "121000248")


def test_amounts_are_exact_in_both_directions() -> None:
    for minor, text in ((1, "0.01"), (250, "2.50"), (100_000_000, "1000000.00"), (7, "0.07")):
        assert iso.major(minor, "USD") == text
        assert iso.minor(text, "USD") == minor
    assert iso.minor("12", "USD") == 1200 and iso.minor("12.5", "USD") == 1250
    for bad in ("1.001", "1e3", "-1.00", "1,00", "", "0x10", "1.2.3"):
        with pytest.raises(iso.MessageError):
            iso.minor(bad, "USD")
    with pytest.raises(iso.MessageError):
        iso.minor("1.00", "EUR")  # RTP settles USD only


def test_credit_transfer_and_status_round_trip() -> None:
    m = iso.CreditTransfer(message_id="M1", end_to_end_id="E2E1", amount=123_456,
                           currency="USD", debtor=ALICE, creditor=ACME, remittance="invoice 42",
                           created_at=NOW)  # fmt: skip
    text = iso.build_credit_transfer(m)
    assert "pacs.008.001.08" in text and '<IntrBkSttlmAmt Ccy="USD">1234.56<' in text
    assert iso.parse_credit_transfer(text) == m
    s = iso.TransferStatus(message_id="M2", original_message_id="M1",
                           original_end_to_end_id="E2E1", status=iso.REJECTED, reason="AC03",
                           created_at=NOW)  # fmt: skip
    assert iso.parse_transfer_status(iso.build_transfer_status(s)) == s


def test_request_for_payment_and_its_answer_round_trip() -> None:
    r = iso.PaymentRequest(message_id="M3", end_to_end_id="RFP1", amount=500, currency="USD",
                           creditor=ACME, debtor=ALICE, expires_at=NOW + dt.timedelta(days=1),
                           remittance="", created_at=NOW)  # fmt: skip
    assert iso.parse_payment_request(iso.build_payment_request(r)) == r
    a = iso.RequestStatus(message_id="M4", original_message_id="M3",
                          original_end_to_end_id="RFP1", status=iso.ACCEPTED_TECHNICAL,
                          created_at=NOW)  # fmt: skip
    assert iso.parse_request_status(iso.build_request_status(a)) == a


def test_untrusted_messages_are_refused_cleanly() -> None:
    good = iso.build_transfer_status(iso.TransferStatus(
        message_id="M", original_message_id="O", original_end_to_end_id="E",
        status=iso.ACCEPTED_SETTLED, created_at=NOW))  # fmt: skip
    bomb = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]>' + good
    cases = [
        bomb,  # no DTD, so no entity expansion
        "<Document/>",  # not ISO 20022
        good.replace("pacs.002.001.10", "pacs.002.001.03"),  # another version
        good.replace("ACSC", "ZZZZ"),  # an unknown status
        good.replace("ACSC", "RJCT"),  # a rejection without its reason
        good.replace("<MsgId>M</MsgId>", "<MsgId>" + "x" * 36 + "</MsgId>"),  # Max35Text
        good[:-5],  # not well formed
        " " * (iso.MAX_MESSAGE_BYTES + 1),
    ]
    for text in cases:
        with pytest.raises(iso.MessageError):
            iso.parse_transfer_status(text)
    with pytest.raises(iso.MessageError):
        iso.parse_credit_transfer(good)  # a pacs.002 is not a pacs.008


def test_fee_is_integer_and_rounds_up() -> None:
    assert rules.fee(5_000, 25, 0) == 25
    assert rules.fee(5_000, 0, 10) == 5  # 10 bps of $50.00 = 5 cents
    assert rules.fee(1, 0, 1) == 1  # a fraction of a cent is a whole cent
    assert rules.fee(100_000_000, 25, 15) == 25 + 150_000
    assert isinstance(rules.fee(333, 1, 7), int)


def test_limit_and_ids() -> None:
    assert rules.within_limit(rules.NETWORK_LIMIT, rules.NETWORK_LIMIT)
    assert not rules.within_limit(rules.NETWORK_LIMIT + 1, 2 * rules.NETWORK_LIMIT)
    assert not rules.within_limit(1_001, 1_000)
    e2e = rules.end_to_end_id("pay-1")
    assert e2e == rules.end_to_end_id("pay-1") != rules.end_to_end_id("pay-2")
    assert len(e2e) <= 35 and len(rules.message_id("x" * 64)) <= 35
    assert rules.post_transfer_ids("p") != rules.void_transfer_ids("p")
