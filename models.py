"""SQLAlchemy 2 models. The schema itself is created and upgraded by Alembic (migrations/)."""
from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

AMOUNT = Numeric(20, 6)
RATE = Numeric(30, 12)  # units of a currency per 1 USDT, as a source wrote it (rates/sources.py bounds the digits)


class Base(DeclarativeBase):
    pass


class PaymentStatus(str, enum.Enum):
    pending = "pending"
    completed = "completed"
    failed = "failed"
    expired = "expired"


CANCELLED = "cancelled"  # the failure_reason of a payment the merchant cancelled (its only one so far)
# How a transfer was found (transfers.found_by): by the watcher's scan, or by the reconciliation's second look.
FOUND_BY_SCAN = "scan"
FOUND_BY_RECONCILIATION = "reconciliation"


class TransferStatus(str, enum.Enum):
    unmatched = "unmatched"
    credited = "credited"
    set_aside = "set_aside"  # its listing record, receipt or block stayed unreadable: listed, retried, not lost


# Why a transfer is unmatched (transfers.reason): no payment of its wallet could take it at its block time; several
# candidates await exactly its amount (a tie no age or status decides); several candidates and none awaits it.
NO_CANDIDATE = "no_candidate"
AMBIGUOUS = "ambiguous"
NO_EXACT_MATCH = "no_exact_match"
UNMATCHED_REASONS = (NO_CANDIDATE, AMBIGUOUS, NO_EXACT_MATCH)
# Why a transfer is set aside (transfers.reason with the status set_aside): no upstream gave its receipt in time.
UNREADABLE = "unreadable"


class EventState(str, enum.Enum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"
    no_target = "no_target"  # an account-level event written while MERCHANT_WEBHOOK_URL was unset: never sent
    superseded = "superseded"  # a payment.detected still pending when a later event of its payment was written


# What a webhook event may announce (webhook_events.type): what the outbox accepts and /openapi.json lists.
PAYMENT_EVENT_TYPES = ("payment.completed", "payment.expired", "payment.partial", "payment.paid_late",
                       "payment.cancelled", "payment.detected")
DETECTED_EVENT = "payment.detected"  # money for the payment in a block not solidified yet: never a credit
# Events about the merchant's account rather than one payment: sent to MERCHANT_WEBHOOK_URL, in order.
ACCOUNT_EVENT_TYPES = ("transfer.unmatched", "transfer.assigned")
TEST_EVENT_TYPE = "webhook.test"
WEBHOOK_EVENT_TYPES = PAYMENT_EVENT_TYPES + ACCOUNT_EVENT_TYPES + (TEST_EVENT_TYPE,)
# What marks account-level events (webhook_events.stream): each is delivered on its own schedule, and a retry goes
# to MERCHANT_WEBHOOK_URL as it is set then.
ACCOUNT_STREAM = "account"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e])


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    order_id: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    wallet_address: Mapped[str] = mapped_column(String(34), index=True)
    expected_amount_usdt: Mapped[Decimal] = mapped_column(AMOUNT)
    requested_amount_usdt: Mapped[Decimal] = mapped_column(AMOUNT)
    received_amount_usdt: Mapped[Decimal] = mapped_column(AMOUNT, default=Decimal(0), server_default="0")
    # Fully paid once received >= expected - this.
    underpayment_tolerance_usdt: Mapped[Decimal] = mapped_column(AMOUNT, default=Decimal(0), server_default="0")
    status: Mapped[PaymentStatus] = mapped_column(
        _enum(PaymentStatus, "payment_status"), default=PaymentStatus.pending
    )
    failure_reason: Mapped[str | None] = mapped_column(String(32))
    transaction_hash: Mapped[str | None] = mapped_column(String(64))
    callback_url: Mapped[str] = mapped_column(Text)
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    callback_success: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    paid_late: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict, server_default="{}")
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    return_url: Mapped[str | None] = mapped_column(Text)  # where the checkout page sends the payer afterwards
    # SHA-256 of the checkout token (ledger/checkout.py), for the page's lookup
    checkout_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    # The index of the address derived from DEPOSIT_XPUB for this payment (deposit_addresses); None: a given address
    address_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Priced in fiat (rates/): the price as asked, and the rate that made its USDT amount, locked at creation (all
    # null for a payment given in USDT).
    price_amount: Mapped[Decimal | None] = mapped_column(AMOUNT)
    price_currency: Mapped[str | None] = mapped_column(String(3))
    rate: Mapped[Decimal | None] = mapped_column(RATE)
    rate_source: Mapped[str | None] = mapped_column(String(64))
    rate_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Chain time (ms) up to which this payment's wallet has been read.
    last_checked_timestamp: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        # GET /payments, newest first, by each filter: every list index ends in the page's sort key (created_at,
        # id), so a page, first or deep, reads only its own rows.
        Index("ix_payments_created_at", "created_at", "id"),
        Index("ix_payments_status", "status", "created_at", "id"),
        Index("ix_payments_wallet_status", "wallet_address", "status", "created_at", "id"),
        # A wallet's payments by what they still await: matching and the amount check find the few that await an
        # amount without reading the wallet's other open payments (thousands, on a busy wallet).
        Index("ix_payments_wallet_remaining", "wallet_address", text("(expected_amount_usdt - received_amount_usdt)")),
        # A wallet's payments newest first: the open payments an unmatched transfer's event names.
        Index("ix_payments_wallet_created", "wallet_address", "created_at", "id"),
        # A wallet's pending payments by expiry: what every credit expires first (matching.expire_due) is found
        # without reading the wallet's other pending payments.
        Index("ix_payments_wallet_pending_expiry", "wallet_address", "expires_at",
              postgresql_where=text("status = 'pending'")),
        # Every pending payment by expiry: what the blocks strategy expires each cycle, without reading the others.
        Index("ix_payments_pending_expiry", "expires_at", postgresql_where=text("status = 'pending'")),
        # Closed payments by when they closed: those whose late window may still be open (the watched wallets,
        # chain_view.watched_wallets) are found without reading the years of history before them.
        Index("ix_payments_expired_at", "expires_at", postgresql_where=text("status = 'expired'")),
        Index("ix_payments_cancelled_at", "cancelled_at",
              postgresql_where=text("status = 'failed' AND failure_reason = 'cancelled'")),
        Index("ix_payments_completed_at", "completed_at", postgresql_where=text("status = 'completed'")),
    )


