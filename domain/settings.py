"""Node configuration: one typed struct, read from the environment and CLI flags.

Every limit the node enforces is here, with a default sized for a 2-core
machine; bigger machines raise them through ``PAYNODE_*`` variables.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import Meta


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class Section(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A group of settings. Each field's name, after its section's prefix (``SECTIONS``),
    is the setting's flat name: ``PAYNODE_<FLAT NAME>`` in the environment, the keyword
    of ``build``/``replace`` (``recon.interval_ms`` is ``recon_interval_ms``)."""

    def __repr__(self) -> str:
        shown = [(f, getattr(self, f)) for f in self.__struct_fields__]
        fields = ", ".join(
            f"{f}={'<redacted>' if f in _SECRET_FIELDS and v else repr(v)}" for f, v in shown
        )
        return f"{type(self).__name__}({fields})"


# Secret fields in a section (the top level's: _redacted)
_SECRET_FIELDS = ("providers", "password", "auth_token")


class LedgerSettings(Section, frozen=True):
    # Ray restarts a crashed shard (-1 = always; 0 = never)
    shard_max_restarts: Annotated[int, Meta(ge=-1, le=1_000_000)] = -1
    # Rows coalesced into one group-commit transaction
    commit_max_rows: Annotated[int, Meta(ge=1, le=10_000_000)] = 65_536
    # How often pendings are checked for timeout
    expiry_interval_ms: Annotated[int, Meta(ge=1, le=60_000)] = 200
    # Transfer ids a shard keeps in memory for replays (about 0.5 KB each); an older id
    # is looked up in the journal, so this bounds memory, not what replays answer
    id_window: Annotated[int, Meta(ge=2, le=1_000_000_000)] = 131_072
    # How often the ledger checkpoint advances (a restart replays the journal after it;
    # 0 = only at a clean stop)
    checkpoint_interval_s: Annotated[float, Meta(ge=0, le=86_400)] = 60.0
    # Accounts a shard holds in memory (about 0.4 KB each); beyond it a new account is
    # refused with 507 account_limit_reached. Raise it, or add shards, on bigger machines.
    max_accounts: Annotated[int, Meta(ge=1, le=1_000_000_000)] = 5_000_000


class BatchSettings(Section, frozen=True):
    """The front's micro-batching toward each shard."""

    # Transfers per shard call
    max_items: Annotated[int, Meta(ge=1, le=100_000)] = 8190
    # Wait at most this long to fill a call
    window_ms: Annotated[float, Meta(ge=0, le=1000)] = 2.0
    # Concurrent calls per shard (pipelining)
    max_inflight: Annotated[int, Meta(ge=1, le=64)] = 4


class HttpSettings(Section, frozen=True):
    """What one API process takes on before it refuses."""

    # Transfers queued per shard before 503 overloaded
    queue_limit: Annotated[int, Meta(ge=1, le=10_000_000)] = 100_000
    # A transfer not answered by then is a 503
    request_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 15.0
    max_body_bytes: Annotated[int, Meta(ge=1024, le=1 << 30)] = 4 * 1024 * 1024
    # Per API process; beyond it 503 overloaded, body unread
    max_inflight_requests: Annotated[int, Meta(ge=1, le=1_000_000)] = 1024
    # Declared body bytes being served
    max_inflight_body_bytes: Annotated[int, Meta(ge=1024, le=1 << 36)] = 64 * 1024 * 1024
    db_pool_size: Annotated[int, Meta(ge=1, le=1000)] = 8
    # Comma-separated origins allowed by browsers; "" = none
    cors_origins: str = ""
    # Serve HTTPS with this certificate chain and key (PEM files); "" = plain HTTP
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Refuse plain-HTTP requests (403 tls_required); behind a TLS-terminating proxy, its
    # X-Forwarded-Proto counts only from trusted_proxies
    require_tls: bool = False
    # Comma-separated addresses or CIDR blocks of proxies whose X-Forwarded-Proto is believed
    trusted_proxies: str = ""


