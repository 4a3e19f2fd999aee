"""Build and parse NACHA ACH files (pure: stdlib + msgspec, no I/O).

An ACH file is a sequence of fixed-width records of exactly 94 ASCII characters; the first
character is the record type::

    1  File Header          one per file
    5  Batch Header         } one per batch (one originator, one SEC code, one effective date)
    6  Entry Detail         }   } one per payment
    7  Addenda              }   } 0..n after its entry (returns: exactly one, type code 99)
    8  Batch Control        } counts, entry hash and totals of the batch
    9  File Control         counts, entry hash and totals of the file
    999...9                 padding records so the record count is a multiple of 10

Alphanumeric fields are left-justified, blank-padded and upper-cased; numeric fields are
right-justified and zero-padded. Amounts are integer cents. The entry hash is the sum of the
8-digit receiving DFI identifications (routing numbers without check digit), keeping only the
rightmost 10 digits. Positions in the comments below are 1-based and inclusive, as in the
NACHA Operating Rules, Appendix Three.

Same-day ACH: an entry whose effective entry date is the day the file is sent is settled
the same day (if it is at most $1,000,000). Originators may say so in the Company Descriptive
Date as ``SDHHMM`` (desired settlement time, e.g. ``SD1300``).

Returns (Appendix Four): the RDFI sends back a new entry with the return transaction code
(21/26/31/36) addressed to the ODFI, followed by a ``99`` addenda carrying the return reason
code, the original trace number and the original RDFI.
"""

import datetime
import re
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

import msgspec

__all__ = [
    "CREDIT_CODES",
    "DEBIT_CODES",
    "FORWARD_CODES",
    "PRENOTE_CODES",
    "RETURN_CODES",
    "RETURN_TRANSACTION_CODES",
    "SEC_CODES",
    "Batch",
    "Entry",
    "FileHeader",
    "NachaError",
    "ParsedBatch",
    "ParsedEntry",
    "ParsedFile",
    "Return",
    "aba_check_digit",
    "aba_valid",
    "build_file",
    "build_return_file",
    "parse_file",
    "parse_returns",
    "trace_number",
]

RECORD_SIZE: Final = 94
BLOCKING_FACTOR: Final = 10
PADDING_RECORD: Final = "9" * RECORD_SIZE
MAX_AMOUNT: Final = 99_999_999_99  # the entry amount field has 10 digits
# Nacha per-entry same-day limit since March 2022 ($1,000,000).
SAME_DAY_ENTRY_LIMIT: Final = 1_000_000_00
SAME_DAY_DEFAULT_DESCRIPTIVE_DATE: Final = "SD1300"

SERVICE_CLASS_MIXED: Final = 200
SERVICE_CLASS_CREDITS: Final = 220
SERVICE_CLASS_DEBITS: Final = 225
SERVICE_CLASS_CODES: Final = frozenset(
    {SERVICE_CLASS_MIXED, SERVICE_CLASS_CREDITS, SERVICE_CLASS_DEBITS}
)

SEC_CODES: Final = frozenset({"PPD", "WEB", "CCD"})

# Transaction codes: first digit is the account type (2 checking, 3 savings, 4 GL, 5 loan),
# second digit 1-4 credits (return/NOC, live, prenote, zero-dollar), 5-9 debits.
CREDIT_CODES: Final = frozenset({21, 22, 23, 24, 31, 32, 33, 34, 41, 42, 43, 44, 51, 52, 53, 54})
DEBIT_CODES: Final = frozenset({26, 27, 28, 29, 36, 37, 38, 39, 46, 47, 48, 49, 55, 56})
ZERO_AMOUNT_CODES: Final = frozenset({23, 24, 28, 29, 33, 34, 38, 39, 43, 44, 48, 49, 53, 54})
# What this module originates: live and prenote entries to checking and savings.
FORWARD_CODES: Final = frozenset({22, 23, 27, 28, 32, 33, 37, 38})
PRENOTE_CODES: Final = frozenset({23, 28, 33, 38})
# The RDFI returns an entry with the "return or NOC" code of the same account type and side.
RETURN_TRANSACTION_CODES: Final[dict[int, int]] = {
    22: 21,
    23: 21,
    27: 26,
    28: 26,
    32: 31,
    33: 31,
    37: 36,
    38: 36,
}
_RETURN_ENTRY_CODES: Final = frozenset({21, 26, 31, 36, 41, 46, 51, 56})

