"""SQLAlchemy 2 typed models: the database is the truth (clients, rates, ledger, calls, CDRs).

Money is stored as integer micro-units (BIGINT) and read back as Decimal, so SQLite (which has
no exact decimal type) and PostgreSQL keep the same exact values and SUM() stays exact.
Times are stored as naive UTC and read back as aware UTC on both engines.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from billing_core.domain.money import from_micros, to_micros


class MoneyType(TypeDecorator[Decimal]):
    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        return None if value is None else to_micros(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else from_micros(int(value))


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = metadata


class Setting(Base):
    __tablename__ = "settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class CatalogVersion(Base):
    """One row; incremented by every change to what authorization reads."""

    __tablename__ = "catalog_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class RateTableRow(Base):
    __tablename__ = "rate_tables"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    # (0003) moved by every change to the table's rates: a catalog reload rebuilds only the
    # indexes of the tables whose version moved
    rates_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class RateIndexSnapshot(Base):
    """(0008) A rate table's in-memory index, compact, for the ``rates_version`` it was built
    from: a daemon starts from it instead of reading and indexing every rate row again.
    Written by the daemon that built the index from the rows; any other version is ignored
    (and replaced). Not the truth: dropping every row only makes the next start slower."""

    __tablename__ = "rate_index_snapshots"
    rate_table_id: Mapped[int] = mapped_column(
        ForeignKey("rate_tables.id", ondelete="CASCADE"), primary_key=True
    )
    rates_version: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[int] = mapped_column(Integer)
    plans: Mapped[str] = mapped_column(Text)  # JSON: the price plans, the multi-period codes
    codes: Mapped[bytes] = mapped_column(LargeBinary)  # UTF-8 prefixes joined by newlines
    plan_ids: Mapped[bytes] = mapped_column(LargeBinary)  # int32 little-endian, one a prefix


class RateRow(Base):
    __tablename__ = "rates"
    __table_args__ = (UniqueConstraint("rate_table_id", "code", "effective_date"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    rate_table_id: Mapped[int] = mapped_column(ForeignKey("rate_tables.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128), default="")
    rate: Mapped[Decimal] = mapped_column(MoneyType)
    setup_fee: Mapped[Decimal] = mapped_column(MoneyType)
    min_volume: Mapped[int] = mapped_column(Integer)
    interval: Mapped[int] = mapped_column(Integer)
    grace_volume: Mapped[int] = mapped_column(Integer)
    effective_date: Mapped[datetime] = mapped_column(UTCDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ClientRow(Base):
    __tablename__ = "clients"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(8), default="active")
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    locale: Mapped[str | None] = mapped_column(String(16), nullable=True)
    bill_events_by: Mapped[str] = mapped_column(String(10), default="disconnect")
    postpaid: Mapped[bool] = mapped_column(Boolean, default=False)
    credit: Mapped[Decimal] = mapped_column(MoneyType)
    rate_table_id: Mapped[int | None] = mapped_column(
        ForeignKey("rate_tables.id", ondelete="RESTRICT"), nullable=True
    )
    capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    low_balance_threshold: Mapped[Decimal | None] = mapped_column(MoneyType, nullable=True)
    low_balance_capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reseller: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tax_profile: Mapped[str | None] = mapped_column(String(128), nullable=True)
    payment_terms: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hidden_numbers: Mapped[bool] = mapped_column(Boolean, default=False)
    autoinvoicing: Mapped[bool] = mapped_column(Boolean, default=False)
    last_invoiced: Mapped[date | None] = mapped_column(Date, nullable=True)
    company_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    main_email: Mapped[str | None] = mapped_column(String(256), nullable=True)
    billing_email: Mapped[str | None] = mapped_column(String(256), nullable=True)
    rates_email: Mapped[str | None] = mapped_column(String(256), nullable=True)
    address: Mapped[str | None] = mapped_column(Text, nullable=True)
    zip_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tax_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    registration_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    account_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    # (0008) low-balance notifications: below this available balance (None: off)
    notify_client_below: Mapped[Decimal | None] = mapped_column(MoneyType, nullable=True)
    notify_admin_below: Mapped[Decimal | None] = mapped_column(MoneyType, nullable=True)


class TagRow(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class ClientTagRow(Base):
    __tablename__ = "client_tags"
    client_id: Mapped[int] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)


class AccountRow(Base):
    __tablename__ = "accounts"
    __table_args__ = (Index("ix_accounts_ident_value", "ident", "value"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    ident: Mapped[str] = mapped_column(String(5))
    value: Mapped[str] = mapped_column(String(128))
    tech_prefix: Mapped[str | None] = mapped_column(String(32), nullable=True)
    password_hash: Mapped[str | None] = mapped_column(String(160), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # billingctl (0002): a deleted client's accounts neither originate nor terminate
    originate: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    terminate: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # credentials (0005): the methods allowed, and for chap/digest the secret encrypted under
    # the server key (password_hash is then NULL); secret_version moves when the secret
    # itself changes, not when a key rotation re-encrypts it
    auth_methods: Mapped[str] = mapped_column(String(32), default="pap", server_default="pap")
    secret_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AuthFailureRow(Base):
    """Guessing is slow, on the embedded live state (Redis keeps these itself): the wrong
    passwords of an account in the current window, and the end of its lockout."""

    __tablename__ = "auth_failures"
    account_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TransactionRow(Base):
    """The ledger: payments (positive), charges (negative), one row per charged CDR."""

    __tablename__ = "transactions"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # no foreign key: checked for every row accounting writes (migration 0010)
    client_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # payment | charge | call
    amount: Mapped[Decimal] = mapped_column(MoneyType)
    note: Mapped[str] = mapped_column(Text, default="")
    external_id: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    cdr_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # billingctl (0002): the invoice a call charge was billed on
    invoice_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class LiveBalanceRow(Base):
    """The live balance (sum of the ledger), kept in step with it in the same transaction."""

    # no index on seq or applied (migration 0011): each accounting batch moves seq, and an
    # indexed column would make every such update write its index entries again; the
    # healer's read of ``seq <> applied`` is a scan of this small table each second
    __tablename__ = "live_balances"
    client_id: Mapped[int] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    balance: Mapped[Decimal] = mapped_column(MoneyType)
    # (0004) moved by every ledger write that has a live effect, in its transaction; the
    # live state in Redis keeps the last sequence it applied, and ``applied`` is the highest
    # one known to have reached it: ``seq <> applied`` marks a client the healer repairs
    seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    applied: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class CallRow(Base):
    """Calls in progress: held (authorized) or active (accounting seen)."""

    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_nas_key", "nas_key"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # no foreign key: checked for every row accounting writes (migration 0010)
    client_id: Mapped[int] = mapped_column(Integer, index=True)
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    nas_key: Mapped[str] = mapped_column(String(160))
    acct_session_id: Mapped[str] = mapped_column(String(255), default="")
    conf_id: Mapped[str] = mapped_column(String(255), default="")
    origin: Mapped[str] = mapped_column(String(16), default="")
    called: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(8))  # held | active
    granted_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hold: Mapped[Decimal] = mapped_column(MoneyType)
    authorized_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    hold_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    max_session_time: Mapped[int] = mapped_column(Integer, default=0)
    charged: Mapped[bool] = mapped_column(Boolean, default=False)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    live_uid: Mapped[str] = mapped_column(String(64), default="")  # the hold's id in Redis
    accounted: Mapped[bool] = mapped_column(Boolean, default=False)  # accounting recorded
    tags: Mapped[str] = mapped_column(String(255), default="", server_default="")


class CallKeyRow(Base):
    """Every identifier a call's requests carried, under its NAS key."""

    __tablename__ = "call_keys"
    __table_args__ = (Index("ix_call_keys_nas_key_key", "nas_key", "key"),)
    # no foreign key: deleted with its call in one statement (migration 0010)
    call_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    nas_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)


