"""Independent, field-by-field parser for NACHA ACH files (test oracle).

Written from the published NACHA record layouts (94-character records, blocking factor 10),
not from the project's generator. Used by tests to check files the generator writes.

Layouts are lists of ``(name, start, end, kind)`` with 1-based inclusive positions.

Kinds and the Python value ``parse_record`` returns for them:

* ``"N"``          numeric, ASCII digits only                      -> ``int``
* ``"A"``          alphanumeric, printable ASCII                   -> ``str`` (trailing blanks cut)
* ``"B"``          reserved, must be all blanks                    -> ``""``
* ``"TTTTAAAA"``   8-digit routing prefix (no check digit)         -> ``str`` (zeros kept)
* ``"TTTTAAAAC"``  9-digit routing number                          -> ``str``
* ``"bTTTTAAAAC"`` blank followed by a 9-digit routing number      -> ``str`` (9 digits)
* ``"YYMMDD"``     calendar date                                   -> ``str``
* ``"YYMMDDb"``    calendar date or all blanks                     -> ``str`` (``""`` if blank)
* ``"HHMM"``       time of day                                     -> ``str``
* ``"JJJb"``       julian day 001-366 or all blanks                -> ``str`` (``""`` if blank)

Any violation raises ``AssertionError`` naming the record and the field.
"""

from __future__ import annotations

import re

RECORD_LENGTH = 94
BLOCKING_FACTOR = 10
PADDING_LINE = "9" * RECORD_LENGTH

Layout = list[tuple[str, int, int, str]]

# Record type 1 -- File Header Record
FILE_HEADER: Layout = [
    ("record_type_code", 1, 1, "N"),
    ("priority_code", 2, 3, "N"),
    ("immediate_destination", 4, 13, "bTTTTAAAAC"),
    ("immediate_origin", 14, 23, "bTTTTAAAAC"),
    ("file_creation_date", 24, 29, "YYMMDD"),
    ("file_creation_time", 30, 33, "HHMM"),
    ("file_id_modifier", 34, 34, "A"),
    ("record_size", 35, 37, "N"),
    ("blocking_factor", 38, 39, "N"),
    ("format_code", 40, 40, "N"),
    ("immediate_destination_name", 41, 63, "A"),
    ("immediate_origin_name", 64, 86, "A"),
    ("reference_code", 87, 94, "A"),
]

# Record type 5 -- Company/Batch Header Record
BATCH_HEADER: Layout = [
    ("record_type_code", 1, 1, "N"),
    ("service_class_code", 2, 4, "N"),
    ("company_name", 5, 20, "A"),
    ("company_discretionary_data", 21, 40, "A"),
    ("company_identification", 41, 50, "A"),
    ("standard_entry_class_code", 51, 53, "A"),
    ("company_entry_description", 54, 63, "A"),
    ("company_descriptive_date", 64, 69, "A"),
    ("effective_entry_date", 70, 75, "YYMMDD"),
    ("settlement_date", 76, 78, "JJJb"),  # inserted by the ACH Operator; blank from originators
    ("originator_status_code", 79, 79, "A"),
    ("originating_dfi_identification", 80, 87, "TTTTAAAA"),
    ("batch_number", 88, 94, "N"),
]

# Record type 6 -- Entry Detail Record (PPD/CCD/WEB/TEL layout)
ENTRY_DETAIL: Layout = [
    ("record_type_code", 1, 1, "N"),
    ("transaction_code", 2, 3, "N"),
    ("receiving_dfi_identification", 4, 11, "TTTTAAAA"),
    ("check_digit", 12, 12, "N"),
    ("dfi_account_number", 13, 29, "A"),
    ("amount", 30, 39, "N"),
    ("individual_identification_number", 40, 54, "A"),
    ("individual_name", 55, 76, "A"),
    ("discretionary_data", 77, 78, "A"),
    ("addenda_record_indicator", 79, 79, "N"),
    ("trace_number", 80, 94, "N"),
]

