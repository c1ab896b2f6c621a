"""Matching money to payments: one code path for every watcher strategy.

The caller hands over transfers that are solidified and whose transaction succeeded; this module
stores each once (unique transaction hash + log index), picks the payment it credits, applies
the transition table, and writes the audit log and outbox event in the caller's transaction.

The rules. A transfer's candidates are the payments on its recipient wallet created at or before its
block time that are pending, or expired or cancelled within the late window. The one candidate whose
remaining amount (expected - received) equals the transfer gets it; several such candidates are a tie that
no age or status decides (one payer's partial payment could otherwise take another payer's exact payment):
the transfer stays unmatched as `ambiguous`. With no exact candidate, the only candidate gets it; otherwise
the transfer is stored unmatched and announced (`transfer.unmatched`, an account-level event). A wallet
whose last payment completed stays watched for the late window after: money sent then has no candidate and
is stored unmatched too. Whatever the number of the wallet's open payments, each decision reads a bounded
number of rows (the remaining amount is indexed), writes one audit row, and announces at most
`OPEN_PAYMENTS_SHOWN` of them.
Time is chain time: money mined before an expiry or cancellation took effect is on time. A payment is
fully paid once received >= expected - its underpayment tolerance.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from infra.money import MAX_MICRO, format_amount, from_micro, to_micro
from infra.times import ms_to_datetime
from ledger.events import emit_account_event, emit_event, log_event
from ledger.records import RejectedLog, TransferLog
from ledger.serialize import OPEN_PAYMENTS_SHOWN, payment_for_event, payment_summary, transfer_to_dict
from models import (
    AMBIGUOUS,
    CANCELLED,
    FOUND_BY_SCAN,
    NO_CANDIDATE,
    NO_EXACT_MATCH,
    SOLIDIFIED,
    UNREADABLE,
    ArchivedTransfer,
    Payment,
    PaymentStatus,
    RejectedTransfer,
    Transfer,
    TransferStatus,
    UnconfirmedTransfer,
)

logger = logging.getLogger(__name__)


class AssignError(Exception):
    """A hand assignment of a transfer cannot be done; the message is meant for a person."""


@dataclass(frozen=True)
class Outcome:
    transfer: TransferLog
    # "credited", "unmatched", "duplicate", "ignored" (no candidate at its block time) or "rejected"
    result: str
    payment_id: uuid.UUID | None = None
    event: str | None = None
    reason: str | None = None  # why an unmatched one is (models.UNMATCHED_REASONS)


# --- which payments may still take money ----------------------------------------------------------
#
# A pending payment may take money. One that closed without being paid, by expiring or by being cancelled, may
# still take what was mined before it closed (on time) or within the late window after (late). CLOSED_BY says how
# a payment closes; the Python rule (`closed_at`, `timing`) and the SQL one (`may_take_money`) both read it.
CLOSED_BY: tuple[tuple[PaymentStatus, str | None, str], ...] = (
    (PaymentStatus.expired, None, "expires_at"),
    (PaymentStatus.failed, CANCELLED, "cancelled_at"),
)


def closed_at(payment: Payment) -> datetime | None:
    """When a payment closed without being paid (its expiry or cancellation); None if it did not."""
    for status, reason, column in CLOSED_BY:
        if payment.status == status and (reason is None or payment.failure_reason == reason):
            return getattr(payment, column)
    return None


def timing(payment: Payment, at: datetime, late_window: int) -> str | None:
    """'on_time', 'late' or None (not a candidate) for money mined at chain time `at`."""
    if payment.created_at > at:
        return None
    if payment.status == PaymentStatus.pending and at < payment.expires_at:
        return "on_time"
    closed = payment.expires_at if payment.status == PaymentStatus.pending else closed_at(payment)
    if closed is None:
        return None
    if at < closed:
        return "on_time"  # mined before the expiry or cancellation took effect
    if at - closed <= timedelta(seconds=late_window):
        return "late"
    return None


def may_take_money(within_window: Callable[[Any], Any] = lambda closed: true()) -> ColumnElement[bool]:
    """SQL: payments that may still take money: pending ones, and closed ones for which `within_window(<when it
    closed>)` holds (by default every closed one: `timing` then decides)."""
    closed = [and_(Payment.status == status, *([Payment.failure_reason == reason] if reason else []),
                   within_window(getattr(Payment, column)))
              for status, reason, column in CLOSED_BY]
    return or_(Payment.status == PaymentStatus.pending, *closed)


def completed_within(within_window: Callable[[Any], Any] = lambda completed: true()) -> ColumnElement[bool]:
    """SQL: completed payments for which `within_window(<when it completed>)` holds: their wallet stays watched, so
    money sent after the completion is stored and announced (it can credit no payment)."""
    return and_(Payment.status == PaymentStatus.completed, within_window(Payment.completed_at))


def keeps_wallet_watched(within_window: Callable[[Any], Any] = lambda when: true()) -> ColumnElement[bool]:
    """SQL: payments whose wallet is watched: those that may take money, and those completed within the window."""
    return or_(may_take_money(within_window), completed_within(within_window))


def candidate_filter(wallet_address: str | ColumnElement[str], at: Any, late_window: int) -> ColumnElement[bool]:
    """SQL: the payments of a wallet that may take money mined at `at` (a time, or the SQL expression
    `func.now()`), before `timing` looks at their creation and expiry."""
    window_start = at - timedelta(seconds=late_window)
    return and_(Payment.wallet_address == wallet_address, may_take_money(lambda closed: closed >= window_start))


# Serialises amount checks and crediting on one wallet until the transaction ends (parameter `wallet_lock_key`).
WALLET_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:wallet_lock_key, 0))")


def wallet_lock_params(wallet_address: str) -> dict[str, str]:
    return {"wallet_lock_key": f"wallet:{wallet_address}"}


def wallet_lock(session: Session, wallet_address: str) -> None:
    """Serialise amount checks and crediting on one wallet until the transaction ends: the remaining amounts of a
    wallet's candidates change only under this lock."""
    session.execute(WALLET_LOCK, wallet_lock_params(wallet_address))


