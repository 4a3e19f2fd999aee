"""Node configuration: one typed struct, read from the environment and CLI flags.

Every limit the node enforces is here, with a default sized for a 2-core
machine; bigger machines raise them through ``PAYNODE_*`` variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class Settings(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./paynode-data"
    shards: int = 0  # 0 = half the cores, at least one (see shard_count)
    workers: int = 1  # HTTP front processes of `paynode run` (each its own Ray driver)
    shard_max_restarts: int = -1  # Ray restarts a crashed shard (-1 = always; 0 = never)
    public_url: str = ""  # how actors reach the HTTP front (bank simulator); "" = host:port
    database_url: str | None = None  # None = embedded PostgreSQL under data_dir
    ray_address: str | None = None  # None = start a local Ray instance
    namespace: str = "paynode"

    # Front: micro-batching toward each shard.
    batch_max_items: int = 8190  # transfers per shard call
    batch_window_ms: float = 2.0  # wait at most this long to fill a call
    batch_max_inflight: int = 4  # concurrent calls per shard (pipelining)
    queue_limit: int = 100_000  # transfers queued per shard before 503 overloaded
    request_timeout_s: float = 15.0  # a transfer not answered by then is a 503
    max_body_bytes: int = 4 * 1024 * 1024
    max_inflight_requests: int = 1024  # per API process; beyond it 503 overloaded, body unread
    max_inflight_body_bytes: int = 64 * 1024 * 1024  # declared body bytes being served
    max_batch_transfers: int = 8190
    db_pool_size: int = 8

    # Shards: group commit.
    commit_max_rows: int = 65_536  # rows coalesced into one transaction
    expiry_interval_ms: int = 200  # how often pendings are checked for timeout

    # Analytics and reconciliation.
    analytics_interval_ms: int = 250  # how often committed journal rows are published
    analytics_max_rows: int = 100_000  # rows per Parquet segment written
    analytics_max_segments: int = 64  # live segments per table beyond which all are merged
    analytics_compact: bool = True  # merge segments in tiers; off: never (a forensic copy)
    recon_interval_s: float = 30.0  # incremental reconciliation; 0 = on demand only
    recon_full_every: int = 10  # every Nth scheduled run is a full one

    # Notifications: the outbox fan-out and webhook deliveries.
    notify_interval_ms: int = 200  # how often the outbox is polled when idle
    notify_batch: int = 5_000  # events fanned out per transaction
    webhook_timeout_s: float = 10.0  # per attempt, connect to last byte
    webhook_max_attempts: int = 8  # then the delivery is dead (replay by hand)
    webhook_backoff_base_s: float = 1.0  # 1, 2, 4 ... s (half of it jitter)
    webhook_backoff_cap_s: float = 3600.0
    webhook_max_concurrency: int = 64  # requests in flight over all endpoints
    webhook_window: int = 200  # pending deliveries per endpoint looked at per pass
    webhook_allow_private: bool = False  # allow http:// and loopback/private endpoints (dev)
    webhook_secret_overlap_s: int = 86_400  # old secret keeps signing after a rotation
    webhook_providers: str = ""  # inbound: JSON {"provider": "signing secret"}; never printed
    inbound_tolerance_s: int = 300  # inbound signature timestamp window (replays)

    # ACH: our bank (the ODFI), the cutoff, and the simulated bank used without a real one.
    ach_odfi_routing: str = "011000015"  # 9 digits with a valid check digit
    ach_company_name: str = "PAYNODE"  # on the receiver's statement (<= 16)
    ach_company_id: str = "1000000001"  # 10 characters, assigned by the ODFI
    ach_cutoff_interval_s: float = 60.0  # build and send a NACHA file; 0 = on demand only
    bank_simulator: bool = True  # answer our files with the simulator (no real bank here)
    bank_sim_delay_s: float = 2.0  # how long the simulated bank takes to settle or return
    bank_sim_returns: str = ""  # JSON {"account number": "R01"}; "" = the built-in table

    # Risk and compliance: files in the layouts of actors/risk/ ("" = the shipped seeds).
    risk_rules: str = ""  # JSON rules table (actors/risk/default_rules.json)
    risk_limits: str = ""  # JSON send limits by KYC level (actors/risk/default_limits.json)
    sanctions_sdn: str = ""  # OFAC SDN CSV (sdn.csv layout); "" = the fictional sample list
    sanctions_alt: str = ""  # OFAC ALT CSV (alt.csv layout): aliases; "" = the sample's
    sanctions_threshold: float = 0.90  # name similarity (0..1) that counts as a match
    otp_max_age_s: int = 300  # a step-up code's life
    otp_max_attempts: int = 5  # codes tried per challenge before it locks

    def analytics_path(self) -> Path:
        return self.data_path() / "analytics"

    # Identity and access.
    api_key: str | None = None  # bootstrap admin key (PAYNODE_API_KEY); never printed
    keyring: str = ""  # keyring file; "" = <data_dir>/keyring.json (see node/keyring.py)
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 86400
    auth_cache_s: float = 5.0  # API key and session lookups; bounds revocation lag elsewhere
    rate_per_s: float = 5000.0  # requests per second per user or API key
    rate_burst: int = 10_000
    ip_rate_per_s: float = 10_000.0  # requests per second per client address
    ip_rate_burst: int = 20_000
    auth_rate_per_s: float = 5.0  # register/login/refresh per client address (guessing)
    auth_rate_burst: int = 20
    cors_origins: str = ""  # comma-separated origins allowed by browsers; "" = none

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
    """Defaults, then ``PAYNODE_<FIELD>`` / ``DATABASE_URL`` / ``RAY_ADDRESS``, then overrides."""
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
    settings = msgspec.convert(values, Settings, strict=False)
    _check(settings)
    return settings


def _check(s: Settings) -> None:
    """Refuse settings that would break an invariant rather than run with them."""
    problems = []
    if not 0 < s.port < 65536:
        problems.append("port must be 1..65535")
    if s.shards < 0 or s.shards > 1024:
        problems.append("shards must be 0..1024")
    if not 1 <= s.workers <= 64:
        problems.append("workers must be 1..64")
    if s.max_inflight_requests < 1:
        problems.append("max_inflight_requests must be >= 1")
    if s.max_inflight_body_bytes < s.max_body_bytes:
        problems.append("max_inflight_body_bytes must be >= max_body_bytes")
    if s.shard_max_restarts < -1:
        problems.append("shard_max_restarts must be -1 (always) or >= 0")
    if not 1 <= s.batch_max_items <= 100_000:
        problems.append("batch_max_items must be 1..100000")
    if not 0 <= s.batch_window_ms <= 1000:
        problems.append("batch_window_ms must be 0..1000")
    if not 1 <= s.batch_max_inflight <= 64:
        problems.append("batch_max_inflight must be 1..64")
    if s.queue_limit < s.batch_max_items:
        problems.append("queue_limit must be >= batch_max_items")
    if not 1 <= s.max_batch_transfers <= 8190:
        problems.append("max_batch_transfers must be 1..8190")
    if not 10 <= s.analytics_interval_ms <= 60_000:
        problems.append("analytics_interval_ms must be 10..60000")
    if not 1_000 <= s.analytics_max_rows <= 10_000_000:
        problems.append("analytics_max_rows must be 1000..10000000")
    if not 2 <= s.analytics_max_segments <= 10_000:
        problems.append("analytics_max_segments must be 2..10000")
    if s.recon_interval_s < 0 or s.recon_full_every < 1:
        problems.append("recon_interval_s must be >= 0 and recon_full_every >= 1")
    if s.api_key is not None and len(s.api_key) < 16:
        problems.append("api_key must be at least 16 characters")
    if not 60 <= s.access_token_ttl_s <= 86400:
        problems.append("access_token_ttl_s must be 60..86400")
    if not s.access_token_ttl_s <= s.refresh_token_ttl_s <= 365 * 86400:
        problems.append("refresh_token_ttl_s must be access_token_ttl_s..1 year")
    if not 0 <= s.auth_cache_s <= 300:
        problems.append("auth_cache_s must be 0..300")
    for name in ("rate_per_s", "ip_rate_per_s", "auth_rate_per_s"):
        if getattr(s, name) <= 0:
            problems.append(f"{name} must be > 0")
    for name in ("rate_burst", "ip_rate_burst", "auth_rate_burst"):
        if getattr(s, name) < 1:
            problems.append(f"{name} must be >= 1")
    if not 10 <= s.notify_interval_ms <= 60_000 or not 1 <= s.notify_batch <= 100_000:
        problems.append("notify_interval_ms must be 10..60000 and notify_batch 1..100000")
    if not 0.1 <= s.webhook_timeout_s <= 120:
        problems.append("webhook_timeout_s must be 0.1..120")
    if not 1 <= s.webhook_max_attempts <= 100:
        problems.append("webhook_max_attempts must be 1..100")
    if not 0 < s.webhook_backoff_base_s <= s.webhook_backoff_cap_s <= 86_400:
        problems.append("webhook backoff must be 0 < base <= cap <= 86400")
    if not 1 <= s.webhook_max_concurrency <= 10_000 or not 1 <= s.webhook_window <= 10_000:
        problems.append("webhook_max_concurrency and webhook_window must be 1..10000")
    if not 0 <= s.webhook_secret_overlap_s <= 30 * 86_400:
        problems.append("webhook_secret_overlap_s must be 0..30 days")
    if not 1 <= s.inbound_tolerance_s <= 3600:
        problems.append("inbound_tolerance_s must be 1..3600")
    from paynode.domain.rails.nacha import aba_valid

    if not aba_valid(s.ach_odfi_routing):
        problems.append("ach_odfi_routing must be a 9-digit routing number (ABA check digit)")
    if len(s.ach_company_id) != 10 or not 1 <= len(s.ach_company_name) <= 16:
        problems.append("ach_company_id must be 10 characters, ach_company_name 1..16")
    if s.ach_cutoff_interval_s < 0 or not 0 <= s.bank_sim_delay_s <= 3600:
        problems.append("ach_cutoff_interval_s must be >= 0 and bank_sim_delay_s 0..3600")
    if not 0.5 <= s.sanctions_threshold <= 1.0:
        problems.append("sanctions_threshold must be 0.5..1.0")
    if not 30 <= s.otp_max_age_s <= 3600 or not 1 <= s.otp_max_attempts <= 20:
        problems.append("otp_max_age_s must be 30..3600 and otp_max_attempts 1..20")
    try:
        providers = s.providers()
    except ValueError:
        problems.append('webhook_providers must be JSON {"name": "secret"}')
    else:
        if any(len(v) < 16 for v in providers.values()):
            problems.append("webhook_providers secrets must be at least 16 characters")
    if problems:
        raise ValueError("invalid configuration: " + "; ".join(problems))
