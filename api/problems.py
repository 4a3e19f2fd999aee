"""Errors as ``application/problem+json``: one table from code to status and title.

Every refusal the node makes has a stable ``code``; clients switch on it,
never on ``detail`` (human text, free to change). No detail ever echoes a
submitted value, so secrets and PII in a request cannot leak through errors.
"""

from __future__ import annotations

import re

import msgspec
from starlette.responses import Response

from paynode.actors import tracing
from paynode.api.schemas import Problem
from paynode.domain.ledger.model import RETRYABLE, Code

PROBLEM_JSON = "application/problem+json"

# Edge codes (no shard involved).
MALFORMED_JSON = "malformed_json"
BODY_TOO_LARGE = "body_too_large"
UNKNOWN_FIELD = "unknown_field"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
FLAGS_MUTUALLY_EXCLUSIVE = "flags_are_mutually_exclusive"
PENDING_ID_REQUIRED = "pending_id_required"
PENDING_ID_MUST_BE_EMPTY = "pending_id_must_be_empty"
PENDING_ID_MUST_BE_DIFFERENT = "pending_id_must_be_different"
TIMEOUT_RESERVED = "timeout_reserved_for_pending_transfer"
TRANSFER_NOT_FOUND = "transfer_not_found"
INVALID_CURSOR = "invalid_cursor"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
OVERLOADED = "overloaded"
TIMEOUT = "timeout"
SHARD_RESTARTED = "shard_restarted"
INTERNAL = "internal_error"

# Identity and access.
UNAUTHENTICATED = "unauthenticated"
INVALID_TOKEN = "invalid_token"
TOKEN_EXPIRED = "token_expired"
INVALID_API_KEY = "invalid_api_key"
SESSION_REVOKED = "session_revoked"
INVALID_CREDENTIALS = "invalid_credentials"
INVALID_REFRESH_TOKEN = "invalid_refresh_token"
REFRESH_TOKEN_REUSED = "refresh_token_reused"
FORBIDDEN = "forbidden"
INSUFFICIENT_SCOPE = "insufficient_scope"
SCOPE_NOT_GRANTABLE = "scope_not_grantable"
RATE_LIMITED = "rate_limited"
EMAIL_TAKEN = "email_taken"
WEAK_PASSWORD = "weak_password"
USER_NOT_FOUND = "user_not_found"
API_KEY_NOT_FOUND = "api_key_not_found"
KYC_ALREADY_VERIFIED = "kyc_already_verified"
KYC_IN_REVIEW = "kyc_in_review"
KYC_NOT_PENDING = "kyc_not_pending"
SEALED_VALUE_UNREADABLE = "sealed_value_unreadable"

# Notifications and inbound webhooks.
EVENT_NOT_FOUND = "event_not_found"
WEBHOOK_ENDPOINT_NOT_FOUND = "webhook_endpoint_not_found"
DELIVERY_NOT_FOUND = "delivery_not_found"
DEVICE_NOT_FOUND = "device_not_found"
INVALID_URL = "invalid_url"
DESTINATION_NOT_ALLOWED = "destination_not_allowed"
UNKNOWN_PROVIDER = "unknown_provider"
SIGNATURE_MISSING = "signature_missing"
SIGNATURE_MALFORMED = "signature_malformed"
SIGNATURE_STALE = "signature_timestamp_outside_tolerance"
SIGNATURE_MISMATCH = "signature_mismatch"
INVALID_WEBHOOK_BODY = "invalid_webhook_body"
WEBHOOK_REPLAYED = "webhook_replayed"

# Rails.
HANDLE_TAKEN = "handle_taken"
HANDLE_NOT_FOUND = "handle_not_found"
RAIL_NOT_AVAILABLE = "rail_not_available"
PAYMENT_NOT_FOUND = "payment_not_found"
PAYMENT_NOT_COMPLETED = "payment_not_completed"
REFUND_EXCEEDS_PAYMENT = "refund_exceeds_payment"
BANK_ACCOUNT_NOT_FOUND = "bank_account_not_found"
BANK_ACCOUNT_NOT_VERIFIED = "bank_account_not_verified"
INVALID_ROUTING_NUMBER = "invalid_routing_number"
VERIFICATION_FAILED = "verification_failed"
VERIFICATION_LOCKED = "verification_locked"
ACH_FILE_NOT_FOUND = "ach_file_not_found"
INVALID_NACHA_FILE = "invalid_nacha_file"

