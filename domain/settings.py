"""Node configuration: one typed struct, read from the environment and CLI flags.

Every limit the node enforces is here, with a default sized for a 2-core
machine; bigger machines raise them through ``PAYNODE_*`` variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8000
    data_dir: str = "./paynode-data"
    # 0 = half the cores, at least one (see shard_count)
    shards: Annotated[int, Meta(ge=0, le=1024)] = 0
    # HTTP front processes of `paynode run` (each its own Ray driver)
    workers: Annotated[int, Meta(ge=1, le=64)] = 1
    # Ray restarts a crashed shard (-1 = always; 0 = never)
    shard_max_restarts: Annotated[int, Meta(ge=-1, le=1_000_000)] = -1
    # How actors reach the HTTP front (bank simulator); "" = host:port
    public_url: str = ""
    # None = embedded PostgreSQL under data_dir
    database_url: str | None = None
    # None = start a local Ray instance
    ray_address: str | None = None
    namespace: str = "paynode"

    # Front: micro-batching toward each shard.
    # Transfers per shard call
    batch_max_items: Annotated[int, Meta(ge=1, le=100_000)] = 8190
    # Wait at most this long to fill a call
    batch_window_ms: Annotated[float, Meta(ge=0, le=1000)] = 2.0
    # Concurrent calls per shard (pipelining)
    batch_max_inflight: Annotated[int, Meta(ge=1, le=64)] = 4
    # Transfers queued per shard before 503 overloaded
    queue_limit: Annotated[int, Meta(ge=1, le=10_000_000)] = 100_000
    # A transfer not answered by then is a 503
    request_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 15.0
    max_body_bytes: Annotated[int, Meta(ge=1024, le=1 << 30)] = 4 * 1024 * 1024
    # Per API process; beyond it 503 overloaded, body unread
    max_inflight_requests: Annotated[int, Meta(ge=1, le=1_000_000)] = 1024
    # Declared body bytes being served
    max_inflight_body_bytes: Annotated[int, Meta(ge=1024, le=1 << 36)] = 64 * 1024 * 1024
    db_pool_size: Annotated[int, Meta(ge=1, le=1000)] = 8

    # Shards: group commit.
    # Rows coalesced into one transaction
    commit_max_rows: Annotated[int, Meta(ge=1, le=10_000_000)] = 65_536
    # How often pendings are checked for timeout
    expiry_interval_ms: Annotated[int, Meta(ge=1, le=60_000)] = 200

    # Analytics and reconciliation.
    # How often committed journal rows are published
    analytics_interval_ms: Annotated[int, Meta(ge=10, le=60_000)] = 250
    # Rows per Parquet segment written
    analytics_max_rows: Annotated[int, Meta(ge=1_000, le=10_000_000)] = 100_000
    # Live segments per table beyond which all are merged
    analytics_max_segments: Annotated[int, Meta(ge=2, le=10_000)] = 64
    analytics_compact: bool = True  # merge segments in tiers; off: never (a forensic copy)
    # Incremental reconciliation; 0 = on demand only
    recon_interval_s: Annotated[float, Meta(ge=0, le=86_400)] = 30.0
    # Every Nth scheduled run is a full one
    recon_full_every: Annotated[int, Meta(ge=1, le=1_000_000)] = 10

    # Notifications: the outbox fan-out and webhook deliveries.
    # How often the outbox is polled when idle
    notify_interval_ms: Annotated[int, Meta(ge=10, le=60_000)] = 200
    # Events fanned out per transaction
    notify_batch: Annotated[int, Meta(ge=1, le=100_000)] = 5_000
    # Per attempt, connect to last byte
    webhook_timeout_s: Annotated[float, Meta(ge=0.1, le=120)] = 10.0
    # Then the delivery is dead (replay by hand)
    webhook_max_attempts: Annotated[int, Meta(ge=1, le=100)] = 8
    # 1, 2, 4 ... s (half of it jitter)
    webhook_backoff_base_s: Annotated[float, Meta(gt=0, le=86_400)] = 1.0
    webhook_backoff_cap_s: Annotated[float, Meta(gt=0, le=86_400)] = 3600.0
    # Requests in flight over all endpoints
    webhook_max_concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 64
    # Pending deliveries per endpoint looked at per pass
    webhook_window: Annotated[int, Meta(ge=1, le=10_000)] = 200
    webhook_allow_private: bool = False  # allow http:// and loopback/private endpoints (dev)
    # Inbound: JSON {"provider": "signing secret"}; never printed
    webhook_providers: str = ""
    # Inbound signature timestamp window (replays)
    inbound_tolerance_s: Annotated[int, Meta(ge=1, le=3600)] = 300

    # ACH: our bank (the ODFI), the cutoff, and the simulated bank used without a real one.
    # 9 digits with a valid check digit
    ach_odfi_routing: str = "011000015"
    # On the receiver's statement (<= 16)
    ach_company_name: Annotated[str, Meta(min_length=1, max_length=16)] = "PAYNODE"
    # 10 characters, assigned by the ODFI
    ach_company_id: Annotated[str, Meta(min_length=10, max_length=10)] = "1000000001"
    # Build and send a NACHA file; 0 = on demand only
    ach_cutoff_interval_s: Annotated[float, Meta(ge=0, le=86_400)] = 60.0
    bank_simulator: bool = True  # answer our files with the simulator (no real bank here)
    # How long the simulated bank takes to settle or return
    bank_sim_delay_s: Annotated[float, Meta(ge=0, le=3600)] = 2.0
    # JSON {"account number": "R01"}; "" = the built-in table
    bank_sim_returns: str = ""

    # Risk and compliance: files in the layouts of actors/risk/ ("" = the shipped seeds).
    # JSON rules table (actors/risk/default_rules.json)
    risk_rules: str = ""
    # JSON send limits by KYC level (actors/risk/default_limits.json)
    risk_limits: str = ""
    # OFAC SDN CSV (sdn.csv layout); "" = the fictional sample list
    sanctions_sdn: str = ""
    # OFAC ALT CSV (alt.csv layout): aliases; "" = the sample's
    sanctions_alt: str = ""
    # Name similarity (0..1) that counts as a match
    sanctions_threshold: Annotated[float, Meta(ge=0.5, le=1.0)] = 0.90
    # A step-up code's life
    otp_max_age_s: Annotated[int, Meta(ge=30, le=3600)] = 300
    # Codes tried per challenge before it locks
    otp_max_attempts: Annotated[int, Meta(ge=1, le=20)] = 5

    def analytics_path(self) -> Path:
        return self.data_path() / "analytics"

    # Identity and access.
    # Bootstrap admin key (PAYNODE_API_KEY); never printed
    api_key: Annotated[str, Meta(min_length=16)] | None = None
    # Keyring file; "" = <data_dir>/keyring.json (see node/keyring.py)
    keyring: str = ""
    access_token_ttl_s: Annotated[int, Meta(ge=60, le=86_400)] = 900
    refresh_token_ttl_s: Annotated[int, Meta(ge=60, le=365 * 86_400)] = 30 * 86400
    # API key and session lookups; bounds revocation lag elsewhere
    auth_cache_s: Annotated[float, Meta(ge=0, le=300)] = 5.0
    # Requests per second per user or API key
    rate_per_s: Annotated[float, Meta(gt=0, le=1e9)] = 5000.0
    rate_burst: Annotated[int, Meta(ge=1, le=1_000_000_000)] = 10_000
    # Requests per second per client address
    ip_rate_per_s: Annotated[float, Meta(gt=0, le=1e9)] = 10_000.0
    ip_rate_burst: Annotated[int, Meta(ge=1, le=1_000_000_000)] = 20_000
    # Register/login/refresh per client address (guessing)
    auth_rate_per_s: Annotated[float, Meta(gt=0, le=1e9)] = 5.0
    auth_rate_burst: Annotated[int, Meta(ge=1, le=1_000_000_000)] = 20
    # Comma-separated origins allowed by browsers; "" = none
    cors_origins: str = ""

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={_redacted(f, getattr(self, f))}" for f in self.__struct_fields__)
        return f"Settings({fields})"

    def providers(self) -> dict[str, str]:
        """Inbound webhook providers and their signing secrets."""
        if not self.webhook_providers:
            return {}
        try:
            return msgspec.json.decode(self.webhook_providers, type=dict[str, str])
        except msgspec.DecodeError as e:
            raise ValueError("webhook_providers is not a JSON object of strings") from e

    def front_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def shard_count(self) -> int:
        """``shards``, or half the cores (at least one) when 0.

        A shard is one process, and a call between two shards costs about a
        millisecond of CPU on each side: the other half of the cores serve the
        fronts and PostgreSQL. Measured on 2 cores (benchmarks/README.md): one
        shard served 3,600-3,900 single requests/s at 340-380 us of node CPU each,
        two shards 2,900-3,100/s at 480-520 us; batch throughput was the same.
        """
        return self.shards if self.shards > 0 else max(1, _cores() // 2)

    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


def _redacted(field: str, value: object) -> str:
    if field in ("api_key", "webhook_providers") and value:
        return "<redacted>"
    if field == "database_url" and isinstance(value, str):
        return repr(_without_password(value))
    return repr(value)


def _without_password(url: str) -> str:
    """A database URL as it may be printed: the password (if any) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


