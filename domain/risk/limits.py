"""Send limits by KYC level: pure, configuration-driven (``default_limits.json`` is the seed).

A user's payments are limited per transaction, per UTC day and per UTC month,
by the user's KYC status. The totals count every payment of the user that
has not failed (including those waiting for a code or a review), in the
limits' currency. A limit of 0 forbids sending at that level. Payments in
another currency are not sized here: the risk rules make them HIGH instead
(``currency_unrated``), so they step up rather than pass unmeasured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

DEFAULT_LIMITS = Path(__file__).with_name("default_limits.json")
KYC_LEVELS = ("unverified", "pending", "verified", "rejected")

PER_TRANSACTION = "limit_per_transaction"
DAILY = "limit_daily"
MONTHLY = "limit_monthly"

Minor = Annotated[int, msgspec.Meta(ge=0)]


class LimitsError(ValueError):
    """The limits file is missing, is not JSON, or breaks the schema."""


class Level(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    per_transaction: Minor
    daily: Minor
    monthly: Minor


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$(?!\n)")]
    levels: dict[str, Level]

    def __post_init__(self) -> None:
        # Every KYC status needs its row: a status without limits must not mean "unlimited".
        if missing := set(KYC_LEVELS) - set(self.levels):
            raise ValueError(f"levels: missing {sorted(missing)}")


class Usage(msgspec.Struct, frozen=True):
    """The user's sends so far, in the limits' currency, excluding this payment."""

    today: int
    month: int


class Refusal(msgspec.Struct, frozen=True):
    code: str
    limit: int  # minor units
    remaining: int  # what could still be sent under this limit


def load_limits(path: Path | None = None) -> Limits:
    path = DEFAULT_LIMITS if path is None else path
    try:
        return msgspec.json.decode(path.read_bytes(), type=Limits)
    except (OSError, msgspec.DecodeError) as e:
        raise LimitsError(f"limits {path}: {e}") from e


def check(amount: int, currency: str, kyc_status: str, usage: Usage, cfg: Limits) -> Refusal | None:
    """The first limit this payment would break, or None."""
    assert amount > 0, amount
    if currency != cfg.currency:
        return None
    return check_many([amount], kyc_status, usage, cfg)


def check_many(amounts: list[int], kyc_status: str, usage: Usage, cfg: Limits) -> Refusal | None:
    """The first limit these sends together would break (amounts in the limits' currency)."""
    if not amounts:
        return None
    assert min(amounts) > 0, amounts
    # Unknown statuses fail closed: they get the strictest level.
    level = cfg.levels.get(kyc_status, cfg.levels["rejected"])
    if max(amounts) > level.per_transaction:
        return Refusal(PER_TRANSACTION, level.per_transaction, level.per_transaction)
    amount = sum(amounts)
    if usage.today + amount > level.daily:
        return Refusal(DAILY, level.daily, max(0, level.daily - usage.today))
    if usage.month + amount > level.monthly:
        return Refusal(MONTHLY, level.monthly, max(0, level.monthly - usage.month))
    return None
