"""The hosted checkout page's links: the token that names a payment's page, and where the page is.

A payment's checkout token is HMAC-SHA256 of its id under a key of its own (service_state `checkout_key`, made once
by the migration that added the page): 256 unguessable bits, not the payment id, the same whenever the payment is
shown. The row keeps only the token's SHA-256 (`payments.checkout_token_hash`), so the page finds its payment with
one index lookup, then compares the token in constant time.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import threading
import uuid
import weakref
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from database import Database
from ledger.service_state import insert_state, read_state
from models import Payment

CHECKOUT_KEY = "checkout_key"
PAY_PATH = "/pay/"
TOKEN_LENGTH = 43  # base64url of 32 bytes, unpadded


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


class CheckoutLinks:
    """Where a payment's checkout page is (PUBLIC_BASE_URL/pay/<token>) and the checkout key that signs its token,
    for one process: built by the composition root from its configuration, and carried by the sessions of its
    database (`open_ledger`), so a webhook body names the page as the API answer does.

    The key is read once per database engine (a database emptied under a running process, as `db_manager.py reset`
    does, needs the process restarted, or `forget`), stored at first need when the migration did not."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._keys: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def key(self, bind: Session | Connection) -> str:
        """The checkout key of the database `bind` talks to."""
        engine = bind.get_bind().engine if isinstance(bind, Session) else bind.engine
        known = self._keys.get(engine)
        if known is not None:  # the per-request path
            return known
        with self._lock:
            known = self._keys.get(engine)  # a thread that held the lock meanwhile read it
            if known is not None:
                return known
            with Session(bind=engine) as own, own.begin():
                key = read_state(own, CHECKOUT_KEY)
                if key is None and not insert_state(own, CHECKOUT_KEY, key := new_checkout_key()):
                    key = read_state(own, CHECKOUT_KEY)  # another process stored one first: its key
            self._keys[engine] = key  # only once committed: a key the database does not hold is never used
        return key

    def forget(self) -> None:
        """Read the keys again at next need (after a database was emptied)."""
        self._keys.clear()

    def url(self, key: str, payment_id: uuid.UUID) -> str:
        """The payment's checkout page, under its database's checkout key (`key`)."""
        return f"{self.base_url}{PAY_PATH}{checkout_token(key, payment_id)}"


LINKS = "checkout_links"  # the sessions' info key


def open_ledger(url: str, base_url: str, **engine_options: Any) -> Database:
    """A database whose sessions carry this process's `CheckoutLinks` (the money core's way to name a payment's
    page in the webhook bodies it writes)."""
    return with_links(Database(url, **engine_options), base_url)


def with_links(db: Database, base_url: str) -> Database:
    """`db` (its engine and pool) with sessions that carry checkout links to `base_url`."""
    return db.with_session_info(**{LINKS: CheckoutLinks(base_url)})


def links_of(holder: Session | Database) -> CheckoutLinks:
    """The checkout links a database (or one of its sessions) was opened with (`open_ledger`)."""
    links = (holder.session_info if isinstance(holder, Database) else holder.info).get(LINKS)
    if links is None:
        raise RuntimeError("this database was opened without checkout links: open it with ledger.checkout.open_ledger")
    return links


def find_by_token(session: Session, token: str) -> Payment | None:
    """The payment whose checkout token this is, or None."""
    if len(token) != TOKEN_LENGTH:
        return None
    digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
    payment = session.scalars(select(Payment).where(Payment.checkout_token_hash == digest)).one_or_none()
    if payment is None or not hmac.compare_digest(checkout_token(links_of(session).key(session), payment.id), token):
        return None
    return payment