class PaymentLog(Base):
    __tablename__ = "payment_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    payment_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("payments.id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    message: Mapped[str] = mapped_column(Text)
    event_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)


class Transfer(Base):
    """A USDT Transfer log to a watched wallet, seen on a solidified, successful transaction; or, set aside, a listing
    record whose receipt stayed unreadable (then only what the listing said is known: no log index, no block
    number, perhaps no sender or amount)."""

    __tablename__ = "transfers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    transaction_hash: Mapped[str] = mapped_column(String(64))
    log_index: Mapped[int | None] = mapped_column(Integer)
    from_address: Mapped[str | None] = mapped_column(String(34))
    to_address: Mapped[str] = mapped_column(String(34), index=True)
    amount_usdt: Mapped[Decimal | None] = mapped_column(AMOUNT)
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_timestamp: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[TransferStatus] = mapped_column(_enum(TransferStatus, "transfer_status"), index=True)
    payment_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("payments.id", ondelete="SET NULL"), index=True
    )
    # Which read found it first: "scan" (the watcher's strategy) or "reconciliation" (the second look).
    found_by: Mapped[str] = mapped_column(String(16), server_default=FOUND_BY_SCAN)
    reason: Mapped[str | None] = mapped_column(String(32))  # why it is unmatched (UNMATCHED_REASONS); None otherwise
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("transaction_hash", "log_index", name="uq_transfers_tx_log"),
        Index("uq_transfers_set_aside", "transaction_hash", "to_address", unique=True,
              postgresql_where=text("log_index IS NULL")),  # set aside: not read yet
    )


# Why an unconfirmed transfer left its payment's list (unconfirmed_transfers.cleared_reason): its solidified
# transfer was stored; its block was replaced by another of the same number (a fork); the solidified chain was read
# past its block time without it.
SOLIDIFIED = "solidified"
REPLACED = "replaced"
NOT_SOLIDIFIED = "not_solidified"


