"""The Federal Reserve's FedACH participant directory: routing number -> bank.

Pure: parses the Fed's fixed-width file (155 characters a line, the layout the
Fed publishes for ``FedACHdir.txt``). Fields used (1-based columns):

====== ========================== ===================================
1-9    routing number              checked with the ABA check digit
10     office code                 O main office, B branch
11-19  servicing FRB number
20     record type code            0 a Federal Reserve Bank, 1 send to
                                   this routing number, 2 send to the
                                   new routing number (27-35)
21-26  change date (MMDDYY)
27-35  new routing number
36-71  customer name
72-107 address
108-127 city
128-129 state
130-134 ZIP code                   (135-138 its extension)
139-148 telephone
149    institution status code
150    data view code
====== ========================== ===================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from paynode.domain.rails.nacha import aba_valid

LINE_LENGTH = 155
MAX_ENTRIES = 100_000  # the Fed's file holds ~20,000


class Participant(msgspec.Struct, frozen=True):
    routing_number: str
    name: str
    city: str
    state: str
    new_routing_number: str | None  # record type 2: entries go there instead


class DirectoryError(ValueError):
    """A line that is not a FedACH directory record (its number, never its content)."""


def parse(lines: Iterable[str]) -> dict[str, Participant]:
    """The directory's participants by routing number; blank lines are skipped."""
    out: dict[str, Participant] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if len(line) != LINE_LENGTH:
            raise DirectoryError(f"line {number}: {len(line)} characters, not {LINE_LENGTH}")
        routing, record_type = line[0:9], line[19]
        if not aba_valid(routing):
            raise DirectoryError(f"line {number}: routing number fails its check digit")
        if record_type not in "012":
            raise DirectoryError(f"line {number}: record type {record_type!r}")
        new = line[26:35].strip("0 ") and line[26:35]
        if record_type == "2" and not (new and aba_valid(new)):
            raise DirectoryError(f"line {number}: record type 2 without a new routing number")
        out[routing] = Participant(
            routing, line[35:71].strip(), line[107:127].strip(), line[127:129].strip(),
            new if record_type == "2" else None,
        )  # fmt: skip
        if len(out) > MAX_ENTRIES:
            raise DirectoryError(f"more than {MAX_ENTRIES} participants")
    return out


def bank_name(directory: Mapping[str, Participant], routing: str) -> str | None:
    found = directory.get(routing)
    return found.name if found else None


def record(p: Participant, office: str = "O", frb: str = "011000015") -> str:
    """One directory line for ``p`` (the format ``parse`` reads; tests and fixtures)."""
    line = (
        f"{p.routing_number}{office}{frb}{'2' if p.new_routing_number else '1'}010126"
        f"{p.new_routing_number or '0' * 9}{p.name[:36]:<36}{'':<36}{p.city[:20]:<20}"
        f"{p.state[:2]:<2}{'00000'}{'0000'}{'0000000000'}{'1'}{'1'}{'':<5}"
    )
    assert len(line) == LINE_LENGTH, len(line)
    return line
