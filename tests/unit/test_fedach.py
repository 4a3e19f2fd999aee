"""The FedACH directory parser (domain/rails/fedach.py) and the shipped sample."""

from __future__ import annotations

import pytest

from paynode.domain.rails.fedach import (
    LINE_LENGTH,
    DirectoryError,
    Participant,
    bank_name,
    parse,
    record,
)
from paynode.storage.bank_directory import load

CHASE = Participant("021000021", "JPMORGAN CHASE BANK, NA", "NEW YORK", "NY", None)


def test_records_read_back_field_by_field() -> None:
    moved = Participant("011000138", "BANK OF AMERICA, N.A.", "BOSTON", "MA", "026009593")
    lines = [record(CHASE), "", record(moved, office="B")]
    assert all(len(x) == LINE_LENGTH for x in lines if x)
    got = parse(lines)
    assert got == {"021000021": CHASE, "011000138": moved}
    assert bank_name(got, "021000021") == "JPMORGAN CHASE BANK, NA"
    assert bank_name(got, "122000247") is None


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (record(CHASE)[:-1], "154 characters"),
        ("021000022" + record(CHASE)[9:], "check digit"),
        (record(CHASE)[:19] + "7" + record(CHASE)[20:], "record type"),
        (record(CHASE)[:19] + "2" + record(CHASE)[20:], "without a new routing number"),
    ],
)
def test_bad_lines_are_refused_by_number(line: str, why: str) -> None:
    with pytest.raises(DirectoryError, match=why) as e:
        parse([record(CHASE), line])
    assert "line 2" in str(e.value) and "JPMORGAN" not in str(e.value)


def test_the_shipped_sample_and_a_configured_file(tmp_path) -> None:
    sample = load()
    assert sample["021000021"].name == "JPMORGAN CHASE BANK, NA" and len(sample) >= 10
    path = tmp_path / "FedACHdir.txt"
    path.write_text(record(CHASE) + "\r\n")
    assert load(str(path)) == {"021000021": CHASE}
    with pytest.raises(ValueError, match="not readable"):
        load(str(tmp_path / "missing.txt"))
