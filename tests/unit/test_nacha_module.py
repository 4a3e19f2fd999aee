"""Unit tests of actors.rails.nacha: layout, controls, validation, round trips, returns."""

import datetime

import msgspec
import pytest

from paynode.domain.rails.nacha import (
    RETURN_CODES,
    Batch,
    Entry,
    FileHeader,
    NachaError,
    Return,
    aba_check_digit,
    aba_valid,
    build_file,
    build_return_file,
    parse_file,
    parse_returns,
    trace_number,
)

ODFI = "121000248"  # Wells Fargo
CHASE = "021000021"
BOFA = "026009593"
FED_BOSTON = "011000015"
CREATED = datetime.datetime(2024, 3, 14, 9, 26)
NEXT_DAY = datetime.date(2024, 3, 15)


def header(**kw: object) -> FileHeader:
    fields: dict[str, object] = {
        "immediate_destination": FED_BOSTON,
        "immediate_origin": ODFI,
        "destination_name": "Federal Reserve Bank",
        "origin_name": "Wells Fargo",
        "created": CREATED,
    }
    fields.update(kw)
    return FileHeader(**fields)  # type: ignore[arg-type]


def entry(seq: int, code: int = 27, amount: int = 12_345, **kw: object) -> Entry:
    fields: dict[str, object] = {
        "transaction_code": code,
        "routing": CHASE,
        "account_number": f"ACCT{seq}",
        "amount": amount,
        "individual_id": f"pay-{seq}",
        "individual_name": f"Customer {seq}",
        "trace_number": trace_number(ODFI, seq),
    }
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


def batch(entries: tuple[Entry, ...], **kw: object) -> Batch:
    fields: dict[str, object] = {
        "sec_code": "PPD",
        "company_name": "Paynode Inc",
        "company_id": "1234567890",
        "entry_description": "PAYNODE",
        "effective_date": NEXT_DAY,
        "same_day": False,
        "odfi_routing": ODFI,
        "entries": entries,
    }
    fields.update(kw)
    return Batch(**fields)  # type: ignore[arg-type]


def sample_file() -> str:
    b1 = batch((entry(1, 27, 10_000), entry(2, 22, 2_500, routing=BOFA), entry(3, 37, 99)))
    b2 = batch((entry(4, 32, 700),), batch_number=2, sec_code="WEB")
    return build_file(header(), [b1, b2])


# --- layout --------------------------------------------------------------------------------


def test_records_are_94_chars_blocked_by_10_and_padded_with_nines() -> None:
    b1 = batch((entry(1), entry(2)))
    b2 = batch((entry(3, 22),), batch_number=2)
    text = build_file(header(), [b1, b2])
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text.split("\n")[:-1]
    assert all(len(line) == 94 for line in lines)
    assert len(lines) == 10
    # 1 header, batch 1 (5, 6, 6, 8), batch 2 (5, 6, 8), file control, one padding record.
    assert "".join(line[0] for line in lines) == "1566856899"
    assert lines[-1] == "9" * 94
    assert lines[-2] != "9" * 94
    bigger = build_file(header(), [batch(tuple(entry(i) for i in range(1, 8)))]).split("\n")
    assert len(bigger) - 1 == 20 and bigger[11:-1] == ["9" * 94] * 9
    assert bigger[10][7:13] == "000002"  # block count
    assert parse_file("\n".join(bigger)).block_count == 2
    with pytest.raises(NachaError, match="padding"):
        parse_file(_tamper("\n".join(bigger), 15, 0, "8"))
    # The sample file happens to fill one block exactly: no padding at all.
    assert len(sample_file().split("\n")) - 1 == 10


def test_file_header_fields() -> None:
    line = sample_file().split("\n")[0]
    assert line[0:3] == "101"
    assert line[3:13] == " 011000015"  # blank + 9-digit routing
    assert line[13:23] == " 121000248"
    assert line[23:29] == "240314" and line[29:33] == "0926"
    assert line[33] == "A"
    assert line[34:40] == "094101"  # record size, blocking factor, format code
    assert line[40:63] == "FEDERAL RESERVE BANK".ljust(23)
    assert line[63:86] == "WELLS FARGO".ljust(23)
    assert line[86:94] == " " * 8


