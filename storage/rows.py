"""Result rows into typed records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)


def record(t: type[S], row: Sequence[Any], **extra: Any) -> S:
    """``t`` from a row whose columns are ``t``'s fields in order (``extra`` fills the rest)."""
    names = [f for f in t.__struct_fields__ if f not in extra]
    return t(**dict(zip(names, row, strict=True)), **extra)