# --- crediting ------------------------------------------------------------------------------------

def remaining(payment: Payment) -> int:
    return to_micro(payment.expected_amount_usdt) - to_micro(payment.received_amount_usdt)


def is_fully_paid(payment: Payment) -> bool:
    """The one threshold of completion, paid_late and reopening: received >= expected - tolerance."""
    return remaining(payment) <= to_micro(payment.underpayment_tolerance_usdt or Decimal(0))


# SQL: what a payment still awaits (`remaining` is the same in Python, in micro-USDT); indexed per wallet.
REMAINING = Payment.expected_amount_usdt - Payment.received_amount_usdt


def candidates_at(wallet: str, at: datetime, late_window: int) -> Select[tuple[Payment]]:
    """SQL: the candidates of money mined to `wallet` at chain time `at`, once the payments due to expire by then
    have expired (`expire_due`): every pending one is then on time, every closed one within the window."""
    return select(Payment).where(candidate_filter(wallet, at, late_window), Payment.created_at <= at)


@dataclass(frozen=True)
class Choice:
    """Which payment a transfer goes to (`payment`, with `when`), or why none (`reason`, models.UNMATCHED_REASONS,
    with `tied`: the ids of the candidates that tie, at most OPEN_PAYMENTS_SHOWN of them)."""

    payment: Payment | None = None
    when: str | None = None
    reason: str | None = None
    tied: tuple[uuid.UUID, ...] = ()