def test_batch_header_and_entry_positions() -> None:
    lines = sample_file().split("\n")
    bh, e1 = lines[1], lines[2]
    assert bh[1:4] == "200"
    assert bh[4:20] == "PAYNODE INC     "
    assert bh[40:50] == "1234567890"
    assert bh[50:53] == "PPD"
    assert bh[53:63] == "PAYNODE   "
    assert bh[63:69] == "      "  # descriptive date blank for a next-day batch
    assert bh[69:75] == "240315"
    assert bh[75:78] == "   "  # settlement date: the ACH operator fills it
    assert bh[78] == "1"
    assert bh[79:87] == "12100024"
    assert bh[87:94] == "0000001"
    assert e1[0:3] == "627"
    assert e1[3:12] == CHASE
    assert e1[12:29] == "ACCT1".ljust(17)
    assert e1[29:39] == "0000010000"
    assert e1[39:54] == "PAY-1".ljust(15)
    assert e1[54:76] == "CUSTOMER 1".ljust(22)
    assert e1[76:78] == "  "
    assert e1[78] == "0"
    assert e1[79:94] == "121000240000001"


def test_batch_and_file_control_totals() -> None:
    lines = sample_file().split("\n")
    bc1, bc2, fc = lines[5], lines[8], lines[9]
    chase, bofa = int(CHASE[:8]), int(BOFA[:8])
    assert bc1[0:4] == "8200"
    assert bc1[4:10] == "000003"
    assert bc1[10:20] == f"{2 * chase + bofa:010d}"
    assert bc1[20:32] == f"{10_000 + 99:012d}"  # debits: 27 and 37
    assert bc1[32:44] == f"{2_500:012d}"  # credit: 22
    assert bc1[44:54] == "1234567890"
    assert bc1[54:79] == " " * 25
    assert bc1[79:94] == "121000240000001"
    assert bc2[0:4] == "8220" and bc2[87:94] == "0000002"
    assert fc[0:7] == "9000002"
    assert fc[7:13] == "000001"  # 10 records = 1 block
    assert fc[13:21] == "00000004"
    assert fc[21:31] == f"{3 * chase + bofa:010d}"
    assert fc[31:43] == f"{10_099:012d}"
    assert fc[43:55] == f"{3_200:012d}"
    assert fc[55:94] == " " * 39


def test_entry_hash_overflowing_ten_digits_is_truncated() -> None:
    rdfi = "99999999" + aba_check_digit("99999999")
    assert aba_valid(rdfi)
    entries = tuple(entry(i, 22, 1, routing=rdfi) for i in range(1, 102))
    lines = build_file(header(), [batch(entries)]).split("\n")[:-1]
    full = 101 * 99_999_999  # 10_099_999_899: eleven digits
    assert len(str(full)) == 11
    bc = next(line for line in lines if line[0] == "8")
    fc = next(line for line in lines if line[0] == "9" and line != "9" * 94)
    assert bc[10:20] == "0099999899" == fc[21:31]
    assert len(lines) % 10 == 0 and fc[7:13] == f"{len(lines) // 10:06d}"
    assert parse_file("\n".join(lines)).entry_hash == 99_999_899


@pytest.mark.parametrize(
    ("codes", "service_class"),
    [((22, 32), "220"), ((27, 37), "225"), ((22, 27), "200"), ((23,), "220"), ((28,), "225")],
)
def test_service_class_code(codes: tuple[int, ...], service_class: str) -> None:
    entries = tuple(entry(i, c, 0 if c in (23, 28) else 100) for i, c in enumerate(codes, start=1))
    lines = build_file(header(), [batch(entries)]).split("\n")
    assert lines[1][1:4] == service_class
    assert lines[2 + len(codes)][1:4] == service_class


