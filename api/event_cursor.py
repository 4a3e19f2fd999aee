"""Where ``GET /v1/events`` resumes: an event id the caller may see, or a sealed position.

A derived event's id names its row (``evt_t_<transfer id>``), so handing a
user the id of the last event scanned, when that event is someone else's,
would tell them another customer's transfer or account id. A user's page
that stops on an event they may not see therefore ends with an opaque
cursor instead: the position, sealed (AES-GCM, storage/pii.py) to that
user, so it reveals nothing and works for nobody else. Admins see every
event, so their cursors are always event ids.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from paynode.domain.notify.outbox import Position
from paynode.storage import pii
from paynode.storage.events import MAX_EVENT_ID
from paynode.storage.keyring import Keyring

PREFIX = "evc_"
# A sealed position: 2 + kid (15) + nonce (12) + tag (16) + JSON of the position
# (txid, source, a key of at most MAX_SUBJECT_ID), in base64.
MAX_CURSOR = 320
MAX_AFTER = max(MAX_CURSOR, MAX_EVENT_ID)
_TABLE, _COLUMN = "events", "after_cursor"  # the associated data's names (no such column)
_decode = msgspec.json.Decoder(Position).decode


def seal(keys: Keyring, position: Position, reader: str) -> str:
    """An opaque cursor at ``position`` that only ``reader`` can use."""
    sealed = pii.seal(keys, msgspec.json.encode(position).decode(), _TABLE, _COLUMN, reader)
    value = PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")
    assert len(value) <= MAX_CURSOR, "a position's key is bounded, so is its cursor"
    return value


def open_(keys: Keyring, value: str, reader: str) -> Position | None:
    """The position of a cursor sealed for ``reader``; None if it is not one."""
    if not value.startswith(PREFIX) or len(value) > MAX_CURSOR:
        return None
    text = value[len(PREFIX) :]
    try:
        sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return _decode(pii.open_(keys, sealed, _TABLE, _COLUMN, reader))
    except (binascii.Error, ValueError, pii.SealError, msgspec.DecodeError):
        return None