# Record type 7, addenda type code 99 -- Return Entry Addenda Record
ADDENDA: Layout = [
    ("record_type_code", 1, 1, "N"),
    ("addenda_type_code", 2, 3, "N"),
    ("return_reason_code", 4, 6, "A"),
    ("original_entry_trace_number", 7, 21, "N"),
    ("date_of_death", 22, 27, "YYMMDDb"),
    ("original_receiving_dfi_identification", 28, 35, "TTTTAAAA"),
    ("addenda_information", 36, 79, "A"),
    ("trace_number", 80, 94, "N"),
]
ADDENDA_99 = ADDENDA

# Record type 7, addenda type code 05 -- remittance addenda (PPD/CCD/WEB/CTX)
ADDENDA_05: Layout = [
    ("record_type_code", 1, 1, "N"),
    ("addenda_type_code", 2, 3, "N"),
    ("payment_related_information", 4, 83, "A"),
    ("addenda_sequence_number", 84, 87, "N"),
    ("entry_detail_sequence_number", 88, 94, "N"),
]

# Record type 7, addenda type code 98 -- Notification of Change addenda
ADDENDA_98: Layout = [
    ("record_type_code", 1, 1, "N"),
    ("addenda_type_code", 2, 3, "N"),
    ("change_code", 4, 6, "A"),
    ("original_entry_trace_number", 7, 21, "N"),
    ("reserved", 22, 27, "B"),
    ("original_receiving_dfi_identification", 28, 35, "TTTTAAAA"),
    ("corrected_data", 36, 64, "A"),
    ("reserved_2", 65, 79, "B"),
    ("trace_number", 80, 94, "N"),
]

# Record type 8 -- Company/Batch Control Record
BATCH_CONTROL: Layout = [
    ("record_type_code", 1, 1, "N"),
    ("service_class_code", 2, 4, "N"),
    ("entry_addenda_count", 5, 10, "N"),
    ("entry_hash", 11, 20, "N"),
    ("total_debit_entry_dollar_amount", 21, 32, "N"),
    ("total_credit_entry_dollar_amount", 33, 44, "N"),
    ("company_identification", 45, 54, "A"),
    ("message_authentication_code", 55, 73, "A"),
    ("reserved", 74, 79, "B"),
    ("originating_dfi_identification", 80, 87, "TTTTAAAA"),
    ("batch_number", 88, 94, "N"),
]

# Record type 9 -- File Control Record
FILE_CONTROL: Layout = [
    ("record_type_code", 1, 1, "N"),
    ("batch_count", 2, 7, "N"),
    ("block_count", 8, 13, "N"),
    ("entry_addenda_count", 14, 21, "N"),
    ("entry_hash", 22, 31, "N"),
    ("total_debit_entry_dollar_amount", 32, 43, "N"),
    ("total_credit_entry_dollar_amount", 44, 55, "N"),
    ("reserved", 56, 94, "B"),
]

LAYOUTS: dict[str, tuple[str, Layout]] = {
    "1": ("file header", FILE_HEADER),
    "5": ("batch header", BATCH_HEADER),
    "6": ("entry detail", ENTRY_DETAIL),
    "8": ("batch control", BATCH_CONTROL),
    "9": ("file control", FILE_CONTROL),
}
ADDENDA_LAYOUTS: dict[str, tuple[str, Layout]] = {
    "05": ("addenda 05", ADDENDA_05),
    "98": ("addenda 98 (NOC)", ADDENDA_98),
    "99": ("addenda 99 (return)", ADDENDA_99),
}

# Fixed values required by the layouts (beyond the record type code).
FIXED: dict[str, dict[str, int]] = {
    "file header": {"priority_code": 1, "record_size": 94, "blocking_factor": 10, "format_code": 1},
    "addenda 05": {"addenda_type_code": 5},
    "addenda 98 (NOC)": {"addenda_type_code": 98},
    "addenda 99 (return)": {"addenda_type_code": 99},
}