def test_same_day_batch() -> None:
    b = batch((entry(1),), same_day=True, effective_date=CREATED.date())
    bh = build_file(header(), [b]).split("\n")[1]
    assert bh[63:69] == "SD1300"
    assert bh[69:75] == "240314"  # effective date = file creation date
    b2 = batch((entry(1),), same_day=True, effective_date=CREATED.date(), descriptive_date="SD1700")
    assert build_file(header(), [b2]).split("\n")[1][63:69] == "SD1700"


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: entry(1, routing="021000022"), id="bad-routing-checksum"),
        pytest.param(lambda: entry(1, routing="02100002"), id="short-routing"),
        pytest.param(lambda: entry(1, amount=-1), id="negative-amount"),
        pytest.param(lambda: entry(1, amount=10**10), id="amount-over-10-digits"),
        pytest.param(lambda: entry(1, amount=True), id="bool-amount"),
        pytest.param(lambda: entry(1, amount=0), id="zero-live-entry"),
        pytest.param(lambda: entry(1, code=23, amount=5), id="prenote-with-amount"),
        pytest.param(lambda: entry(1, code=21), id="return-code-not-originated"),
        pytest.param(lambda: entry(1, account_number="1" * 18), id="long-account"),
        pytest.param(lambda: entry(1, account_number="12-34"), id="account-punctuation"),
        pytest.param(lambda: entry(1, individual_name="X" * 23), id="long-name"),
        pytest.param(lambda: entry(1, individual_name="José"), id="non-ascii-name"),
        pytest.param(lambda: entry(1, individual_name="   "), id="blank-name"),
        pytest.param(lambda: entry(1, individual_id="I" * 16), id="long-id"),
        pytest.param(lambda: entry(1, individual_id="a\nb"), id="control-char"),
        pytest.param(lambda: entry(1, trace_number="12100024000001"), id="short-trace"),
        pytest.param(lambda: entry(1, discretionary="ABC"), id="long-discretionary"),
        pytest.param(lambda: batch((entry(1),), sec_code="TEL"), id="unknown-sec"),
        pytest.param(lambda: batch((entry(1),), company_name="C" * 17), id="long-company"),
        pytest.param(lambda: batch((entry(1),), company_id="123"), id="short-company-id"),
        pytest.param(lambda: batch((entry(1),), entry_description="D" * 11), id="long-desc"),
        pytest.param(lambda: batch(()), id="empty-batch"),
        pytest.param(lambda: batch((entry(1),), odfi_routing=CHASE), id="trace-not-odfi"),
        pytest.param(lambda: batch((entry(2), entry(1))), id="traces-descending"),
        pytest.param(lambda: batch((entry(1), entry(1))), id="duplicate-trace"),
        pytest.param(lambda: batch((entry(1),), batch_number=0), id="batch-number-0"),
        pytest.param(
            lambda: batch((entry(1),), effective_date=CREATED), id="datetime-as-effective-date"
        ),
        pytest.param(
            lambda: batch((entry(1, amount=1_000_000_01),), same_day=True), id="same-day-limit"
        ),
        pytest.param(
            lambda: batch((entry(1),), same_day=True, descriptive_date="240314"),
            id="same-day-descriptive-date",
        ),
        pytest.param(lambda: header(immediate_destination="011000016"), id="bad-destination"),
        pytest.param(lambda: header(immediate_origin="12345"), id="short-origin"),
        pytest.param(lambda: header(destination_name="N" * 24), id="long-destination-name"),
        pytest.param(lambda: header(file_id_modifier="a"), id="lowercase-modifier"),
        pytest.param(lambda: header(created=CREATED.date()), id="date-as-created"),
        pytest.param(lambda: build_file(header(), []), id="no-batches"),
        pytest.param(
            lambda: build_file(header(), [batch((entry(1),)), batch((entry(2),))]),
            id="duplicate-batch-number",
        ),
        pytest.param(
            lambda: build_file(header(), [batch((entry(1),)), batch((entry(1),), batch_number=2)]),
            id="duplicate-trace-across-batches",
        ),
        pytest.param(
            lambda: build_file(header(), [batch((entry(1),), same_day=True)]),
            id="same-day-not-file-date",
        ),
        pytest.param(
            lambda: build_file(header(), [batch((entry(1),), effective_date=CREATED.date())]),
            id="today-without-same-day",
        ),
    ],
)
def test_invalid_input_raises_nacha_error(make: object) -> None:
    with pytest.raises(NachaError):
        make()  # type: ignore[operator]


