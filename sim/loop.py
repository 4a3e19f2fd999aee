"""An asyncio event loop on virtual time.

Nothing waits in real time: when no callback is ready, the clock jumps to the next
timer. Callbacks run in asyncio's FIFO order, so a run is a function of its inputs:
the seed, and (for set iteration order) PYTHONHASHSEED, which ``paynode sim`` fixes.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


class Stalled(Exception):
    """Nothing is ready and no timer is set: every task waits on something that will
    never happen (a liveness failure of the code under test, or of the simulator)."""


class _NoIO(selectors.BaseSelector):
    """A selector that never has events: selecting advances the virtual clock instead."""

    def __init__(self) -> None:
        self._keys: dict[Any, selectors.SelectorKey] = {}
        self.loop: VirtualLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        # Only the loop's own self-pipe (for call_soon_threadsafe) is registered; the
        # simulation is single-threaded, so it never has data.
        key = selectors.SelectorKey(fileobj, _fd(fileobj), events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list:
        assert self.loop is not None
        if timeout is None:
            raise Stalled("no task can make progress and no timer is set")
        if timeout > 0:
            self.loop.now += timeout
        return []

    def get_map(self) -> dict:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0  # seconds of virtual time since the loop was made
        selector = _NoIO()
        super().__init__(selector)
        selector.loop = self

    def time(self) -> float:
        return self.now