class CdrRow(Base):
    __tablename__ = "cdrs"
    __table_args__ = (
        UniqueConstraint(
            "nas_key",
            "epoch",
            "acct_session_id",
            "conf_id",
            "origin",
            "tags",
            "once",
            name="uq_cdrs_leg_once",
        ),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # no foreign key: checked for every row accounting writes (migration 0010)
    client_id: Mapped[int] = mapped_column(Integer, index=True)
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    call_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    nas_key: Mapped[str] = mapped_column(String(160))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    acct_session_id: Mapped[str] = mapped_column(String(255))
    conf_id: Mapped[str] = mapped_column(String(255), default="")
    origin: Mapped[str] = mapped_column(String(16), default="")
    tags: Mapped[str] = mapped_column(String(255), default="", server_default="")
    # which Stop of the leg identity: its Start, then its duration or "t" (ClosedLeg.once)
    once: Mapped[str] = mapped_column(String(64), default="", server_default="")
    called: Mapped[str] = mapped_column(String(64))
    duration: Mapped[int] = mapped_column(Integer)
    billed_duration: Mapped[int] = mapped_column(Integer)
    cost: Mapped[Decimal] = mapped_column(MoneyType)
    rate_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    rated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stopped_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_by: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    corrected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class NasEpochRow(Base):
    """Accounting-On/Off start a new epoch of a NAS key: older legs never match again."""

    __tablename__ = "nas_epochs"
    nas_key: Mapped[str] = mapped_column(String(160), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AcctEventRow(Base):
    """Every Accounting-Request as received: the durable record answered upon."""

    __tablename__ = "acct_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    nas_key: Mapped[str] = mapped_column(String(160))
    status: Mapped[int] = mapped_column(Integer)
    acct_session_id: Mapped[str] = mapped_column(String(255), index=True)
    arrived: Mapped[datetime] = mapped_column(UTCDateTime)
    delay: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attributes: Mapped[str] = mapped_column(Text)


def table(model: type[Base]) -> Table:
    """The Core table of a model, typed as a Table (for insert/update/delete)."""
    result = model.__table__
    assert isinstance(result, Table)
    return result


# --- billingctl's operator section (migration 0002) ------------------------------------------
class ClientTemplateRow(Base):
    """Values a new client takes for the fields ``clients add --template`` does not give.

    Every field is optional: None means "not set by the template"."""

    __tablename__ = "client_templates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str | None] = mapped_column(String(8), nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    locale: Mapped[str | None] = mapped_column(String(16), nullable=True)
    bill_events_by: Mapped[str | None] = mapped_column(String(10), nullable=True)
    postpaid: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    credit: Mapped[Decimal | None] = mapped_column(MoneyType, nullable=True)
    rate_table_id: Mapped[int | None] = mapped_column(
        ForeignKey("rate_tables.id", ondelete="RESTRICT"), nullable=True
    )
    capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    low_balance_threshold: Mapped[Decimal | None] = mapped_column(MoneyType, nullable=True)
    low_balance_capacity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reseller: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tax_profile: Mapped[str | None] = mapped_column(String(128), nullable=True)
    payment_terms: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hidden_numbers: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    autoinvoicing: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    company_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    main_email: Mapped[str | None] = mapped_column(String(256), nullable=True)
    billing_email: Mapped[str | None] = mapped_column(String(256), nullable=True)
    rates_email: Mapped[str | None] = mapped_column(String(256), nullable=True)
    address: Mapped[str | None] = mapped_column(Text, nullable=True)
    zip_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tax_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    registration_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    account_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    tags: Mapped[str | None] = mapped_column(Text, nullable=True)  # a JSON list; None: not set
    notify_client_below: Mapped[Decimal | None] = mapped_column(MoneyType, nullable=True)
    notify_admin_below: Mapped[Decimal | None] = mapped_column(MoneyType, nullable=True)


class InvoiceRow(Base):
    """The call charges of one period, owed by the client (``total`` is positive when owed).

    The fixed balance is payments and manual charges minus invoice totals."""

    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    period_start: Mapped[date | None] = mapped_column(Date, nullable=True)  # None: since the start
    period_end: Mapped[date] = mapped_column(Date)  # inclusive, in the client's time zone
    total: Mapped[Decimal] = mapped_column(MoneyType)
    charges: Mapped[int] = mapped_column(Integer)  # how many call transactions it bills
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRow(Base):
    """Every change made with billingctl or ``load``: who, when, what, before and after.

    No foreign keys: an entry outlives what it describes (a fully deleted client)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    command: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    entity_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    client_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    client_name: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    before: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON; None: created
    after: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON; None: removed


# --- notifications, events, disconnects (migration 0008) -------------------------------------
class NotifyStateRow(Base):
    """Per client and notification (``client``: e-mail, ``admin``: events log): armed or
    fired. Moved only by conditional UPDATEs, so one crossing fires once on any number of
    processes."""

    __tablename__ = "notify_state"
    client_id: Mapped[int] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # client | admin
    armed: Mapped[bool] = mapped_column(Boolean, default=True)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rearmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # the lowest available balance seen since it fired: a rise above it re-arms
    low_available: Mapped[Decimal | None] = mapped_column(MoneyType, nullable=True)


class EventRow(Base):
    """The administrator's events log. No foreign keys: an event outlives its client."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_source_id", "source", "id"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    client_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    client_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    nas_key: Mapped[str | None] = mapped_column(String(160), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    source: Mapped[str] = mapped_column(String(64), default="")  # the writing process
    # an event that must be written once per cause carries its key here (unique)
    dedupe: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)


class MailRow(Base):
    """The durable mail queue: stored before it is sent; claimed (status ``sending``) by one
    process before the SMTP conversation, so a restart never sends it twice."""

    __tablename__ = "mail_queue"
    __table_args__ = (Index("ix_mail_queue_status_next", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    client_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    client_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    to_addr: Mapped[str] = mapped_column(String(256))
    subject: Mapped[str] = mapped_column(String(256))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8))  # queued | sending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class DisconnectRow(Base):
    """A Disconnect-Request (RFC 5176) wanted for a call in progress: written by whoever
    decides it (billingctl in the transaction of the status change, the daemon for a call
    past its grant) and sent by the daemon. One per call and reason."""

    __tablename__ = "disconnect_queue"
    __table_args__ = (
        UniqueConstraint("call_id", "reason", name="uq_disconnect_queue_call_reason"),
        Index("ix_disconnect_queue_status", "status"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(32))
    call_id: Mapped[int] = mapped_column(BigInteger)
    client_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    nas_key: Mapped[str] = mapped_column(String(160))
    acct_session_id: Mapped[str] = mapped_column(String(255))
    conf_id: Mapped[str] = mapped_column(String(255), default="")
    status: Mapped[str] = mapped_column(String(8))  # queued | sending | ack | nak | timeout | off
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error_cause: Mapped[int | None] = mapped_column(Integer, nullable=True)