class AuthSettings(Section, frozen=True):
    access_token_ttl_s: Annotated[int, Meta(ge=60, le=86_400)] = 900
    refresh_token_ttl_s: Annotated[int, Meta(ge=60, le=365 * 86_400)] = 30 * 86400
    # API key and session lookups; bounds revocation lag elsewhere
    auth_cache_s: Annotated[float, Meta(ge=0, le=300)] = 5.0


class RateLimit(Section, frozen=True):
    """A token bucket: ``per_s`` refill, ``burst`` capacity."""

    per_s: Annotated[float, Meta(gt=0, le=1e9)]
    burst: Annotated[int, Meta(ge=1, le=1_000_000_000)]


class AnalyticsSettings(Section, frozen=True):
    # How often committed journal rows are published
    interval_ms: Annotated[int, Meta(ge=10, le=60_000)] = 250
    # Rows per Parquet segment written
    max_rows: Annotated[int, Meta(ge=1_000, le=10_000_000)] = 100_000
    # Live segments per table beyond which all are merged
    max_segments: Annotated[int, Meta(ge=2, le=10_000)] = 64
    compact: bool = True  # merge segments in tiers; off: never (a forensic copy)


class ReconSettings(Section, frozen=True):
    # Incremental reconciliation; 0 = on demand only
    interval_ms: Annotated[int, Meta(ge=0, le=86_400_000)] = 30_000
    # Every Nth scheduled run is a full one
    full_every: Annotated[int, Meta(ge=1, le=1_000_000)] = 10


class NotifySettings(Section, frozen=True):
    """The outbox fan-out."""

    # How often the outbox is polled when idle
    interval_ms: Annotated[int, Meta(ge=10, le=60_000)] = 200
    # Events fanned out per transaction
    batch: Annotated[int, Meta(ge=1, le=100_000)] = 5_000
    # Send API messages (POST /v1/notifications): tries before a message is dead
    message_max_attempts: Annotated[int, Meta(ge=1, le=100)] = 6
    # 1, 2, 4 ... s between tries (half of it jitter), up to the cap
    message_backoff_base_s: Annotated[float, Meta(gt=0, le=86_400)] = 2.0
    message_backoff_cap_s: Annotated[float, Meta(gt=0, le=86_400)] = 3600.0
    # How often due messages are looked for when nothing woke the loop
    message_interval_ms: Annotated[int, Meta(ge=10, le=60_000)] = 1_000
    # Messages claimed per pass, and sent at once at most
    message_batch: Annotated[int, Meta(ge=1, le=1_000)] = 50


class WebhookSettings(Section, frozen=True):
    """Deliveries to subscribers' endpoints, and inbound providers' secrets."""

    # Per attempt, connect to last byte
    timeout_s: Annotated[float, Meta(ge=0.1, le=120)] = 10.0
    # Then the delivery is dead (replay by hand)
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 8
    # 1, 2, 4 ... s (half of it jitter)
    backoff_base_s: Annotated[float, Meta(gt=0, le=86_400)] = 1.0
    backoff_cap_s: Annotated[float, Meta(gt=0, le=86_400)] = 3600.0
    # Requests in flight over all endpoints
    max_concurrency: Annotated[int, Meta(ge=1, le=10_000)] = 64
    # Pending deliveries per endpoint looked at per pass
    window: Annotated[int, Meta(ge=1, le=10_000)] = 200
    allow_private: bool = False  # allow http:// and loopback/private endpoints (dev)
    # Inbound: JSON {"provider": "signing secret"}; never printed
    providers: str = ""


class InboundSettings(Section, frozen=True):
    # Inbound signature timestamp window (replays)
    tolerance_s: Annotated[int, Meta(ge=1, le=3600)] = 300


