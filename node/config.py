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

    def shard_count(self) -> int:
        return self.shards if self.shards > 0 else _cores()

    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()


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
    if problems:
        raise ValueError("invalid configuration: " + "; ".join(problems))
