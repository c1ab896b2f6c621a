"""The payment domain: create and cancel payments; a new payment's amount must be free on its wallet.

Every function takes the caller's session; the caller owns the transaction, so a
state change, its `payment_logs` row and its outbox event commit together.
"""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from checkout import checkout_key, token_hash
from errors import ApiError
from events import emit_event, log_event
from matching import candidate_filter, wallet_lock
from models import CANCELLED, Payment, PaymentStatus
from money import MAX_MICRO, format_amount, from_micro, to_micro
from times import db_now, iso

logger = logging.getLogger(__name__)

UNIQUE_STEP_MICRO = 100  # 0.0001 USDT
UNIQUE_MAX_STEPS = 100


@dataclass(frozen=True)
class NewPayment:
    wallet_address: str
    amount: Decimal
    order_id: str
    callback_url: str
    expires_in_seconds: int
    metadata: dict[str, Any]
    unique_amount: bool
    fingerprint: str
    return_url: str | None = None
    underpayment_tolerance: Decimal | None = None  # as asked; None: default_tolerance, cut to the amount
    default_tolerance: Decimal = Decimal(0)

    def tolerance_for(self, amount: Decimal) -> Decimal:
        """The payment's tolerance once its amount is known (`unique_amount` may have raised it)."""
        if self.underpayment_tolerance is not None:
            return self.underpayment_tolerance
        return min(self.default_tolerance, amount)


def request_fingerprint(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- creation ----------------------------------------------------------------------------------

def amounts_under_lock(
    session: Session, wallet_address: str, order_id: str, late_window: int
) -> tuple[datetime, set[int], bool]:
    """In one round trip: the transaction's time, the remaining amounts of the wallet's candidates,
    and whether a payment with `order_id` exists by now (a concurrent twin that won the lock)."""
    one = select(literal(1).label("one")).subquery()
    taken = select(Payment.id).where(Payment.order_id == order_id).exists()
    rows = session.execute(
        select(func.now(), taken, Payment.expected_amount_usdt, Payment.received_amount_usdt)
        .select_from(one)
        .outerjoin(Payment, candidate_filter(wallet_address, func.now(), late_window))
    ).all()
    in_use = {to_micro(expected) - to_micro(received) for _, _, expected, received in rows if expected is not None}
    return rows[0][0], in_use, bool(rows[0][1])


def choose_amount(requested: Decimal, in_use: set[int], unique_amount: bool) -> Decimal:
    micro = to_micro(requested)
    if micro not in in_use:
        return requested
    if not unique_amount:
        raise ApiError(
            "amount_in_use",
            "Another open payment on this wallet already awaits this amount; "
            "send unique_amount: true to get a distinct amount.",
            "expected_amount_usdt",
            409,
        )
    for step in range(1, UNIQUE_MAX_STEPS + 1):
        candidate = micro + step * UNIQUE_STEP_MICRO
        if candidate > MAX_MICRO:
            break
        if candidate not in in_use:
            return from_micro(candidate)
    raise ApiError(
        "amount_in_use",
        f"No free amount within {UNIQUE_MAX_STEPS} steps of 0.0001 USDT above this one on this wallet.",
        "expected_amount_usdt",
        409,
    )


def find_by_order_id(session: Session, order_id: str) -> Payment | None:
    return session.scalars(select(Payment).where(Payment.order_id == order_id)).one_or_none()


def replay_or_conflict(existing: Payment, new: NewPayment) -> Payment:
    if existing.request_fingerprint != new.fingerprint:
        raise ApiError(
            "order_id_conflict",
            "A payment with this order_id already exists with different details; use a new order_id.",
            "order_id",
            409,
        )
    return existing


def create_payment(session: Session, new: NewPayment, late_window: int, *,
                   looked_up: bool = False) -> tuple[Payment, bool]:
    """Create a payment, or return the existing one for a replayed request. Returns (payment, created).

    `looked_up`: the caller has just looked for the order_id in this transaction (the check under
    the wallet lock below still decides; a twin on another wallet fails the INSERT on the unique
    order_id, and the caller answers with it as for any replay)."""
    if not looked_up:
        existing = find_by_order_id(session, new.order_id)
        if existing is not None:
            return replay_or_conflict(existing, new), False
    wallet_lock(session, new.wallet_address)
    now, in_use, order_taken = amounts_under_lock(session, new.wallet_address, new.order_id, late_window)
    if order_taken:
        return replay_or_conflict(find_by_order_id(session, new.order_id), new), False  # type: ignore[arg-type]
    amount = choose_amount(new.amount, in_use, new.unique_amount)
    payment_id = uuid.uuid4()
    payment = Payment(
        id=payment_id,
        order_id=new.order_id,
        wallet_address=new.wallet_address,
        expected_amount_usdt=amount,
        requested_amount_usdt=new.amount,
        received_amount_usdt=Decimal(0),
        underpayment_tolerance_usdt=new.tolerance_for(amount),
        status=PaymentStatus.pending,
        callback_url=new.callback_url,
        meta=new.metadata,
        request_fingerprint=new.fingerprint,
        return_url=new.return_url,
        checkout_token_hash=token_hash(checkout_key(session), payment_id),
        created_at=now,
        expires_at=now + timedelta(seconds=new.expires_in_seconds),
    )
    session.add(payment)
    session.flush()
    note = "" if amount == new.amount else f" (raised from {format_amount(new.amount)} to be unique)"
    log_event(
        session,
        payment.id,
        "created",
        f"payment created for {format_amount(amount)} USDT to {new.wallet_address}{note}",
        order_id=new.order_id,
        expected_amount_usdt=format_amount(amount),
        requested_amount_usdt=format_amount(new.amount),
        underpayment_tolerance_usdt=format_amount(payment.underpayment_tolerance_usdt),
        expires_at=iso(payment.expires_at),
    )
    return payment, True


def cancel_payment(session: Session, payment: Payment) -> Payment:
    wallet_lock(session, payment.wallet_address)
    session.refresh(payment, with_for_update=True)
    if payment.status != PaymentStatus.pending or payment.received_amount_usdt > 0:
        raise ApiError(
            "not_cancellable",
            f"Only a pending payment that has received nothing can be cancelled; this one is {payment.status.value}"
            + (" and has received money." if payment.received_amount_usdt > 0 else "."),
            status=409,
        )
    payment.status = PaymentStatus.failed
    payment.failure_reason = CANCELLED
    payment.cancelled_at = db_now(session)
    log_event(session, payment.id, "cancelled", "payment cancelled by the merchant")
    emit_event(session, payment, "payment.cancelled")
    return payment


