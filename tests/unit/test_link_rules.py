"""The pure rules of bank linking (domain/rails/link.py) and the simulator's test banks."""

from __future__ import annotations

import asyncio

import pytest

from paynode.actors.aggregator_sim import INSTITUTIONS, AggregatorSimulator
from paynode.domain.rails import link as rules
from paynode.domain.rails.nacha import aba_valid
from paynode.storage import bank_directory


@pytest.mark.parametrize(
    ("kind", "code", "error", "action"),
    [
        ("ITEM", "ERROR", "ITEM_LOGIN_REQUIRED", "login_required"),
        ("ITEM", "ERROR", "INSTITUTION_DOWN", "ignore"),
        ("ITEM", "ERROR", None, "ignore"),
        ("ITEM", "LOGIN_REPAIRED", None, "repaired"),
        ("ITEM", "PENDING_EXPIRATION", None, "expiring"),
        ("ITEM", "USER_PERMISSION_REVOKED", None, "revoke"),
        ("TRANSACTIONS", "DEFAULT_UPDATE", None, "refresh"),
        ("TRANSACTIONS", "SYNC_UPDATES_AVAILABLE", None, "refresh"),
        ("ITEM", "WEBHOOK_UPDATE_ACKNOWLEDGED", None, "ignore"),
        ("HOLDINGS", "DEFAULT_UPDATE", None, "ignore"),
    ],
)
def test_what_a_webhook_asks(kind: str, code: str, error: str | None, action: str) -> None:
    assert rules.action_for(kind, code, error) == action


def test_item_states() -> None:
    assert rules.next_status("active", "login_required") == "login_required"
    assert rules.next_status("login_required", "repaired") == "active"
    assert rules.next_status("login_required", "refresh") == "login_required"
    assert rules.next_status("active", "revoke") == "revoked"
    for closed in ("revoked", "removed"):  # a closed item stays closed
        for action in ("login_required", "repaired", "refresh", "revoke", "expiring"):
            assert rules.next_status(closed, action) == closed  # type: ignore[arg-type]
        assert rules.after_read(closed, None) == closed
    assert rules.after_read("login_required", None) == "active"
    assert rules.after_read("active", rules.ITEM_LOGIN_REQUIRED) == "login_required"
    assert rules.after_read("active", "INTERNAL_SERVER_ERROR") == "active"
    assert rules.usable_for_payments("active")
    assert not any(rules.usable_for_payments(s) for s in ("login_required", "revoked", "removed"))


def test_test_institutions_are_real_looking_banks() -> None:
    directory = bank_directory.load()
    for name, accounts in INSTITUTIONS.values():
        assert name and accounts
        for _, subtype, routing, number, available, current in accounts:
            assert aba_valid(routing) and routing in directory, routing
            assert subtype in ("checking", "savings") and number.isdigit()
            assert 4 <= len(number) <= 17
            assert isinstance(available, int) and isinstance(current, int)


def test_simulator_tokens_are_single_user_and_exchange_is_repeatable() -> None:
    sim = AggregatorSimulator("http://127.0.0.1:9", "secret", 600)

    async def run() -> None:
        made = rules.decode_answer(await sim.create_link_token("u1", None))
        assert made.token is not None and made.error is None
        link = made.token.link_token
        other = rules.decode_answer(await sim.sandbox_public_token(link, "ins_1", "u2"))
        assert other.error == rules.INVALID_LINK_TOKEN  # not u2's, and not spent by u2
        bad = rules.decode_answer(await sim.sandbox_public_token(link, "ins_x", "u1"))
        assert bad.error == rules.INVALID_INSTITUTION
        pub = rules.decode_answer(await sim.sandbox_public_token(link, "ins_1", "u1"))
        assert pub.public_token is not None
        reused = rules.decode_answer(await sim.sandbox_public_token(link, "ins_1", "u1"))
        assert reused.error == rules.INVALID_LINK_TOKEN  # one login per link token
        stolen = rules.decode_answer(await sim.exchange(pub.public_token, "u2"))
        assert stolen.error == rules.INVALID_PUBLIC_TOKEN
        first = rules.decode_answer(await sim.exchange(pub.public_token, "u1")).exchanged
        second = rules.decode_answer(await sim.exchange(pub.public_token, "u1")).exchanged
        assert first is not None and first == second
        read = rules.decode_answer(await sim.accounts(first.access_token))
        assert [a.mask for a in read.accounts] == ["0000", "1111"]
        await sim.stop()

    asyncio.run(run())