# Risk and compliance.
LIMIT_PER_TRANSACTION = "limit_per_transaction"
LIMIT_DAILY = "limit_daily"
LIMIT_MONTHLY = "limit_monthly"
OTP_INVALID = "otp_invalid"
OTP_EXPIRED = "otp_expired"
OTP_REUSED = "otp_reused"
OTP_LOCKED = "otp_locked"
NO_ACTION_REQUIRED = "no_action_required"
OTP_RESEND_LIMIT = "otp_resend_limit"
OTP_RESEND_TOO_SOON = "otp_resend_too_soon"
REVIEW_NOT_FOUND = "review_not_found"
REVIEW_DECIDED = "review_already_decided"
SANCTIONS_REVIEW_OPEN = "sanctions_review_open"
PAYMENT_NOT_CANCELABLE = "payment_not_cancelable"
DEAD_LETTER_NOT_FOUND = "dead_letter_not_found"
SCHEDULE_NOT_FOUND = "schedule_not_found"
BANK_ACCOUNT_CLOSED = "bank_account_closed"
RATE_NOT_AVAILABLE = "rate_not_available"
RATE_STALE = "rate_stale"
QUOTE_NOT_FOUND = "quote_not_found"
QUOTE_EXPIRED = "quote_expired"
QUOTE_USED = "quote_used"
CURRENCY_NOT_SUPPORTED = "currency_not_supported"
ACCOUNT_ID_RESERVED = "account_id_reserved"
FX_UNAVAILABLE = "fx_unavailable"
MONITOR_NOT_FOUND = "monitor_not_found"
TOO_MANY_MONITORS = "too_many_monitors"
SCHEDULE_NOT_CHANGEABLE = "schedule_not_changeable"
INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
IDEMPOTENCY_KEY_NEEDS_CREDENTIAL = "idempotency_key_needs_credential"
IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
AMOUNT_OVER_RAIL_LIMIT = "amount_over_rail_limit"
TLS_REQUIRED = "tls_required"
DISPUTE_NOT_FOUND = "dispute_not_found"
DISPUTE_CLOSED = "dispute_not_open"
PAYMENT_NOT_REFUNDABLE = "payment_not_refundable"
RTP_REQUEST_NOT_FOUND = "rtp_request_not_found"
RTP_REQUEST_ANSWERED = "rtp_request_already_answered"
RTP_REQUEST_EXPIRED = "rtp_request_expired"
LINK_ITEM_NOT_FOUND = "link_item_not_found"
INVALID_LINK_TOKEN = "invalid_link_token"
INVALID_PUBLIC_TOKEN = "invalid_public_token"
INSTITUTION_NOT_FOUND = "institution_not_found"
BANK_LINK_LOGIN_REQUIRED = "bank_link_login_required"
LINK_ITEM_CLOSED = "link_item_closed"
AGGREGATOR_UNAVAILABLE = "aggregator_unavailable"
PAYMENT_METHOD_NOT_FOUND = "payment_method_not_found"
INVALID_CARD_TOKEN = "invalid_card_token"
PAYMENT_METHOD_IN_USE = "payment_method_in_use"
PAYMENT_METHOD_NOT_DETACHABLE = "payment_method_not_detachable"
PAYMENT_METHOD_NOT_CHARGEABLE = "payment_method_not_chargeable"
CARD_PROCESSOR_UNAVAILABLE = "card_processor_unavailable"
NO_CARD_ACTION_REQUIRED = "no_card_action_required"
RECEIPT_NOT_AVAILABLE = "receipt_not_available"
NOTIFICATION_NOT_FOUND = "notification_not_found"
NOTIFICATION_EXISTS = "notification_exists_with_different_fields"
NOTIFICATION_MESSAGE_NOT_FOUND = "notification_message_not_found"
NOTIFICATION_MESSAGE_NOT_REPLAYABLE = "notification_message_not_replayable"
UNKNOWN_TEMPLATE = "unknown_template"
PRODUCT_NOT_FOUND = "product_not_found"
PRICE_NOT_FOUND = "price_not_found"
SUBSCRIPTION_NOT_FOUND = "subscription_not_found"
INVOICE_NOT_FOUND = "invoice_not_found"
TEST_CLOCK_NOT_FOUND = "test_clock_not_found"
TRANSITION_REFUSED = "transition_refused"
INVOICE_NOT_PAYABLE = "invoice_not_payable"
COLLECTION_IN_FLIGHT = "collection_in_flight"
CLOCK_BACKWARDS = "clock_backwards"
OUT_OF_RANGE = "out_of_range"
NOT_DUE = "not_due"
TOO_MANY_CHANGES = "too_many_changes"
TEMPLATE_DATA_MISSING = "template_data_missing"