def choose_payment(session: Session, wallet: str, at: datetime, amount: int, late_window: int) -> Choice:
    """Rules 1-3 under the wallet's lock, reading at most a few rows however many payments the wallet has: the one
    candidate awaiting exactly `amount`; a tie of several is `ambiguous` (no age or status decides); else the only
    candidate; else none. The chosen payment is locked."""
    candidates = candidates_at(wallet, at, late_window)
    exact = list(session.scalars(candidates.where(from_micro(amount) == REMAINING)
                                 .order_by(Payment.created_at.desc(), Payment.id).limit(OPEN_PAYMENTS_SHOWN)))
    if len(exact) > 1:
        return Choice(reason=AMBIGUOUS, tied=tuple(p.id for p in exact))
    found = exact or list(session.scalars(candidates.limit(2)))
    if len(found) != 1:
        return Choice(reason=NO_EXACT_MATCH if found else NO_CANDIDATE)
    payment = session.scalars(select(Payment).where(Payment.id == found[0].id).with_for_update()
                              .execution_options(populate_existing=True)).one()
    return Choice(payment, timing(payment, at, late_window))


def is_stored(session: Session, t: TransferLog) -> bool:
    """Whether this (hash, log index) was stored before: as a transfer, or as one of an archived payment (its
    tombstone in `archived_transfers`): money the watcher sees listed again is never credited twice."""
    stored = select(Transfer.id).where(Transfer.transaction_hash == t.transaction_hash,
                                       Transfer.log_index == t.log_index).exists()
    archived = select(ArchivedTransfer.log_index).where(ArchivedTransfer.transaction_hash == t.transaction_hash,
                                                        ArchivedTransfer.log_index == t.log_index).exists()
    return bool(session.scalar(select(or_(stored, archived))))


def is_watched_at(session: Session, wallet: str, at: datetime, late_window: int) -> bool:
    """Whether money mined to `wallet` at `at` concerns any payment: it has a candidate, or a payment completed
    within the late window before it keeps the wallet watched (a snapshot, no locks: for planning the reads)."""
    return bool(session.scalar(select(candidates_at(wallet, at, late_window).exists()))) or completed_recently(
        session, wallet, at, late_window)


def would_credit(session: Session, wallet: str, at: datetime, late_window: int, records: list[Any]) -> bool:
    """Whether rule 1 or 2 may give one of these records (TRC20 list rows, mined to `wallet` at `at`) to a payment: a
    record whose amount is not known (the listing left it out) may; one of an amount no payment can take (zero spam,
    out of range) never does. A snapshot, no locks, a few rows read: for planning the reads only."""
    creditable = [r for r in records if r.amount is None or 0 < r.amount <= MAX_MICRO]
    if not creditable:
        return False
    candidates = candidates_at(wallet, at, late_window)
    if any(r.amount is None for r in creditable):
        return bool(session.scalar(select(candidates.exists())))
    awaited = candidates.where(REMAINING.in_([from_micro(r.amount) for r in creditable]))
    return bool(session.scalar(select(awaited.exists()))) or len(session.scalars(candidates.limit(2)).all()) == 1


def store_transfer(session: Session, t: TransferLog, found_by: str) -> Transfer | None:
    """Insert the transfer once; None when this (hash, log index) was stored before."""
    inserted = session.execute(
        insert(Transfer)
        .values(
            transaction_hash=t.transaction_hash,
            log_index=t.log_index,
            from_address=t.from_address,
            to_address=t.to_address,
            amount_usdt=from_micro(t.amount),
            block_number=t.block_number,
            block_timestamp=t.block_timestamp,
            status=TransferStatus.unmatched,
            found_by=found_by,
        )
        .on_conflict_do_nothing(constraint="uq_transfers_tx_log")
        .returning(Transfer.id)
    ).scalar()
    return session.get(Transfer, inserted) if inserted is not None else None


def clear_solidified(session: Session, t: TransferLog) -> None:
    """Its solidified transfer is stored: money seen before it was final (ledger.detection) leaves its payment's
    list of unconfirmed transfers."""
    session.execute(update(UnconfirmedTransfer).where(
        UnconfirmedTransfer.transaction_hash == t.transaction_hash, UnconfirmedTransfer.log_index == t.log_index,
        UnconfirmedTransfer.cleared_at.is_(None)).values(cleared_at=func.now(), cleared_reason=SOLIDIFIED))


