"""The hosted checkout page's links and the status it polls.

A payment's checkout token is HMAC-SHA256 of its id under a key of its own (service_state `checkout_key`, made once
by the migration that added the page): 256 unguessable bits, not the payment id, the same whenever the payment is
shown. The row keeps only the token's SHA-256 (`payments.checkout_token_hash`), so the page finds its payment with
one index lookup, then compares the token in constant time.

The page polls its status; `StatusBoard` answers every page of a process from memory and refreshes all the payments
asked about in one query at most every `ttl` seconds, so the database load does not grow with the open pages.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from models import Payment, PaymentStatus
from money import format_amount
from service_state import insert_state, read_state
from times import iso

CHECKOUT_KEY = "checkout_key"
PAY_PATH = "/pay/"
TOKEN_LENGTH = 43  # base64url of 32 bytes, unpadded
_links: dict[str, Any] = {"base_url": None}
_keys: dict[str, str] = {}  # the checkout key of each database this process uses, by its URL
_engine_keys: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # the same, by engine


def new_checkout_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


@functools.lru_cache(maxsize=1024)
def checkout_token(key: str, payment_id: uuid.UUID | str) -> str:
    """Remembered for the payments shown last: a create computes it twice (the row's hash, the answer's link), and
    a merchant or a page asks about the same payment again and again."""
    digest = hmac.digest(key.encode(), str(payment_id).encode(), "sha256")
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def token_hash(key: str, payment_id: uuid.UUID | str) -> str:
    """What the payment's row keeps: the SHA-256 of its token."""
    return hashlib.sha256(checkout_token(key, payment_id).encode()).hexdigest()


def set_public_base_url(url: str) -> None:
    """Where the links point (PUBLIC_BASE_URL): set by each process from its configuration."""
    _links["base_url"] = url.rstrip("/")


def checkout_key(bind: Session | Connection) -> str:
    """The process's copy of its database's checkout key: read once (a database emptied under a running process,
    as `db_manager.py reset` does, needs the process restarted), stored at first need when the migration did not."""
    engine = bind.get_bind().engine if isinstance(bind, Session) else bind.engine
    known = _engine_keys.get(engine)
    if known is not None:  # the per-request path: no rendering of the engine's URL
        return known
    database = str(engine.url)
    if database not in _keys:
        with Session(bind=engine) as own, own.begin():
            key = read_state(own, CHECKOUT_KEY)
            if key is None and not insert_state(own, CHECKOUT_KEY, key := new_checkout_key()):
                key = read_state(own, CHECKOUT_KEY)  # another process stored one first: its key
        _keys[database] = key
    _engine_keys[engine] = _keys[database]
    return _keys[database]


def forget_checkout_keys() -> None:
    """Read the keys again at next need (after a database was emptied)."""
    _keys.clear()
    _engine_keys.clear()


def checkout_url(key: str, payment_id: uuid.UUID) -> str:
    """The payment's checkout page, under its database's checkout key (`checkout_key`)."""
    if _links["base_url"] is None:  # a process that did not set it (an admin command): the environment's
        from config import load_config

        set_public_base_url(load_config().public_base_url)
    return f"{_links['base_url']}{PAY_PATH}{checkout_token(key, payment_id)}"


def find_by_token(session: Session, token: str) -> Payment | None:
    """The payment whose checkout token this is, or None."""
    if len(token) != TOKEN_LENGTH:
        return None
    digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
    payment = session.scalars(select(Payment).where(Payment.checkout_token_hash == digest)).one_or_none()
    if payment is None or not hmac.compare_digest(checkout_token(checkout_key(session), payment.id), token):
        return None
    return payment


# --- the status the page polls -----------------------------------------------------------------

def status_of(payment: Payment) -> dict[str, Any]:
    """GET /pay/<token>/status: what the page shows of the payment, and nothing else."""
    settled = payment.status == PaymentStatus.completed or payment.paid_late
    remaining = 0 if settled else max(payment.expected_amount_usdt - payment.received_amount_usdt, 0)
    return {
        "status": payment.status.value,
        "received_amount_usdt": format_amount(payment.received_amount_usdt),
        "remaining_usdt": format_amount(remaining),
        "expires_at": iso(payment.expires_at),
        "paid_late": payment.paid_late,
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

    def remember(self, token: str, payment: Payment) -> dict[str, Any]:
        """A payment just found by its token: its status, kept for the polls that follow."""
        now = self.clock()
        status = status_of(payment)
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
            for payment in session.scalars(select(Payment).where(Payment.id.in_(list(by_id)))):
                for entry in by_id[payment.id]:
                    entry.status = status_of(payment)
        for entry in self.entries.values():
            entry.fetched = now


def seconds_left(expires_at: datetime, now: datetime) -> int:
    return max(0, int((expires_at - now).total_seconds()))
