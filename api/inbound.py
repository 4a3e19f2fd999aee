"""Where accepted inbound webhooks go: one handler per (provider, event type prefix).

A handler is an async function that passes the event to the actor that owns
it and returns that actor's name; the route records it as ``handled_by``.
An accepted event without a handler is stored and answered, not lost: it can
be replayed to a handler registered later from ``inbound_webhooks``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from paynode.api.context import Context
from paynode.api.notify_schemas import InboundEvent

Handler = Callable[[Context, str, InboundEvent], Awaitable[str]]

# (provider, type prefix) -> handler; the rails register theirs here.
HANDLERS: dict[tuple[str, str], Handler] = {}


def register(provider: str, type_prefix: str, handler: Handler) -> None:
    HANDLERS[(provider, type_prefix)] = handler


async def dispatch(ctx: Context, provider: str, event: InboundEvent) -> str | None:
    """Hand ``event`` to its handler; the handler's name, or None if it has none."""
    for (p, prefix), handler in HANDLERS.items():
        if p == provider and event.type.startswith(prefix):
            return await handler(ctx, provider, event)
    return None