class UnconfirmedTransfer(Base):
    """A USDT transfer seen in a block above the solid head, listed on the payment the matching rules would give it
    to. It credits nothing: it is cleared (cleared_at, cleared_reason) once credited, once its block is replaced, or
    once the chain was read past it without it."""

    __tablename__ = "unconfirmed_transfers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    transaction_hash: Mapped[str] = mapped_column(String(64))
    log_index: Mapped[int] = mapped_column(Integer)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("payments.id", ondelete="CASCADE"))
    from_address: Mapped[str] = mapped_column(String(34))
    to_address: Mapped[str] = mapped_column(String(34))
    amount_usdt: Mapped[Decimal] = mapped_column(AMOUNT)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_id: Mapped[str] = mapped_column(String(64))
    block_timestamp: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cleared_reason: Mapped[str | None] = mapped_column(String(32))  # SOLIDIFIED, REPLACED or NOT_SOLIDIFIED

    __table_args__ = (
        UniqueConstraint("transaction_hash", "log_index", name="uq_unconfirmed_tx_log"),
        Index("ix_unconfirmed_open_payment", "payment_id", postgresql_where=text("cleared_at IS NULL")),
        Index("ix_unconfirmed_open_block", "block_number", postgresql_where=text("cleared_at IS NULL")),
    )


class RejectedTransfer(Base):
    """A USDT Transfer log that cannot be credited (amount out of range, malformed): recorded once, with why."""

    __tablename__ = "rejected_transfers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    transaction_hash: Mapped[str] = mapped_column(String(64))
    log_index: Mapped[int] = mapped_column(Integer)
    to_address: Mapped[str | None] = mapped_column(String(34), index=True)
    amount_raw: Mapped[str | None] = mapped_column(Text)  # the log's integer amount as text, when readable
    reason: Mapped[str] = mapped_column(Text)
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_timestamp: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (UniqueConstraint("transaction_hash", "log_index", name="uq_rejected_transfers_tx_log"),)


class WebhookEvent(Base):
    """The outbox: one row per event, written with the state change that caused it."""

    __tablename__ = "webhook_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    # None for an event about no payment (account-level events, test webhooks).
    payment_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("payments.id", ondelete="CASCADE"), index=True
    )
    # ACCOUNT_STREAM for an account-level event, None otherwise; no event about no payment waits for another.
    stream: Mapped[str | None] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)  # exact JSON sent on every attempt
    callback_url: Mapped[str | None] = mapped_column(Text)  # None: no target was configured (state no_target)
    state: Mapped[EventState] = mapped_column(_enum(EventState, "event_state"), default=EventState.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Attempts made in the current retry schedule; a manual retry starts a fresh schedule.
    schedule_position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    leased_by: Mapped[str | None] = mapped_column(String(64))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_webhook_events_due", "state", "next_attempt_at"),
        Index(
            "ix_webhook_events_pending_payment",
            "payment_id",
            "seq",
            postgresql_where=text("state = 'pending'"),
        ),
        # The outbox's oldest pending event (/metrics) without reading the other pending ones.
        Index("ix_webhook_events_pending_created", "created_at", postgresql_where=text("state = 'pending'")),
    )


