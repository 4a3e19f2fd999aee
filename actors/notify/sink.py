"""A local sink: messages a channel would send, appended to a JSON-lines file.

Stands in for the provider when none is configured (development, tests): the
file is the mailbox or the phone, so it holds what the recipient would read,
one-time codes included, and is created 0600 under the data directory.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

MAX_SINK_BYTES = 64 * 1024 * 1024  # past this the file is rotated to <name>.1 (one old copy)


class JsonLinesSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        self._lock = asyncio.Lock()

    async def write(self, record: dict[str, object]) -> None:
        line = json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
        async with self._lock:
            await asyncio.to_thread(self._append, line)

    def _append(self, line: str) -> None:
        try:
            if self.path.stat().st_size > MAX_SINK_BYTES:
                self.path.replace(self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line)
