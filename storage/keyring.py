"""Key material: PII encryption keys, JWT signing keys and the blind-index key.

A keyring holds, per purpose, one *active* key (used to encrypt or sign) and
older keys (kept to decrypt or verify what they produced), each named by a
key id (``kid``) that is stored next to every ciphertext and in every JWT
header. Rotation adds a key and makes it active; nothing readable becomes
unreadable.

Where the keys come from, in order:

1. ``PAYNODE_KEYRING_JSON``: the keyring document itself (a secrets manager
   or an orchestrator injects it; rotation then belongs to the operator).
2. A file, ``--keyring`` / ``PAYNODE_KEYRING`` or ``<data_dir>/keyring.json``,
   created with mode 0600 on first start. ``paynode keys rotate`` rewrites it
   atomically and running nodes pick the change up (:meth:`Keyring.refresh`).

Key bytes never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from pathlib import Path

import msgspec

KEY_BYTES = 32  # AES-256, HMAC-SHA256
_KID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
RECHECK_S = 1.0  # how often a file-backed keyring looks for a rotation


class KeyringError(Exception):
    """The keyring is missing, malformed, or lacks a key that is needed."""


class KeySet(msgspec.Struct, forbid_unknown_fields=True):
    """One purpose's keys: ``active`` names the key in use; base64 key bytes by kid."""

    active: str
    keys: dict[str, str]


class KeyringDoc(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    pii: KeySet
    jwt: KeySet
    blind_index: str  # one key: rotating it means re-indexing, see docs/architecture.md


def new_kid() -> str:
    stamp = time.strftime("%Y%m%d", time.gmtime())
    return f"k{stamp}{''.join(secrets.choice(_KID_ALPHABET) for _ in range(6))}"


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def generate() -> KeyringDoc:
    return KeyringDoc(
        version=1,
        pii=KeySet(active=(k := new_kid()), keys={k: _new_key()}),
        jwt=KeySet(active=(j := new_kid()), keys={j: _new_key()}),
        blind_index=_new_key(),
    )


def rotated(doc: KeyringDoc, pii: bool = True, jwt: bool = True) -> KeyringDoc:
    """A copy with a fresh active key for each chosen purpose; old keys stay."""

    def add(ks: KeySet) -> KeySet:
        kid = new_kid()
        while kid in ks.keys:
            kid = new_kid()
        return KeySet(active=kid, keys={**ks.keys, kid: _new_key()})

    return msgspec.structs.replace(
        doc, pii=add(doc.pii) if pii else doc.pii, jwt=add(doc.jwt) if jwt else doc.jwt
    )


def _decode_key(b64: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError:
        raise KeyringError(f"{what} is not base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"{what} must be {KEY_BYTES} bytes")
    return raw


def _parse(raw: bytes, source: str) -> tuple[KeyringDoc, dict[str, dict[str, bytes]], bytes]:
    try:
        doc = msgspec.json.decode(raw, type=KeyringDoc)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        # msgspec quotes no key bytes for these types, but keep the message generic anyway.
        raise KeyringError(f"keyring {source} is malformed ({type(e).__name__})") from None
    sets: dict[str, dict[str, bytes]] = {}
    for purpose in ("pii", "jwt"):
        ks: KeySet = getattr(doc, purpose)
        if ks.active not in ks.keys:
            raise KeyringError(f"keyring {source}: active {purpose} key is not in its keys")
        sets[purpose] = {kid: _decode_key(v, f"{purpose} key {kid}") for kid, v in ks.keys.items()}
        for kid in ks.keys:
            if not 1 <= len(kid.encode()) <= 64:
                raise KeyringError(f"keyring {source}: key ids are 1..64 bytes")
    return doc, sets, _decode_key(doc.blind_index, "blind_index key")


def write_file(path: Path, doc: KeyringDoc) -> None:
    """Atomically replace ``path`` (readers see the old or the new file, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(doc)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Keyring:
    """The keys in use by this process. Thread-safe; cheap to call on every request."""

    def __init__(self, path: Path | None = None, document: bytes | None = None) -> None:
        if (path is None) == (document is None):
            raise KeyringError("a keyring comes from exactly one of a file or a document")
        self.path = path
        self._lock = threading.Lock()
        self._checked = 0.0
        self._mtime_ns = -1
        if document is not None:
            self._load(document, "from PAYNODE_KEYRING_JSON")
        else:
            self.refresh(force=True)

    def __repr__(self) -> str:
        return f"Keyring(path={self.path!s}, pii={self.pii_active!r}, jwt={self.jwt_active!r})"

    @classmethod
    def open(cls, path: Path, create: bool = False) -> Keyring:
        """The file keyring at ``path``; with ``create``, make one if there is none."""
        if create and not path.exists():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first: use theirs
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(msgspec.json.format(msgspec.json.encode(generate())))
                    f.flush()
                    os.fsync(f.fileno())
        return cls(path=path)

    def _load(self, raw: bytes, source: str) -> None:
        doc, sets, index_key = _parse(raw, source)
        self.doc = doc
        self.pii_active = doc.pii.active
        self.jwt_active = doc.jwt.active
        self.pii_keys = sets["pii"]
        self.jwt_keys = sets["jwt"]
        self.index_key = index_key

    def refresh(self, force: bool = False) -> bool:
        """Re-read a file keyring if it changed (at most once a second unless forced)."""
        if self.path is None:
            return False
        now = time.monotonic()
        if not force and now - self._checked < RECHECK_S:
            return False
        with self._lock:
            self._checked = now
            try:
                st = self.path.stat()
            except FileNotFoundError:
                raise KeyringError(f"keyring file {self.path} does not exist") from None
            if st.st_mode & 0o077:
                raise KeyringError(f"keyring file {self.path} must not be readable by others")
            if st.st_mtime_ns == self._mtime_ns:
                return False
            self._load(self.path.read_bytes(), str(self.path))
            self._mtime_ns = st.st_mtime_ns
            return True

    def pii_key(self, kid: str) -> bytes | None:
        key = self.pii_keys.get(kid)
        if key is None and self.refresh(force=True):  # rotated by another process
            key = self.pii_keys.get(kid)
        return key

    def jwt_key(self, kid: str) -> bytes | None:
        key = self.jwt_keys.get(kid)
        if key is None and self.refresh(force=True):
            key = self.jwt_keys.get(kid)
        return key


def load(data_dir: Path, keyring_path: str = "", create: bool = True) -> Keyring:
    """The node's keyring by the precedence in the module docstring."""
    document = os.environ.get("PAYNODE_KEYRING_JSON")
    if document:
        return Keyring(document=document.encode())
    path = Path(keyring_path).expanduser() if keyring_path else data_dir / "keyring.json"
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return Keyring.open(path.resolve(), create=create)


def describe(doc: KeyringDoc) -> str:
    """Key ids only, for the CLI."""
    return json.dumps(
        {
            "pii": {"active": doc.pii.active, "keys": sorted(doc.pii.keys)},
            "jwt": {"active": doc.jwt.active, "keys": sorted(doc.jwt.keys)},
        }
    )