def record_set_aside(session: Session, tx_hash: str, to_address: str, from_address: str | None, amount: int | None,
                     block_timestamp: int, detail: str) -> bool:
    """Keep a listed transaction to `to_address` whose receipt stayed unreadable as a transfer set aside (status
    set_aside, reason unreadable, no log index or block yet), once; True the first time."""
    inserted = session.execute(
        insert(Transfer).values(
            transaction_hash=tx_hash, log_index=None, from_address=from_address, to_address=to_address,
            amount_usdt=None if amount is None or unstorable_amount(amount) else from_micro(amount),
            block_number=None, block_timestamp=block_timestamp, status=TransferStatus.set_aside, reason=UNREADABLE)
        .on_conflict_do_nothing(index_elements=["transaction_hash", "to_address"],
                                index_where=text("log_index IS NULL"))
        .returning(Transfer.id)
    ).scalar()
    if inserted is None:
        return False
    log_event(session, None, "transfer_set_aside",
              f"transaction {tx_hash} to {to_address} set aside as unreadable: {detail}; listed by GET "
              "/transfers?status=set_aside, asked for again by the reconciliation", transaction_hash=tx_hash,
              to_address=to_address, block_timestamp=block_timestamp, reason=UNREADABLE)
    return True


def resolve_set_aside(session: Session, tx_hash: str, to_address: str) -> None:
    """The set-aside transaction could be read at last (what it paid is stored by `credit_transfer` now)."""
    deleted = session.execute(delete(Transfer).where(
        Transfer.transaction_hash == tx_hash, Transfer.to_address == to_address,
        Transfer.status == TransferStatus.set_aside).returning(Transfer.id)).first()
    if deleted is not None:
        log_event(session, None, "set_aside_resolved", f"transaction {tx_hash} to {to_address}, set aside as "
                  "unreadable, was read: its transfers are credited by the usual rules",
                  transaction_hash=tx_hash, to_address=to_address)


def set_aside_transactions(session: Session, after_id: int, limit: int) -> list[tuple[int, str, str]]:
    """(id, transaction hash, wallet) of transfers set aside, from `after_id` on, oldest first."""
    return [tuple(row) for row in session.execute(  # type: ignore[misc]
        select(Transfer.id, Transfer.transaction_hash, Transfer.to_address)
        .where(Transfer.status == TransferStatus.set_aside, Transfer.id > after_id).order_by(Transfer.id).limit(limit))]


def apply_credit(session: Session, payment: Payment, when: str, t: TransferLog) -> str:
    """Add the money to the payment and move it on by the transition table; returns the event type."""
    at = ms_to_datetime(t.block_timestamp)
    payment.received_amount_usdt = Decimal(payment.received_amount_usdt) + from_micro(t.amount)
    payment.transaction_hash = t.transaction_hash
    fully_paid = is_fully_paid(payment)
    amounts = {
        "amount_usdt": format_amount(t.amount),
        "received_amount_usdt": format_amount(payment.received_amount_usdt),
        "expected_amount_usdt": format_amount(payment.expected_amount_usdt),
        "transaction_hash": t.transaction_hash,
        "log_index": t.log_index,
    }
    if when == "on_time" and fully_paid:
        if payment.status != PaymentStatus.pending:
            log_event(session, payment.id, "reopened",
                      f"money mined at {at.isoformat()} before the {payment.status.value} took effect",
                      previous_status=payment.status.value, failure_reason=payment.failure_reason)
        payment.status = PaymentStatus.completed
        payment.failure_reason = None
        payment.completed_at = at
        log_event(session, payment.id, "completed", f"payment completed by {t.transaction_hash}", **amounts)
        return "payment.completed"
    if when == "late" and fully_paid:
        payment.paid_late = True
        log_event(session, payment.id, "paid_late",
                  f"full amount arrived after the payment was {payment.status.value}", **amounts)
        return "payment.paid_late"
    if when == "on_time" and payment.status == PaymentStatus.failed:
        # Mined before the cancellation: as if it had not been cancelled, and with money received
        # it could not have been. The payment is open again.
        log_event(session, payment.id, "reopened",
                  f"money mined at {at.isoformat()} before the cancellation took effect; the payment is open again",
                  previous_status=payment.status.value, failure_reason=payment.failure_reason)
        payment.status = PaymentStatus.pending
        payment.failure_reason = None
    log_event(session, payment.id, "partial",
              f"received {format_amount(t.amount)} USDT, {format_amount(max(remaining(payment), 0))} still due",
              late=(when == "late"), **amounts)
    return "payment.partial"