class RowCount(Base):
    """Counts of payments, transfers and webhook events by status, written only by the database's triggers (in
    the transaction of the change they count; migration 0011 holds them and the keys): a key's count is the sum of
    its rows, one per backend that changed it (`shard`, its pid) and shard 0 where compaction folds them."""

    __tablename__ = "row_counts"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class Notification(Base):
    """The operator notifications' outbox (notify/): one row per event and target, written with the event it
    reports, delivered on its own schedule. The target is named by its fingerprint and scheme, never its URL (a
    secret): a row whose target left NOTIFY_URLS fails at its next attempt."""

    __tablename__ = "notifications"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(32))
    # The payment it is about, if any (its row goes with the payment, as the payment's webhook events do).
    payment_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("payments.id", ondelete="CASCADE"), index=True
    )
    target: Mapped[str] = mapped_column(String(64))  # SHA-256 of the target's URL, hex
    scheme: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[EventState] = mapped_column(_enum(EventState, "event_state"), default=EventState.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    leased_by: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_notifications_due", "state", "next_attempt_at"),)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WalletCursor(Base):
    """How far (chain time, ms) each wallet has been read, on one chain (network and token contract)."""

    __tablename__ = "wallet_cursors"

    chain: Mapped[str] = mapped_column(String(80), primary_key=True)
    wallet_address: Mapped[str] = mapped_column(String(34), primary_key=True)
    last_checked_timestamp: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class ServiceState(Base):
    """Small named values shared by all processes: block cursor, webhook secrets, watcher status."""

    __tablename__ = "service_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class SandboxTransfer(Base):
    """A transfer of the sandbox chain (TRON_NETWORK=sandbox), kept here so every process serves the same chain:
    sent with its transaction id fixed, then sealed into a block (block_number) once its time has come."""

    __tablename__ = "sandbox_transfers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    transaction_hash: Mapped[str] = mapped_column(String(64), unique=True)
    from_address: Mapped[str] = mapped_column(String(34))
    to_address: Mapped[str] = mapped_column(String(34))
    contract: Mapped[str] = mapped_column(String(34))
    amount_usdt: Mapped[Decimal] = mapped_column(AMOUNT)
    reverted: Mapped[bool] = mapped_column(Boolean)
    # The head its raw data refers to, and when its sender built it (chain ms): what its id is made of.
    ref_block: Mapped[int] = mapped_column(BigInteger)
    ref_timestamp: Mapped[int] = mapped_column(BigInteger)
    sent_at_ms: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int | None] = mapped_column(BigInteger, index=True)  # None: waiting for its block
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SandboxDelivery(Base):
    """A webhook the sandbox's own receiver (POST /sandbox/inbox) took in, its signature verified."""

    __tablename__ = "sandbox_inbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    webhook_timestamp: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RateQuote(Base):
    """The latest quote of each rate source for each currency (rates/), shared by every process."""

    __tablename__ = "rate_quotes"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    rate: Mapped[Decimal] = mapped_column(RATE)  # units of the currency per 1 USDT
    quoted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the provider's time, or when fetched
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RateSource(Base):
    """Each rate source's schedule and record: the next fetch is claimed by one process at a time (a row lease)."""

    __tablename__ = "rate_sources"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_fetch_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # a 429's Retry-After
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    errors: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # failed fetches and bad quotes
    last_error: Mapped[str | None] = mapped_column(Text)


class RateCurrency(Base):
    """A currency a request asked for (besides the defaults): fetched while asked for; its outage, announced once."""

    __tablename__ = "rate_currencies"

    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    last_asked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    unavailable_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
class DepositAccount(Base):
    """The next index to take on one account key (DEPOSIT_XPUB), named by a hash of the key, never the key: taken in
    the creating transaction (an UPDATE of this row), so an index is given once, and a create that fails gives its
    index back with its rollback."""

    __tablename__ = "deposit_accounts"

    account: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the key's chain code and point
    next_index: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class DepositAddress(Base):
    """An address derived from an account key and taken: by its payment, or skipped (payment_id None) because a
    payment on a given wallet_address already used it."""

    __tablename__ = "deposit_addresses"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(64))
    address_index: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(String(34), unique=True)
    payment_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("payments.id", ondelete="CASCADE"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (UniqueConstraint("account", "address_index", name="uq_deposit_addresses_account_index"),)


class ArchivedOrder(Base):
    """The order_id of a payment `db_manager.py archive` moved to a file: it stays taken (a create with it answers
    409 `archived`) until `restore` brings the payment back."""

    __tablename__ = "archived_orders"

    order_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    archived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ArchivedTransfer(Base):
    """The (transaction hash, log index) of an archived payment's transfer: the watcher takes it as already stored, so
    the same money is never credited twice."""

    __tablename__ = "archived_transfers"

    transaction_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    archived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# --- the operator's dashboard (console/, web/admin/) -----------------------------------------------------------

class Admin(Base):
    """An operator of the dashboard: an Argon2 password hash, and a TOTP secret once two-factor login is on (or
    while it is being enrolled: `totp_enabled` false)."""

    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)  # a code is taken once
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AdminSession(Base):
    """A dashboard session: the cookie carries a random token, this row its SHA-256. `verified` false: the password
    was right, the TOTP code is still due."""

    __tablename__ = "admin_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    admin_id: Mapped[int] = mapped_column(Integer, ForeignKey("admins.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    verified: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LoginFailure(Base):
    """A failed dashboard login, counted per name and per address over the last minute by every process."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_login_failures_name", "name", "failed_at"),
                      Index("ix_login_failures_address", "address", "failed_at"))


class DailyTotal(Base):
    """Per UTC day: payments created, USDT credited (by block time). Kept by triggers (migration 0014), in rows of
    each backend that wrote (`shard`, its pid; shard 0 where compaction folds them): a day is the sum of its rows."""

    __tablename__ = "daily_totals"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    payments_created: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    usdt_credited: Mapped[Decimal] = mapped_column(AMOUNT, default=Decimal(0), server_default="0")
