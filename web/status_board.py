"""The status a checkout page polls. `StatusBoard` answers every page of a process from memory and refreshes all the
payments asked about in one query at most every `ttl` seconds, so the database load does not grow with the open
pages."""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.money import format_amount
from infra.times import iso
from ledger.serialize import confirmations, open_unconfirmed
from ledger.service_state import CHAIN_HEAD, read_state
from models import Payment, PaymentStatus


@dataclass(frozen=True)
class Seen:
    """Money for a payment seen above the solid head (ledger.detection): its sum, the fewest confirmations among
    it, and the usual depth to finality (the head's distance to the solid head)."""

    amount: Decimal = Decimal(0)
    confirmations: int | None = None
    depth: int | None = None


NOT_SEEN = Seen()


def seen_of(session: Session, payment_ids: list[uuid.UUID]) -> dict[uuid.UUID, Seen]:
    """What each payment has seen and not yet final; two small queries, the second only when there is some."""
    unconfirmed = open_unconfirmed(session, payment_ids)
    if not any(unconfirmed.values()):
        return dict.fromkeys(payment_ids, NOT_SEEN)
    head = read_state(session, CHAIN_HEAD) or {}
    number = head.get("number")
    # the confirmations a block has when it solidifies: its own, and the solid depth's blocks above it
    depth = max(1, int(number) - int(head["solid_number"])) + 1 if number is not None else None
    return {pid: Seen(sum((Decimal(r.amount_usdt) for r in rows), Decimal(0)),
                      min(confirmations(r.block_number, number) for r in rows), depth) if rows else NOT_SEEN
            for pid, rows in unconfirmed.items()}


def status_of(payment: Payment, seen: Seen = NOT_SEEN) -> dict[str, Any]:
    """GET /pay/<token>/status: what the page shows of the payment, and nothing else. Money seen above the solid
    head is shown as confirming (`unconfirmed_amount_usdt`, its fewest `confirmations` against the usual
    `confirmations_needed`): it is not received yet."""
    settled = payment.status == PaymentStatus.completed or payment.paid_late
    remaining = 0 if settled else max(payment.expected_amount_usdt - payment.received_amount_usdt, 0)
    return {
        "status": payment.status.value,
        "received_amount_usdt": format_amount(payment.received_amount_usdt),
        "remaining_usdt": format_amount(remaining),
        "expires_at": iso(payment.expires_at),
        "paid_late": payment.paid_late,
        "unconfirmed_amount_usdt": format_amount(seen.amount),
        "confirmations": seen.confirmations,
        "confirmations_needed": seen.depth,
    }


@dataclass
class _Entry:
    payment_id: uuid.UUID
    status: dict[str, Any]
    fetched: float
    asked: float


class StatusBoard:
    """The status of each payment whose page is open, by checkout token, as last read. At most once every `ttl`
    seconds, one query re-reads all the payments a page asked about within `keep` seconds; the others are
    forgotten (a page that comes back is looked up by its token again)."""

    def __init__(self, ttl: float = 2.0, keep: float = 60.0, clock: Any = time.monotonic) -> None:
        self.ttl, self.keep, self.clock = ttl, keep, clock
        self.entries: dict[str, _Entry] = {}
        self.lock = threading.Lock()

    def remember(self, token: str, payment: Payment, seen: Seen = NOT_SEEN) -> dict[str, Any]:
        """A payment just found by its token: its status, kept for the polls that follow."""
        now = self.clock()
        status = status_of(payment, seen)
        with self.lock:
            self.entries[token] = _Entry(payment.id, status, now, now)
        return status

    def get(self, session_factory: Any, token: str) -> dict[str, Any] | None:
        """The status at most `ttl` seconds old of the payment of a token found before; None for any other."""
        now = self.clock()
        with self.lock:
            entry = self.entries.get(token)
            if entry is None:
                return None
            entry.asked = now
            if now - entry.fetched >= self.ttl:
                self.refresh(session_factory, now)
            return entry.status

    def forget(self, token: str) -> None:
        with self.lock:
            self.entries.pop(token, None)

    def refresh(self, session_factory: Any, now: float) -> None:
        """Re-read every payment asked about lately, in one query. Called with the lock held: one refresh at a
        time, and the pages asking meanwhile wait for it instead of querying too."""
        self.entries = {token: e for token, e in self.entries.items() if now - e.asked < self.keep}
        by_id: dict[uuid.UUID, list[_Entry]] = {}
        for entry in self.entries.values():
            by_id.setdefault(entry.payment_id, []).append(entry)
        with session_factory() as session:
            payments = list(session.scalars(select(Payment).where(Payment.id.in_(list(by_id)))))
            seen = seen_of(session, [p.id for p in payments])
            for payment in payments:
                for entry in by_id[payment.id]:
                    entry.status = status_of(payment, seen[payment.id])
        for entry in self.entries.values():
            entry.fetched = now


def seconds_left(expires_at: datetime, now: datetime) -> int:
    return max(0, int((expires_at - now).total_seconds()))
