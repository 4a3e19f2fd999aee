"""The ISO 20022 messages of an instant-payment network (RTP), built and parsed.

Four messages, with the fields an RTP exchange needs (The Clearing House's
RTP uses these versions):

- ``pacs.008.001.08`` FI-to-FI customer credit transfer: one payment.
- ``pacs.002.001.10`` FI-to-FI payment status report: its answer,
  ``ACSC`` (accepted, settled) or ``RJCT`` with an ISO reason code.
- ``pain.013.001.07`` creditor payment activation request: a request for
  payment (RfP) sent to a payer.
- ``pain.014.001.07`` its status report: ``ACTC`` (accepted) or ``RJCT``.

Amounts travel as decimal major units (``12.34``) and are converted to and
from integer minor units with string arithmetic only: no float ever holds an
amount. Parsing refuses a DTD (no entity expansion from untrusted input), any
message over ``MAX_MESSAGE_BYTES``, and any field out of its limits.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import msgspec

MAX_MESSAGE_BYTES = 64 * 1024
NS = {
    "pacs.008": "urn:iso:std:iso:20022:tech:xsd:pacs.008.001.08",
    "pacs.002": "urn:iso:std:iso:20022:tech:xsd:pacs.002.001.10",
    "pain.013": "urn:iso:std:iso:20022:tech:xsd:pain.013.001.07",
    "pain.014": "urn:iso:std:iso:20022:tech:xsd:pain.014.001.07",
}
_MAX35 = 35  # Max35Text: ids
_MAX140 = 140  # Max140Text: names, remittance
_AMOUNT = re.compile(r"(\d{1,18})(?:\.(\d{1,3}))?\Z")
# ISO 4217 exponents of the currencies an RTP network settles (RTP: USD only).
EXPONENTS = {"USD": 2}

# Transaction statuses (ExternalPaymentTransactionStatus1Code)
ACCEPTED_SETTLED = "ACSC"
ACCEPTED_TECHNICAL = "ACTC"
REJECTED = "RJCT"
STATUSES = frozenset({ACCEPTED_SETTLED, ACCEPTED_TECHNICAL, REJECTED, "PDNG"})

# Reason codes (ExternalStatusReason1Code) an RTP receiver or the network answers with.
REASONS = {
    "AC02": "Invalid debtor account number",
    "AC03": "Invalid creditor account number",
    "AC04": "Closed account number",
    "AC06": "Blocked account",
    "AG01": "Transaction forbidden on this account",
    "AM02": "Amount exceeds the network's limit",
    "AM09": "Wrong amount",
    "BE04": "Missing creditor address",
    "DUPL": "Duplicate payment",
    "FF02": "Syntax error",
    "MS03": "Reason not specified (agent generated)",
    "NOAT": "Receiving bank does not support this payment type",
    "AB05": "Timeout at the receiving bank",
    "AB06": "Timeout at the instructed agent",
    "AEXR": "Request for payment expired",
    "CUST": "Declined by the payer",
}


class MessageError(ValueError):
    """A message that is not what it claims to be; the text never contains its fields."""


class Party(msgspec.Struct, frozen=True):
    """An account holder at a bank: name, account number and the bank's routing number."""

    name: str
    account: str
    agent: str  # the bank's clearing-system member id (ABA routing number)


class CreditTransfer(msgspec.Struct, frozen=True, kw_only=True):
    """pacs.008: one customer credit transfer."""

    message_id: str
    end_to_end_id: str
    amount: int  # minor units
    currency: str
    debtor: Party
    creditor: Party
    remittance: str = ""
    created_at: dt.datetime


class StatusReport(msgspec.Struct, frozen=True, kw_only=True):
    """pacs.002 (the answer to a pacs.008) or pain.014 (the answer to a pain.013)."""

    message_id: str
    original_message_id: str
    original_end_to_end_id: str
    status: str
    reason: str | None = None
    created_at: dt.datetime


TransferStatus = StatusReport  # pacs.002
RequestStatus = StatusReport  # pain.014