class AchSettings(Section, frozen=True):
    """Our bank (the ODFI) and the cutoff."""

    # 9 digits with a valid check digit
    odfi_routing: str = "011000015"
    # On the receiver's statement (<= 16)
    company_name: Annotated[str, Meta(min_length=1, max_length=16)] = "PAYNODE"
    # 10 characters, assigned by the ODFI
    company_id: Annotated[str, Meta(min_length=10, max_length=10)] = "1000000001"
    # Build and send a NACHA file; 0 = on demand only
    cutoff_interval_ms: Annotated[int, Meta(ge=0, le=86_400_000)] = 60_000
    # The Fed's FedACH directory file (bank names by routing number); "" = a sample
    directory: str = ""


class ScheduleSettings(Section, frozen=True):
    """The fronts' scheduler of one-off and recurring transfers."""

    # How often each front looks for due runs; 0 = never (no schedule runs)
    interval_ms: Annotated[int, Meta(ge=0, le=3_600_000)] = 1000
    # Schedules one pass takes (each runs up to MAX_CATCH_UP occurrences)
    batch: Annotated[int, Meta(ge=1, le=10_000)] = 100


class BillingSettings(Section, frozen=True):
    """The fronts' billing scheduler: renewals, trials and dunning (api/billing_service.py)."""

    # How often each front looks for due subscriptions; 0 = never (nothing renews)
    interval_ms: Annotated[int, Meta(ge=0, le=3_600_000)] = 1000
    # Subscriptions one pass takes (their collections go to the ledger in one batch)
    batch: Annotated[int, Meta(ge=1, le=10_000)] = 500
    # Dunning: days after the first failed payment to retry (domain/billing/dunning.py)
    retry_days: Annotated[str, Meta(pattern=r"^(\d{1,2}(,\d{1,2}){0,7})?$")] = "1,3,5,7"
    # When the last retry fails: cancel the subscription, or leave it past_due
    on_exhausted: Literal["cancel", "leave_past_due"] = "cancel"


class FxSettings(Section, frozen=True):
    """Quotes on the operator's mid rates (PUT /v1/fx/rates)."""

    # What the node keeps of each conversion, in basis points of the mid rate
    spread_bps: Annotated[int, Meta(ge=0, le=1000)] = 50
    # How long a quote may be executed
    quote_ttl_s: Annotated[int, Meta(ge=1, le=3600)] = 30
    # A rate older than this quotes nothing (409 rate_stale)
    max_rate_age_s: Annotated[int, Meta(ge=60, le=30 * 86_400)] = 86_400


class RtpSettings(Section, frozen=True):
    """Instant payments on the RTP network (api/rtp_service.py)."""

    enabled: bool = True  # our bank is an RTP participant (sends instant payments)
    # Our bank's routing number on the network; "" = ach.odfi_routing
    routing: str = ""
    # Per-payment limit in minor units; never above the network's $1,000,000
    limit: Annotated[int, Meta(ge=1, le=1_000_000_00)] = 1_000_000_00
    # The sender's fee: fixed minor units plus basis points of the amount
    fee_fixed: Annotated[int, Meta(ge=0, le=100_000)] = 25
    fee_bps: Annotated[int, Meta(ge=0, le=1000)] = 0
    # How long a payment call waits for the network's answer (then: pending)
    timeout_ms: Annotated[int, Meta(ge=100, le=60_000)] = 5000
    # How often each front asks the network about payments unanswered past timeout_ms
    recover_interval_ms: Annotated[int, Meta(ge=0, le=3_600_000)] = 1000
    # RTP participants (routing number per line, # comments); "" = the shipped sample
    participants: str = ""
    # Requests for payment a user may receive before the oldest pending are refused
    max_pending_requests: Annotated[int, Meta(ge=1, le=100_000)] = 1000


class RtpSimSettings(Section, frozen=True):
    """The simulated RTP network, used without a real one."""

    enabled: bool = True
    # How long a simulated receiving bank takes to answer
    delay_ms: Annotated[int, Meta(ge=0, le=20_000)] = 50
    # JSON {"account number": "AC03"}; "" = the built-in table
    rejects: str = ""