# Transaction codes: 2x checking, 3x demand/savings, 4x GL, 5x loan.
# Second digit 1-4 = credit (1 return/NOC, 2 live, 3 prenote, 4 zero-dollar remittance),
# 5-9 = debit (5 loan reversal, 6 return/NOC, 7 live, 8 prenote, 9 zero-dollar remittance).
CREDIT_CODES = frozenset({21, 22, 23, 24, 31, 32, 33, 34, 41, 42, 43, 44, 51, 52, 53, 54})
DEBIT_CODES = frozenset({26, 27, 28, 29, 36, 37, 38, 39, 46, 47, 48, 49, 55, 56})
ZERO_AMOUNT_CODES = frozenset(c for c in CREDIT_CODES | DEBIT_CODES if c % 10 in (3, 4, 8, 9))
SERVICE_CLASS_CODES = frozenset({200, 220, 225, 280})

_DIGITS = frozenset("0123456789")
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


def _check_layout(name: str, layout: Layout) -> None:
    pos = 1
    for field, start, end, _kind in layout:
        assert start == pos and end >= start, f"{name}: {field} does not tile the record"
        pos = end + 1
    assert pos == RECORD_LENGTH + 1, f"{name}: layout covers {pos - 1} positions, not 94"


for _name, _layout in [*LAYOUTS.values(), *ADDENDA_LAYOUTS.values()]:
    _check_layout(_name, _layout)


def routing_check_digit_ok(eight: str, check: str) -> bool:
    """ABA check digit: weights 3,7,1 over the 8 digits; check = (10 - sum % 10) % 10."""
    if len(eight) != 8 or len(check) != 1 or not set(eight + check) <= _DIGITS:
        return False
    total = sum(int(d) * w for d, w in zip(eight, (3, 7, 1) * 3, strict=False))
    return (10 - total % 10) % 10 == int(check)


def _is_digits(s: str) -> bool:
    return bool(s) and set(s) <= _DIGITS


def _valid_yymmdd(s: str) -> bool:
    if len(s) != 6 or not _is_digits(s):
        return False
    month, day = int(s[2:4]), int(s[4:6])
    return 1 <= month <= 12 and 1 <= day <= 31


def _convert(record: str, field: str, kind: str, raw: str) -> str | int:
    where = f"{record}: field {field} ({raw!r}, kind {kind})"
    assert set(raw) <= _PRINTABLE, f"{where}: non-printable or non-ASCII character"
    if kind == "N":
        assert _is_digits(raw), f"{where}: numeric field must be all digits"
        return int(raw)
    if kind == "A":
        return raw.rstrip(" ")
    if kind == "B":
        assert raw == " " * len(raw), f"{where}: reserved field must be blank"
        return ""
    if kind in ("TTTTAAAA", "TTTTAAAAC"):
        assert len(raw) == len(kind) and _is_digits(raw), f"{where}: routing must be digits"
        return raw
    if kind == "bTTTTAAAAC":
        assert raw[0] == " " and _is_digits(raw[1:]), f"{where}: expected blank + 9 digits"
        return raw[1:]
    if kind == "YYMMDD":
        assert _valid_yymmdd(raw), f"{where}: not a YYMMDD date"
        return raw
    if kind == "YYMMDDb":
        if raw.strip(" ") == "":
            return ""
        assert _valid_yymmdd(raw), f"{where}: not a YYMMDD date or blank"
        return raw
    if kind == "HHMM":
        ok = _is_digits(raw) and len(raw) == 4 and int(raw[:2]) < 24 and int(raw[2:]) < 60
        assert ok, f"{where}: not an HHMM time"
        return raw
    if kind == "JJJb":
        if raw.strip(" ") == "":
            return ""
        assert _is_digits(raw) and 1 <= int(raw) <= 366, f"{where}: not a julian day or blank"
        return raw
    raise AssertionError(f"{where}: unknown kind")


def _layout_for(line: str) -> tuple[str, Layout]:
    code = line[:1]
    if code == "7":
        addenda_type = line[1:3]
        assert addenda_type in ADDENDA_LAYOUTS, (
            f"addenda: field addenda_type_code {addenda_type!r} is not 05, 98 or 99"
        )
        return ADDENDA_LAYOUTS[addenda_type]
    assert code in LAYOUTS, f"record: field record_type_code {code!r} is not 1/5/6/7/8/9"
    return LAYOUTS[code]