_TABLE: dict[str, tuple[int, str]] = {
    MALFORMED_JSON: (400, "Request body is not valid JSON"),
    BODY_TOO_LARGE: (413, "Request body too large"),
    UNKNOWN_FIELD: (422, "Unknown field"),
    MISSING_FIELD: (422, "Missing required field"),
    INVALID_FIELD: (422, "Invalid field value"),
    FLAGS_MUTUALLY_EXCLUSIVE: (422, "Flags are mutually exclusive"),
    PENDING_ID_REQUIRED: (422, "pending_id is required to post or void"),
    PENDING_ID_MUST_BE_EMPTY: (422, "pending_id is only for post_pending or void_pending"),
    PENDING_ID_MUST_BE_DIFFERENT: (422, "pending_id must differ from id"),
    TIMEOUT_RESERVED: (422, "timeout_s is only for pending transfers"),
    TRANSFER_NOT_FOUND: (404, "Transfer not found"),
    INVALID_CURSOR: (400, "Invalid cursor"),
    NOT_FOUND: (404, "Not found"),
    METHOD_NOT_ALLOWED: (405, "Method not allowed"),
    OVERLOADED: (503, "Node overloaded, retry later"),
    TIMEOUT: (503, "No answer in time; retry with the same id"),
    SHARD_RESTARTED: (503, "A ledger shard restarted before answering; retry with the same id"),
    INTERNAL: (500, "Internal error"),
    UNAUTHENTICATED: (401, "Authentication required: Authorization: Bearer <token or key>"),
    INVALID_TOKEN: (401, "Invalid access token"),
    TOKEN_EXPIRED: (401, "Access token expired; refresh it"),
    INVALID_API_KEY: (401, "Invalid or revoked API key"),
    SESSION_REVOKED: (401, "Session ended; log in again"),
    INVALID_CREDENTIALS: (401, "Email or password is wrong"),
    INVALID_REFRESH_TOKEN: (401, "Invalid, expired or revoked refresh token"),
    REFRESH_TOKEN_REUSED: (401, "Refresh token re-used; the session is revoked"),
    FORBIDDEN: (403, "Not yours"),
    INSUFFICIENT_SCOPE: (403, "The credential lacks the scope this needs"),
    SCOPE_NOT_GRANTABLE: (403, "A key cannot be given a scope its creator lacks"),
    RATE_LIMITED: (429, "Too many requests; retry after the Retry-After seconds"),
    EMAIL_TAKEN: (409, "Email already registered"),
    WEAK_PASSWORD: (422, "Password too short"),
    USER_NOT_FOUND: (404, "User not found"),
    API_KEY_NOT_FOUND: (404, "API key not found"),
    KYC_ALREADY_VERIFIED: (409, "KYC already verified"),
    KYC_IN_REVIEW: (409, "KYC submission already in review"),
    KYC_NOT_PENDING: (409, "No KYC submission is pending review"),
    SEALED_VALUE_UNREADABLE: (500, "Stored personal data failed authentication; reported"),
    EVENT_NOT_FOUND: (404, "Event not found"),
    WEBHOOK_ENDPOINT_NOT_FOUND: (404, "Webhook endpoint not found"),
    DELIVERY_NOT_FOUND: (404, "Delivery not found"),
    DEVICE_NOT_FOUND: (404, "Device not found"),
    INVALID_URL: (422, "Invalid endpoint URL"),
    DESTINATION_NOT_ALLOWED: (422, "Endpoint URL points to a private or loopback address"),
    UNKNOWN_PROVIDER: (404, "Unknown webhook provider"),
    SIGNATURE_MISSING: (401, "Signature header missing"),
    SIGNATURE_MALFORMED: (401, "Signature header malformed"),
    SIGNATURE_STALE: (401, "Signature timestamp outside the tolerance window"),
    SIGNATURE_MISMATCH: (401, "Signature does not match the body"),
    INVALID_WEBHOOK_BODY: (422, "Webhook body is not a valid event envelope"),
    WEBHOOK_REPLAYED: (409, "This event id was already accepted"),
    HANDLE_TAKEN: (409, "Handle already taken"),
    HANDLE_NOT_FOUND: (404, "Handle not found"),
    "handle_too_short": (422, "Handle shorter than 3 characters"),
    "handle_too_long": (422, "Handle longer than 30 characters"),
    "handle_invalid_characters": (422, "Handle may hold a-z, 0-9, '_' and '.'"),
    "handle_confusable": (422, "Handle holds a letter that imitates another"),
    "handle_reserved": (422, "Handle reserved"),
    "handle_empty": (422, "Handle empty"),
    RAIL_NOT_AVAILABLE: (422, "Rail not available for these parties"),
    PAYMENT_NOT_FOUND: (404, "Payment not found"),
    PAYMENT_NOT_COMPLETED: (409, "Only a completed payment can be refunded"),
    REFUND_EXCEEDS_PAYMENT: (422, "Refunds would exceed the payment"),
    BANK_ACCOUNT_NOT_FOUND: (404, "Bank account not found"),
    BANK_ACCOUNT_NOT_VERIFIED: (422, "Bank account not verified"),
    INVALID_ROUTING_NUMBER: (422, "Routing number fails the ABA check digit"),
    VERIFICATION_FAILED: (422, "Micro-deposit amounts do not match"),
    VERIFICATION_LOCKED: (409, "Too many wrong attempts; link the account again"),
    ACH_FILE_NOT_FOUND: (404, "ACH file not found"),
    INVALID_NACHA_FILE: (400, "Not a valid NACHA return file"),
    LIMIT_PER_TRANSACTION: (422, "Amount above the per-payment limit of your KYC level"),
    LIMIT_DAILY: (422, "Payment would exceed your daily send limit"),
    LIMIT_MONTHLY: (422, "Payment would exceed your monthly send limit"),
    OTP_INVALID: (422, "One-time code is wrong"),
    OTP_EXPIRED: (422, "One-time code expired; the payment failed"),
    OTP_REUSED: (409, "One-time code already used"),
    OTP_LOCKED: (422, "Too many wrong codes; the payment failed"),
    NO_ACTION_REQUIRED: (409, "The payment is not waiting for a one-time code"),
    OTP_RESEND_LIMIT: (429, "No more resends for this code; confirm with a code already sent"),
    OTP_RESEND_TOO_SOON: (429, "A code was sent moments ago; retry after Retry-After seconds"),
    REVIEW_NOT_FOUND: (404, "Review not found"),
    REVIEW_DECIDED: (409, "Review already decided"),
    SANCTIONS_REVIEW_OPEN: (409, "A sanctions review of this user is open"),
    DEAD_LETTER_NOT_FOUND: (404, "Dead letter not found"),
    SCHEDULE_NOT_FOUND: (404, "Schedule not found"),
    BANK_ACCOUNT_CLOSED: (409, "Bank account closed"),
    RATE_NOT_AVAILABLE: (409, "No rate for this currency pair"),
    RATE_STALE: (409, "The pair's rate is too old to quote on"),
    QUOTE_NOT_FOUND: (404, "Quote not found"),
    QUOTE_EXPIRED: (409, "Quote expired; ask for a new one"),
    QUOTE_USED: (409, "Quote already executed by another conversion"),
    CURRENCY_NOT_SUPPORTED: (422, "Currency not supported for FX"),
    MONITOR_NOT_FOUND: (404, "Balance monitor not found"),
    TOO_MANY_MONITORS: (409, "The account has as many monitors as it may"),
    FX_UNAVAILABLE: (503, "FX in this currency is unavailable; an operator was alerted"),
    ACCOUNT_ID_RESERVED: (422, "Account ids starting with fx- are the node's"),
    SCHEDULE_NOT_CHANGEABLE: (409, "The schedule cannot change that way from its state"),
    PAYMENT_NOT_CANCELABLE: (409, "Only an ACH payment not yet sent to the bank can be canceled"),
    INVALID_IDEMPOTENCY_KEY: (400, "Invalid Idempotency-Key header"),
    IDEMPOTENCY_KEY_NEEDS_CREDENTIAL: (
        400,
        "Idempotency-Key is kept per credential: send it with Authorization",
    ),
    IDEMPOTENCY_KEY_REUSED: (409, "This Idempotency-Key was used for a different request"),
    IDEMPOTENCY_KEY_IN_USE: (409, "A request with this Idempotency-Key is still running; retry"),
    AMOUNT_OVER_RAIL_LIMIT: (422, "Amount above the rail's per-payment limit"),
    TLS_REQUIRED: (403, "This node accepts requests over HTTPS only"),
    DISPUTE_NOT_FOUND: (404, "Dispute not found"),
    DISPUTE_CLOSED: (409, "The dispute takes no more answers"),
    PAYMENT_NOT_REFUNDABLE: (
        409,
        "RTP payments are final (no returns): the payee sends the money back as a new payment",
    ),
    RTP_REQUEST_NOT_FOUND: (404, "Request for payment not found"),
    RTP_REQUEST_ANSWERED: (409, "The request for payment was already answered"),
    RTP_REQUEST_EXPIRED: (409, "The request for payment expired"),
    LINK_ITEM_NOT_FOUND: (404, "Linked bank item not found"),
    INVALID_LINK_TOKEN: (422, "Link token unknown, expired, used or not yours"),
    INVALID_PUBLIC_TOKEN: (422, "Public token unknown, expired or not yours"),
    INSTITUTION_NOT_FOUND: (422, "No such institution at the aggregator"),
    BANK_LINK_LOGIN_REQUIRED: (
        409,
        "The bank wants a new login: re-link the item (POST /v1/link/tokens with its item_id)",
    ),
    LINK_ITEM_CLOSED: (409, "The linked item was revoked or removed; link the bank again"),
    AGGREGATOR_UNAVAILABLE: (503, "The bank-linking provider is unavailable; retry"),
    PAYMENT_METHOD_NOT_FOUND: (404, "Payment method not found"),
    INVALID_CARD_TOKEN: (422, "The processor knows no such card token"),
    PAYMENT_METHOD_IN_USE: (409, "The payment method is used by an active subscription"),
    PAYMENT_METHOD_NOT_DETACHABLE: (409, "A bank account is closed at /v1/bank-accounts/{id}"),
    PAYMENT_METHOD_NOT_CHARGEABLE: (422, "This payment method cannot pay by card"),
    CARD_PROCESSOR_UNAVAILABLE: (503, "The card processor is unavailable; retry with the same id"),
    NO_CARD_ACTION_REQUIRED: (409, "The payment is not waiting for 3-D Secure"),
    RECEIPT_NOT_AVAILABLE: (409, "A receipt exists once a card payment succeeded"),
    NOTIFICATION_NOT_FOUND: (404, "Notification not found"),
    NOTIFICATION_EXISTS: (409, "A notification with this id exists with other fields"),
    NOTIFICATION_MESSAGE_NOT_FOUND: (404, "Notification message not found"),
    NOTIFICATION_MESSAGE_NOT_REPLAYABLE: (409, "Only a dead or failed message can be replayed"),
    UNKNOWN_TEMPLATE: (422, "No template by this name"),
    PRODUCT_NOT_FOUND: (404, "Product not found"),
    PRICE_NOT_FOUND: (404, "Price not found"),
    SUBSCRIPTION_NOT_FOUND: (404, "Subscription not found"),
    INVOICE_NOT_FOUND: (404, "Invoice not found"),
    TEST_CLOCK_NOT_FOUND: (404, "Test clock not found"),
    TRANSITION_REFUSED: (409, "The subscription or invoice cannot change that way from its state"),
    INVOICE_NOT_PAYABLE: (409, "Only an open or uncollectible invoice is paid or voided"),
    COLLECTION_IN_FLIGHT: (409, "A payment of this subscription is being collected; retry"),
    CLOCK_BACKWARDS: (422, "A test clock only moves forward"),
    OUT_OF_RANGE: (422, "A time or period out of the allowed range"),
    NOT_DUE: (409, "Not due yet"),
    TOO_MANY_CHANGES: (409, "The subscription changed plan as often as it may"),
    TEMPLATE_DATA_MISSING: (422, "The template needs a data value that is missing"),
    Code.EXISTS_WITH_DIFFERENT_FIELDS: (409, "Id exists with different fields"),
    Code.EXISTS: (409, "Part of this linked chain already exists"),
    Code.TRANSFER_IN_FLIGHT: (409, "A transfer with this id is being decided; retry"),
    Code.ACCOUNT_NOT_FOUND: (422, "Account not found"),
    Code.CURRENCY_MISMATCH: (422, "Currency mismatch"),
    Code.SAME_ACCOUNT: (422, "Debit and credit account are the same"),
    Code.INSUFFICIENT_FUNDS: (422, "Insufficient funds"),
    Code.CREDITS_EXCEED_DEBITS: (422, "Credit would exceed the account's debits"),
    Code.OVERFLOW: (422, "Balance would overflow"),
    Code.PENDING_NOT_FOUND: (422, "Pending transfer not found"),
    Code.PENDING_NOT_PENDING: (422, "Referenced transfer is not pending"),
    Code.PENDING_ALREADY_POSTED: (422, "Pending transfer already posted"),
    Code.PENDING_ALREADY_VOIDED: (422, "Pending transfer already voided"),
    Code.PENDING_EXPIRED: (422, "Pending transfer expired"),
    Code.PENDING_ACCOUNT_MISMATCH: (422, "Accounts differ from the pending transfer's"),
    Code.EXCEEDS_PENDING_AMOUNT: (422, "Amount exceeds the pending amount"),
    Code.VOID_AMOUNT_MISMATCH: (422, "A void must carry the pending amount or none"),
    Code.LINKED_EVENT_FAILED: (422, "Another transfer in the linked chain failed"),
    Code.LINKED_CHAIN_OPEN: (422, "The last transfer of a batch cannot be linked"),
    Code.STORAGE_UNAVAILABLE: (503, "Journal unavailable; nothing was applied"),
    Code.ACCOUNT_LIMIT_REACHED: (507, "The node holds as many accounts as its memory allows"),
}