class PaymentRequest(msgspec.Struct, frozen=True, kw_only=True):
    """pain.013: a creditor asks a debtor to pay (request for payment)."""

    message_id: str
    end_to_end_id: str
    amount: int  # minor units
    currency: str
    creditor: Party
    debtor: Party
    expires_at: dt.datetime
    remittance: str = ""
    created_at: dt.datetime


# -- amounts ------------------------------------------------------------------------------


def major(amount: int, currency: str) -> str:
    """Minor units as the decimal text of an ISO 20022 amount (250 USD -> "2.50")."""
    assert amount >= 0, amount
    digits = EXPONENTS[currency]
    if digits == 0:
        return str(amount)
    whole, frac = divmod(amount, 10**digits)
    return f"{whole}.{frac:0{digits}d}"


def minor(text: str, currency: str) -> int:
    """An ISO 20022 amount's decimal text as minor units; refuses more digits than the
    currency has (an amount is never rounded)."""
    if currency not in EXPONENTS:
        raise MessageError("currency not settled by this network")
    m = _AMOUNT.match(text.strip())
    if m is None:
        raise MessageError("amount is not a decimal")
    digits = EXPONENTS[currency]
    frac = m.group(2) or ""
    if len(frac) > digits:
        raise MessageError("amount has more decimals than its currency")
    return int(m.group(1)) * 10**digits + int(frac.ljust(digits, "0") or "0")


# -- building -----------------------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    e = ET.SubElement(parent, tag, attrs)
    if text is not None:
        e.text = text
    return e


def _path(parent: ET.Element, path: str, text: str) -> None:
    for tag in path.split("/"):
        found = parent.find(tag)
        parent = found if found is not None else _sub(parent, tag)
    parent.text = text


def _stamp(at: dt.datetime) -> str:
    assert at.tzinfo is not None, "ISO 20022 times carry their offset"
    return at.isoformat(timespec="seconds")


def _doc(kind: str, root: str) -> tuple[ET.Element, ET.Element]:
    doc = ET.Element("Document", {"xmlns": NS[kind]})
    return doc, _sub(doc, root)


def _party(parent: ET.Element, role: str, party: Party) -> None:
    """``Dbtr``/``DbtrAcct``/``DbtrAgt`` (or the creditor's) under ``parent``."""
    _path(parent, f"{role}/Nm", party.name[:_MAX140])
    _path(parent, f"{role}Acct/Id/Othr/Id", party.account)
    _path(parent, f"{role}Agt/FinInstnId/ClrSysMmbId/MmbId", party.agent)


def _text(doc: ET.Element) -> str:
    return ET.tostring(doc, encoding="unicode", xml_declaration=False)


def build_credit_transfer(m: CreditTransfer) -> str:
    doc, root = _doc("pacs.008", "FIToFICstmrCdtTrf")
    hdr = _sub(root, "GrpHdr")
    _sub(hdr, "MsgId", m.message_id)
    _sub(hdr, "CreDtTm", _stamp(m.created_at))
    _sub(hdr, "NbOfTxs", "1")
    _path(hdr, "SttlmInf/SttlmMtd", "CLRG")
    _path(hdr, "SttlmInf/ClrSys/Cd", "TCH")
    tx = _sub(root, "CdtTrfTxInf")
    _path(tx, "PmtId/EndToEndId", m.end_to_end_id)
    _path(tx, "PmtId/TxId", m.end_to_end_id)
    _sub(tx, "IntrBkSttlmAmt", major(m.amount, m.currency), Ccy=m.currency)
    _sub(tx, "ChrgBr", "SLEV")
    _party(tx, "Dbtr", m.debtor)
    _party(tx, "Cdtr", m.creditor)
    if m.remittance:
        _path(tx, "RmtInf/Ustrd", m.remittance[:_MAX140])
    return _text(doc)