def parse_record(line: str) -> dict[str, str | int]:
    """Slice one 94-character record into its fields (layout chosen by position 1)."""
    assert isinstance(line, str), "record: expected str"
    assert len(line) == RECORD_LENGTH, (
        f"record: field record_length is {len(line)}, expected 94: {line!r}"
    )
    record, layout = _layout_for(line)
    out: dict[str, str | int] = {}
    for field, start, end, kind in layout:
        out[field] = _convert(record, field, kind, line[start - 1 : end])
    for field, value in FIXED.get(record, {}).items():
        assert out[field] == value, f"{record}: field {field} is {out[field]!r}, expected {value}"
    if record == "file header":
        mod = out["file_id_modifier"]
        assert isinstance(mod, str) and re.fullmatch(r"[A-Z0-9]", mod), (
            f"file header: field file_id_modifier {mod!r} must be A-Z or 0-9"
        )
    return out


def parse(text: str) -> dict:
    """Parse a whole file, enforcing record order ``1 (5 (6 7*)* 8)* 9 (9-padding)*``."""
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    assert lines, "file: no records"

    header: dict | None = None
    control: dict | None = None
    batches: list[dict] = []
    batch: dict | None = None
    padding = 0
    records = 0

    for lineno, line in enumerate(lines, start=1):
        if control is not None:
            assert line == PADDING_LINE, f"padding: line {lineno} is not 94 '9' characters"
            padding += 1
            continue
        try:
            rec = parse_record(line)
        except AssertionError as exc:
            raise AssertionError(f"line {lineno}: {exc}") from None
        records += 1
        code = line[0]
        where = f"record order: line {lineno} (type {code})"
        if code == "1":
            assert header is None and lineno == 1, f"{where}: file header must be line 1 only"
            header = rec
            continue
        assert header is not None, f"{where}: first record must be the file header (type 1)"
        if code == "5":
            assert batch is None, f"{where}: batch header inside an open batch"
            batch = {"header": rec, "entries": [], "control": None}
        elif code == "6":
            assert batch is not None, f"{where}: entry detail outside a batch"
            batch["entries"].append({**rec, "addenda": []})
        elif code == "7":
            assert batch is not None and batch["entries"], f"{where}: addenda without an entry"
            batch["entries"][-1]["addenda"].append(rec)
        elif code == "8":
            assert batch is not None, f"{where}: batch control without a batch header"
            batch["control"] = rec
            batches.append(batch)
            batch = None
        elif code == "9":
            assert batch is None, f"{where}: file control inside an open batch"
            control = rec
    assert header is not None, "record order: missing file header"
    assert batch is None, "record order: last batch has no batch control (type 8)"
    assert control is not None, "record order: missing file control (type 9)"
    return {
        "header": header,
        "batches": batches,
        "control": control,
        "padding_lines": padding,
        "records": records,
    }


def _eq(what: str, got: object, want: object) -> None:
    assert got == want, f"{what} mismatch: record says {got!r}, recomputed {want!r}"