# Return reason codes of the Nacha Operating Rules (Appendix Four). Numbers absent here
# (R48-R49, R54-R60, R63-R66, R78-R79) are unassigned or retired.
RETURN_CODES: Final[dict[str, str]] = {
    "R01": "Insufficient Funds",
    "R02": "Account Closed",
    "R03": "No Account/Unable to Locate Account",
    "R04": "Invalid Account Number Structure",
    "R05": "Unauthorized Debit to Consumer Account Using Corporate SEC Code",
    "R06": "Returned per ODFI's Request",
    "R07": "Authorization Revoked by Customer",
    "R08": "Payment Stopped",
    "R09": "Uncollected Funds",
    "R10": (
        "Customer Advises Originator is Not Known to Receiver and/or Originator is Not "
        "Authorized by Receiver to Debit Receiver's Account"
    ),
    "R11": "Customer Advises Entry Not in Accordance with the Terms of the Authorization",
    "R12": "Account Sold to Another DFI",
    "R13": "Invalid ACH Routing Number",
    "R14": "Representative Payee Deceased or Unable to Continue in That Capacity",
    "R15": "Beneficiary or Account Holder (Other Than a Representative Payee) Deceased",
    "R16": "Account Frozen/Entry Returned per OFAC Instruction",
    "R17": (
        "File Record Edit Criteria/Entry with Invalid Account Number Initiated Under "
        "Questionable Circumstances/Return of Improperly-Initiated Reversal"
    ),
    "R18": "Improper Effective Entry Date",
    "R19": "Amount Field Error",
    "R20": "Non-Transaction Account",
    "R21": "Invalid Company Identification",
    "R22": "Invalid Individual ID Number",
    "R23": "Credit Entry Refused by Receiver",
    "R24": "Duplicate Entry",
    "R25": "Addenda Error",
    "R26": "Mandatory Field Error",
    "R27": "Trace Number Error",
    "R28": "Routing Number Check Digit Error",
    "R29": "Corporate Customer Advises Not Authorized",
    "R30": "RDFI Not Participant in Check Truncation Program",
    "R31": "Permissible Return Entry (CCD and CTX Only)",
    "R32": "RDFI Non-Settlement",
    "R33": "Return of XCK Entry",
    "R34": "Limited Participation DFI",
    "R35": "Return of Improper Debit Entry",
    "R36": "Return of Improper Credit Entry",
    "R37": "Source Document Presented for Payment",
    "R38": "Stop Payment on Source Document",
    "R39": "Improper Source Document/Source Document Presented for Payment",
    "R40": "Return of ENR Entry by Federal Government Agency (ENR Only)",
    "R41": "Invalid Transaction Code (ENR Only)",
    "R42": "Routing Number/Check Digit Error (ENR Only)",
    "R43": "Invalid DFI Account Number (ENR Only)",
    "R44": "Invalid Individual ID Number/Identification Number (ENR Only)",
    "R45": "Invalid Individual Name/Company Name (ENR Only)",
    "R46": "Invalid Representative Payee Indicator (ENR Only)",
    "R47": "Duplicate Enrollment (ENR Only)",
    "R50": "State Law Affecting RCK Acceptance",
    "R51": "Item Related to RCK Entry is Ineligible or RCK Entry is Improper",
    "R52": "Stop Payment on Item Related to RCK Entry",
    "R53": "Item and RCK Entry Presented for Payment",
    "R61": "Misrouted Return",
    "R62": "Return of Erroneous or Reversing Debit",
    "R67": "Duplicate Return",
    "R68": "Untimely Return",
    "R69": "Field Error(s)",
    "R70": "Permissible Return Entry Not Accepted/Return Not Requested by ODFI",
    "R71": "Misrouted Dishonored Return",
    "R72": "Untimely Dishonored Return",
    "R73": "Timely Original Return",
    "R74": "Corrected Return",
    "R75": "Return Not a Duplicate",
    "R76": "No Errors Found",
    "R77": "Non-Acceptance of R62 Dishonored Return",
    "R80": "IAT Entry Coding Error",
    "R81": "Non-Participant in IAT Program",
    "R82": "Invalid Foreign Receiving DFI Identification",
    "R83": "Foreign Receiving DFI Unable to Settle",
    "R84": "Entry Not Processed by Gateway",
    "R85": "Incorrectly Coded Outbound International Payment",
}
# Dishonored (R61-R70, R77) and contested dishonored (R71-R76) returns are sent by the ODFI
# and RDFI about a return, with a different addenda layout; an RDFI return cannot use them.
_DISHONOR_CODES: Final = frozenset(
    {"R61", "R62", "R67", "R68", "R69", "R70", "R71", "R72", "R73", "R74", "R75", "R76", "R77"}
)

_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_DIGITS = re.compile(r"[0-9]+")
_ACCOUNT = re.compile(r"[A-Za-z0-9]{1,17}")
_SAME_DAY_DESC = re.compile(r"SD([01][0-9]|2[0-3])[0-5][0-9]")
_ORIGIN = re.compile(r"[A-Za-z0-9 ]{9,10}")


class NachaError(ValueError):
    """An input that cannot be rendered as, or a file that is not, a valid NACHA file."""


# ---------------------------------------------------------------------------------------------
# Routing numbers


def aba_check_digit(first8: str) -> str:
    """The ABA check digit for an 8-digit routing prefix (weights 3, 7, 1)."""
    if len(first8) != 8 or not _DIGITS.fullmatch(first8):
        raise NachaError(f"routing prefix must be 8 digits, got {first8!r}")
    total = sum(int(d) * w for d, w in zip(first8, (3, 7, 1, 3, 7, 1, 3, 7), strict=True))
    return str(-total % 10)


def aba_valid(routing: str) -> bool:
    """True for 9 ASCII digits with 3(d1+d4+d7) + 7(d2+d5+d8) + (d3+d6+d9) = 0 mod 10."""
    if not isinstance(routing, str) or len(routing) != 9 or not _DIGITS.fullmatch(routing):
        return False
    d = [int(c) for c in routing]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5] + d[8]) % 10 == 0


def trace_number(odfi_routing: str, sequence: int) -> str:
    """A 15-digit trace number: the ODFI's 8-digit routing prefix + a 7-digit sequence."""
    _check_routing("odfi_routing", odfi_routing)
    _check_int("trace sequence", sequence, 0, 9_999_999)
    return f"{odfi_routing[:8]}{sequence:07d}"


# ---------------------------------------------------------------------------------------------
# Input validation


