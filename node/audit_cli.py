"""``paynode audit verify``: walk the audit log's hash chain and say where it breaks.

The output names seq numbers and hashes only, never a record's contents: they
may hold personal data, and this output ends up in terminals, tickets and logs.
Exit status: 0 intact, 1 broken, 2 the log could not be read.
"""

from __future__ import annotations

import argparse
import sys

from paynode.domain.settings import Settings


def add_parsers(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="check the tamper-evident audit log")
    audit.add_argument(
        "action",
        choices=["verify"],
        help="verify: check every record's hash and link; print the head hash",
    )
    audit.add_argument("--data-dir", help="data directory (default ./paynode-data)")


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from paynode.node.runtime import start_postgres
    from paynode.storage.audit_log import verify_database

    url, pg = start_postgres(settings)
    try:
        result = verify_database(url)
    except psycopg.errors.UndefinedTable:
        print("paynode: no audit log in this database (run `paynode migrate`)", file=sys.stderr)
        return 2
    except psycopg.OperationalError as e:  # could not connect: no record in the message
        print(f"paynode: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    except psycopg.Error as e:  # the message may quote a row: print the kind only
        print(f"paynode: could not read the audit log ({type(e).__name__})", file=sys.stderr)
        return 2
    finally:
        if pg is not None:
            pg.cleanup()
    if result.first_broken_seq is not None:
        print(
            f"audit chain broken at seq {result.first_broken_seq}: "
            f"{result.records} records before it verified, "
            f"last good hash {result.head_hash}"
        )
        return 1
    print(f"audit chain intact: {result.records} records checked, head hash {result.head_hash}")
    return 0