def test_nacha_error_is_value_error_with_clear_message() -> None:
    with pytest.raises(ValueError, match=r"021000022.*check digit"):
        entry(1, routing="021000022")


# --- parsing -------------------------------------------------------------------------------


def test_round_trip_build_parse() -> None:
    e1 = entry(1, 27, 10_000, discretionary="S1")
    e2 = entry(2, 22, 2_500, routing=BOFA)
    e3 = entry(3, 28, 0)
    b1 = batch((e1, e2, e3), company_discretionary="ref 42")
    b2 = batch((entry(4, 32, 700),), batch_number=7, sec_code="CCD")
    parsed = parse_file(build_file(header(file_id_modifier="7"), [b1, b2]))

    assert parsed.immediate_destination == FED_BOSTON
    assert parsed.immediate_origin == ODFI
    assert parsed.created == CREATED
    assert parsed.file_id_modifier == "7"
    assert parsed.destination_name == "FEDERAL RESERVE BANK"
    assert (parsed.batch_count, parsed.block_count, parsed.entry_addenda_count) == (2, 1, 4)
    assert (parsed.total_debit, parsed.total_credit) == (10_000, 3_200)

    pb1, pb2 = parsed.batches
    assert (pb1.service_class_code, pb1.sec_code, pb1.batch_number) == (200, "PPD", 1)
    assert (pb1.company_name, pb1.company_id) == ("PAYNODE INC", "1234567890")
    assert pb1.company_discretionary == "REF 42"
    assert pb1.effective_date == NEXT_DAY and pb1.odfi_id == ODFI[:8]
    assert (pb1.total_debit, pb1.total_credit, pb1.entry_addenda_count) == (10_000, 2_500, 3)
    assert (pb2.service_class_code, pb2.sec_code, pb2.batch_number) == (220, "CCD", 7)

    # Alphanumeric fields are upper-cased on the way out; otherwise the entry survives intact.
    for original, got in zip((e1, e2, e3), pb1.entries, strict=True):
        assert got.to_entry() == msgspec.structs.replace(
            original,
            account_number=original.account_number.upper(),
            individual_id=original.individual_id.upper(),
            individual_name=original.individual_name.upper(),
        )
        assert got.addenda == () and got.addenda_indicator == 0


def test_parse_accepts_crlf_and_unbroken_stream() -> None:
    text = sample_file()
    expected = parse_file(text)
    assert parse_file(text.replace("\n", "\r\n")) == expected
    assert parse_file(text.replace("\n", "")) == expected


def _tamper(text: str, lineno: int, start: int, value: str) -> str:
    lines = text.split("\n")
    line = lines[lineno]
    lines[lineno] = line[:start] + value + line[start + len(value) :]
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("lineno", "start", "value", "message"),
    [
        (2, 29, "0000010001", "total debit"),  # entry amount no longer matches the control
        (5, 4, "000004", "entry/addenda count"),
        (5, 10, "0000000001", "entry hash"),
        (5, 32, "000000000001", "total credit"),
        (5, 87, "0000009", "batch number"),
        (9, 1, "000003", "batch count"),
        (9, 7, "000002", "block count"),
        (9, 21, "0000000001", "entry hash"),
        (9, 43, "000000000000", "total credit"),
        (0, 34, "095", "record size"),
        (2, 3, "02100003", "check digit"),
        (2, 29, "00000A0000", "not numeric"),
        (8, 1, "225", "service class"),
    ],
)
def test_parse_rejects_inconsistent_files(
    lineno: int, start: int, value: str, message: str
) -> None:
    bad = _tamper(sample_file(), lineno, start, value)
    with pytest.raises(NachaError, match=message):
        parse_file(bad)