def _check_text(name: str, value: object, max_len: int, *, required: bool = False) -> None:
    if not isinstance(value, str):
        raise NachaError(f"{name} must be a str, got {type(value).__name__}")
    if not _PRINTABLE.fullmatch(value):
        raise NachaError(f"{name} {value!r} has non-ASCII or control characters")
    if len(value) > max_len:
        raise NachaError(f"{name} {value!r} is {len(value)} characters, at most {max_len}")
    if required and not value.strip():
        raise NachaError(f"{name} must not be blank")


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    # bool is an int subclass; True as an amount is a bug, not a cent.
    if not isinstance(value, int) or isinstance(value, bool):
        raise NachaError(f"{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise NachaError(f"{name} {value} is out of range {lo}..{hi}")


def _check_digits(name: str, value: object, length: int) -> None:
    if not isinstance(value, str) or len(value) != length or not _DIGITS.fullmatch(value):
        raise NachaError(f"{name} must be {length} digits, got {value!r}")


def _check_routing(name: str, value: object) -> None:
    _check_digits(name, value, 9)
    if not aba_valid(str(value)):
        raise NachaError(f"{name} {value!r} fails the ABA check digit")


def _check_date(name: str, value: object) -> None:
    # datetime is a date subclass; a timestamp here means the caller mixed up fields.
    if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
        raise NachaError(f"{name} must be a datetime.date, got {type(value).__name__}")
    if not 2000 <= value.year <= 2099:
        raise NachaError(f"{name} {value} cannot be written as YYMMDD in this century")


# ---------------------------------------------------------------------------------------------
# Inputs


class Entry(msgspec.Struct, frozen=True):
    """One PPD/WEB/CCD entry to originate (validated on construction)."""

    transaction_code: int  # 22/27 checking credit/debit, 32/37 savings; 23/28/33/38 prenotes
    routing: str  # RDFI routing number, 9 digits with check digit
    account_number: str  # 1..17 alphanumeric
    amount: int  # cents
    individual_id: str  # <= 15
    individual_name: str  # <= 22
    trace_number: str  # 15 digits: ODFI routing prefix (8) + sequence (7)
    discretionary: str = ""  # <= 2

    def __post_init__(self) -> None:
        _check_int("transaction_code", self.transaction_code, 0, 99)
        if self.transaction_code not in FORWARD_CODES:
            raise NachaError(
                f"transaction_code {self.transaction_code} is not one of {sorted(FORWARD_CODES)}"
            )
        _check_routing("routing", self.routing)
        if not isinstance(self.account_number, str) or not _ACCOUNT.fullmatch(self.account_number):
            raise NachaError(
                f"account_number must be 1..17 ASCII letters/digits, got {self.account_number!r}"
            )
        _check_int("amount", self.amount, 0, MAX_AMOUNT)
        if self.transaction_code in PRENOTE_CODES and self.amount != 0:
            raise NachaError(f"prenote (code {self.transaction_code}) must have amount 0")
        if self.transaction_code not in PRENOTE_CODES and self.amount == 0:
            # A zero-dollar live entry only makes sense with remittance addenda (not built here).
            raise NachaError(f"live entry (code {self.transaction_code}) must have amount > 0")
        _check_text("individual_id", self.individual_id, 15)
        _check_text("individual_name", self.individual_name, 22, required=True)
        _check_digits("trace_number", self.trace_number, 15)
        _check_text("discretionary", self.discretionary, 2)

    @property
    def is_credit(self) -> bool:
        return self.transaction_code in CREDIT_CODES


class Batch(msgspec.Struct, frozen=True):
    """One originator's entries with one SEC code and effective date (validated)."""

    sec_code: str  # PPD | WEB | CCD
    company_name: str  # <= 16
    company_id: str  # exactly 10
    entry_description: str  # <= 10, shown on the receiver's statement
    effective_date: datetime.date
    same_day: bool  # effective_date must then be the file creation date
    odfi_routing: str  # 9 digits; the header carries the first 8
    entries: tuple[Entry, ...]
    batch_number: int = 1
    # Blank means "SD1300" for same-day batches and blank otherwise.
    descriptive_date: str = ""
    company_discretionary: str = ""  # <= 20

    def __post_init__(self) -> None:
        if self.sec_code not in SEC_CODES:
            raise NachaError(f"sec_code {self.sec_code!r} is not one of {sorted(SEC_CODES)}")
        _check_text("company_name", self.company_name, 16, required=True)
        _check_text("company_id", self.company_id, 10, required=True)
        if len(self.company_id) != 10:
            raise NachaError(f"company_id {self.company_id!r} must be exactly 10 characters")
        _check_text("entry_description", self.entry_description, 10, required=True)
        _check_date("effective_date", self.effective_date)
        if not isinstance(self.same_day, bool):
            raise NachaError(f"same_day must be a bool, got {type(self.same_day).__name__}")
        _check_routing("odfi_routing", self.odfi_routing)
        _check_int("batch_number", self.batch_number, 1, 9_999_999)
        _check_text("descriptive_date", self.descriptive_date, 6)
        _check_text("company_discretionary", self.company_discretionary, 20)
        if (
            self.same_day
            and self.descriptive_date
            and not _SAME_DAY_DESC.fullmatch(self.descriptive_date)
        ):
            raise NachaError(
                f"same-day descriptive_date must be SDHHMM, got {self.descriptive_date!r}"
            )
        if not isinstance(self.entries, tuple | list) or not self.entries:
            raise NachaError("a batch needs at least one entry (tuple of Entry)")
        prefix = self.odfi_routing[:8]
        previous = ""
        for entry in self.entries:
            if not isinstance(entry, Entry):
                raise NachaError(f"batch entries must be Entry, got {type(entry).__name__}")
            if entry.trace_number[:8] != prefix:
                raise NachaError(
                    f"trace_number {entry.trace_number} does not start with the ODFI "
                    f"routing prefix {prefix}"
                )
            # Nacha requires ascending trace numbers within a batch; this also rejects duplicates.
            if entry.trace_number <= previous:
                raise NachaError(
                    f"trace_number {entry.trace_number} is not above the previous {previous}"
                )
            previous = entry.trace_number
            if self.same_day and entry.amount > SAME_DAY_ENTRY_LIMIT:
                raise NachaError(
                    f"entry {entry.trace_number}: {entry.amount} cents exceeds the same-day "
                    f"limit of {SAME_DAY_ENTRY_LIMIT}"
                )

    @property
    def rendered_descriptive_date(self) -> str:
        if self.descriptive_date or not self.same_day:
            return self.descriptive_date
        return SAME_DAY_DEFAULT_DESCRIPTIVE_DATE


class FileHeader(msgspec.Struct, frozen=True):
    """The file header inputs (validated)."""

    immediate_destination: str  # 9-digit routing of the receiving point (ACH operator/bank)
    immediate_origin: str  # 9 digits (rendered blank + 9) or 10 characters
    destination_name: str  # <= 23
    origin_name: str  # <= 23
    created: datetime.datetime
    file_id_modifier: str = "A"  # A-Z or 0-9; distinguishes files created the same day

    def __post_init__(self) -> None:
        _check_routing("immediate_destination", self.immediate_destination)
        if not isinstance(self.immediate_origin, str) or not _ORIGIN.fullmatch(
            self.immediate_origin
        ):
            raise NachaError(
                f"immediate_origin must be 9-10 ASCII letters/digits, got {self.immediate_origin!r}"
            )
        _check_text("destination_name", self.destination_name, 23)
        _check_text("origin_name", self.origin_name, 23)
        if not isinstance(self.created, datetime.datetime):
            raise NachaError(f"created must be a datetime, got {type(self.created).__name__}")
        _check_date("created", self.created.date())
        if not isinstance(self.file_id_modifier, str) or not re.fullmatch(
            r"[A-Z0-9]", self.file_id_modifier
        ):
            raise NachaError(f"file_id_modifier must be A-Z or 0-9, got {self.file_id_modifier!r}")


class Return(msgspec.Struct, frozen=True):
    """A returned entry as read from an RDFI's return file."""

    original_trace: str  # trace number of the entry being returned
    return_code: str  # R01..R85
    amount: int
    transaction_code: int  # the return code: 21/26/31/36
    individual_id: str
    date_of_death: datetime.date | None = None  # only for R14/R15
    addenda_information: str = ""
    trace_number: str = ""  # the return entry's own trace (RDFI prefix)
    original_receiving_dfi: str = ""  # the original entry's RDFI, 8 digits
    account_number: str = ""
    individual_name: str = ""

    @property
    def original_transaction_code(self) -> int:
        # 21 answers 22 or 23 (etc.): only prenotes carry amount 0.
        return self.transaction_code + (2 if self.amount == 0 else 1)

    @property
    def reason(self) -> str:
        return RETURN_CODES.get(self.return_code, "")


# ---------------------------------------------------------------------------------------------
# Parsed output


class ParsedEntry(msgspec.Struct, frozen=True):
    transaction_code: int
    routing: str  # 9 digits (8-digit DFI id + check digit)
    account_number: str
    amount: int
    individual_id: str
    individual_name: str
    discretionary: str
    addenda_indicator: int
    trace_number: str
    addenda: tuple[str, ...]  # raw 94-character type 7 records

    @property
    def is_credit(self) -> bool:
        return self.transaction_code in CREDIT_CODES

    def to_entry(self) -> Entry:
        """The equivalent originated Entry (raises NachaError for return/NOC codes)."""
        return Entry(
            transaction_code=self.transaction_code,
            routing=self.routing,
            account_number=self.account_number,
            amount=self.amount,
            individual_id=self.individual_id,
            individual_name=self.individual_name,
            trace_number=self.trace_number,
            discretionary=self.discretionary,
        )


class ParsedBatch(msgspec.Struct, frozen=True):
    service_class_code: int
    company_name: str
    company_discretionary: str
    company_id: str
    sec_code: str
    entry_description: str
    descriptive_date: str
    effective_date: datetime.date | None
    settlement_date: str  # julian day inserted by the ACH operator, usually blank
    originator_status: str
    odfi_id: str  # 8 digits
    batch_number: int
    entries: tuple[ParsedEntry, ...]
    # From the batch control record (verified against the entries).
    entry_addenda_count: int
    entry_hash: int
    total_debit: int
    total_credit: int


class ParsedFile(msgspec.Struct, frozen=True):
    priority_code: str
    immediate_destination: str
    immediate_origin: str
    created: datetime.datetime
    file_id_modifier: str
    destination_name: str
    origin_name: str
    reference_code: str
    batches: tuple[ParsedBatch, ...]
    # From the file control record (verified against the batches).
    batch_count: int
    block_count: int
    entry_addenda_count: int
    entry_hash: int
    total_debit: int
    total_credit: int


# ---------------------------------------------------------------------------------------------
# Rendering


def _alpha(value: str, width: int) -> str:
    out = value.upper().ljust(width)
    if len(out) != width:
        raise NachaError(f"{value!r} does not fit in {width} characters")
    return out


def _num(name: str, value: int, width: int) -> str:
    if not 0 <= value < 10**width:
        raise NachaError(f"{name} {value} does not fit in {width} digits")
    return str(value).zfill(width)


def _record(*fields: str) -> str:
    line = "".join(fields)
    # Not an `assert`: the invariant must hold under `python -O` too.
    if len(line) != RECORD_SIZE or not _PRINTABLE.fullmatch(line):
        raise AssertionError(f"rendered record is {len(line)} characters, not 94: {line!r}")
    return line


def _yymmdd(d: datetime.date) -> str:
    return d.strftime("%y%m%d")


def _origin_field(origin: str) -> str:
    return f" {origin}" if len(origin) == 9 else origin


def _file_header(h: FileHeader) -> str:
    return _record(
        "1",  # 1 record type
        "01",  # 2-3 priority code
        f" {h.immediate_destination}",  # 4-13 bTTTTAAAAC
        _alpha(_origin_field(h.immediate_origin), 10),  # 14-23
        _yymmdd(h.created),  # 24-29 creation date
        h.created.strftime("%H%M"),  # 30-33 creation time
        h.file_id_modifier,  # 34
        "094",  # 35-37 record size
        "10",  # 38-39 blocking factor
        "1",  # 40 format code
        _alpha(h.destination_name, 23),  # 41-63
        _alpha(h.origin_name, 23),  # 64-86
        " " * 8,  # 87-94 reference code
    )


class _Rendered(NamedTuple):
    """One entry's records plus what the batch control needs from it."""

    lines: tuple[str, ...]
    transaction_code: int
    amount: int
    dfi_id: int


def _entry_record(
    *,
    transaction_code: int,
    routing: str,
    account_number: str,
    amount: int,
    individual_id: str,
    individual_name: str,
    discretionary: str,
    addenda_indicator: int,
    trace: str,
) -> str:
    return _record(
        "6",  # 1
        _num("transaction_code", transaction_code, 2),  # 2-3
        routing,  # 4-11 receiving DFI id, 12 check digit
        _alpha(account_number, 17),  # 13-29
        _num("amount", amount, 10),  # 30-39
        _alpha(individual_id, 15),  # 40-54
        _alpha(individual_name, 22),  # 55-76
        _alpha(discretionary, 2),  # 77-78
        str(addenda_indicator),  # 79
        trace,  # 80-94
    )


def _service_class(codes: Iterable[int]) -> int:
    codes = list(codes)
    if all(c in CREDIT_CODES for c in codes):
        return SERVICE_CLASS_CREDITS
    if all(c in DEBIT_CODES for c in codes):
        return SERVICE_CLASS_DEBITS
    return SERVICE_CLASS_MIXED


class _Totals(NamedTuple):
    records: int  # entry and addenda records (`count` would hide tuple.count)
    entry_hash: int  # untruncated
    debit: int
    credit: int


def _batch_records(
    *,
    company_name: str,
    company_discretionary: str,
    company_id: str,
    sec_code: str,
    entry_description: str,
    descriptive_date: str,
    effective_date: datetime.date,
    odfi_id: str,
    batch_number: int,
    entries: Sequence[_Rendered],
) -> tuple[list[str], _Totals]:
    scc = _service_class(e.transaction_code for e in entries)
    count = sum(len(e.lines) for e in entries)
    entry_hash = sum(e.dfi_id for e in entries)
    debit = sum(e.amount for e in entries if e.transaction_code in DEBIT_CODES)
    credit = sum(e.amount for e in entries if e.transaction_code in CREDIT_CODES)
    header = _record(
        "5",  # 1
        str(scc),  # 2-4 service class
        _alpha(company_name, 16),  # 5-20
        _alpha(company_discretionary, 20),  # 21-40
        _alpha(company_id, 10),  # 41-50
        sec_code,  # 51-53
        _alpha(entry_description, 10),  # 54-63
        _alpha(descriptive_date, 6),  # 64-69
        _yymmdd(effective_date),  # 70-75
        "   ",  # 76-78 settlement date: inserted by the ACH operator
        "1",  # 79 originator status: ODFI bound by the Rules
        odfi_id,  # 80-87
        _num("batch_number", batch_number, 7),  # 88-94
    )
    control = _record(
        "8",  # 1
        str(scc),  # 2-4
        _num("batch entry/addenda count", count, 6),  # 5-10
        _num("entry hash", entry_hash % 10**10, 10),  # 11-20 rightmost 10 digits
        _num("batch total debit", debit, 12),  # 21-32
        _num("batch total credit", credit, 12),  # 33-44
        _alpha(company_id, 10),  # 45-54
        " " * 19,  # 55-73 message authentication code
        " " * 6,  # 74-79 reserved
        odfi_id,  # 80-87
        _num("batch_number", batch_number, 7),  # 88-94
    )
    lines = [header]
    for e in entries:
        lines.extend(e.lines)
    lines.append(control)
    return lines, _Totals(count, entry_hash, debit, credit)


def _finish_file(header: FileHeader, batches: Sequence[tuple[list[str], _Totals]]) -> str:
    lines = [_file_header(header)]
    count = entry_hash = debit = credit = 0
    for batch_lines, totals in batches:
        lines.extend(batch_lines)
        count += totals.records
        entry_hash += totals.entry_hash
        debit += totals.debit
        credit += totals.credit
    records = len(lines) + 1  # + the file control record
    blocks = -(-records // BLOCKING_FACTOR)
    lines.append(
        _record(
            "9",  # 1
            _num("batch count", len(batches), 6),  # 2-7
            _num("block count", blocks, 6),  # 8-13
            _num("file entry/addenda count", count, 8),  # 14-21
            _num("entry hash", entry_hash % 10**10, 10),  # 22-31
            _num("file total debit", debit, 12),  # 32-43
            _num("file total credit", credit, 12),  # 44-55
            " " * 39,  # 56-94 reserved
        )
    )
    lines.extend([PADDING_RECORD] * (blocks * BLOCKING_FACTOR - records))
    if len(lines) % BLOCKING_FACTOR or any(len(line) != RECORD_SIZE for line in lines):
        raise AssertionError("file is not blocked into 10 records of 94 characters")
    return "\n".join(lines) + "\n"


def _check_header(header: object) -> FileHeader:
    if not isinstance(header, FileHeader):
        raise NachaError(f"header must be a FileHeader, got {type(header).__name__}")
    return header


def build_file(header: FileHeader, batches: Sequence[Batch]) -> str:
    """Render an origination file: 94-character records joined by newlines, blocked by 10."""
    header = _check_header(header)
    if isinstance(batches, Batch) or not batches:
        raise NachaError("build_file needs a non-empty sequence of Batch")
    file_date = header.created.date()
    traces: set[str] = set()
    previous_number = 0
    rendered = []
    for batch in batches:
        if not isinstance(batch, Batch):
            raise NachaError(f"batches must be Batch, got {type(batch).__name__}")
        if batch.batch_number <= previous_number:
            raise NachaError(
                f"batch_number {batch.batch_number} is not above the previous {previous_number}"
            )
        previous_number = batch.batch_number
        # Today's effective date is what makes the ACH operator settle same-day (and charge
        # the same-day fee), so the flag and the date must agree.
        if batch.same_day and batch.effective_date != file_date:
            raise NachaError(
                f"batch {batch.batch_number}: same-day effective_date {batch.effective_date} "
                f"must be the file creation date {file_date}"
            )
        if not batch.same_day and batch.effective_date <= file_date:
            raise NachaError(
                f"batch {batch.batch_number}: effective_date {batch.effective_date} must be "
                f"after the file creation date {file_date} (or set same_day=True)"
            )
        entries = []
        for e in batch.entries:
            if e.trace_number in traces:
                raise NachaError(f"trace_number {e.trace_number} appears twice in the file")
            traces.add(e.trace_number)
            line = _entry_record(
                transaction_code=e.transaction_code,
                routing=e.routing,
                account_number=e.account_number,
                amount=e.amount,
                individual_id=e.individual_id,
                individual_name=e.individual_name,
                discretionary=e.discretionary,
                addenda_indicator=0,
                trace=e.trace_number,
            )
            entries.append(_Rendered((line,), e.transaction_code, e.amount, int(e.routing[:8])))
        rendered.append(
            _batch_records(
                company_name=batch.company_name,
                company_discretionary=batch.company_discretionary,
                company_id=batch.company_id,
                sec_code=batch.sec_code,
                entry_description=batch.entry_description,
                descriptive_date=batch.rendered_descriptive_date,
                effective_date=batch.effective_date,
                odfi_id=batch.odfi_routing[:8],
                batch_number=batch.batch_number,
                entries=entries,
            )
        )
    return _finish_file(header, rendered)


def build_return_file(
    header: FileHeader,
    odfi_routing: str,
    returns: Sequence[tuple[Entry, str]],
    created: datetime.datetime,
    *,
    sec_code: str = "PPD",
    company_name: str = "PAYNODE",
    company_id: str = "0000000000",
    entry_description: str = "PAYNODE",
) -> str:
    """Render the return file an RDFI sends back for ``returns`` = [(original entry, code)].

    ``odfi_routing`` is the routing number of the ODFI that originated the entries; the
    return entries are addressed to it. ``created`` stamps the file header (replacing
    ``header.created``) and is the effective date of the return batches. The company fields
    should be copied from the original batch header, as the Rules require. There is one
    batch per returning RDFI, whose routing prefix starts the new trace numbers.
    """
    header = _check_header(header)
    _check_routing("odfi_routing", odfi_routing)
    if not isinstance(created, datetime.datetime):
        raise NachaError(f"created must be a datetime, got {type(created).__name__}")
    header = msgspec.structs.replace(header, created=created)
    if sec_code not in SEC_CODES:
        raise NachaError(f"sec_code {sec_code!r} is not one of {sorted(SEC_CODES)}")
    _check_text("company_name", company_name, 16, required=True)
    _check_text("company_id", company_id, 10, required=True)
    if len(company_id) != 10:
        raise NachaError(f"company_id {company_id!r} must be exactly 10 characters")
    _check_text("entry_description", entry_description, 10, required=True)
    if isinstance(returns, tuple) and len(returns) == 2 and isinstance(returns[0], Entry):
        raise NachaError("returns must be a sequence of (Entry, code) pairs, not one pair")
    if not returns:
        raise NachaError("build_return_file needs at least one (Entry, return code)")

    by_rdfi: dict[str, list[tuple[Entry, str]]] = {}
    seen: set[str] = set()
    for item in returns:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise NachaError(f"each return must be an (Entry, code) pair, got {item!r}")
        entry, code = item
        if not isinstance(entry, Entry):
            raise NachaError(f"returned entry must be an Entry, got {type(entry).__name__}")
        if code not in RETURN_CODES:
            raise NachaError(f"unknown return reason code {code!r}")
        if code in _DISHONOR_CODES:
            raise NachaError(f"{code} is a dishonored/contested return code, not an RDFI return")
        if entry.trace_number in seen:
            raise NachaError(f"entry {entry.trace_number} is returned twice")
        seen.add(entry.trace_number)
        by_rdfi.setdefault(entry.routing[:8], []).append((entry, code))

    batches = []
    for batch_number, (rdfi_id, items) in enumerate(by_rdfi.items(), start=1):
        rendered = []
        for seq, (entry, code) in enumerate(items, start=1):
            trace = f"{rdfi_id}{seq:07d}"
            return_code = RETURN_TRANSACTION_CODES[entry.transaction_code]
            detail = _entry_record(
                transaction_code=return_code,
                routing=odfi_routing,
                account_number=entry.account_number,
                amount=entry.amount,
                individual_id=entry.individual_id,
                individual_name=entry.individual_name,
                discretionary=entry.discretionary,
                addenda_indicator=1,
                trace=trace,
            )
            addenda = _record(
                "7",  # 1
                "99",  # 2-3 addenda type: return
                code,  # 4-6 return reason code
                entry.trace_number,  # 7-21 original entry trace number
                " " * 6,  # 22-27 date of death (R14/R15 only)
                rdfi_id,  # 28-35 original receiving DFI identification
                " " * 44,  # 36-79 addenda information
                trace,  # 80-94 trace number (same as the return entry)
            )
            rendered.append(
                _Rendered((detail, addenda), return_code, entry.amount, int(odfi_routing[:8]))
            )
        batches.append(
            _batch_records(
                company_name=company_name,
                company_discretionary="",
                company_id=company_id,
                sec_code=sec_code,
                entry_description=entry_description,
                descriptive_date="",
                effective_date=created.date(),
                odfi_id=rdfi_id,
                batch_number=batch_number,
                entries=rendered,
            )
        )
    return _finish_file(header, batches)


# ---------------------------------------------------------------------------------------------
# Parsing


def _split_records(text: object) -> list[str]:
    if not isinstance(text, str):
        raise NachaError(f"expected the file as str, got {type(text).__name__}")
    if "\n" not in text and "\r" not in text and text and len(text) % RECORD_SIZE == 0:
        # Some banks send one unbroken stream of 94-character records.
        return [text[i : i + RECORD_SIZE] for i in range(0, len(text), RECORD_SIZE)]
    lines = text.split("\n")
    while lines and lines[-1] in ("", "\r"):
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


class _Reader:
    """Slices fields from one record, reporting errors with the line number."""

    def __init__(self, line: str, lineno: int, what: str) -> None:
        self.line, self.lineno, self.what = line, lineno, what

    def error(self, message: str) -> NachaError:
        return NachaError(f"line {self.lineno} ({self.what}): {message}")

    def raw(self, start: int, end: int) -> str:
        return self.line[start - 1 : end]

    def text(self, start: int, end: int) -> str:
        return self.raw(start, end).rstrip(" ")

    def digits(self, start: int, end: int, name: str) -> str:
        value = self.raw(start, end)
        if not _DIGITS.fullmatch(value):
            raise self.error(f"{name} {value!r} (positions {start}-{end}) is not numeric")
        return value

    def number(self, start: int, end: int, name: str) -> int:
        return int(self.digits(start, end, name))

    def blank(self, start: int, end: int, name: str) -> None:
        if self.raw(start, end).strip(" "):
            raise self.error(f"reserved field {name} (positions {start}-{end}) is not blank")

    def date(
        self, start: int, end: int, name: str, *, optional: bool = False, pivot: int = 2099
    ) -> datetime.date | None:
        value = self.raw(start, end)
        if optional and not value.strip(" "):
            return None
        yy = int(self.digits(start, end, name)[:2])
        # Two-digit years: a year after `pivot` must be last century (dates of death).
        year = 2000 + yy if 2000 + yy <= pivot else 1900 + yy
        try:
            return datetime.date(year, int(value[2:4]), int(value[4:6]))
        except ValueError:
            raise self.error(f"{name} {value!r} is not a YYMMDD date") from None


def _parse_entry(r: _Reader, addenda: tuple[str, ...]) -> ParsedEntry:
    code = r.number(2, 3, "transaction code")
    if code not in CREDIT_CODES | DEBIT_CODES:
        raise r.error(f"unknown transaction code {code}")
    routing = r.digits(4, 12, "receiving DFI routing")
    if not aba_valid(routing):
        raise r.error(f"receiving DFI routing {routing} fails the ABA check digit")
    amount = r.number(30, 39, "amount")
    if code in ZERO_AMOUNT_CODES and amount != 0:
        raise r.error(f"prenote/zero-dollar code {code} has amount {amount}")
    indicator = r.number(79, 79, "addenda record indicator")
    if indicator not in (0, 1):
        raise r.error(f"addenda record indicator {indicator} is not 0 or 1")
    if indicator != bool(addenda):
        raise r.error(f"addenda record indicator {indicator} but {len(addenda)} addenda follow")
    trace = r.digits(80, 94, "trace number")
    for offset, a in enumerate(addenda, start=1):
        ar = _Reader(a, r.lineno + offset, "addenda")
        kind = ar.digits(2, 3, "addenda type code")
        if kind in ("98", "99"):
            if len(addenda) != 1:
                raise ar.error("a return/NOC entry must have exactly one addenda")
            if ar.raw(80, 94) != trace:
                raise ar.error(f"addenda trace {ar.raw(80, 94)!r} is not the entry's {trace}")
        elif kind == "05":
            if ar.number(84, 87, "addenda sequence number") != offset:
                raise ar.error(f"addenda sequence number is not {offset}")
            if ar.raw(88, 94) != trace[-7:]:
                raise ar.error("entry detail sequence number is not the entry's trace sequence")
    return ParsedEntry(
        transaction_code=code,
        routing=routing,
        account_number=r.text(13, 29).strip(" "),
        amount=amount,
        individual_id=r.text(40, 54),
        individual_name=r.text(55, 76),
        discretionary=r.text(77, 78),
        addenda_indicator=indicator,
        trace_number=trace,
        addenda=addenda,
    )


def _check_control(r: _Reader, name: str, recorded: int, computed: int) -> None:
    if recorded != computed:
        raise r.error(f"{name} is {recorded}, the records add up to {computed}")


def _parse_batch(lines: list[str], i: int) -> tuple[ParsedBatch, int]:
    """Parse the batch whose header is lines[i]; return it and the index after its control."""
    h = _Reader(lines[i], i + 1, "batch header")
    scc = h.number(2, 4, "service class code")
    if scc not in SERVICE_CLASS_CODES:
        raise h.error(f"service class code {scc} is not 200, 220 or 225")
    odfi_id = h.digits(80, 87, "originating DFI id")
    batch_number = h.number(88, 94, "batch number")
    entries: list[ParsedEntry] = []
    i += 1
    while i < len(lines) and lines[i][0] == "6":
        j = i + 1
        while j < len(lines) and lines[j][0] == "7":
            j += 1
        entry = _parse_entry(_Reader(lines[i], i + 1, "entry detail"), tuple(lines[i + 1 : j]))
        if scc == SERVICE_CLASS_CREDITS and not entry.is_credit:
            raise NachaError(f"line {i + 1}: debit entry in a credits-only (220) batch")
        if scc == SERVICE_CLASS_DEBITS and entry.is_credit:
            raise NachaError(f"line {i + 1}: credit entry in a debits-only (225) batch")
        entries.append(entry)
        i = j
    if i >= len(lines) or lines[i][0] != "8":
        found = f"type {lines[i][0]!r}" if i < len(lines) else "end of file"
        raise NachaError(f"line {i + 1}: expected an entry or batch control (8), found {found}")
    c = _Reader(lines[i], i + 1, "batch control")
    _check_control(c, "service class code", c.number(2, 4, "service class code"), scc)
    count = sum(1 + len(e.addenda) for e in entries)
    entry_hash = sum(int(e.routing[:8]) for e in entries) % 10**10
    debit = sum(e.amount for e in entries if not e.is_credit)
    credit = sum(e.amount for e in entries if e.is_credit)
    recorded_count = c.number(5, 10, "entry/addenda count")
    recorded_hash = c.number(11, 20, "entry hash")
    recorded_debit = c.number(21, 32, "total debit")
    recorded_credit = c.number(33, 44, "total credit")
    _check_control(c, "entry/addenda count", recorded_count, count)
    _check_control(c, "entry hash", recorded_hash, entry_hash)
    _check_control(c, "total debit", recorded_debit, debit)
    _check_control(c, "total credit", recorded_credit, credit)
    if c.raw(45, 54) != h.raw(41, 50):
        raise c.error(f"company id {c.raw(45, 54)!r} differs from the header's {h.raw(41, 50)!r}")
    c.blank(74, 79, "reserved")
    if c.raw(80, 87) != odfi_id:
        raise c.error(f"ODFI id {c.raw(80, 87)!r} differs from the header's {odfi_id!r}")
    _check_control(c, "batch number", c.number(88, 94, "batch number"), batch_number)
    batch = ParsedBatch(
        service_class_code=scc,
        company_name=h.text(5, 20),
        company_discretionary=h.text(21, 40),
        company_id=h.text(41, 50),
        sec_code=h.raw(51, 53),
        entry_description=h.text(54, 63),
        descriptive_date=h.text(64, 69),
        effective_date=h.date(70, 75, "effective entry date", optional=True),
        settlement_date=h.text(76, 78),
        originator_status=h.raw(79, 79),
        odfi_id=odfi_id,
        batch_number=batch_number,
        entries=tuple(entries),
        entry_addenda_count=recorded_count,
        entry_hash=recorded_hash,
        total_debit=recorded_debit,
        total_credit=recorded_credit,
    )
    return batch, i + 1


def parse_file(text: str) -> ParsedFile:
    """Parse and verify an ACH file (record lengths, record order, every control total)."""
    lines = _split_records(text)
    if not lines:
        raise NachaError("empty file")
    for n, line in enumerate(lines, start=1):
        if len(line) != RECORD_SIZE:
            raise NachaError(f"line {n}: record is {len(line)} characters, not {RECORD_SIZE}")
        if not _PRINTABLE.fullmatch(line):
            raise NachaError(f"line {n}: record has non-ASCII or control characters")
    h = _Reader(lines[0], 1, "file header")
    if lines[0][0] != "1":
        raise h.error(f"the first record must be a file header (1), found {lines[0][0]!r}")
    for start, end, want, name in ((35, 37, "094", "record size"), (38, 39, "10", "blocking")):
        if h.raw(start, end) != want:
            raise h.error(f"{name} is {h.raw(start, end)!r}, expected {want!r}")
    if h.raw(40, 40) != "1":
        raise h.error(f"format code is {h.raw(40, 40)!r}, expected '1'")
    created_date = h.date(24, 29, "file creation date")
    assert created_date is not None
    hhmm = h.raw(30, 33)
    # The creation time is optional in the Rules; a blank one reads as midnight.
    if hhmm.strip(" "):
        if not _DIGITS.fullmatch(hhmm) or int(hhmm[:2]) > 23 or int(hhmm[2:]) > 59:
            raise h.error(f"file creation time {hhmm!r} is not HHMM")
        time = datetime.time(int(hhmm[:2]), int(hhmm[2:]))
    else:
        time = datetime.time()
    modifier = h.raw(34, 34)
    if not re.fullmatch(r"[A-Z0-9]", modifier):
        raise h.error(f"file id modifier {modifier!r} is not A-Z or 0-9")

    batches: list[ParsedBatch] = []
    i = 1
    while i < len(lines) and lines[i][0] == "5":
        batch, i = _parse_batch(lines, i)
        if batches and batch.batch_number <= batches[-1].batch_number:
            raise NachaError(f"line {i}: batch number {batch.batch_number} is not ascending")
        batches.append(batch)
    if i >= len(lines) or lines[i][0] != "9":
        found = f"type {lines[i][0]!r}" if i < len(lines) else "end of file"
        raise NachaError(f"line {i + 1}: expected a batch header (5) or file control (9), {found}")
    c = _Reader(lines[i], i + 1, "file control")
    for n in range(i + 1, len(lines)):
        if lines[n] != PADDING_RECORD:
            raise NachaError(f"line {n + 1}: only 9-padding may follow the file control record")
    records = i + 1
    recorded = {
        "batch count": c.number(2, 7, "batch count"),
        "block count": c.number(8, 13, "block count"),
        "entry/addenda count": c.number(14, 21, "entry/addenda count"),
        "entry hash": c.number(22, 31, "entry hash"),
        "total debit": c.number(32, 43, "total debit"),
        "total credit": c.number(44, 55, "total credit"),
    }
    computed = {
        "batch count": len(batches),
        "block count": -(-records // BLOCKING_FACTOR),
        "entry/addenda count": sum(b.entry_addenda_count for b in batches),
        "entry hash": sum(b.entry_hash for b in batches) % 10**10,
        "total debit": sum(b.total_debit for b in batches),
        "total credit": sum(b.total_credit for b in batches),
    }
    for name, value in recorded.items():
        _check_control(c, name, value, computed[name])
    c.blank(56, 94, "reserved")
    return ParsedFile(
        priority_code=h.raw(2, 3),
        immediate_destination=h.raw(4, 13).strip(" "),
        immediate_origin=h.raw(14, 23).strip(" "),
        created=datetime.datetime.combine(created_date, time),
        file_id_modifier=modifier,
        destination_name=h.text(41, 63),
        origin_name=h.text(64, 86),
        reference_code=h.text(87, 94),
        batches=tuple(batches),
        batch_count=recorded["batch count"],
        block_count=recorded["block count"],
        entry_addenda_count=recorded["entry/addenda count"],
        entry_hash=recorded["entry hash"],
        total_debit=recorded["total debit"],
        total_credit=recorded["total credit"],
    )


def parse_returns(text: str) -> list[Return]:
    """The returns (entries with a type 99 addenda) in a verified ACH file, in file order.

    Entries without a 99 addenda (e.g. notifications of change, type 98) are not returns and
    are skipped.
    """
    parsed = parse_file(text)
    out: list[Return] = []
    lineno = 1
    for batch in parsed.batches:
        lineno += 1
        for entry in batch.entries:
            lineno += 1 + len(entry.addenda)
            returns = [a for a in entry.addenda if a[1:3] == "99"]
            if not returns:
                continue
            r = _Reader(returns[0], lineno, "return addenda")
            if entry.transaction_code not in _RETURN_ENTRY_CODES:
                raise r.error(
                    f"entry {entry.trace_number} has a return addenda but transaction code "
                    f"{entry.transaction_code} is not a return code"
                )
            code = r.raw(4, 6)
            if code not in RETURN_CODES:
                raise r.error(f"unknown return reason code {code!r}")
            out.append(
                Return(
                    original_trace=r.digits(7, 21, "original entry trace number"),
                    return_code=code,
                    amount=entry.amount,
                    transaction_code=entry.transaction_code,
                    individual_id=entry.individual_id,
                    date_of_death=r.date(
                        22, 27, "date of death", optional=True, pivot=parsed.created.year
                    ),
                    addenda_information=r.text(36, 79),
                    trace_number=entry.trace_number,
                    original_receiving_dfi=r.digits(28, 35, "original receiving DFI id"),
                    account_number=entry.account_number,
                    individual_name=entry.individual_name,
                )
            )
        lineno += 1
    return out
