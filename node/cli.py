"""``paynode``: run the node, apply migrations, manage keys, benchmark.

paynode run [--host H] [--port P] [--data-dir D] [--shards N]
paynode migrate [--data-dir D]
paynode keys show|rotate|reseal [--data-dir D] [--keyring F]
paynode sql "SELECT ..." [--data-dir D] [--format table|csv|json]
paynode recon run|status [--full] [--url U]
paynode report daily [--date YYYY-MM-DD] [--data-dir D]
paynode audit verify [--data-dir D]
paynode actors [--data-dir D] [--shards N]               (cluster mode, RAY_ADDRESS)
paynode api [--host H] [--port P | --fd F] [--workers N] (cluster mode, RAY_ADDRESS)
paynode bench ...                                        (installed with benchmarks/)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

import msgspec

from paynode.domain.settings import Settings, from_env
from paynode.node import fronts


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data directory (default ./paynode-data)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paynode", description="Actor-based payment node")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the node (embedded PostgreSQL unless DATABASE_URL)")
    _common(run)
    run.add_argument("--host", help="listen address (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="listen port (default 8000)")
    run.add_argument(
        "--shards", type=int, help="shard actors (default: half the cores, at least 1)"
    )
    run.add_argument("--workers", type=int, help="HTTP front processes sharing the shards")
    fronts.serving_options(run)
    run.add_argument("--fd", type=int, help=(
        "serve on this inherited, already bound listening socket (a supervisor or test "
        "harness owns the port) instead of binding --host/--port"
    ))  # fmt: skip
    mig = sub.add_parser("migrate", help="apply schema migrations and exit")
    _common(mig)
    keys = sub.add_parser("keys", help="show or rotate the PII and JWT keys (no downtime)")
    keys.add_argument("action", choices=["show", "rotate", "reseal"], help=(
        "show: key ids only; rotate: add new active keys to the keyring file, then re-seal "
        "all PII under the new PII key; reseal: only re-seal (after you changed the keys)"
    ))  # fmt: skip
    _common(keys)
    keys.add_argument("--keyring", help="keyring file (default <data-dir>/keyring.json)")
    keys.add_argument("--only", choices=["pii", "jwt"], help="rotate one purpose only")
    keys.add_argument("--batch", type=int, default=500, help="rows per transaction (default 500)")
    from paynode.node.analytics_cli import add_parsers

    add_parsers(sub)
    from paynode.node.audit_cli import add_parsers as add_audit_parsers

    add_audit_parsers(sub)
    from paynode.node.cluster import add_parsers as add_cluster_parsers

    add_cluster_parsers(sub)
    for command in _plugins().values():
        command.add_arguments(sub.add_parser(command.name, help=command.help))
    return parser


def _plugins() -> dict[str, Any]:
    """Commands installed beside the node, found by entry point (``node/plugins.py``)."""
    from paynode.node import plugins

    return plugins.installed()


def _settings(args: argparse.Namespace) -> Settings:
    inherited = getattr(args, "fd", None)
    port = getattr(args, "port", None)
    if inherited is not None:
        probe = socket.socket(fileno=inherited)
        try:
            args.host, port = probe.getsockname()[:2]
        finally:
            probe.detach()  # the socket stays open for cmd_run
    return from_env(
        log_format=getattr(args, "log_format", None),
        tls_cert_file=getattr(args, "tls_cert", None),
        tls_key_file=getattr(args, "tls_key", None),
        host=getattr(args, "host", None),
        port=port,
        data_dir=args.data_dir,
        shards=getattr(args, "shards", None),
        workers=getattr(args, "workers", None) if args.command == "run" else None,
        keyring=getattr(args, "keyring", None),
    )


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Rotation keeps every record readable: old keys stay in the keyring for decryption.

    Running nodes re-read the keyring file when it changes (within a second)
    or when they meet a key id they do not know, so nothing needs a restart.
    """
    from paynode.node.runtime import start_postgres
    from paynode.storage.keyring import describe, load, rotated, write_file
    from paynode.storage.pii import reseal_all

    keys = load(settings.data_path(), settings.keyring, create=args.action != "show")
    if args.action == "show":
        print(describe(keys.doc))
        return 0
    if args.action == "rotate":
        if keys.path is None:
            print(
                "paynode: the keyring comes from PAYNODE_KEYRING_JSON: add the new key there, "
                "make it active, restart the nodes, then run `paynode keys reseal`",
                file=sys.stderr,
            )
            return 2
        doc = rotated(keys.doc, pii=args.only != "jwt", jwt=args.only != "pii")
        write_file(keys.path, doc)
        keys.refresh(force=True)
        print(f"active keys now: {describe(keys.doc)}", flush=True)
        if args.only == "jwt":
            return 0
    url, pg = start_postgres(settings)
    try:
        report, stale = reseal_all(url, keys, batch=args.batch)
    finally:
        if pg is not None:
            pg.cleanup()
    print(
        f"resealed {report.values_resealed} values in {report.rows_seen} rows "
        f"({report.raced} raced with writes and were retried); {stale} still under old keys"
    )
    return 0 if stale == 0 else 1