def test_parse_rejects_bad_lengths_and_order() -> None:
    lines = sample_file().split("\n")[:-1]
    with pytest.raises(NachaError, match="93 characters"):
        parse_file("\n".join([*lines[:3], lines[3][:-1], *lines[4:]]))
    with pytest.raises(NachaError, match="file header"):
        parse_file("\n".join(lines[1:]))
    with pytest.raises(NachaError, match="batch control"):
        parse_file("\n".join([*lines[:5], *lines[6:]]))  # batch 1 without its 8 record
    with pytest.raises(NachaError, match="non-ASCII"):
        parse_file(_tamper("\n".join(lines), 2, 54, "É"))
    with pytest.raises(NachaError, match="empty"):
        parse_file("")


def test_oracle_accepts_built_files() -> None:
    from tests.support import nacha_layout as oracle

    for text in (sample_file(), _return_file()):
        oracle.check_controls(oracle.parse(text))


# --- returns -------------------------------------------------------------------------------


def _return_file() -> str:
    e1 = entry(1, 27, 10_000)
    e2 = entry(2, 22, 2_500, routing=BOFA)
    e3 = entry(3, 37, 99)
    return build_return_file(
        header(immediate_destination=ODFI, immediate_origin=CHASE, origin_name="JPMorgan Chase"),
        ODFI,
        [(e1, "R01"), (e2, "R03"), (e3, "R10")],
        datetime.datetime(2024, 3, 18, 5, 0),
        company_name="Paynode Inc",
        company_id="1234567890",
    )


def test_return_file_layout() -> None:
    lines = _return_file().split("\n")[:-1]
    assert all(len(line) == 94 for line in lines) and len(lines) % 10 == 0
    # One batch per returning RDFI (Chase: 2 returns, BofA: 1), each return = 6 + 7.
    assert "".join(line[0] for line in lines[:13]) == "1567678567899"
    assert lines[0][23:33] == "2403180500"
    bh, detail, addenda = lines[1], lines[2], lines[3]
    assert bh[1:4] == "225"  # two returned debits: both come back as debits (26, 36)
    assert bh[50:53] == "PPD" and bh[69:75] == "240318"
    assert bh[79:87] == CHASE[:8]  # the returning RDFI originates the return batch
    assert detail[1:3] == "26"
    assert detail[3:12] == ODFI  # addressed back to the ODFI
    assert detail[29:39] == "0000010000"
    assert detail[78] == "1"
    assert detail[79:94] == "021000020000001"
    assert addenda[0:3] == "799"
    assert addenda[3:6] == "R01"
    assert addenda[6:21] == "121000240000001"  # original entry trace number
    assert addenda[21:27] == "      "  # date of death
    assert addenda[27:35] == CHASE[:8]  # original receiving DFI
    assert addenda[35:79] == " " * 44
    assert addenda[79:94] == detail[79:94]
    assert lines[7][1:4] == "220" and lines[8][1:3] == "21"  # returned credit (22 -> 21)
    bc = lines[6]
    assert bc[4:10] == "000004"  # entries and addenda both count
    assert bc[10:20] == f"{2 * int(ODFI[:8]):010d}"  # hash over the return entries' DFI id


def test_return_round_trip_r01_r03() -> None:
    returns = parse_returns(_return_file())
    assert [r.return_code for r in returns] == ["R01", "R10", "R03"]
    r01, r10, r03 = returns
    assert r01 == Return(
        original_trace="121000240000001",
        return_code="R01",
        amount=10_000,
        transaction_code=26,
        individual_id="PAY-1",
        trace_number="021000020000001",
        original_receiving_dfi=CHASE[:8],
        account_number="ACCT1",
        individual_name="CUSTOMER 1",
    )
    assert r01.original_transaction_code == 27 and r01.reason == "Insufficient Funds"
    assert (r03.original_trace, r03.transaction_code, r03.amount) == ("121000240000002", 21, 2_500)
    assert r03.original_transaction_code == 22
    assert r03.original_receiving_dfi == BOFA[:8] and r03.trace_number == "026009590000001"
    assert (r10.transaction_code, r10.original_trace) == (36, "121000240000003")
    parsed = parse_file(_return_file())
    assert (parsed.total_debit, parsed.total_credit) == (10_099, 2_500)