def unstorable(t: TransferLog) -> str | None:
    """Why a transfer cannot be credited whatever the payments, or None."""
    return unstorable_amount(t.amount)


def unstorable_amount(amount: int) -> str | None:
    """Why an amount (micro-USDT) cannot be credited whatever the payments, or None."""
    if amount <= 0:
        return "a zero amount (such transfers are spam that imitates a payer's address)"
    if amount > MAX_MICRO:
        return f"an amount of {amount} micro-USDT, above the largest this service stores ({MAX_MICRO})"
    return None


def record_rejected(session: Session, rejected: RejectedLog) -> bool:
    """Record a transfer that cannot be credited, once, with why; True the first time it is seen."""
    inserted = session.execute(
        insert(RejectedTransfer)
        .values(transaction_hash=rejected.transaction_hash, log_index=rejected.log_index,
                to_address=rejected.to_address, amount_raw=rejected.amount_raw, reason=rejected.reason,
                block_number=rejected.block_number, block_timestamp=rejected.block_timestamp)
        .on_conflict_do_nothing(constraint="uq_rejected_transfers_tx_log")
        .returning(RejectedTransfer.id)
    ).scalar()
    if inserted is None:
        return False
    where = rejected.to_address or "an unreadable address"
    log_event(session, None, "transfer_rejected",
              f"transfer {rejected.transaction_hash}:{rejected.log_index} to {where} not credited: {rejected.reason}",
              transaction_hash=rejected.transaction_hash, log_index=rejected.log_index,
              to_address=rejected.to_address, amount_raw=rejected.amount_raw, reason=rejected.reason)
    return True


def completed_recently(session: Session, wallet: str, at: datetime, late_window: int) -> bool:
    """Whether a payment of the wallet, created by chain time `at`, completed within the late window before it."""
    window_start = at - timedelta(seconds=late_window)
    return session.scalar(select(select(Payment.id).where(
        Payment.wallet_address == wallet, Payment.created_at <= at,
        completed_within(lambda completed: completed >= window_start)).exists())) or False


def open_payments(session: Session, wallet: str, at: datetime, late_window: int) -> tuple[list[Payment], int]:
    """The wallet's open payments (the candidates) for money mined at `at`: the newest OPEN_PAYMENTS_SHOWN, and how
    many there are."""
    candidates = candidates_at(wallet, at, late_window)
    newest = list(session.scalars(candidates.order_by(Payment.created_at.desc(), Payment.id)
                                  .limit(OPEN_PAYMENTS_SHOWN)))
    count = len(newest) if len(newest) < OPEN_PAYMENTS_SHOWN else session.scalar(
        select(func.count()).select_from(candidates.with_only_columns(Payment.id).subquery()))
    return newest, count or 0


UNMATCHED_TEXT = {
    NO_CANDIDATE: "arrived with no open payment on this wallet",
    AMBIGUOUS: "awaited exactly by several open payments on this wallet: no rule can tell which, the operator "
               "decides",
    NO_EXACT_MATCH: "awaited exactly by none of the open payments on this wallet",
}


