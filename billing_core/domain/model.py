"""Domain entities as plain frozen dataclasses (no ORM)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Literal

from billing_core.domain.credentials import DEFAULT_METHODS, AuthMethod

Ident = Literal["login", "ip", "ani"]
Status = Literal["active", "stop", "deleted"]
BillEventsBy = Literal["setup", "connect", "disconnect"]
BillLeg = Literal["originate", "answer", "any"]


@dataclass(frozen=True, slots=True)
class Client:
    id: int
    name: str
    status: Status
    currency: str
    locale: str | None
    postpaid: bool
    credit: Decimal
    rate_table_id: int | None
    capacity: int | None
    low_balance_threshold: Decimal | None
    low_balance_capacity: int | None
    bill_events_by: BillEventsBy

    def effective_capacity(self, available: Decimal) -> int | None:
        """The capacity in force: the low-balance capacity while available < threshold."""
        if (
            self.low_balance_threshold is not None
            and self.low_balance_capacity is not None
            and available < self.low_balance_threshold
        ):
            return self.low_balance_capacity
        return self.capacity


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    client_id: int
    name: str
    ident: Ident
    value: str
    tech_prefix: str | None
    password_hash: str | None  # PAP-only accounts: the salted hash
    enabled: bool = True
    auth_methods: frozenset[AuthMethod] = DEFAULT_METHODS
    secret_enc: str | None = None  # CHAP/Digest-capable accounts: the encrypted secret
    secret_version: int = 0  # moves when the secret itself changes (not on key rotation)

    @property
    def has_password(self) -> bool:
        return self.password_hash is not None or self.secret_enc is not None


class RejectReason(Enum):
    """The closed set of business rejections of an Access-Request."""

    UNKNOWN_ACCOUNT = "unknown_account"
    BAD_PASSWORD = "bad_password"  # noqa: S105 - a reason label, not a password
    LOCKED_OUT = "locked_out"  # too many wrong passwords for the account lately
    CLIENT_DELETED = "client_deleted"
    CLIENT_STOPPED = "client_stopped"
    NO_RATE = "no_rate"
    CAPACITY = "capacity"
    ZERO_BALANCE = "zero_balance"
    CREDIT_LIMIT = "credit_limit"
    INSUFFICIENT_FUNDS = "insufficient_funds"


# --- passwords -----------------------------------------------------------------------------
# Stored as "sha256$<salt hex>$<digest hex>". A salted fast hash: the password check sits on
# the per-request hot path, and the database is the trusted store (README: Security).

_SCHEME = "sha256"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.sha256(salt + password.encode("utf-8")).hexdigest()
    return f"{_SCHEME}${salt.hex()}${digest}"


def check_password(stored: str, candidate: bytes) -> bool:
    try:
        scheme, salt_hex, digest = stored.split("$", 2)
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme != _SCHEME:
        return False
    actual = hashlib.sha256(salt + candidate).hexdigest()
    return hmac.compare_digest(actual, digest)
