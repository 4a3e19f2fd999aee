"""The seed risk table, its boundaries, and the validation of rules files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from paynode.domain.risk.rules import (
    DEFAULT_RULES,
    Decision,
    RiskConfig,
    RiskConfigError,
    RiskInput,
    load_rules,
    parse_rules,
    score,
)

CFG = load_rules()
QUIET = RiskInput(
    amount=1_000,
    currency="USD",
    payments_today=0,
    amount_today=0,
    sanctions_hit=False,
    kyc_status="verified",
    new_payee=False,
    new_device=False,
)


def run(cfg: RiskConfig = CFG, **changes: Any) -> Decision:
    return score(msgspec.structs.replace(QUIET, **changes), cfg)


def rules_of(d: Decision) -> list[str]:
    return [r.rule for r in d.reasons]


def seed() -> dict[str, Any]:
    return json.loads(DEFAULT_RULES.read_text())


def test_quiet_payment_scores_zero() -> None:
    assert run() == Decision(0, "LOW", [])


# Each seed rule alone: (changes, rule id, points, level).
SINGLE = [
    ({"amount": 500_001}, "amount_over_5000", 30, "LOW"),
    ({"payments_today": 5}, "payments_per_day", 25, "LOW"),  # this one is the 6th today
    ({"amount_today": 1_999_001}, "amount_per_day", 25, "LOW"),  # + 1,000 -> 2,000,001
    ({"sanctions_hit": True}, "sanctions_hit", 100, "HIGH"),
    ({"kyc_status": "unverified"}, "kyc_not_verified", 40, "LOW"),
    ({"new_payee": True}, "new_payee", 10, "LOW"),
    ({"new_device": True}, "new_device", 10, "LOW"),
    ({"currency": "EUR"}, "currency_unrated", 50, "HIGH"),
]


@pytest.mark.parametrize(("changes", "rule", "points", "level"), SINGLE)
def test_each_rule_alone(changes: dict[str, Any], rule: str, points: int, level: str) -> None:
    d = run(**changes)
    assert rules_of(d) == [rule]
    assert (d.score, d.level, d.reasons[0].points) == (points, level, points)
    assert d.reasons[0].detail


@pytest.mark.parametrize("status", ["unverified", "pending", "rejected", "", "VERIFIED", "bogus"])
def test_any_kyc_status_but_verified_fails_closed(status: str) -> None:
    assert rules_of(run(kyc_status=status)) == ["kyc_not_verified"]


# Exactly at a limit is not above it.
BOUNDARY = [
    ({"amount": 500_000}, []),
    ({"amount": 500_001}, ["amount_over_5000"]),
    ({"amount": 1_000_000}, ["amount_over_5000"]),
    ({"amount": 1_000_001}, ["amount_over_5000", "amount_over_10000"]),
    ({"payments_today": 4}, []),  # this one is the 5th: not more than 5
    ({"payments_today": 5}, ["payments_per_day"]),
    ({"amount_today": 1_999_000}, []),  # total exactly 2,000,000
    ({"amount_today": 1_999_001}, ["amount_per_day"]),
]


@pytest.mark.parametrize(("changes", "rules"), BOUNDARY)
def test_boundaries(changes: dict[str, Any], rules: list[str]) -> None:
    assert rules_of(run(**changes)) == rules


COMBOS = [
    ({"amount": 1_000_001}, 50, "HIGH"),
    ({"kyc_status": "pending", "new_payee": True}, 50, "HIGH"),
    ({"new_payee": True, "new_device": True}, 20, "LOW"),
    ({"amount": 500_001, "new_payee": True}, 40, "LOW"),
    ({"amount": 500_001, "new_payee": True, "new_device": True}, 50, "HIGH"),
    ({"payments_today": 5, "amount_today": 1_999_001}, 50, "HIGH"),
    ({"amount": 500_001, "new_payee": True, "payments_today": 3}, 40, "LOW"),
    # 2,000,001 alone is above both tiers and the daily total
    ({"amount": 2_000_001}, 75, "HIGH"),
    (
        {
            "amount": 2_000_001,
            "payments_today": 9,
            "sanctions_hit": True,
            "kyc_status": "rejected",
            "new_payee": True,
            "new_device": True,
        },
        260,
        "HIGH",
    ),
    # another currency is not sized against USD limits, only flagged
    ({"currency": "JPY", "amount": 2_000_001, "amount_today": 5_000_000}, 50, "HIGH"),
]


@pytest.mark.parametrize(("changes", "total", "level"), COMBOS)
def test_combinations(changes: dict[str, Any], total: int, level: str) -> None:
    d = run(**changes)
    assert (d.score, d.level) == (total, level)
    assert d.score == sum(r.points for r in d.reasons)


def test_reasons_carry_no_input_values() -> None:
    d = run(amount=1_234_567, amount_today=7_654_321, payments_today=42,
            kyc_status="pending", new_payee=True, new_device=True, sanctions_hit=True)  # fmt: skip
    text = " ".join(r.detail for r in d.reasons)
    for leak in ("1234567", "7654321", "42", "pending"):
        assert leak not in text


def test_high_threshold_is_inclusive(tmp_path: Path) -> None:
    raw = seed()
    raw["high_at"] = 40
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(raw))
    assert run(load_rules(path), kyc_status="pending").level == "HIGH"
    assert run(kyc_status="pending").level == "LOW"


def test_custom_file_changes_the_result(tmp_path: Path) -> None:
    raw = seed()
    raw["amount_tiers"][0] = {"rule": "amount_over_1000", "above": 100_000, "points": 30}
    raw["new_device"]["points"] = 0  # 0 disables a rule
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(raw))
    cfg = load_rules(path)
    assert run(amount=200_000).score == 0
    d = run(cfg, amount=200_000, new_device=True)
    assert (rules_of(d), d.score) == (["amount_over_1000"], 30)


def test_default_path_is_the_seed() -> None:
    assert load_rules(DEFAULT_RULES) == CFG == load_rules(None)
    assert CFG.high_at == 50


def _mutate(raw: dict[str, Any], path: list[str | int], value: Any) -> None:
    target: Any = raw
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


_DELETE = object()

BAD = [
    (["new_payee", "points"], -1, ">= 0"),
    (["amount_tiers", 0, "points"], -5, ">= 0"),
    (["high_at"], 0, ">= 1"),
    (["payments_per_day", "above"], 0, ">= 1"),
    (["amount_per_day", "above"], -100, ">= 1"),
    (["amount_tiers", 1, "above"], 0, ">= 1"),
    (["amount_tiers", 0, "above"], 5000.01, "Expected `int`"),  # no floats for money
    (["amount_tiers", 0, "above"], "500000", "Expected `int`"),
    (["sanctions_hit", "points"], True, "Expected `int`"),
    (["surprise"], 1, "unknown field `surprise`"),
    (["new_payee", "weight"], 1, "unknown field `weight`"),
    (["amount_tiers", 0, "note"], "x", "unknown field `note`"),
    (["new_device"], _DELETE, "missing required field `new_device`"),
    (["amount_tiers", 1, "rule"], "amount_over_5000", "duplicate rule id"),
    (["amount_tiers", 1, "rule"], "new_payee", "reserved"),
    (["amount_tiers", 1, "rule"], "Amount Over!", "matching regex"),
    (["currency"], "usd", "matching regex"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD)
def test_invalid_config_is_refused(
    tmp_path: Path, path: list[str | int], value: Any, message: str
) -> None:
    raw = seed()
    _mutate(raw, path, value)
    file = tmp_path / "rules.json"
    file.write_text(json.dumps(raw))
    with pytest.raises(RiskConfigError, match=message):
        load_rules(file)


def test_unreadable_or_garbage_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RiskConfigError, match=r"missing\.json"):
        load_rules(tmp_path / "missing.json")
    with pytest.raises(RiskConfigError):
        parse_rules(b"{not json")
    with pytest.raises(RiskConfigError):
        parse_rules(b"[]")