def announce_unmatched(session: Session, row: Transfer, choice: Choice, described: str, found_by: str,
                       late_window: int, merchant_webhook_url: str | None) -> None:
    """Store why a transfer is unmatched, log it once (one audit row, whatever the wallet's open payments), and
    write `transfer.unmatched` with the transfer, the wallet's newest open payments as summaries and their count."""
    at = ms_to_datetime(row.block_timestamp)
    newest, count = open_payments(session, row.to_address, at, late_window)
    row.reason = choice.reason
    log_event(session, None, "unmatched", f"{described} to {row.to_address} {UNMATCHED_TEXT[choice.reason or '']} "
              f"({count} open)", transaction_hash=row.transaction_hash, log_index=row.log_index,
              amount_usdt=format_amount(row.amount_usdt), found_by=found_by, reason=choice.reason,
              open_payments_count=count, tied_payment_ids=[str(pid) for pid in choice.tied])
    data = {**transfer_to_dict(row), "open_payments": [payment_summary(p) for p in newest],
            "open_payments_count": count}
    emit_account_event(session, "transfer.unmatched", data, merchant_webhook_url)


def credit_transfer(session: Session, t: TransferLog, late_window: int, found_by: str = FOUND_BY_SCAN,
                    merchant_webhook_url: str | None = None) -> Outcome:
    """Store one verified transfer and credit it by the rules; the caller owns the transaction. An unmatched one is
    announced to `merchant_webhook_url` (stored with no target when None)."""
    reason = unstorable(t)
    if reason is not None:
        record_rejected(session, RejectedLog(t.transaction_hash, t.log_index, reason, t.to_address, str(t.amount),
                                             t.block_number, t.block_timestamp))
        return Outcome(t, "rejected")
    wallet_lock(session, t.to_address)
    if is_stored(session, t):
        return Outcome(t, "duplicate")
    # Transfers come in chain order, so the wallet has been read up to this one: a payment whose
    # expiry is not after it expires first, and this money is then late for it.
    expire_due(session, [t.to_address], t.block_timestamp, skip_locked=False)  # must not pass one by
    at = ms_to_datetime(t.block_timestamp)
    choice = choose_payment(session, t.to_address, at, t.amount, late_window)
    if choice.reason == NO_CANDIDATE and not completed_recently(session, t.to_address, at, late_window):
        # Mined before every open payment of the wallet was created: it belongs to none of them.
        logger.debug("transfer %s:%d predates every open payment of %s", t.transaction_hash, t.log_index,
                     t.to_address)
        return Outcome(t, "ignored")
    row = store_transfer(session, t, found_by)
    if row is None:
        return Outcome(t, "duplicate")
    clear_solidified(session, t)
    described = f"{format_amount(t.amount)} USDT from {t.from_address} in {t.transaction_hash}:{t.log_index}"
    if found_by != FOUND_BY_SCAN:
        described += f" (found by {found_by})"
    if choice.payment is None:
        announce_unmatched(session, row, choice, described, found_by, late_window, merchant_webhook_url)
        return Outcome(t, "unmatched", reason=choice.reason)
    payment, when = choice.payment, choice.when
    row.status = TransferStatus.credited
    row.payment_id = payment.id
    log_event(session, payment.id, "transfer_seen", f"{described} credited to this payment",
              transaction_hash=t.transaction_hash, log_index=t.log_index, amount_usdt=format_amount(t.amount),
              block_number=t.block_number, block_timestamp=t.block_timestamp, found_by=found_by)
    event = apply_credit(session, payment, when, t)  # type: ignore[arg-type]  # a candidate's timing is known
    emit_event(session, payment, event)
    return Outcome(t, "credited", payment.id, event)


