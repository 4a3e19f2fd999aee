"""Load drivers: closed-loop and open-loop HTTP, and direct calls to the shard actors.

Each returns a :class:`RunResult`: acknowledged (durable) transfers, refusals
by code, a latency histogram per request, and acknowledgements per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import aiohttp
import msgspec

from paynode.benchmarks.histogram import Histogram
from paynode.benchmarks.workload import Workload

JSON = {"content-type": "application/json"}
_encode = msgspec.json.encode
_decode_batch = msgspec.json.Decoder(dict).decode


@dataclass
class RunResult:
    mode: str
    concurrency: int
    batch_size: int
    elapsed_s: float = 0.0
    acked: int = 0
    requests: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)
    per_second: list[int] = field(default_factory=list)
    offered_rate: float | None = None

    def ack(self, n: int, at: float) -> None:
        self.acked += n
        slot = int(at)
        while len(self.per_second) <= slot:
            self.per_second.append(0)
        self.per_second[slot] += n

    @property
    def rate(self) -> float:
        return self.acked / self.elapsed_s if self.elapsed_s else 0.0

    def summary(self) -> dict:
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "batch_size": self.batch_size,
            "offered_rate": self.offered_rate,
            "elapsed_s": round(self.elapsed_s, 3),
            "acked": self.acked,
            "transfers_per_s": round(self.rate, 1),
            "requests": self.requests,
            "requests_per_s": round(self.requests / self.elapsed_s, 1) if self.elapsed_s else 0,
            "latency_ms": self.latency.summary_ms(),
            "refused": dict(self.refused),
            "errors": dict(self.errors),
            "per_second": self.per_second,
        }


async def _progress(result: RunResult, t0: float) -> None:
    """One status line, rewritten every second, while a run is going."""
    while True:
        await asyncio.sleep(1.0)
        elapsed = time.perf_counter() - t0
        recent = result.per_second[-2] if len(result.per_second) > 1 else result.acked
        print(
            f"\r  {elapsed:5.0f}s  acknowledged {result.acked:>10,}  last second {recent:>8,}/s"
            f"  refused {sum(result.refused.values()):,}  errors {sum(result.errors.values()):,}",
            end="", file=sys.stderr, flush=True,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def progress(result: RunResult, t0: float) -> AsyncIterator[None]:
    task = asyncio.create_task(_progress(result, t0))
    try:
        yield
    finally:
        task.cancel()
        print(file=sys.stderr, flush=True)


async def _post(
    http: aiohttp.ClientSession, url: str, body: bytes, result: RunResult
) -> tuple[int, bytes] | None:
    try:
        async with http.post(url, data=body, headers=JSON) as r:
            return r.status, await r.read()
    except (aiohttp.ClientError, TimeoutError) as e:
        result.errors[type(e).__name__] += 1
        return None


def _count_single(result: RunResult, status: int, raw: bytes, at: float) -> None:
    if status in (200, 201):
        result.ack(1, at)
    elif status == 422 or status == 409:
        result.refused[msgspec.json.decode(raw).get("code", str(status))] += 1
    else:
        result.errors[f"http_{status}"] += 1


def api_headers() -> dict[str, str]:
    """The bench authenticates with the node's admin key, PAYNODE_API_KEY."""
    key = os.environ.get("PAYNODE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def ensure_api_key() -> None:
    """A bench that starts its own node gives it a fresh admin key (inherited via the env)."""
    os.environ.setdefault("PAYNODE_API_KEY", secrets.token_urlsafe(24))


def session(concurrency: int = 64) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency + 8),
        timeout=aiohttp.ClientTimeout(total=120),
        headers=api_headers(),
    )


async def _closed_loop(
    result: RunResult,
    concurrency: int,
    duration: float,
    request: Callable[[float], Awaitable[None]],
) -> RunResult:
    """``concurrency`` clients each awaiting ``request(t0)`` until ``duration`` has passed.

    ``request`` sends one request and books its outcome; the loop times it.
    """
    t0 = time.perf_counter()
    stop = t0 + duration

    async def client() -> None:
        while (start := time.perf_counter()) < stop:
            await request(t0)
            result.requests += 1
            result.latency.record(time.perf_counter() - start)

    async with progress(result, t0):
        await asyncio.gather(*(client() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - t0
    return result


async def closed_batch(
    url: str, bodies: Iterator[bytes], concurrency: int, batch_size: int, duration: float
) -> RunResult:
    """``concurrency`` clients posting ``bodies`` (built before the run) in a closed loop."""
    result = RunResult("batch", concurrency, batch_size)
    target = url + "/v1/transfers/batch"
    async with session(concurrency) as http:

        async def request(t0: float) -> None:
            answer = await _post(http, target, next(bodies), result)
            if answer is None:
                return
            status, raw = answer
            if status != 200:
                result.errors[f"http_{status}"] += batch_size
                return
            ok = 0
            for item in _decode_batch(raw)["results"]:
                if "status" in item:
                    ok += 1
                else:
                    result.refused[item["code"]] += 1
            result.ack(ok, time.perf_counter() - t0)

        return await _closed_loop(result, concurrency, duration, request)


async def direct(
    shards: list, w: Workload, concurrency: int, batch_size: int, duration: float
) -> RunResult:
    """Call the shards' ``execute`` with msgpack batches: the ledger without the HTTP front."""
    from paynode.domain.ledger.model import NO_METADATA, TransferOp, shard_key
    from paynode.domain.ledger.wire import decode_outcomes, encode

    result = RunResult("direct", concurrency, batch_size)
    count = len(shards)

    async def request(t0: float) -> None:
        per_shard: dict[int, list[list[TransferOp]]] = {}
        for _ in range(batch_size):
            t = w.transfer()
            op = TransferOp(t["id"], t["debit_account_id"], t["credit_account_id"],
                            t["amount"], "USD", 0, None, 0, NO_METADATA)  # fmt: skip
            per_shard.setdefault(shard_key(op.debit_account_id) % count, []).append([op])
        answers = await asyncio.gather(
            *(shards[s].execute.remote(encode(groups)) for s, groups in per_shard.items())
        )
        ok = 0
        for raw in answers:
            for group in decode_outcomes(raw):
                for o in group:
                    if o.code:
                        result.refused[o.code] += 1
                    else:
                        ok += 1
        result.ack(ok, time.perf_counter() - t0)

    return await _closed_loop(result, concurrency, duration, request)
