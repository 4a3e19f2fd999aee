"""Several HTTP fronts on one listening socket: uvicorn's worker processes.

Each worker is a fresh process that joins Ray as a driver of its own, finds
the shards and helpers by name and serves the same socket (the kernel hands
each connection to one of them). Fronts hold no money state, so any number
of them share the shards; what they hold per process is divided between them:
the token buckets (a client's rate over all fronts stays the configured one,
with the kernel spreading connections about evenly) and nothing else that
could disagree (credential caches drop a revocation as any front commits it).
"""

from __future__ import annotations

import argparse
import math
import os
import socket
from typing import Any

from paynode.domain.settings import SECTIONS, RateLimit, Settings

APP_SPEC = "paynode.node.cluster:app_from_env"
# Limits every front enforces on its own (sections of RateLimit), split so that N fronts
# enforce the whole.
_SPLIT_LIMITS = ("rate", "ip_rate", "auth_rate")


def worker_environment(settings: Settings, workers: int, **extra: str) -> dict[str, str]:
    """The variables ``from_env`` reads in each worker: the CLI's choices, and the rate
    limits split ``workers`` ways."""
    assert workers >= 1
    env = {
        "PAYNODE_HOST": settings.host,
        "PAYNODE_PORT": str(settings.port),
        "PAYNODE_DATA_DIR": str(settings.data_path()),
        "PAYNODE_NAMESPACE": settings.namespace,
        "PAYNODE_LOG_FORMAT": settings.log_format,
        "PAYNODE_TRACE_ENDPOINT": settings.trace_endpoint,
    }
    for section in _SPLIT_LIMITS:
        limit: RateLimit = getattr(settings, section)
        prefix = "PAYNODE_" + SECTIONS[section].upper()
        env[prefix + "PER_S"] = repr(limit.per_s / workers)
        env[prefix + "BURST"] = str(max(1, math.ceil(limit.burst / workers)))
    return env | extra


def inherited_socket(fd: int) -> socket.socket:
    """The listening socket handed over as file descriptor ``fd`` (bound by the parent: a
    supervisor or a test harness owns the port, so nothing can take it in between)."""
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"--fd {fd} is not a stream socket")
    sock.set_inheritable(True)
    return sock


def serving_options(p: argparse.ArgumentParser) -> None:
    """TLS and the log format of the commands that serve HTTP (run, api)."""
    p.add_argument("--tls-cert", help="serve HTTPS: certificate chain (PEM)")
    p.add_argument("--tls-key", help="serve HTTPS: private key (PEM)")
    p.add_argument("--log-format", choices=["text", "json"], help="log lines (default text)")


def scheme(settings: Settings) -> str:
    return "https" if settings.http.tls_cert_file else "http"


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS options: HTTPS with the configured certificate, else plain HTTP."""
    if not settings.http.tls_cert_file:
        return {}
    return {"ssl_certfile": settings.http.tls_cert_file, "ssl_keyfile": settings.http.tls_key_file}


def serve(settings: Settings, workers: int, sock: socket.socket | None, **env: str) -> None:
    """Run ``workers`` API processes until SIGTERM or SIGINT (uvicorn replaces a worker
    that dies). ``sock``: an already bound socket to serve; None binds host:port."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ.update(worker_environment(settings, workers, **env))
    options: dict[str, Any] = {
        "factory": True, "workers": workers, "loop": "uvloop", "http": "httptools",
        "log_level": "warning", "access_log": False, "timeout_graceful_shutdown": 10,
        "proxy_headers": False,  # clients connect directly; never trust X-Forwarded-*
        **tls_options(settings),
    }  # fmt: skip
    if sock is None:
        uvicorn.run(APP_SPEC, host=settings.host, port=settings.port, **options)
        return
    Multiprocess(uvicorn.Config(APP_SPEC, **options), sockets=[sock]).run()
