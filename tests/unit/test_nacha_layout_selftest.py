"""Self-test of the independent NACHA oracle against a hand-written 10-line file."""

import pytest

from tests.support.nacha_layout import check_controls, parse, parse_record, routing_check_digit_ok


def _rec(*parts: str) -> str:
    line = "".join(parts)
    assert len(line) == 94, (len(line), line)
    return line


def _entry(code: str, rdfi9: str, account: str, cents: int, name: str, add: str, trace: str):
    return _rec(
        "6",
        code,
        rdfi9,  # 8-digit RDFI id + check digit (positions 4-12)
        f"{account:<17}",
        f"{cents:010d}",
        f"{'ID' + trace[-4:]:<15}",
        f"{name:<22}",
        "  ",
        add,
        trace,
    )


def _sample_lines() -> list[str]:
    return [
        _rec(
            "1",
            "01",
            " 021000021",
            " 011000015",
            "240315",
            "0930",
            "A",
            "094",
            "10",
            "1",
            f"{'DEST BANK':<23}",
            f"{'ORIGIN BANK':<23}",
            f"{'REF00001':<8}",
        ),
        _rec(
            "5",
            "200",
            f"{'ACME CORP':<16}",
            " " * 20,
            "1234567890",
            "PPD",
            f"{'PAYROLL':<10}",
            " " * 6,
            "240316",
            "   ",
            "1",
            "01100001",
            "0000001",
        ),
        _entry("22", "021000021", "12345678", 12345, "JANE DOE", "0", "011000010000001"),
        _entry("27", "111000025", "987654321", 5000, "JOHN ROE", "0", "011000010000002"),
        _entry("21", "011000015", "5555", 700, "RET PAYEE", "1", "011000010000003"),
        _rec("7", "99", "R01", "021000020000009", " " * 6, "01100001", " " * 44, "011000010000003"),
        _rec(
            "8",
            "200",
            "000004",
            f"{2100002 + 11100002 + 1100001:010d}",
            f"{5000:012d}",
            f"{12345 + 700:012d}",
            "1234567890",
            " " * 19,
            " " * 6,
            "01100001",
            "0000001",
        ),
        _rec(
            "9",
            "000001",
            "000001",
            "00000004",
            f"{14300005:010d}",
            f"{5000:012d}",
            f"{13045:012d}",
            " " * 39,
        ),
        "9" * 94,
        "9" * 94,
    ]


def test_layout_parses_hand_written_file():
    lines = _sample_lines()
    assert len(lines) == 10
    parsed = parse("\n".join(lines) + "\n")
    check_controls(parsed)
    assert parsed["records"] == 8 and parsed["padding_lines"] == 2
    assert parsed["header"]["immediate_destination"] == "021000021"
    assert parsed["header"]["file_creation_time"] == "0930"
    (batch,) = parsed["batches"]
    assert batch["header"]["standard_entry_class_code"] == "PPD"
    assert batch["header"]["originating_dfi_identification"] == "01100001"
    first, _, ret = batch["entries"]
    assert first["amount"] == 12345 and first["individual_name"] == "JANE DOE"
    assert first["dfi_account_number"] == "12345678"
    assert ret["addenda"][0]["return_reason_code"] == "R01"
    assert ret["addenda"][0]["original_entry_trace_number"] == 21000020000009
    assert parsed["control"]["total_credit_entry_dollar_amount"] == 13045


def test_corrupt_entry_hash_detected():
    lines = _sample_lines()
    bc = lines[6]
    lines[6] = bc[:10] + f"{int(bc[10:20]) + 1:010d}" + bc[20:]
    parsed = parse("\n".join(lines))
    with pytest.raises(AssertionError, match="entry_hash"):
        check_controls(parsed)


def test_bad_records_rejected():
    lines = _sample_lines()
    with pytest.raises(AssertionError, match="record_length"):
        parse_record(lines[2][:-1])
    with pytest.raises(AssertionError, match="amount"):
        parse_record(lines[2][:29] + "00000001X5" + lines[2][39:])
    with pytest.raises(AssertionError, match="padding"):
        parse("\n".join([*lines[:-1], "9" * 93 + " "]))
    with pytest.raises(AssertionError, match="record order"):
        parse("\n".join([lines[0], lines[2], *lines[1:]]))


def test_routing_check_digit():
    assert routing_check_digit_ok("02100002", "1")
    assert routing_check_digit_ok("01100001", "5")
    assert not routing_check_digit_ok("01100001", "4")