class CardSettings(Section, frozen=True):
    """Card payments through a processor (api/card_service.py, domain/rails/card_rules.py)."""

    enabled: bool = True  # card payments and payment methods (simulated processor by default)
    # The processor's fee, paid by the payee: fixed minor units plus basis points
    fee_fixed: Annotated[int, Meta(ge=0, le=100_000)] = 30
    fee_bps: Annotated[int, Meta(ge=0, le=1000)] = 290
    # Smallest and largest charge in minor units (the processor's are 50 and $999,999.99)
    min_amount: Annotated[int, Meta(ge=1, le=100_000)] = 50
    limit: Annotated[int, Meta(ge=1, le=999_999_99)] = 999_999_99
    # How long a payment call waits for the processor (then: processing, finished later)
    timeout_ms: Annotated[int, Meta(ge=100, le=60_000)] = 5000
    # How often each front finishes card payments a crash or a slow processor left, and
    # refunds (of any rail) left processing longer than twice timeout_ms; 0 = never
    recover_interval_ms: Annotated[int, Meta(ge=0, le=3_600_000)] = 1000


class CardSimSettings(Section, frozen=True):
    """The simulated card processor (actors/card_sim.py), used without a real one."""

    enabled: bool = True
    # How long the simulated processor takes to answer an authorization
    delay_ms: Annotated[int, Meta(ge=0, le=20_000)] = 20
    # How long after a tok_createDispute card's capture its dispute event comes
    dispute_delay_ms: Annotated[int, Meta(ge=0, le=86_400_000)] = 1000


class BankSimSettings(Section, frozen=True):
    """The simulated bank, used without a real one."""

    enabled: bool = True  # answer our files with the simulator (no real bank here)
    # How long the simulated bank takes to settle or return
    delay_s: Annotated[float, Meta(ge=0, le=3600)] = 2.0
    # JSON {"account number": "R01"}; "" = the built-in table
    returns: str = ""


class LinkSettings(Section, frozen=True):
    """Bank linking through an account aggregator (api/link_routes.py)."""

    # The simulated aggregator (actors/aggregator_sim.py; no real one here)
    sim_enabled: bool = True
    # A link token's life (Plaid's: 4 hours)
    token_ttl_s: Annotated[int, Meta(ge=60, le=86_400)] = 14_400


class RiskSettings(Section, frozen=True):
    """Files in the layouts of domain/risk/ ("" = the shipped seeds)."""

    # JSON rules table (default_rules.json)
    rules: str = ""
    # JSON send limits by KYC level (default_limits.json)
    limits: str = ""


class SanctionsSettings(Section, frozen=True):
    # OFAC SDN CSV (sdn.csv layout); "" = the fictional sample list
    sdn: str = ""
    # OFAC ALT CSV (alt.csv layout): aliases; "" = the sample's
    alt: str = ""
    # Name similarity (0..1) that counts as a match
    threshold: Annotated[float, Meta(ge=0.5, le=1.0)] = 0.90


class OtpSettings(Section, frozen=True):
    # A step-up code's life
    max_age_s: Annotated[int, Meta(ge=30, le=3600)] = 300
    # Codes tried per challenge before it locks
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 5
    # Resends a payer may ask for per challenge (POST /v1/payments/{id}/resend-code)
    max_resends: Annotated[int, Meta(ge=0, le=20)] = 3
    # Least time between two sends of one challenge's code
    resend_interval_s: Annotated[int, Meta(ge=0, le=3600)] = 30


