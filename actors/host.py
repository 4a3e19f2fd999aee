"""Several helper services in one Ray worker process, and how callers reach them.

A Ray actor is a process of its own, and each spends a second of CPU and ~130 MB
importing Ray and its libraries before it serves a call. The helpers are light, so
they share two processes (``names.HOSTS``): the lookups the request path waits on
(handles, risk) at full priority, and the followers of the journal (analytics, the
reconciler, the notifier, ACH, the bank simulator, the checkpointer), niced below the
money path.

Callers hold a :class:`ServiceRef`, which is called like an actor handle
(``ref.method.remote(*args)``, awaited or ``ray.get``): one Ray call to the host,
which runs the service's coroutine in its event loop.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from paynode.actors.names import HOST_OF

log = logging.getLogger("paynode.helpers")


class ServiceSpec(NamedTuple):
    """One service a host builds: its name, class and constructor arguments."""

    name: str
    cls: type
    args: tuple = ()


class ServiceHost:
    """Run under Ray as ``ray.remote(ServiceHost)``, named after ``names.HOSTS``.

    Every method of every service is a coroutine (they are async actors' methods);
    the host awaits it in the actor's event loop, so services share the loop the
    way the methods of one async actor do.
    """

    def __init__(self, specs: list[ServiceSpec]) -> None:
        assert len({s.name for s in specs}) == len(specs), "service names are unique"
        self._services: dict[str, Any] = {}
        for spec in specs:  # in order: a constructor may nice the process (followers)
            self._services[spec.name] = spec.cls(*spec.args)

    async def call(self, service: str, method: str, *args: Any, **kwargs: Any) -> Any:
        target = self._services.get(service)
        if target is None:
            raise LookupError(f"this host runs no service named {service!r}")
        if method.startswith("_"):
            raise AttributeError(f"{method!r} is not a service method")
        return await getattr(target, method)(*args, **kwargs)

    async def services(self) -> list[str]:
        return list(self._services)

    async def stop(self) -> None:
        """Stop every service, the last built first (each stops even if another fails)."""
        for name, service in reversed(self._services.items()):
            try:
                await service.stop()
            except Exception as e:  # the process is going away: log and go on
                log.warning("helper %s did not stop cleanly: %s", name, type(e).__name__)


class _Method:
    __slots__ = ("_host", "_method", "_service")

    def __init__(self, host: Any, service: str, method: str) -> None:
        self._host, self._service, self._method = host, service, method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """An ObjectRef, as an actor method's ``remote`` gives."""
        return self._host.call.remote(self._service, self._method, *args, **kwargs)


class ServiceRef:
    """A helper service, called like an actor handle: ``ref.stats.remote()``.

    Picklable (Ray passes it between processes): it holds the host's handle and the
    service's name only.
    """

    __slots__ = ("host", "service")

    def __init__(self, host: Any, service: str) -> None:
        self.host = host
        self.service = service

    def __getattr__(self, method: str) -> _Method:
        if method.startswith("_"):  # pickle and copy probe dunders: not service methods
            raise AttributeError(method)
        return _Method(self.host, self.service, method)

    def __getstate__(self) -> tuple[Any, str]:
        return self.host, self.service

    def __setstate__(self, state: tuple[Any, str]) -> None:
        self.host, self.service = state

    def __repr__(self) -> str:
        return f"ServiceRef({self.service!r})"


def find_service(name: str, namespace: str) -> ServiceRef:
    """The named helper service of the node in ``namespace`` (ValueError if its host is
    not running, as ``ray.get_actor`` raises)."""
    import ray

    return ServiceRef(ray.get_actor(HOST_OF[name], namespace=namespace), name)