_ENV_PREFIX = "PAYNODE_"


def from_env(**overrides: object) -> Settings:
    """Defaults, then ``PAYNODE_<FIELD>`` / ``DATABASE_URL`` / ``RAY_ADDRESS``, then overrides.

    Raises ``ValueError`` naming the setting (and its variable) that is out of bounds."""
    values: dict[str, object] = {}
    for name in Settings.__struct_fields__:
        raw = os.environ.get(_ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = raw
    if os.environ.get("DATABASE_URL"):
        values["database_url"] = os.environ["DATABASE_URL"]
    if os.environ.get("RAY_ADDRESS"):
        values["ray_address"] = os.environ["RAY_ADDRESS"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as e:
        raise ValueError("invalid configuration: " + _explain(str(e))) from None
    _check(settings)
    return settings


def _explain(message: str) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.workers`" as "workers must be `int` >= 1
    (PAYNODE_WORKERS)". The value itself is never echoed: it may be a secret."""
    what, _, where = message.partition(" - at `$.")
    name = where.rstrip("`")
    if not name:
        return message
    rule = what.removeprefix("Expected ").removeprefix("Object ")
    return f"{name} must be {rule} ({_ENV_PREFIX}{name.upper()})"


def _check(s: Settings) -> None:
    """What the bounds next to each field cannot say: rules across fields, and formats."""
    problems = []
    if s.max_inflight_body_bytes < s.max_body_bytes:
        problems.append("max_inflight_body_bytes must be >= max_body_bytes")
    if s.queue_limit < s.batch_max_items:
        problems.append("queue_limit must be >= batch_max_items")
    if s.refresh_token_ttl_s < s.access_token_ttl_s:
        problems.append("refresh_token_ttl_s must be >= access_token_ttl_s")
    if s.webhook_backoff_cap_s < s.webhook_backoff_base_s:
        problems.append("webhook_backoff_cap_s must be >= webhook_backoff_base_s")
    from paynode.domain.rails.nacha import aba_valid

    if not aba_valid(s.ach_odfi_routing):
        problems.append("ach_odfi_routing must be a 9-digit routing number (ABA check digit)")
    try:
        providers = s.providers()
    except ValueError:
        problems.append('webhook_providers must be JSON {"name": "secret"}')
    else:
        if any(len(v) < 16 for v in providers.values()):
            problems.append("webhook_providers secrets must be at least 16 characters")
    if problems:
        raise ValueError("invalid configuration: " + "; ".join(problems))