def _build_report(m: StatusReport, kind: str, root_tag: str, original: str, nested: bool) -> str:
    doc, root = _doc(kind, root_tag)
    hdr = _sub(root, "GrpHdr")
    _sub(hdr, "MsgId", m.message_id)
    _sub(hdr, "CreDtTm", _stamp(m.created_at))
    orig = _sub(root, "OrgnlGrpInfAndSts")
    _sub(orig, "OrgnlMsgId", m.original_message_id)
    _sub(orig, "OrgnlMsgNmId", original)
    tx = _sub(_sub(root, "OrgnlPmtInfAndSts") if nested else root, "TxInfAndSts")
    _sub(tx, "OrgnlEndToEndId", m.original_end_to_end_id)
    _sub(tx, "TxSts", m.status)
    if m.reason:
        _path(tx, "StsRsnInf/Rsn/Cd", m.reason)
    return _text(doc)


def build_transfer_status(m: StatusReport) -> str:
    return _build_report(m, "pacs.002", "FIToFIPmtStsRpt", "pacs.008.001.08", nested=False)


def build_payment_request(m: PaymentRequest) -> str:
    doc, root = _doc("pain.013", "CdtrPmtActvtnReq")
    hdr = _sub(root, "GrpHdr")
    _sub(hdr, "MsgId", m.message_id)
    _sub(hdr, "CreDtTm", _stamp(m.created_at))
    _sub(hdr, "NbOfTxs", "1")
    _path(hdr, "InitgPty/Nm", m.creditor.name[:_MAX140])
    inf = _sub(root, "PmtInf")
    _sub(inf, "PmtInfId", m.message_id)
    _sub(inf, "PmtMtd", "TRF")
    _path(inf, "ReqdExctnDt/Dt", m.created_at.date().isoformat())
    _path(inf, "XpryDt/DtTm", _stamp(m.expires_at))
    _party(inf, "Dbtr", m.debtor)
    tx = _sub(inf, "CdtTrfTx")
    _path(tx, "PmtId/EndToEndId", m.end_to_end_id)
    amt = _sub(tx, "Amt")
    _sub(amt, "InstdAmt", major(m.amount, m.currency), Ccy=m.currency)
    _party(tx, "Cdtr", m.creditor)
    if m.remittance:
        _path(tx, "RmtInf/Ustrd", m.remittance[:_MAX140])
    return _text(doc)


def build_request_status(m: StatusReport) -> str:
    return _build_report(m, "pain.014", "CdtrPmtActvtnReqStsRpt", "pain.013.001.07", nested=True)


# -- parsing ------------------------------------------------------------------------------


def _root(text: str, kind: str, root: str) -> tuple[ET.Element, str]:
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        raise MessageError(f"{kind}: larger than {MAX_MESSAGE_BYTES} bytes")
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise MessageError(f"{kind}: a DTD is not accepted")
    try:
        doc = ET.fromstring(text)
    except ET.ParseError:
        raise MessageError(f"{kind}: not well-formed XML") from None
    ns = NS[kind]
    if doc.tag != f"{{{ns}}}Document":
        raise MessageError(f"{kind}: not a {ns} document")
    found = doc.find(f"{{{ns}}}{root}")
    if found is None:
        raise MessageError(f"{kind}: no {root}")
    return found, ns


def _get(e: ET.Element, ns: str, path: str, limit: int = _MAX35, required: bool = True) -> str:
    found = e.find("/".join(f"{{{ns}}}{t}" for t in path.split("/")))
    text = (found.text or "").strip() if found is not None else ""
    if not text:
        if required:
            raise MessageError(f"{path.rsplit('/', 1)[-1]} is missing")
        return ""
    if len(text) > limit:
        raise MessageError(f"{path.rsplit('/', 1)[-1]} is longer than {limit}")
    return text


def _amount(e: ET.Element, ns: str, path: str) -> tuple[int, str]:
    found = e.find("/".join(f"{{{ns}}}{t}" for t in path.split("/")))
    if found is None or not found.text:
        raise MessageError("amount is missing")
    currency = found.get("Ccy", "")
    amount = minor(found.text, currency)
    if amount <= 0:
        raise MessageError("amount must be positive")
    return amount, currency


def _time(text: str) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise MessageError("a time is not ISO 8601") from None
    if at.tzinfo is None:
        raise MessageError("a time carries no offset")
    return at


def _party_of(e: ET.Element, ns: str, role: str) -> Party:
    return Party(
        name=_get(e, ns, f"{role}/Nm", _MAX140, required=False),
        account=_get(e, ns, f"{role}Acct/Id/Othr/Id", 34),
        agent=_get(e, ns, f"{role}Agt/FinInstnId/ClrSysMmbId/MmbId"),
    )