class EmailSettings(Section, frozen=True):
    """Email over SMTP (actors/notify/email.py); host "" = a local sink file."""

    # The SMTP server; "" = write messages to <data_dir>/email-sink.jsonl
    host: str = ""
    port: Annotated[int, Meta(ge=1, le=65_535)] = 587
    # "starttls" (upgrade a plain connection), "tls" (implicit, port 465), "none" (dev)
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    # Never printed
    password: str = ""
    from_address: Annotated[str, Meta(min_length=3, max_length=254)] = (
        "paynode <no-reply@localhost>"
    )
    # Per message, connect to the server's answer
    timeout_ms: Annotated[int, Meta(ge=100, le=120_000)] = 10_000


class SmsSettings(Section, frozen=True):
    """SMS through a Twilio-shaped HTTP provider (actors/notify/sms.py); base_url "" = a
    local sink file."""

    # The provider's API root, e.g. https://api.twilio.com; "" = <data_dir>/sms-sink.jsonl
    base_url: str = ""
    account_sid: str = ""
    # Signs requests (basic auth) and the provider's status callbacks; never printed
    auth_token: str = ""
    # E.164 sender number
    from_number: str = ""
    # Per request, connect to last byte
    timeout_ms: Annotated[int, Meta(ge=100, le=120_000)] = 10_000


class PushSettings(Section, frozen=True):
    """Retries of a push the provider could not take (a 429, a 5xx, a timeout)."""

    # 1, 2, 4 ... s (half of it jitter), up to the cap
    backoff_base_s: Annotated[float, Meta(gt=0, le=86_400)] = 1.0
    backoff_cap_s: Annotated[float, Meta(gt=0, le=86_400)] = 300.0
    # A provider's Retry-After is honoured up to this
    max_retry_after_s: Annotated[float, Meta(ge=0, le=86_400)] = 600.0


class ApnsSettings(Section, frozen=True):
    """Apple push over HTTP/2 with a provider token (actors/notify/apns.py); key_file ""
    = the JSON-lines sink (<data_dir>/push-sink.jsonl)."""

    # https://api.push.apple.com (production), https://api.sandbox.push.apple.com;
    # http:// speaks HTTP/2 in the clear (a local simulator)
    endpoint: str = "https://api.push.apple.com"
    team_id: str = ""
    key_id: str = ""
    # The .p8 signing key (PKCS#8 PEM, P-256); its content is never printed
    key_file: str = ""
    # The app's bundle id
    topic: str = "dev.paynode.app"
    # Per request, connect to answer
    timeout_ms: Annotated[int, Meta(ge=100, le=120_000)] = 10_000
    # A provider token's life before a new one is signed (Apple refuses one older than
    # an hour, and new ones oftener than every 20 minutes)
    token_refresh_s: Annotated[int, Meta(ge=60, le=3300)] = 3000


class FcmSettings(Section, frozen=True):
    """Firebase Cloud Messaging HTTP v1 with an OAuth service account
    (actors/notify/fcm.py); service_account_file "" = the JSON-lines sink."""

    endpoint: str = "https://fcm.googleapis.com"
    # The service account's JSON key file (project_id, client_email, private_key,
    # token_uri); its content is never printed
    service_account_file: str = ""
    # "" = the file's token_uri
    token_uri: str = ""
    # Per request, connect to answer (the token exchange too)
    timeout_ms: Annotated[int, Meta(ge=100, le=120_000)] = 10_000


