"""``ray`` CLI for a second Ray node on the same machine, kept on 127.0.0.1.

``python -m benchmarks.loopback_ray start --address=127.0.0.1:PORT ...``

Ray refuses a worker node when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (the
setting that keeps a single node on loopback), and with it enabled it
rewrites 127.0.0.1 into the machine's network address, so the node would
register (and be reached) on the network interface. This runs Ray's own CLI
with that rewrite turned off: every address stays as given. For tests and
benchmarks of a multi-node cluster on one machine only; real machines use
``ray start`` with their own addresses.
"""

from __future__ import annotations

import sys


def main() -> int:
    import ray._private.services as services

    services.resolve_ip_for_localhost = lambda host: host
    from ray.scripts.scripts import main as ray_main

    return ray_main()


if __name__ == "__main__":
    sys.exit(main())
