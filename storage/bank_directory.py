"""The FedACH participant directory, read from a file (``domain/rails/fedach.py`` parses).

``ach.directory`` names the Fed's full file (``FedACHdir.txt``, ~20,000 banks);
unset, the package's sample of a dozen large banks is read, enough to name the
banks of the examples and tests. A routing number the directory lacks still
links: its bank simply has no name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from paynode.domain.rails.fedach import Participant, parse

MAX_FILE_BYTES = 16 << 20  # the Fed's file is ~3 MB


def load(path: str = "") -> dict[str, Participant]:
    if path:
        source = Path(path)
        try:
            if source.stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"ach_directory {path}: larger than {MAX_FILE_BYTES} bytes")
            text = source.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"ach_directory {path}: not readable ({type(e).__name__})") from None
    else:
        text = (resources.files("paynode.storage") / "data" / "fedach_directory.txt").read_text(
            encoding="ascii"
        )
    return parse(text.splitlines())


def load_rtp_participants(path: str = "") -> frozenset[str]:
    """The routing numbers an RTP credit can reach: ``rtp.participants`` (a routing number
    at the start of each line; ``#`` comments), or the package's sample when unset."""
    if path:
        try:
            if Path(path).stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"rtp_participants {path}: larger than {MAX_FILE_BYTES} bytes")
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(
                f"rtp_participants {path}: not readable ({type(e).__name__})"
            ) from None
    else:
        text = (resources.files("paynode.storage") / "data" / "rtp_participants.txt").read_text(
            encoding="ascii"
        )
    found = set()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        routing = line.split()[0]
        if not (len(routing) == 9 and routing.isdigit()):
            raise ValueError(f"rtp_participants line {n}: not a routing number")
        found.add(routing)
    return frozenset(found)
