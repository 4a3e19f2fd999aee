"""A lean HTTP/1.1 load generator for one-request-per-call loads (single mode, reference).

The load runs on the same two cores as the node, so the generator's own cost
per request decides how much of the machine is left to measure. A general
client (aiohttp) spends ~100 us of CPU per request here; this one keeps a
pool of keep-alive connections on ``asyncio.Protocol`` (uvloop when present),
sends request bytes built before the run and reads only the status line,
``Content-Length`` and, for refusals, the body's ``code``.

Closed loop: ``concurrency`` connections each send their next request when
the last answer arrived. Open loop: requests are due at a fixed rate and
latency counts from the due time (no coordinated omission); a request due
while every connection is busy waits for one, and that wait counts too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from paynode.benchmarks.drivers import RunResult, progress

_HEADER_END = b"\r\n\r\n"
_decode_problem = msgspec.json.Decoder(dict).decode


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    headers: dict[str, str]

    def request(self, body: bytes) -> bytes:
        head = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                *(f"{k}: {v}" for k, v in self.headers.items())]  # fmt: skip
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, answers parsed minimally."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(_HEADER_END)
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("closed by the server"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


async def _connect(target: Target) -> _Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(_Connection, target.host, target.port)
    return conn


def _book(result: RunResult, status: int, body: bytes, at: float) -> None:
    if status in (200, 201):
        result.ack(1, at)
    elif status in (409, 422):
        try:
            result.refused[_decode_problem(body).get("code", str(status))] += 1
        except msgspec.DecodeError:
            result.refused[str(status)] += 1
    else:
        result.errors[f"http_{status}"] += 1


async def closed_loop(
    target: Target, requests: Iterator[bytes], concurrency: int, duration_s: float, mode: str
) -> RunResult:
    result = RunResult(mode, concurrency, 1)
    conns = await asyncio.gather(*(_connect(target) for _ in range(concurrency)))
    t0 = time.perf_counter()
    stop = t0 + duration_s

    async def client(conn: _Connection) -> None:
        while (start := time.perf_counter()) < stop:
            try:
                status, body = await conn.send(next(requests))
            except (ConnectionError, OSError) as e:
                result.errors[type(e).__name__] += 1
                return
            now = time.perf_counter()
            result.requests += 1
            result.latency.record(now - start)
            _book(result, status, body, now - t0)

    async with progress(result, t0):
        await asyncio.gather(*(client(c) for c in conns))
    result.elapsed_s = time.perf_counter() - t0
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return result


async def open_loop(
    target: Target, requests: Iterator[bytes], rate: float, duration_s: float,
    max_connections: int = 512,
) -> RunResult:  # fmt: skip
    """Requests due every 1/rate s; a free connection takes the oldest due one."""
    result = RunResult("single-open", max_connections, 1, offered_rate=rate)
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    opened = 0
    t0 = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()

    async def one(due: float, request: bytes) -> None:
        nonlocal opened
        if idle.empty() and opened < max_connections:
            opened += 1
            idle.put_nowait(await _connect(target))
        conn = await idle.get()  # waiting for a connection counts: latency is from `due`
        try:
            status, body = await conn.send(request)
        except (ConnectionError, OSError) as e:
            result.errors[type(e).__name__] += 1
            return
        now = time.perf_counter()
        idle.put_nowait(conn)
        result.requests += 1
        result.latency.record(now - due)
        _book(result, status, body, now - t0)

    async with progress(result, t0):
        n = int(rate * duration_s)
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(due, next(requests)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
    result.elapsed_s = time.perf_counter() - t0
    while not idle.empty():
        conn = idle.get_nowait()
        if conn.transport is not None:
            conn.transport.close()
    return result


def run(coroutine_factory: Callable[[], Coroutine[Any, Any, RunResult]]) -> RunResult:
    """Run a load on uvloop when it is installed (as the node does)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(coroutine_factory())
    with contextlib.closing(uvloop.new_event_loop()) as loop:
        return loop.run_until_complete(coroutine_factory())
