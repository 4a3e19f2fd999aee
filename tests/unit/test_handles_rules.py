"""Normalization and refusal of @handles."""

from __future__ import annotations

import unicodedata

import pytest

from paynode.domain.rails.handles_rules import CONFUSABLES, RESERVED, HandleError, normalize_handle

# input -> normalized handle, or the error code it must be refused with
CASES: list[tuple[str, str]] = [
    # accepted, with folding
    ("alice", "alice"),
    ("@alice", "alice"),
    ("  @Alice_01  ", "alice_01"),
    ("ALICE", "alice"),
    ("\uff21\uff2c\uff29\uff23\uff25", "alice"),  # fullwidth ALICE
    ("@\uff41lice", "alice"),  # fullwidth a after a plain @
    ("stra\u00dfe", "strasse"),  # sharp s casefolds to ss
    ("STRASSE", "strasse"),  # ...so it collides with the plain spelling
    ("j.doe_99", "j.doe_99"),
    ("007bond", "007bond"),
    ("bob", "bob"),  # exactly the minimum
    ("a" * 30, "a" * 30),  # exactly the maximum
    ("\ufb01sh", "fish"),  # ligature fi decomposes under NFKC
    # empty / length
    ("", "handle_empty"),
    ("   ", "handle_empty"),
    ("@", "handle_empty"),
    ("ab", "handle_too_short"),
    ("@ab", "handle_too_short"),  # the @ does not count
    ("a" * 31, "handle_too_long"),
    ("x" * 10_000, "handle_too_long"),
    # reserved, compared after folding
    ("admin", "handle_reserved"),
    ("@ADMIN", "handle_reserved"),
    ("\uff21dmin", "handle_reserved"),  # fullwidth capital A
    ("Support", "handle_reserved"),
    ("PayNode", "handle_reserved"),
    # confusables
    ("\u0430lice", "handle_confusable"),  # Cyrillic small a
    ("b\u03bfb", "handle_confusable"),  # Greek small omicron
    ("\u0410DMIN", "handle_confusable"),  # Cyrillic capital A folds to small a
    ("p\u0430yp\u0430l", "handle_confusable"),
    ("\u0391lice", "handle_confusable"),  # Greek capital alpha folds to small alpha
    # invisible characters
    ("ali\u200bce", "handle_invalid_characters"),  # zero width space
    ("ali\u200dce", "handle_invalid_characters"),  # zero width joiner
    ("\ufeffalice", "handle_invalid_characters"),  # BOM
    ("alice\u202e", "handle_invalid_characters"),  # right-to-left override
    ("ali\u2066ce", "handle_invalid_characters"),  # left-to-right isolate
    # other invalid characters and shapes
    ("ali ce", "handle_invalid_characters"),
    ("ali-ce", "handle_invalid_characters"),
    ("alice\U0001f600", "handle_invalid_characters"),  # emoji
    ("caf\u00e9", "handle_invalid_characters"),  # e-acute is not a look-alike, just not ASCII
    ("@@alice", "handle_invalid_characters"),  # only one @ is optional
    ("\uff20alice", "handle_invalid_characters"),  # fullwidth @ is not stripped
    ("_alice", "handle_invalid_characters"),
    (".alice", "handle_invalid_characters"),
    ("ali..ce", "handle_invalid_characters"),
    ("alice.", "handle_invalid_characters"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_normalize_handle(raw: str, expected: str) -> None:
    if expected.startswith("handle_"):
        with pytest.raises(HandleError) as exc:
            normalize_handle(raw)
        assert exc.value.code == expected
    else:
        assert normalize_handle(raw) == expected


def test_handle_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="reserved"):
        normalize_handle("root")


def test_error_message_does_not_echo_invisible_characters() -> None:
    with pytest.raises(HandleError) as exc:
        normalize_handle("ali\u202ece")
    assert "U+202E" in str(exc.value)
    assert "\u202e" not in str(exc.value)


def test_normalization_is_idempotent() -> None:
    for raw, expected in CASES:
        if not expected.startswith("handle_"):
            assert normalize_handle(expected) == expected, raw


def test_tables_are_normalized() -> None:
    # A reserved word or confusable that normalization could never produce would be dead.
    for word in RESERVED:
        assert unicodedata.normalize("NFKC", word).casefold() == word
    for ch, looks_like in CONFUSABLES.items():
        assert unicodedata.normalize("NFKC", ch).casefold() == ch
        assert not ch.isascii() and looks_like.isascii() and looks_like.isalpha()