def cmd_migrate(settings: Settings) -> int:
    from paynode.node.runtime import start_postgres
    from paynode.storage.migrations import MigrationError, migrate

    url, pg = start_postgres(settings)
    try:
        applied = migrate(url)
        print(f"applied: {applied or 'nothing (up to date)'}")
    except MigrationError as e:
        print(f"paynode: {e}", file=sys.stderr)
        return 1
    finally:
        if pg is not None:
            pg.cleanup()
    return 0


def cmd_run(settings: Settings, fd: int | None = None) -> int:
    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn re-raises SIGTERM/SIGINT once it has drained, which would end the
        # process before Ray and PostgreSQL are stopped; this command owns the exit.
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    from paynode.api.app import create_app
    from paynode.node.runtime import start
    from paynode.storage.keyring import load

    keys = load(settings.data_path(), settings.keyring)  # before anything starts: fail fast
    # Bound before Ray and PostgreSQL start: a taken port fails at once, and none of the
    # ports Ray picks for itself while starting can land on ours.
    sock = _listen(settings.host, settings.port) if fd is None else fronts.inherited_socket(fd)
    services = start(settings)
    stopping = threading.Event()
    keeper = threading.Thread(target=_keep_ownership, args=(services, stopping), daemon=True)
    keeper.start()
    try:
        settings = msgspec.structs.replace(services.settings, database_url=services.database_url)
        if settings.workers > 1:
            _serve_workers(settings, services, sock)
            return 0
        app = create_app(settings, services.shard_names, keys)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # clients connect directly; never trust X-Forwarded-*
            timeout_graceful_shutdown=10,
            **fronts.tls_options(settings),
        )
        server = Server(config)
        print(
            f"paynode listening on {fronts.scheme(settings)}://{settings.host}:{settings.port} "
            f"({len(services.shard_names)} shards; data in {settings.data_path()})",
            flush=True,
        )
        server.run(sockets=[sock])  # returns on SIGINT/SIGTERM after draining
    finally:
        stopping.set()
        keeper.join(timeout=15)
        services.stop()
        print("paynode stopped", flush=True)
    cause = services.database_lost()
    if cause is not None:
        print(f"paynode: embedded PostgreSQL could not be restarted: {cause}", file=sys.stderr)
        return 1
    return 0


def _serve_workers(settings: Settings, services: Any, sock: socket.socket) -> None:
    """``settings.workers`` front processes on ``sock``, each a Ray driver of this node's
    Ray; they find the shards by name. Returns on SIGTERM/SIGINT, once they stopped."""
    import ray

    print(
        f"paynode listening on {fronts.scheme(settings)}://{settings.host}:{settings.port} "
        f"({len(services.shard_names)} shards, {settings.workers} front processes; "
        f"data in {settings.data_path()})",
        flush=True,
    )
    fronts.serve(settings, settings.workers, sock, DATABASE_URL=services.database_url,
                 RAY_ADDRESS=ray.get_runtime_context().gcs_address)  # fmt: skip


def _keep_ownership(services, stopping: threading.Event) -> None:
    """Every 2 s: the embedded PostgreSQL restarted if it died, then the ownership lock
    taken again if it was lost. A database that cannot be brought back stops the node."""
    while not stopping.wait(2.0):
        if services.keep_database() is not None:
            os.kill(os.getpid(), signal.SIGTERM)  # cmd_run then exits non-zero
            return
        services.keep_ownership()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    plugins = _plugins()
    if args.command in plugins:
        return int(plugins[args.command].main(args))
    if args.command == "recon":
        from paynode.node.analytics_cli import cmd_recon

        return cmd_recon(args)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = _settings(args)
    except (ValueError, OSError, msgspec.ValidationError) as e:
        print(f"paynode: {e}", file=sys.stderr)
        return 2
    from paynode.node.logs import configure

    configure(settings.log_format)
    from paynode.storage.keyring import KeyringError

    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command in ("sql", "report"):
        from paynode.node.analytics_cli import cmd_report, cmd_sql

        return cmd_sql(settings, args) if args.command == "sql" else cmd_report(settings, args)
    if args.command == "audit":
        from paynode.node.audit_cli import cmd_audit

        return cmd_audit(settings, args)
    if args.command == "keys":
        if args.batch < 1:
            print("paynode: --batch must be >= 1", file=sys.stderr)
            return 2
        try:
            return cmd_keys(settings, args)
        except KeyringError as e:
            print(f"paynode: {e}", file=sys.stderr)
            return 2
    from paynode.node.runtime import DatabaseInUse

    try:
        if args.command == "actors":
            from paynode.node.cluster import cmd_actors

            return cmd_actors(settings)
        if args.command == "api":
            from paynode.node.cluster import cmd_api

            return cmd_api(settings, args.workers, getattr(args, "fd", None))
        return cmd_run(settings, getattr(args, "fd", None))
    except (DatabaseInUse, KeyringError) as e:
        print(f"paynode: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
