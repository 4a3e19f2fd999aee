"""Pure normalization and validation of user @handles.

A handle is an identity other users type and read, so two handles that *look* the same must
not both exist. Normalization therefore folds everything that renders alike (NFKC for
fullwidth/compatibility forms, casefold for case including sharp s -> ss) and then refuses what
is left outside plain ASCII rather than trying to map it: a Cyrillic small a (U+0430) is
refused as a confusable instead of being silently turned into 'a', so nobody can register a
"paypal" spelled with it, expecting it to be distinct from (or equal to) the ASCII one.

Checks run in a fixed order, and the first failure wins: empty, invisible characters,
non-ASCII (confusable or invalid), ASCII charset and dot placement, length, reserved.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = [
    "CONFUSABLES",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "RESERVED",
    "HandleError",
    "normalize_handle",
]

MIN_LENGTH: Final = 3
MAX_LENGTH: Final = 30

# NFKC can expand one character into up to 18 (U+FDFA), so the raw input is bounded before
# normalizing to keep the work proportional to a plausible handle, not to whatever a client
# sends. Every accepted handle is far below this.
_MAX_RAW_LENGTH: Final = 8 * MAX_LENGTH

_ALLOWED: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.")
_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")

# Invisible characters survive NFKC and casefold unchanged and would let two visually
# identical handles differ, or reorder how a handle is displayed.
_INVISIBLE: Final = frozenset(
    "\u00ad"  # soft hyphen
    "\u034f"  # combining grapheme joiner
    "\u061c"  # Arabic letter mark (bidi)
    "\u180e"  # Mongolian vowel separator
    "\u200b\u200c\u200d"  # zero width space / non-joiner / joiner
    "\u200e\u200f"  # LRM, RLM
    "\u202a\u202b\u202c\u202d\u202e"  # LRE, RLE, PDF, LRO, RLO
    "\u2060\u2061\u2062\u2063\u2064"  # word joiner, invisible operators
    "\u2066\u2067\u2068\u2069"  # LRI, RLI, FSI, PDI
    "\ufeff"  # zero width no-break space (BOM)
)

# Look-alikes of ASCII letters that survive NFKC + casefold. Keys are the *casefolded*
# forms, so uppercase look-alikes (Cyrillic VE, Greek ETA, MU, ...) are covered through
# their lowercase. The value is the ASCII letter imitated, for the error message. Comments
# name the characters rather than show them, so this file stays plain ASCII.
CONFUSABLES: Final[dict[str, str]] = {
    # Cyrillic
    "\u0430": "a",  # cyrillic small letter a
    "\u0432": "b",  # cyrillic small letter ve (from the capital)
    "\u0435": "e",  # cyrillic small letter ie
    "\u0451": "e",  # cyrillic small letter io
    "\u043a": "k",  # cyrillic small letter ka (from the capital)
    "\u043c": "m",  # cyrillic small letter em (from the capital)
    "\u043d": "h",  # cyrillic small letter en (from the capital)
    "\u043e": "o",  # cyrillic small letter o
    "\u0440": "p",  # cyrillic small letter er
    "\u0441": "c",  # cyrillic small letter es
    "\u0442": "t",  # cyrillic small letter te (from the capital)
    "\u0443": "y",  # cyrillic small letter u
    "\u0445": "x",  # cyrillic small letter ha
    "\u044c": "b",  # cyrillic small letter soft sign
    "\u0455": "s",  # cyrillic small letter dze
    "\u0456": "i",  # cyrillic small letter byelorussian-ukrainian i
    "\u0457": "i",  # cyrillic small letter yi
    "\u0458": "j",  # cyrillic small letter je
    "\u04bb": "h",  # cyrillic small letter shha
    "\u04cf": "l",  # cyrillic small letter palochka
    "\u0501": "d",  # cyrillic small letter komi de
    "\u051b": "q",  # cyrillic small letter qa
    "\u051d": "w",  # cyrillic small letter we
    # Greek
    "\u03b1": "a",  # greek small letter alpha
    "\u03b2": "b",  # greek small letter beta (from the capital)
    "\u03b5": "e",  # greek small letter epsilon (from the capital)
    "\u03b7": "n",  # greek small letter eta (its capital looks like H)
    "\u03b9": "i",  # greek small letter iota (from the capital)
    "\u03ba": "k",  # greek small letter kappa
    "\u03bc": "u",  # greek small letter mu (its capital looks like M)
    "\u03bd": "v",  # greek small letter nu
    "\u03bf": "o",  # greek small letter omicron
    "\u03c1": "p",  # greek small letter rho
    "\u03c4": "t",  # greek small letter tau
    "\u03c5": "u",  # greek small letter upsilon
    "\u03c7": "x",  # greek small letter chi
    "\u03b6": "z",  # greek small letter zeta (from the capital)
    "\u03b3": "y",  # greek small letter gamma
    # Latin letters outside ASCII that read as ASCII ones
    "\u0131": "i",  # latin small letter dotless i
    "\u0237": "j",  # latin small letter dotless j
    "\u0251": "a",  # latin small letter alpha
    "\u0261": "g",  # latin small letter script g
}

RESERVED: Final[frozenset[str]] = frozenset(
    {
        "abuse",
        "account",
        "accounts",
        "admin",
        "administrator",
        "all",
        "anonymous",
        "api",
        "billing",
        "bot",
        "compliance",
        "everyone",
        "fraud",
        "help",
        "helpdesk",
        "here",
        "info",
        "legal",
        "login",
        "logout",
        "mail",
        "me",
        "moderator",
        "nobody",
        "noreply",
        "no_reply",
        "null",
        "official",
        "operator",
        "payment",
        "payments",
        "paynode",
        "postmaster",
        "privacy",
        "register",
        "root",
        "security",
        "settings",
        "signup",
        "staff",
        "status",
        "support",
        "sysadmin",
        "system",
        "team",
        "undefined",
        "verified",
        "webmaster",
        "wallet",
        "www",
    }
)
"""Handles nobody may register, compared against the normalized form."""


class HandleError(ValueError):
    """A handle was refused; ``code`` is stable and machine-readable, the message is not."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _codepoint(ch: str) -> str:
    # Messages name offending characters by code point so that logging them cannot itself
    # inject bidi controls or invisible text.
    return f"U+{ord(ch):04X}"