_RETRYABLE = RETRYABLE | {OVERLOADED, TIMEOUT, SHARD_RESTARTED, RATE_LIMITED,
                          IDEMPOTENCY_KEY_IN_USE}  # fmt: skip


def status_of(code: str) -> int:
    return _TABLE.get(code, (422, ""))[0]


class ApiError(Exception):
    """A refusal; ``status`` overrides the table (e.g. a missing account in a path is 404)."""

    def __init__(
        self,
        code: str,
        detail: str = "",
        field: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.field = field
        self.status = status
        self.headers = headers


def problem(
    code: str,
    detail: str = "",
    field: str | None = None,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    default, title = _TABLE.get(code, (422, code.replace("_", " ").capitalize()))
    status = status or default
    body = Problem(
        type=f"https://paynode.dev/problems/{code}",
        title=title,
        status=status,
        detail=detail or title,
        code=code,
        field=field,
        retryable=code in _RETRYABLE,
        trace_id=ids[0] if (ids := tracing.current_ids()) else None,
    )
    if status == 503 and headers is None:
        headers = {"Retry-After": "1"}
    return Response(msgspec.json.encode(body), status, headers=headers, media_type=PROBLEM_JSON)


_QUOTED_VALUE = re.compile(r"'.*'", re.DOTALL)


def from_validation(err: msgspec.ValidationError) -> ApiError:
    """Turn msgspec's message into a code and a JSON path, without any submitted text.

    msgspec quotes offending values ('...') and unknown keys (`...`): both are
    the client's own input and may be a secret pasted in the wrong place.
    """
    msg = str(err)
    path = msg.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in msg else "$"
    what = msg.split(" - at ")[0]
    if what.startswith("Object contains unknown field"):
        return ApiError(UNKNOWN_FIELD, "the object has a field the schema does not allow", path)
    if what.startswith("Object missing required field"):
        return ApiError(MISSING_FIELD, what, path)  # names a schema field, not input
    return ApiError(INVALID_FIELD, _QUOTED_VALUE.sub("value", what), path)