def test_return_of_prenote_and_date_of_death() -> None:
    text = build_return_file(
        header(), ODFI, [(entry(1, 28, 0), "R15")], datetime.datetime(2024, 3, 18)
    )
    assert parse_returns(text)[0].original_transaction_code == 28
    with_dod = _tamper(text, 3, 21, "980704")  # a date of death last century
    with_info = _tamper(with_dod, 3, 35, "DECEASED")
    (r,) = parse_returns(with_info)
    assert r.date_of_death == datetime.date(1998, 7, 4)
    assert r.addenda_information == "DECEASED"


@pytest.mark.parametrize(
    "returns",
    [
        pytest.param([], id="empty"),
        pytest.param([(entry(1), "R00")], id="unknown-code"),
        pytest.param([(entry(1), "R63")], id="retired-code"),
        pytest.param([(entry(1), "R69")], id="dishonor-code"),
        pytest.param([(entry(1), "R01"), (entry(1), "R02")], id="returned-twice"),
        pytest.param([("not an entry", "R01")], id="not-entry"),
    ],
)
def test_build_return_file_rejects(returns: list[tuple[Entry, str]]) -> None:
    with pytest.raises(NachaError):
        build_return_file(header(), ODFI, returns, CREATED)


def test_parse_returns_rejects_unknown_reason_code() -> None:
    bad = _tamper(_return_file(), 3, 3, "R99")
    with pytest.raises(NachaError, match="R99"):
        parse_returns(bad)


def test_parse_returns_ignores_forward_entries() -> None:
    assert parse_returns(sample_file()) == []


# --- routing numbers and codes -------------------------------------------------------------


@pytest.mark.parametrize("routing", [FED_BOSTON, CHASE, BOFA, ODFI, "011000028", "091000019"])
def test_aba_valid_real_routing_numbers(routing: str) -> None:
    assert aba_valid(routing)
    assert aba_check_digit(routing[:8]) == routing[8]


@pytest.mark.parametrize(
    "routing",
    ["011000016", "021000012", "12100024", "1210002480", "12100024X", "", "٠٢١٠٠٠٠٢١", 21000021],
)
def test_aba_valid_rejects(routing: str) -> None:
    assert not aba_valid(routing)


def test_return_codes() -> None:
    assert RETURN_CODES["R01"] == "Insufficient Funds"
    assert RETURN_CODES["R02"] == "Account Closed"
    assert RETURN_CODES["R03"] == "No Account/Unable to Locate Account"
    assert RETURN_CODES["R04"] == "Invalid Account Number Structure"
    assert RETURN_CODES["R10"].lower() == (
        "customer advises originator is not known to receiver and/or originator is not "
        "authorized by receiver to debit receiver's account"
    )
    assert RETURN_CODES["R85"] == "Incorrectly Coded Outbound International Payment"
    numbers = {int(code[1:]) for code in RETURN_CODES}
    expected = (
        set(range(1, 48)) | set(range(50, 54)) | {61, 62} | set(range(67, 78)) | set(range(80, 86))
    )
    assert numbers == expected  # no retired (R63-R66) or unassigned (R48, R78...) codes
    assert all(len(code) == 3 and code.startswith("R") for code in RETURN_CODES)


def test_parse_bank_file_with_remittance_addenda() -> None:
    lines = build_file(header(), [batch((entry(1, 22),))]).split("\n")[:-1]
    trace = lines[2][79:94]
    addenda = "705" + "INVOICE 42".ljust(80) + "0001" + trace[-7:]
    lines[2] = lines[2][:78] + "1" + lines[2][79:]
    lines[3] = lines[3][:4] + "000002" + lines[3][10:]  # batch entry/addenda count
    lines[4] = lines[4][:13] + "00000002" + lines[4][21:]  # file entry/addenda count
    lines.insert(3, addenda)
    text = "\n".join(lines[:-1])  # drop one padding record: still one block
    (parsed,) = parse_file(text).batches[0].entries
    assert parsed.addenda == (addenda,) and parsed.addenda_indicator == 1
    assert parse_returns(text) == []
    with pytest.raises(NachaError, match="entry detail sequence"):
        parse_file(text.replace(addenda, addenda[:87] + "0000009"))
    with pytest.raises(NachaError, match="indicator"):
        parse_file(text.replace(addenda + "\n", "9" * 94 + "\n"))