def _default(section: type[Section], **values: object) -> Any:
    return msgspec.field(default_factory=lambda: section(**values))


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The node's configuration: the node's shape at the top, the rest in typed sections.

    Units: periods of a loop and waits under a second in ms (``*_interval_ms``,
    ``batch_window_ms``); timeouts, delays, lifetimes and tolerances in s.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8000
    data_dir: str = "./paynode-data"
    # 0 = half the cores, at least one (see shard_count)
    shards: Annotated[int, Meta(ge=0, le=1024)] = 0
    # HTTP front processes of `paynode run` (each its own Ray driver)
    workers: Annotated[int, Meta(ge=1, le=64)] = 1
    # How actors reach the HTTP front (bank simulator); "" = host:port
    public_url: str = ""
    # None = embedded PostgreSQL under data_dir
    database_url: str | None = None
    # None = start a local Ray instance
    ray_address: str | None = None
    # A local Ray's dashboard and autoscaler monitor (~120 MB idle); off: a one-machine
    # node uses neither
    ray_dashboard: bool = False
    namespace: str = "paynode"
    # Bootstrap admin key (PAYNODE_API_KEY); never printed
    api_key: Annotated[str, Meta(min_length=16)] | None = None
    # Keyring file; "" = <data_dir>/keyring.json (see storage/keyring.py)
    keyring: str = ""
    # OTLP/HTTP collector base URL for traces; "" = tracing off (no cost on the hot path).
    # OTEL_EXPORTER_OTLP_ENDPOINT sets it too
    trace_endpoint: str = ""
    # Log lines as text, or one JSON object per line (with trace and span ids)
    log_format: Literal["text", "json"] = "text"

    ledger: LedgerSettings = _default(LedgerSettings)
    batch: BatchSettings = _default(BatchSettings)
    http: HttpSettings = _default(HttpSettings)
    auth: AuthSettings = _default(AuthSettings)
    # Requests per user or API key; per client address; register/login/refresh per
    # client address (password and token guessing)
    rate: RateLimit = _default(RateLimit, per_s=5000.0, burst=10_000)
    ip_rate: RateLimit = _default(RateLimit, per_s=10_000.0, burst=20_000)
    auth_rate: RateLimit = _default(RateLimit, per_s=5.0, burst=20)
    analytics: AnalyticsSettings = _default(AnalyticsSettings)
    recon: ReconSettings = _default(ReconSettings)
    notify: NotifySettings = _default(NotifySettings)
    webhook: WebhookSettings = _default(WebhookSettings)
    inbound: InboundSettings = _default(InboundSettings)
    ach: AchSettings = _default(AchSettings)
    schedule: ScheduleSettings = _default(ScheduleSettings)
    billing: BillingSettings = _default(BillingSettings)
    fx: FxSettings = _default(FxSettings)
    rtp: RtpSettings = _default(RtpSettings)
    rtp_sim: RtpSimSettings = _default(RtpSimSettings)
    card: CardSettings = _default(CardSettings)
    card_sim: CardSimSettings = _default(CardSimSettings)
    bank_sim: BankSimSettings = _default(BankSimSettings)
    link: LinkSettings = _default(LinkSettings)
    risk: RiskSettings = _default(RiskSettings)
    sanctions: SanctionsSettings = _default(SanctionsSettings)
    otp: OtpSettings = _default(OtpSettings)
    push: PushSettings = _default(PushSettings)
    apns: ApnsSettings = _default(ApnsSettings)
    fcm: FcmSettings = _default(FcmSettings)
    email: EmailSettings = _default(EmailSettings)
    sms: SmsSettings = _default(SmsSettings)

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={_redacted(n, v)}" for n, v in flat_items(self))
        return f"Settings({fields})"

    def providers(self) -> dict[str, str]:
        """Inbound webhook providers and their signing secrets."""
        if not self.webhook.providers:
            return {}
        try:
            return msgspec.json.decode(self.webhook.providers, type=dict[str, str])
        except msgspec.DecodeError as e:
            raise ValueError("webhook_providers is not a JSON object of strings") from e

    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``http.trusted_proxies`` parsed (a bare address is a /32 or /128)."""
        parts = [x.strip() for x in self.http.trusted_proxies.split(",") if x.strip()]
        return tuple(ipaddress.ip_network(x, strict=False) for x in parts)

    def front_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def shard_count(self) -> int:
        """``shards``, or half the cores (at least one) when 0.

        A shard is one process, and a call between two shards costs about a
        millisecond of CPU on each side: the other half of the cores serve the
        fronts and PostgreSQL. Measured on 2 cores (benchmarks/README.md): one
        shard served 3,600-3,900 single requests/s at 340-380 us of node CPU each,
        two shards 2,900-3,100/s at 480-520 us; batch throughput was the same.
        """
        return self.shards if self.shards > 0 else max(1, _cores() // 2)

    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def analytics_path(self) -> Path:
        return self.data_path() / "analytics"


# Section attribute -> the prefix its fields' flat names carry ("" = none).
SECTIONS: dict[str, str] = {
    "ledger": "", "batch": "batch_", "http": "", "auth": "", "rate": "rate_",
    "ip_rate": "ip_rate_", "auth_rate": "auth_rate_", "analytics": "analytics_",
    "recon": "recon_", "notify": "notify_", "webhook": "webhook_", "inbound": "inbound_",
    "ach": "ach_", "schedule": "schedule_", "fx": "fx_", "rtp": "rtp_", "rtp_sim": "rtp_sim_",
    "card": "card_", "card_sim": "card_sim_",
    "billing": "billing_",
    "bank_sim": "bank_sim_", "risk": "risk_",
    "sanctions": "sanctions_", "otp": "otp_", "link": "link_",
    "push": "push_", "apns": "apns_", "fcm": "fcm_",
    "email": "email_", "sms": "sms_",
}  # fmt: skip
# Settings whose name changed (one unit per concept; sections): named in the error.
RENAMED = {
    "recon_interval_s": "recon_interval_ms",
    "ach_cutoff_interval_s": "ach_cutoff_interval_ms",
    "bank_simulator": "bank_sim_enabled",
}


_DEFAULTS = Settings()


def _index() -> dict[str, tuple[str | None, str]]:
    """Flat name -> (section attribute or None at the top, field)."""
    out: dict[str, tuple[str | None, str]] = {}
    for name in Settings.__struct_fields__:
        section = getattr(_DEFAULTS, name)
        assert isinstance(section, Section) == (name in SECTIONS), f"{name}: prefix in SECTIONS"
        if isinstance(section, Section):
            for field in section.__struct_fields__:
                flat = SECTIONS[name] + field
                assert flat not in out, f"two settings named {flat}"
                out[flat] = (name, field)
        else:
            assert name not in out, f"two settings named {name}"
            out[name] = (None, name)
    return out


FLAT: dict[str, tuple[str | None, str]] = _index()


def flat_items(settings: Settings) -> list[tuple[str, object]]:
    """Every setting as (flat name, value), in declaration order."""
    out = []
    for flat, (section, field) in FLAT.items():
        owner = settings if section is None else getattr(settings, section)
        out.append((flat, getattr(owner, field)))
    return out


def _nested(flat: dict[str, object]) -> dict[str, object]:
    """Flat names to the nested shape msgspec converts (unknown names refused)."""
    out: dict[str, object] = {}
    for name, value in flat.items():
        if name in RENAMED:
            raise ValueError(
                f"invalid configuration: {name} is now {RENAMED[name]} "
                f"({_ENV_PREFIX}{RENAMED[name].upper()})"
            )
        where = FLAT.get(name)
        if where is None:
            raise ValueError(f"invalid configuration: no setting named {name}")
        section, field = where
        if section is None:
            out[field] = value
        else:
            if section not in out:  # a section's other fields keep their defaults
                out[section] = msgspec.structs.asdict(getattr(_DEFAULTS, section))
            out[section][field] = value  # type: ignore[index]
    return out


def build(**flat: object) -> Settings:
    """Settings from flat names (``recon_interval_ms=0``), defaults for the rest; checked."""
    return _build(flat, strict=True)


def _build(flat: dict[str, object], strict: bool) -> Settings:
    try:
        settings = msgspec.convert(_nested(flat), Settings, strict=strict)
    except msgspec.ValidationError as e:
        raise ValueError("invalid configuration: " + _explain(str(e))) from None
    _check(settings)
    return settings


def replace(settings: Settings, **flat: object) -> Settings:
    """A copy with the named (flat) settings changed; checked like ``build``."""
    values = dict(flat_items(settings))
    values.update(flat)
    return build(**values)


def _redacted(field: str, value: object) -> str:
    if field in ("api_key", "webhook_providers", "email_password", "sms_auth_token") and value:
        return "<redacted>"
    if field == "database_url" and isinstance(value, str):
        return repr(_without_password(value))
    return repr(value)


def _without_password(url: str) -> str:
    """A database URL as it may be printed: the password (if any) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