def expire_due(
    session: Session, wallets: list[str] | None, read_up_to_ms: int, *, skip_locked: bool = True,
    limit: int | None = None
) -> list[uuid.UUID]:
    """Expire pending payments whose wallet was read past their expiry without the full amount (the `limit` oldest
    of them when given: the rest the next time; a credit expires its own wallet's first whatever the limit)."""
    at = ms_to_datetime(read_up_to_ms)
    query = select(Payment).where(Payment.status == PaymentStatus.pending, Payment.expires_at <= at)
    if wallets is not None:
        query = query.where(Payment.wallet_address.in_(wallets))
    expired = []
    query = query.order_by(Payment.expires_at).limit(limit).with_for_update(skip_locked=skip_locked)
    for payment in session.scalars(query):
        payment.status = PaymentStatus.expired
        log_event(session, payment.id, "expired",
                  f"chain read up to {at.isoformat()} without the full amount "
                  f"({format_amount(payment.received_amount_usdt)} of {format_amount(payment.expected_amount_usdt)})",
                  read_up_to=read_up_to_ms)
        emit_event(session, payment, "payment.expired")
        expired.append(payment.id)
    return expired


def assign_transfer(session: Session, tx_hash: str, log_index: int, payment_id: uuid.UUID, late_window: int,
                    merchant_webhook_url: str | None = None) -> Payment:
    """Credit an unmatched transfer to a payment by hand (admin), with the usual transition table; announced as
    `transfer.assigned` (the transfer and the payment) to `merchant_webhook_url` (no target when None)."""
    payment = credit_by_hand(session, tx_hash, log_index, payment_id, late_window)
    transfer = session.scalars(
        select(Transfer).where(Transfer.transaction_hash == tx_hash, Transfer.log_index == log_index)
    ).one()
    data = {"transfer": transfer_to_dict(transfer), "payment": payment_for_event(session, payment)}
    emit_account_event(session, "transfer.assigned", data, merchant_webhook_url)
    return payment


def credit_by_hand(session: Session, tx_hash: str, log_index: int, payment_id: uuid.UUID, late_window: int) -> Payment:
    """The credit of `assign_transfer`: the transfer to the payment, by the transition table."""
    transfer = session.scalars(
        select(Transfer).where(Transfer.transaction_hash == tx_hash, Transfer.log_index == log_index).with_for_update()
    ).one_or_none()
    if transfer is None:
        raise AssignError(f"no observed transfer {tx_hash}:{log_index}")
    wallet_lock(session, transfer.to_address)  # remaining amounts change only under the wallet lock
    if transfer.status != TransferStatus.unmatched:
        raise AssignError(f"transfer {tx_hash}:{log_index} is already credited to payment {transfer.payment_id}")
    payment = session.get(Payment, payment_id, with_for_update=True)
    if payment is None:
        raise AssignError(f"no payment {payment_id}")
    if payment.wallet_address != transfer.to_address:
        raise AssignError(
            f"the transfer went to {transfer.to_address}, not to the payment's wallet {payment.wallet_address}"
        )
    if payment.status == PaymentStatus.completed:
        when = "late"
    else:
        when = timing(payment, ms_to_datetime(transfer.block_timestamp), 10**9) or "late"
    observed = TransferLog(transfer.transaction_hash, transfer.log_index, transfer.from_address,
                           transfer.to_address, to_micro(transfer.amount_usdt), transfer.block_number,
                           transfer.block_timestamp)
    transfer.status = TransferStatus.credited
    transfer.payment_id = payment.id
    transfer.reason = None
    log_event(session, payment.id, "assigned", f"transfer {tx_hash}:{log_index} assigned by an administrator",
              transaction_hash=tx_hash, log_index=log_index, amount_usdt=format_amount(transfer.amount_usdt))
    if payment.status == PaymentStatus.completed:
        payment.received_amount_usdt = Decimal(payment.received_amount_usdt) + transfer.amount_usdt
        payment.transaction_hash = tx_hash
        log_event(session, payment.id, "partial", "extra money assigned to a completed payment",
                  received_amount_usdt=format_amount(payment.received_amount_usdt))
        emit_event(session, payment, "payment.partial")
        return payment
    emit_event(session, payment, apply_credit(session, payment, when, observed))
    return payment
