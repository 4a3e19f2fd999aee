"""The front's calls to the shard actors: one micro-batcher per shard and method.

A Ray call costs about a millisecond whatever it carries, so requests never
call a shard themselves: they queue their part of a batch and await it, and
each batcher sends what is queued as one call (``api/batcher.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from paynode.actors import tracing
from paynode.api import problems as p
from paynode.api.batcher import MicroBatcher
from paynode.domain.ledger.model import AccountSpec, Code
from paynode.domain.ledger.ports import PeerLost
from paynode.domain.ledger.wire import (
    AccountResult,
    BatchResult,
    Finish,
    TransferBatch,
    decode_account_results,
    decode_balances,
    decode_batch_result,
    decode_outcomes,
    decode_prepared,
    empty_batch,
    encode,
    extend_batch,
)
from paynode.domain.settings import Settings


class Unavailable(Exception):
    """The shard could not make its answer durable: nothing was applied."""

    code = Code.STORAGE_UNAVAILABLE


class ShardLost(Unavailable):
    """The shard died before answering (Ray restarts it): the outcome is unknown."""

    code = p.SHARD_RESTARTED


def _actor_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors for a call whose actor died or cannot be reached (imported late:
    Ray reads its auth settings at import)."""
    from ray.exceptions import ActorUnavailableError, RayActorError

    return (RayActorError, ActorUnavailableError, PeerLost)


async def call(ref: Awaitable[Any]) -> Any:
    """Await a shard call; a shard that died under it (Ray restarts it) is a 503.

    The outcome of such a call is unknown: it may have committed before the
    process died. Clients retry with the same ids and get the journal's answer.
    """
    try:
        return await ref
    except _actor_errors() as e:
        raise ShardLost(type(e).__name__) from None


class ShardCalls:
    """Batchers toward every shard: execute, prepare, commit, create accounts, read."""

    def __init__(
        self,
        handles: Sequence[Any],
        settings: Settings,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.handles = list(handles)
        tracer = tracing.tracer("paynode-front", settings.trace_endpoint)

        def batcher(
            send: Callable, max_items: int | None = None, traced: bool = False
        ) -> MicroBatcher:
            max_items = max_items or settings.batch.max_items
            return MicroBatcher(
                send,
                max_items=max_items,
                window_s=settings.batch.window_ms / 1000,
                max_inflight=settings.batch.max_inflight,
                queue_limit=max(settings.http.queue_limit, max_items),
                on_batch=on_batch,
                tracer=tracer if traced else None,
                span_name="batch execute",
            )

        self.execute = [
            batcher(_execute_sender(h, tracer is not None), traced=True) for h in self.handles
        ]
        self.prepare = [batcher(_sender(h, "prepare", decode_prepared)) for h in self.handles]
        self.commit = [batcher(_sender(h, "commit", decode_outcomes)) for h in self.handles]
        self.create = [
            batcher(_sender(h, "create_accounts", decode_account_results)) for h in self.handles
        ]
        self.read = [batcher(_read_sender(h), max_items=4096) for h in self.handles]

    def queue_depths(self) -> list[int]:
        return [b.queued for b in self.execute]

    async def create_account(self, shard: int, spec: AccountSpec) -> AccountResult:
        return await self.create[shard].submit(spec)

    async def abort(self, gid: str, shards: Sequence[int]) -> list[Any]:
        """Free a group's reservations; failures are returned, not raised."""
        payload = encode([gid])
        calls = (call(self.handles[s].abort.remote(payload)) for s in shards)
        return await asyncio.gather(*calls, return_exceptions=True)

    async def settle(self, gid: str, rows: list, shards: Sequence[int]) -> list[Any]:
        """Apply what the journal holds of a group and free it; failures are returned."""
        payload = encode([Finish(gid, rows)])
        calls = (call(self.handles[s].settle.remote(payload)) for s in shards)
        return await asyncio.gather(*calls, return_exceptions=True)


def _sender(handle: Any, method: str, decode: Callable[[bytes], list]) -> Callable:
    remote = getattr(handle, method)

    async def send(items: list) -> list:
        return decode(await call(remote.remote(encode(items))))

    return send


def _execute_sender(handle: Any, traced: bool) -> Callable:
    """Items are requests' TransferBatches for this shard, concatenated into one call.
    ``traced``: the batch's span crosses to the shard as a ``traceparent``."""

    def remote(payload: bytes) -> Any:
        if traced and (ctx := tracing.current()) is not None:
            return handle.execute.remote(payload, tracing.traceparent(ctx))
        return handle.execute.remote(payload)

    async def send(items: list[TransferBatch]) -> list[BatchResult]:
        if len(items) == 1:
            return [decode_batch_result(await call(remote(encode(items[0]))))]
        joined = empty_batch()
        for item in items:
            extend_batch(joined, item)
        answer = decode_batch_result(await call(remote(encode(joined))))
        out, start = [], 0
        for item in items:
            end = start + len(item.ids)
            amounts = {k - start: v for k, v in answer.amounts.items() if start <= k < end}
            out.append(BatchResult(answer.results[start:end], answer.stamps[start:end], amounts))
            start = end
        return out

    return send


def _read_sender(handle: Any) -> Callable:
    async def send(ids: list[str]) -> list:
        result = decode_balances(await call(handle.get_accounts.remote(encode(ids))))
        if result is None:
            raise Unavailable
        return result

    return send


def unexpected(results: list[Any]) -> None:
    """Raise the first failure that is not a shard being unavailable (those are expected)."""
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, Unavailable):
            raise r