_ENV_PREFIX = "PAYNODE_"


def from_env(**overrides: object) -> Settings:
    """Defaults, then ``PAYNODE_<FLAT NAME>`` / ``DATABASE_URL`` / ``RAY_ADDRESS``, then
    overrides (flat names).

    Raises ``ValueError`` naming the setting (and its variable) that is out of bounds, or
    a variable whose setting was renamed."""
    values: dict[str, object] = {}
    for old, new in RENAMED.items():
        if os.environ.get(_ENV_PREFIX + old.upper()) is not None:
            raise ValueError(
                f"invalid configuration: {_ENV_PREFIX}{old.upper()} is now "
                f"{_ENV_PREFIX}{new.upper()}"
            )
    for name in FLAT:
        raw = os.environ.get(_ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = raw
    if os.environ.get("DATABASE_URL"):
        values["database_url"] = os.environ["DATABASE_URL"]
    if os.environ.get("RAY_ADDRESS"):
        values["ray_address"] = os.environ["RAY_ADDRESS"]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") and "trace_endpoint" not in values:
        values["trace_endpoint"] = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _build(values, strict=False)


def _explain(message: str) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.recon.interval_ms`" as "recon_interval_ms
    must be `int` >= 1 (PAYNODE_RECON_INTERVAL_MS)". The value itself is never echoed: it
    may be a secret."""
    what, _, where = message.partition(" - at `$.")
    path = where.rstrip("`")
    if not path:
        return message
    section, _, field = path.partition(".")
    name = SECTIONS[section] + field if field and section in SECTIONS else path
    rule = what.removeprefix("Expected ").removeprefix("Object ")
    return f"{name} must be {rule} ({_ENV_PREFIX}{name.upper()})"


def _check(s: Settings) -> None:
    """What the bounds next to each field cannot say: rules across fields, and formats."""
    problems = []
    if s.http.max_inflight_body_bytes < s.http.max_body_bytes:
        problems.append("max_inflight_body_bytes must be >= max_body_bytes")
    if s.http.queue_limit < s.batch.max_items:
        problems.append("queue_limit must be >= batch_max_items")
    if s.auth.refresh_token_ttl_s < s.auth.access_token_ttl_s:
        problems.append("refresh_token_ttl_s must be >= access_token_ttl_s")
    if bool(s.http.tls_cert_file) != bool(s.http.tls_key_file):
        problems.append("tls_cert_file and tls_key_file go together")
    try:
        s.proxy_networks()
    except ValueError:
        problems.append("trusted_proxies must be comma-separated addresses or CIDR blocks")
    if s.webhook.backoff_cap_s < s.webhook.backoff_base_s:
        problems.append("webhook_backoff_cap_s must be >= webhook_backoff_base_s")
    if s.notify.message_backoff_cap_s < s.notify.message_backoff_base_s:
        problems.append("notify_message_backoff_cap_s must be >= notify_message_backoff_base_s")
    from paynode.domain.rails.nacha import aba_valid

    if not aba_valid(s.ach.odfi_routing):
        problems.append("ach_odfi_routing must be a 9-digit routing number (ABA check digit)")
    try:
        providers = s.providers()
    except ValueError:
        problems.append('webhook_providers must be JSON {"name": "secret"}')
    else:
        if any(len(v) < 16 for v in providers.values()):
            problems.append("webhook_providers secrets must be at least 16 characters")
    if problems:
        raise ValueError("invalid configuration: " + "; ".join(problems))