def normalize_handle(raw: str) -> str:
    """The canonical form of ``raw``, or :class:`HandleError` saying why it is refused.

    Strips surrounding whitespace and one leading "@", applies NFKC and casefold, then
    requires 3-30 characters of ASCII ``[a-z0-9_.]`` starting with a letter or digit, with
    no ".." and no trailing ".", and not in :data:`RESERVED`.
    """
    text = raw.strip()
    if text.startswith("@"):
        text = text[1:]
    if not text:
        raise HandleError("handle_empty", "handle is empty")
    if len(text) > _MAX_RAW_LENGTH:
        raise HandleError("handle_too_long", f"handle is longer than {MAX_LENGTH} characters")
    handle = unicodedata.normalize("NFKC", text).casefold()

    for ch in handle:
        if ch in _INVISIBLE or unicodedata.category(ch) == "Cf":
            raise HandleError(
                "handle_invalid_characters", f"handle contains invisible character {_codepoint(ch)}"
            )
    # A confusable anywhere outranks other bad characters: it is the likelier attack.
    for ch in handle:
        if ch in CONFUSABLES:
            raise HandleError(
                "handle_confusable",
                f"handle contains {_codepoint(ch)}, which looks like '{CONFUSABLES[ch]}'",
            )
    for ch in handle:
        if ch not in _ALLOWED:
            raise HandleError(
                "handle_invalid_characters",
                f"handle contains {_codepoint(ch)}; only a-z, 0-9, '_' and '.' are allowed",
            )
    if handle[0] not in _ALNUM:
        raise HandleError("handle_invalid_characters", "handle must start with a letter or digit")
    if ".." in handle or handle.endswith("."):
        raise HandleError(
            "handle_invalid_characters", "handle may not contain '..' or end with '.'"
        )

    if len(handle) < MIN_LENGTH:
        raise HandleError("handle_too_short", f"handle is shorter than {MIN_LENGTH} characters")
    if len(handle) > MAX_LENGTH:
        raise HandleError("handle_too_long", f"handle is longer than {MAX_LENGTH} characters")
    if handle in RESERVED:
        raise HandleError("handle_reserved", "handle is reserved")
    return handle
