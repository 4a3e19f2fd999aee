"""The HTTP contract for identity: auth, API keys, users and KYC.

Personal data appears only in request bodies and in the user's own profile
responses; the KYC id number goes in and only its last 4 characters come out.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paynode.api.auth.passwords import MAX_PASSWORD_BYTES
from paynode.api.auth.scopes import Scope
from paynode.api.schemas import UserId

Email = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$(?!\n)",
        description="An email address",
    ),
]
Password = Annotated[
    str,
    Meta(min_length=1, max_length=MAX_PASSWORD_BYTES // 4, description="At least 10 characters"),
]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Phone = Annotated[str, Meta(pattern=r"^\+[1-9][0-9]{6,14}$(?!\n)", description="E.164")]
BirthDate = Annotated[dt.date, Meta(description="YYYY-MM-DD")]
Country = Annotated[str, Meta(pattern=r"^[A-Z]{2}$(?!\n)", description="ISO 3166-1 alpha-2")]
Line = Annotated[str, Meta(min_length=1, max_length=200)]
KycStatus = Literal["unverified", "pending", "verified", "rejected"]
KycIdType = Literal["ssn", "itin", "passport", "national_id", "drivers_license"]


class Address(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    line1: Line
    city: Line
    postal_code: Annotated[str, Meta(min_length=1, max_length=20)]
    country: Country
    line2: Line | None = None
    region: Line | None = None


# -- auth --------------------------------------------------------------------------


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    name: Name | None = None


class RegisterOut(msgspec.Struct):
    user_id: str


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password


class RefreshIn(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, Meta(min_length=1, max_length=256)]


class TokenPair(msgspec.Struct):
    """``refresh_token`` works once: use the new one each refresh returns."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"]
    expires_in: int  # seconds until access_token expires


class LogoutIn(msgspec.Struct, forbid_unknown_fields=True):
    """Optional; logout ends the session of the access token used to call it."""

    refresh_token: Annotated[str, Meta(max_length=256)] | None = None


class Me(msgspec.Struct):
    """The caller: a user (access token or user-owned key) or an admin key."""

    kind: Literal["user", "api_key", "bootstrap"]
    id: str
    user_id: str | None
    scopes: list[str]


# -- API keys ------------------------------------------------------------------------


class ApiKeyIn(msgspec.Struct, forbid_unknown_fields=True):
    """A key acts as its creator's user (admins may pick ``owner_user_id`` or none)."""

    name: Annotated[str, Meta(min_length=1, max_length=100)]
    scopes: Annotated[list[Scope], Meta(min_length=1, max_length=16)]
    owner_user_id: UserId | None = None


class ApiKeyOut(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    scopes: list[str]
    owner_user_id: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None
    key: str | None = None  # only in the answer to POST: store it, it is not shown again


class ApiKeyPage(msgspec.Struct):
    data: list[ApiKeyOut]


# -- users and KYC -------------------------------------------------------------------------


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    """Admins create users that will not log in (a platform's customers); no password."""

    email: Email
    name: Name | None = None
    phone: Phone | None = None
    birth_date: BirthDate | None = None
    address: Address | None = None


class UserPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Fields to change; ``null`` clears one (email cannot be cleared)."""

    email: Email | msgspec.UnsetType = msgspec.UNSET
    name: Name | msgspec.UnsetType | None = msgspec.UNSET
    phone: Phone | msgspec.UnsetType | None = msgspec.UNSET
    birth_date: BirthDate | msgspec.UnsetType | None = msgspec.UNSET
    address: Address | msgspec.UnsetType | None = msgspec.UNSET


class UserOut(msgspec.Struct):
    id: str
    email: str
    name: str | None
    phone: str | None
    birth_date: str | None
    address: Address | None
    kyc_status: KycStatus
    created_at: dt.datetime
    updated_at: dt.datetime


class KycIn(msgspec.Struct, forbid_unknown_fields=True):
    id_type: KycIdType
    id_number: Annotated[
        str,
        Meta(
            pattern=r"^[A-Za-z0-9-]{4,32}$(?!\n)",
            description="Stored encrypted; only its last 4 are ever returned",
        ),
    ]


class KycReviewIn(msgspec.Struct, forbid_unknown_fields=True):
    decision: Literal["verified", "rejected"]
    reason: Annotated[str, Meta(max_length=200)] | None = None


class KycEventOut(msgspec.Struct):
    from_status: KycStatus
    to_status: KycStatus
    actor: str  # user id or API key id; never a name
    reason: str | None
    at: dt.datetime


class KycOut(msgspec.Struct):
    user_id: str
    status: KycStatus
    id_type: KycIdType | None
    id_last4: str | None
    history: list[KycEventOut]


IDENTITY_TYPES = (
    RegisterIn,
    RegisterOut,
    LoginIn,
    RefreshIn,
    TokenPair,
    LogoutIn,
    Me,
    ApiKeyIn,
    ApiKeyOut,
    ApiKeyPage,
    UserIn,
    UserPatch,
    UserOut,
    KycIn,
    KycReviewIn,
    KycOut,
)
