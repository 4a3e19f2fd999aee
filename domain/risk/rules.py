"""Risk scoring before a user payment: pure, synchronous, configuration-driven.

The rules are a table in JSON (``default_rules.json`` next to this module is the
seed), decoded with msgspec into :class:`RiskConfig`; changing a threshold or a
weight is a configuration change, not a code change. :func:`score` adds the
points of every rule that fires and compares the sum with ``high_at``:

* ``amount_tiers``: the payment's amount is strictly *above* a tier's limit;
  tiers are cumulative (an amount above 10,000.00 fires both seed tiers);
* ``payments_per_day``: this payment would be number ``above + 1`` or later
  today (``payments_today`` counts the payments *before* this one);
* ``amount_per_day``: today's total including this payment is above the limit;
* ``sanctions_hit``, ``kyc_not_verified`` (any status other than ``verified``,
  so an unknown status fails closed), ``new_payee``, ``new_device``: flags;
* ``currency_unrated``: amount limits are in minor units of ``currency`` only;
  a payment in another currency cannot be sized against them, so instead of
  guessing an exchange rate it gets these points (the seed makes that HIGH).

A rule with 0 points is disabled and never appears in the reasons. Amounts are
``int`` minor units everywhere; a float in the file is refused when decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

DEFAULT_RULES = Path(__file__).with_name("default_rules.json")

Points = Annotated[int, msgspec.Meta(ge=0)]
Limit = Annotated[int, msgspec.Meta(gt=0)]
# Rule ids are stable identifiers stored with decisions and shown to operators.
RuleId = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$(?!\n)")]
Level = Literal["LOW", "HIGH"]

# Ids of the fixed rules; amount tiers name themselves in the configuration.
PAYMENTS_PER_DAY = "payments_per_day"
AMOUNT_PER_DAY = "amount_per_day"
SANCTIONS_HIT = "sanctions_hit"
KYC_NOT_VERIFIED = "kyc_not_verified"
NEW_PAYEE = "new_payee"
NEW_DEVICE = "new_device"
CURRENCY_UNRATED = "currency_unrated"
FIXED_RULES = frozenset(
    {PAYMENTS_PER_DAY, AMOUNT_PER_DAY, SANCTIONS_HIT, KYC_NOT_VERIFIED, NEW_PAYEE, NEW_DEVICE,
     CURRENCY_UNRATED}
)  # fmt: skip
KYC_VERIFIED = "verified"


class RiskConfigError(ValueError):
    """The rules file is missing, is not JSON, or breaks the schema."""


class AmountTier(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rule: RuleId
    above: Limit  # minor units of RiskConfig.currency
    points: Points


class Threshold(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    above: Limit
    points: Points


class Flag(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    points: Points


class RiskConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The rules table. Every key is required: a forgotten rule must not silently vanish.

    The field constraints are checked when decoding; build it with
    :func:`load_rules` or :func:`parse_rules`, not by hand.
    """

    high_at: Limit  # HIGH when score >= high_at
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$(?!\n)")]
    amount_tiers: tuple[AmountTier, ...]
    payments_per_day: Threshold
    amount_per_day: Threshold
    sanctions_hit: Flag
    kyc_not_verified: Flag
    new_payee: Flag
    new_device: Flag
    currency_unrated: Flag

    def __post_init__(self) -> None:
        # Reasons are looked up by rule id downstream, so ids must be unambiguous.
        ids = [t.rule for t in self.amount_tiers]
        if len(set(ids)) != len(ids):
            raise ValueError("amount_tiers: duplicate rule id")
        if clash := FIXED_RULES.intersection(ids):
            raise ValueError(f"amount_tiers: rule id reserved for a fixed rule: {sorted(clash)}")


class RiskInput(msgspec.Struct, frozen=True):
    """What the caller knows about one payment; the daily counters exclude it."""

    amount: int  # minor units
    currency: str
    payments_today: int  # this user's payments today, before this one
    amount_today: int  # minor units, this user's total today in `currency`, before this one
    sanctions_hit: bool
    kyc_status: str
    new_payee: bool  # never paid this payee before
    new_device: bool


class Reason(msgspec.Struct, frozen=True):
    rule: str
    points: int
    detail: str  # describes the rule, never the user or the payee


class Decision(msgspec.Struct, frozen=True):
    score: int
    level: Level
    reasons: list[Reason]


def parse_rules(data: bytes | str) -> RiskConfig:
    try:
        return msgspec.json.decode(data, type=RiskConfig)
    except msgspec.DecodeError as e:  # ValidationError is a subclass
        raise RiskConfigError(f"risk rules: {e}") from e


def load_rules(path: Path | None = None) -> RiskConfig:
    """Read and validate a rules file (the seed table by default)."""
    path = DEFAULT_RULES if path is None else path
    try:
        return msgspec.json.decode(path.read_bytes(), type=RiskConfig)
    except (OSError, msgspec.DecodeError) as e:
        raise RiskConfigError(f"risk rules {path}: {e}") from e


def score(inp: RiskInput, cfg: RiskConfig) -> Decision:
    """Score one payment: runs before every user payment, so no I/O, only comparisons."""
    reasons: list[Reason] = []
    add = reasons.append
    cur = cfg.currency
    if inp.currency == cur:
        for t in cfg.amount_tiers:
            if t.points and inp.amount > t.above:
                add(Reason(t.rule, t.points, f"amount above {t.above} {cur} minor units"))
        d = cfg.amount_per_day
        if d.points and inp.amount_today + inp.amount > d.above:
            add(Reason(AMOUNT_PER_DAY, d.points, f"daily total above {d.above} {cur} minor units"))
    elif cfg.currency_unrated.points:
        add(Reason(CURRENCY_UNRATED, cfg.currency_unrated.points,
                   f"amount limits are set in {cur} only"))  # fmt: skip
    v = cfg.payments_per_day
    if v.points and inp.payments_today + 1 > v.above:
        add(Reason(PAYMENTS_PER_DAY, v.points, f"more than {v.above} payments today"))
    if inp.sanctions_hit and cfg.sanctions_hit.points:
        add(Reason(SANCTIONS_HIT, cfg.sanctions_hit.points, "sanctions screening match"))
    if inp.kyc_status != KYC_VERIFIED and cfg.kyc_not_verified.points:
        add(Reason(KYC_NOT_VERIFIED, cfg.kyc_not_verified.points, "identity not verified"))
    if inp.new_payee and cfg.new_payee.points:
        add(Reason(NEW_PAYEE, cfg.new_payee.points, "first payment to this payee"))
    if inp.new_device and cfg.new_device.points:
        add(Reason(NEW_DEVICE, cfg.new_device.points, "payment from a new device"))
    total = 0
    for r in reasons:
        total += r.points
    return Decision(total, "HIGH" if total >= cfg.high_at else "LOW", reasons)
