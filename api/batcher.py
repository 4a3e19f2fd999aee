"""Micro-batching: many concurrent callers, one downstream call per batch.

A Ray call or a database round trip costs the same for one item as for a
thousand, so the front never makes one per request. Items wait at most
``window_s`` for company (or until ``max_items`` is reached), at most
``max_inflight`` batches are outstanding per destination, and the queue is
bounded: past ``queue_limit`` callers are refused at once (back-pressure)
instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from paynode.actors import tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(Exception):
    """The destination's queue is full; the caller should retry later."""


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_items: int,
        window_s: float,
        max_inflight: int,
        queue_limit: int,
        on_batch: Callable[[int], None] | None = None,
        tracer: Tracer | None = None,
        span_name: str = "batch",
    ) -> None:
        """``tracer``: each batch is a span, parented on its first caller's span and
        linked to the others', current while ``send`` runs (None: no tracing cost)."""
        assert max_items >= 1 and max_inflight >= 1 and queue_limit >= max_items
        self._send = send
        self._max_items = max_items
        self._window_s = window_s
        self._queue_limit = queue_limit
        self._on_batch = on_batch
        self._slots = asyncio.Semaphore(max_inflight)
        self._items: list[T] = []
        self._weights: list[int] = []
        self._futures: list[asyncio.Future[R]] = []
        self._weight = 0
        self._full = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._tracer = tracer
        self._span_name = span_name
        self._contexts: list[Any] = []  # callers' span contexts (tracing only)

    @property
    def queued(self) -> int:
        return self._weight

    def has_room(self, weight: int) -> bool:
        return self._weight + weight <= self._queue_limit

    def submit(self, item: T, weight: int = 1) -> asyncio.Future[R]:
        """Queue ``item`` (worth ``weight`` units toward ``max_items``); await the future."""
        if not self.has_room(weight):
            raise Overloaded
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._items.append(item)
        self._weights.append(weight)
        self._futures.append(fut)
        if self._tracer is not None:
            self._contexts.append(tracing.current())
        self._weight += weight
        if self._weight >= self._max_items:
            self._full.set()
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
        return fut

    async def _run(self) -> None:
        try:
            while self._items:
                if self._weight < self._max_items and self._window_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self._window_s)
                await self._slots.acquire()
                items, futures = self._take()
                if self._tracer is not None:
                    contexts, self._contexts = (
                        self._contexts[: len(items)], self._contexts[len(items) :]
                    )  # fmt: skip
                    task = asyncio.create_task(self._traced(items, futures, contexts))
                else:
                    task = asyncio.create_task(self._deliver(items, futures))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        finally:
            self._runner = None

    def _take(self) -> tuple[list[T], list[asyncio.Future[R]]]:
        n, weight = 0, 0
        while n < len(self._items) and (n == 0 or weight + self._weights[n] <= self._max_items):
            weight += self._weights[n]
            n += 1
        items, self._items = self._items[:n], self._items[n:]
        futures, self._futures = self._futures[:n], self._futures[n:]
        self._weights = self._weights[n:]
        self._weight -= weight
        if self._weight < self._max_items:
            self._full.clear()
        if self._on_batch is not None:
            self._on_batch(weight)
        return items, futures

    async def _traced(
        self, items: list[T], futures: list[asyncio.Future[R]], contexts: list[Any]
    ) -> None:
        from opentelemetry import trace

        assert self._tracer is not None
        span = tracing.start_linked(self._tracer, self._span_name, contexts)
        span.set_attribute("paynode.items", len(items))
        with trace.use_span(span, end_on_exit=True):
            await self._deliver(items, futures)

    async def _deliver(self, items: list[T], futures: list[asyncio.Future[R]]) -> None:
        try:
            results = await self._send(items)
            assert len(results) == len(items), "downstream answered a different number of items"
        except Exception as e:  # every caller of the batch learns of the failure
            for f in futures:
                if not f.done():
                    f.set_exception(e)
        else:
            for f, r in zip(futures, results, strict=True):
                if not f.done():
                    f.set_result(r)
        finally:
            self._slots.release()