def check_controls(parsed: dict) -> None:
    """Recompute every control total / count / hash and check structural rules."""
    header = parsed["header"]
    dest = header["immediate_destination"]
    assert routing_check_digit_ok(dest[:8], dest[8:]), (
        f"file header immediate_destination {dest!r} has a bad check digit"
    )

    file_count = file_hash = file_debit = file_credit = 0
    last_batch_number = 0
    for b_index, batch in enumerate(parsed["batches"], start=1):
        bh, bc, entries = batch["header"], batch["control"], batch["entries"]
        tag = f"batch #{b_index} (batch_number {bh['batch_number']})"
        sc = bh["service_class_code"]
        assert sc in SERVICE_CLASS_CODES, f"{tag}: service_class_code {sc} unknown"
        _eq(f"{tag} service_class_code header/control", bc["service_class_code"], sc)
        _eq(
            f"{tag} company_identification header/control",
            bc["company_identification"],
            bh["company_identification"],
        )
        odfi = bh["originating_dfi_identification"]
        _eq(
            f"{tag} originating_dfi_identification header/control",
            bc["originating_dfi_identification"],
            odfi,
        )
        _eq(f"{tag} batch_number header/control", bc["batch_number"], bh["batch_number"])
        assert bh["batch_number"] > last_batch_number, (
            f"{tag}: batch_number not ascending (previous {last_batch_number})"
        )
        last_batch_number = bh["batch_number"]

        count = e_hash = debit = credit = 0
        last_trace = -1
        for e_index, e in enumerate(entries, start=1):
            etag = f"{tag} entry #{e_index} (trace {e['trace_number']})"
            code, amount, trace = e["transaction_code"], e["amount"], e["trace_number"]
            rdfi = e["receiving_dfi_identification"]
            assert routing_check_digit_ok(rdfi, str(e["check_digit"])), (
                f"{etag}: check_digit {e['check_digit']} invalid for RDFI {rdfi}"
            )
            if code in CREDIT_CODES:
                credit += amount
                assert sc != 225, f"{etag}: credit code {code} in debits-only batch (225)"
            elif code in DEBIT_CODES:
                debit += amount
                assert sc != 220, f"{etag}: debit code {code} in credits-only batch (220)"
            else:
                raise AssertionError(f"{etag}: transaction_code {code} is not a valid code")
            if code in ZERO_AMOUNT_CODES:
                assert amount == 0, f"{etag}: prenote/zero-dollar code {code} has amount {amount}"
            assert trace > last_trace, f"{etag}: trace_number not ascending within batch"
            last_trace = trace
            _eq(f"{etag} trace_number ODFI prefix", f"{trace:015d}"[:8], odfi)

            addenda = e["addenda"]
            ind = e["addenda_record_indicator"]
            assert ind in (0, 1), f"{etag}: addenda_record_indicator {ind} not 0/1"
            _eq(f"{etag} addenda_record_indicator vs addenda present", ind, int(bool(addenda)))
            types = [a["addenda_type_code"] for a in addenda]
            if 99 in types or 98 in types:
                assert len(addenda) == 1, f"{etag}: return/NOC entry must have exactly 1 addenda"
                a = addenda[0]
                _eq(f"{etag} addenda trace_number", a["trace_number"], trace)
                if types == [99]:
                    assert re.fullmatch(r"R\d\d", a["return_reason_code"]), (
                        f"{etag}: return_reason_code {a['return_reason_code']!r} not Rnn"
                    )
            else:
                for seq, a in enumerate(addenda, start=1):
                    _eq(f"{etag} addenda_sequence_number", a["addenda_sequence_number"], seq)
                    _eq(
                        f"{etag} entry_detail_sequence_number",
                        a["entry_detail_sequence_number"],
                        trace % 10**7,
                    )

            count += 1 + len(addenda)
            e_hash += int(rdfi)

        _eq(f"{tag} entry_addenda_count", bc["entry_addenda_count"], count)
        _eq(f"{tag} entry_hash", bc["entry_hash"], e_hash % 10**10)
        _eq(f"{tag} total_debit_entry_dollar_amount", bc["total_debit_entry_dollar_amount"], debit)
        _eq(
            f"{tag} total_credit_entry_dollar_amount",
            bc["total_credit_entry_dollar_amount"],
            credit,
        )
        file_count += count
        file_hash += e_hash
        file_debit += debit
        file_credit += credit

    fc = parsed["control"]
    records, padding = parsed["records"], parsed["padding_lines"]
    _eq("file control batch_count", fc["batch_count"], len(parsed["batches"]))
    _eq("file control block_count", fc["block_count"], -(-records // BLOCKING_FACTOR))
    _eq("file control entry_addenda_count", fc["entry_addenda_count"], file_count)
    _eq("file control entry_hash", fc["entry_hash"], file_hash % 10**10)
    _eq(
        "file control total_debit_entry_dollar_amount",
        fc["total_debit_entry_dollar_amount"],
        file_debit,
    )
    _eq(
        "file control total_credit_entry_dollar_amount",
        fc["total_credit_entry_dollar_amount"],
        file_credit,
    )
    _eq("padding_lines", padding, -records % BLOCKING_FACTOR)
    assert (records + padding) % BLOCKING_FACTOR == 0, (
        f"total line count {records + padding} is not a multiple of 10"
    )
