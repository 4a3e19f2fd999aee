"""The reference for single-request speed: a bare FastAPI endpoint on the same stack.

``POST /v1/transfers`` decodes the body with msgspec into the node's own
``TransferIn`` and echoes it (201), served by uvicorn with uvloop and
httptools in one process, like the node's front. No auth, no ledger, no
database: what one HTTP request costs here before any work is done. The
bench drives it with the same generator and the same request bytes as the
node, in the same run, and reports the node's single-mode rate as a fraction
of this one's.

Run as ``python -m paynode.benchmarks.reference --fd N`` on a listening socket
the bench bound and handed over.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys

import msgspec
from fastapi import FastAPI, Request
from starlette.responses import Response

from paynode.api.schemas import TransferIn


def app() -> FastAPI:
    reference = FastAPI(title="reference")

    @reference.post("/v1/transfers")
    async def echo(request: Request) -> Response:
        body = msgspec.json.decode(await request.body(), type=TransferIn)
        return Response(msgspec.json.encode(body), 201, media_type="application/json")

    return reference


class ReferenceServer:
    """The reference in a process of its own, on a socket bound here and handed over."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ReferenceServer:
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paynode.benchmarks.reference", "--fd", str(fd)],
            pass_fds=(fd,),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.sock.close()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    config = uvicorn.Config(app(), loop="uvloop", http="httptools", log_level="warning",
                            access_log=False)  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