def _status(e: ET.Element, ns: str) -> tuple[str, str | None]:
    status = _get(e, ns, "TxSts", 4)
    if status not in STATUSES:
        raise MessageError("TxSts is not a known status")
    reason = _get(e, ns, "StsRsnInf/Rsn/Cd", 4, required=False) or None
    if status == REJECTED and reason is None:
        raise MessageError("a rejection names its reason")
    return status, reason


def parse_credit_transfer(text: str) -> CreditTransfer:
    root, ns = _root(text, "pacs.008", "FIToFICstmrCdtTrf")
    if _get(root, ns, "GrpHdr/NbOfTxs", 15) != "1":
        raise MessageError("NbOfTxs: one transaction per message")
    tx = root.find(f"{{{ns}}}CdtTrfTxInf")
    if tx is None:
        raise MessageError("CdtTrfTxInf is missing")
    amount, currency = _amount(tx, ns, "IntrBkSttlmAmt")
    return CreditTransfer(
        message_id=_get(root, ns, "GrpHdr/MsgId"),
        end_to_end_id=_get(tx, ns, "PmtId/EndToEndId"),
        amount=amount, currency=currency,
        debtor=_party_of(tx, ns, "Dbtr"), creditor=_party_of(tx, ns, "Cdtr"),
        remittance=_get(tx, ns, "RmtInf/Ustrd", _MAX140, required=False),
        created_at=_time(_get(root, ns, "GrpHdr/CreDtTm", 64)),
    )  # fmt: skip


def _parse_report(text: str, kind: str, root_tag: str, tx_path: str) -> StatusReport:
    root, ns = _root(text, kind, root_tag)
    tx = root.find("/".join(f"{{{ns}}}{t}" for t in tx_path.split("/")))
    if tx is None:
        raise MessageError(f"{tx_path} is missing")
    status, reason = _status(tx, ns)
    return StatusReport(
        message_id=_get(root, ns, "GrpHdr/MsgId"),
        original_message_id=_get(root, ns, "OrgnlGrpInfAndSts/OrgnlMsgId"),
        original_end_to_end_id=_get(tx, ns, "OrgnlEndToEndId"),
        status=status, reason=reason,
        created_at=_time(_get(root, ns, "GrpHdr/CreDtTm", 64)),
    )  # fmt: skip


def parse_transfer_status(text: str) -> StatusReport:
    return _parse_report(text, "pacs.002", "FIToFIPmtStsRpt", "TxInfAndSts")


def parse_payment_request(text: str) -> PaymentRequest:
    root, ns = _root(text, "pain.013", "CdtrPmtActvtnReq")
    if _get(root, ns, "GrpHdr/NbOfTxs", 15) != "1":
        raise MessageError("NbOfTxs: one request per message")
    inf = root.find(f"{{{ns}}}PmtInf")
    tx = inf.find(f"{{{ns}}}CdtTrfTx") if inf is not None else None
    if inf is None or tx is None:
        raise MessageError("PmtInf/CdtTrfTx is missing")
    amount, currency = _amount(tx, ns, "Amt/InstdAmt")
    return PaymentRequest(
        message_id=_get(root, ns, "GrpHdr/MsgId"),
        end_to_end_id=_get(tx, ns, "PmtId/EndToEndId"),
        amount=amount, currency=currency,
        creditor=_party_of(tx, ns, "Cdtr"), debtor=_party_of(inf, ns, "Dbtr"),
        expires_at=_time(_get(inf, ns, "XpryDt/DtTm", 64)),
        remittance=_get(tx, ns, "RmtInf/Ustrd", _MAX140, required=False),
        created_at=_time(_get(root, ns, "GrpHdr/CreDtTm", 64)),
    )  # fmt: skip


def parse_request_status(text: str) -> StatusReport:
    return _parse_report(
        text, "pain.014", "CdtrPmtActvtnReqStsRpt", "OrgnlPmtInfAndSts/TxInfAndSts"
    )
