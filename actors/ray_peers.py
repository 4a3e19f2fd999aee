"""A shard's peers as Ray actors, found by name once (implements ``ports.Peers``)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any


class RayPeers:
    def __init__(self, names: Sequence[str], namespace: str) -> None:
        self._names = list(names)
        self._namespace = namespace
        self._handles: dict[int, Any] = {}

    def call(self, index: int, method: str, *args: Any) -> Awaitable[Any]:
        handle = self._handles.get(index)
        if handle is None:
            import ray

            handle = ray.get_actor(self._names[index], namespace=self._namespace)
            self._handles[index] = handle
        return getattr(handle, method).remote(*args)


def restarted() -> bool:
    """Whether Ray restarted this actor after its process died."""
    import warnings

    try:
        import ray

        with warnings.catch_warnings():  # Ray's own property uses a deprecated one inside
            warnings.simplefilter("ignore", DeprecationWarning)
            return ray.get_runtime_context().was_current_actor_reconstructed
    except Exception:  # not running under Ray (pure tests)
        return False
