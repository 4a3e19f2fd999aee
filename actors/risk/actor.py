"""The risk actor: owns the rules, the limits and the sanctions list, and screens names.

It loads and validates the three configuration files once (a bad file stops
the node at start, never a payment later) and keeps the list indexed in
memory, where screening a name costs milliseconds instead of a scan.

Scoring itself is :func:`actors.risk.rules.score`, a pure function of
microseconds. The fronts take the rules from this actor at start and score in
their own process: a Ray call alone costs about 1 ms here, more than the whole
scoring budget. Screening results are stored per user and bank account with
the list's digest, so a name is screened again only when the list changes.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import msgspec

from paynode.domain.risk.limits import DEFAULT_LIMITS, Limits, load_limits
from paynode.domain.risk.rules import DEFAULT_RULES, RiskConfig, load_rules
from paynode.domain.risk.sanctions import (
    SAMPLE_ALT,
    SAMPLE_SDN,
    Match,
    SanctionsList,
    load_list,
    screen,
)

MAX_NAMES = 100  # per screen() call
MAX_NAME_CHARS = 200


class RiskPolicy(msgspec.Struct, frozen=True):
    """What a front needs to decide on its own: the rules, the limits, the list's digest."""

    rules: RiskConfig
    limits: Limits
    list_version: str  # sha256 of the list files: screening results name the list they used
    threshold: float


class Screened(msgspec.Struct, frozen=True):
    matches: list[Match]
    seconds: float


_enc = msgspec.msgpack.Encoder()
decode_policy = msgspec.msgpack.Decoder(RiskPolicy).decode
decode_screened = msgspec.msgpack.Decoder(list[Screened]).decode


def list_digest(*paths: Path | None) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p is not None:
            h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()[:32]


class RiskActor:
    """Run under Ray as ``ray.remote(RiskActor)`` (named ``paynode-risk``)."""

    def __init__(
        self,
        rules_path: str = "",
        limits_path: str = "",
        sdn_path: str = "",
        alt_path: str = "",
        threshold: float = 0.90,
    ) -> None:
        self._rules = load_rules(Path(rules_path) if rules_path else DEFAULT_RULES)
        self._limits = load_limits(Path(limits_path) if limits_path else DEFAULT_LIMITS)
        sdn = Path(sdn_path) if sdn_path else SAMPLE_SDN
        alt = Path(alt_path) if alt_path else (None if sdn_path else SAMPLE_ALT)
        self._list: SanctionsList = load_list(sdn, alt)
        self._version = list_digest(sdn, alt)
        self._threshold = threshold
        self._screened = 0

    async def ping(self) -> bool:
        return True

    async def stop(self) -> None:
        """Nothing to release: rules and the list live in memory only."""

    async def policy(self) -> bytes:
        return _enc.encode(RiskPolicy(self._rules, self._limits, self._version, self._threshold))

    async def screen(self, names: list[str]) -> bytes:
        """Matches for each name, in order (an empty list: no match)."""
        if len(names) > MAX_NAMES:
            raise ValueError(f"at most {MAX_NAMES} names per call")
        out = []
        for name in names:
            t0 = time.perf_counter()
            matches = screen(name[:MAX_NAME_CHARS], self._list, self._threshold) if name else []
            out.append(Screened(matches, time.perf_counter() - t0))
        self._screened += len(names)
        return _enc.encode(out)

    async def stats(self) -> dict[str, int]:
        return {"screened": self._screened, "listed_names": self._list.name_count}
