"""Node configuration: one typed struct, read from the environment and CLI flags.

Every limit the node enforces is here, with a default sized for a 2-core
machine; bigger machines raise them through ``PAYNODE_*`` variables.
"""

from __future__ import annotations

import os
from pathlib import Path

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
    shards: int = 0  # 0 = one per core
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
    max_batch_transfers: int = 8190
    db_pool_size: int = 8

    # Shards: group commit.
    commit_max_rows: int = 65_536  # rows coalesced into one transaction
    expiry_interval_ms: int = 200  # how often pendings are checked for timeout

    # Analytics and reconciliation.
    analytics_interval_ms: int = 250  # how often committed journal rows are published
    analytics_max_rows: int = 100_000  # rows per Parquet segment written
    analytics_max_segments: int = 64  # live segments per table before compaction
    recon_interval_s: float = 30.0  # incremental reconciliation; 0 = on demand only
    recon_full_every: int = 10  # every Nth scheduled run is a full one

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

    def shard_count(self) -> int:
        return self.shards if self.shards > 0 else _cores()

    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


def _redacted(field: str, value: object) -> str:
    if field == "api_key" and value:
        return "<redacted>"
    if field == "database_url" and isinstance(value, str):
        from sqlalchemy.engine import make_url

        return repr(make_url(value).render_as_string(hide_password=True))
    return repr(value)


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
    if problems:
        raise ValueError("invalid configuration: " + "; ".join(problems))
