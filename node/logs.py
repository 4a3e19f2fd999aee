"""How the node's processes write their log lines: text, or one JSON object a line.

Either way a line written while a traced request runs carries its trace and span
ids (``actors/tracing.py``), so a line leads to the request's trace and a trace
to its lines. Messages never hold secrets or PII (the modules that log make sure);
this module adds nothing from the request.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TextIO

from paynode.actors import tracing

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(trace)s"


class _TraceIds(logging.Filter):
    """Stamp each record with the running span's ids (empty when none runs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = tracing.current_ids()
        record.trace_id, record.span_id = ids if ids else ("", "")
        record.trace = f" trace_id={ids[0]} span_id={ids[1]}" if ids else ""
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "trace_id", ""):
            out["trace_id"] = record.trace_id  # type: ignore[attr-defined]
            out["span_id"] = record.span_id  # type: ignore[attr-defined]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(
    log_format: str = "text", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Replace the root logger's handlers with one to ``stream`` (stderr) in ``log_format``."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(_TraceIds())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
