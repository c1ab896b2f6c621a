"""The payment domain: create and cancel payments; a new payment's amount must be free on its wallet.

Every function takes the caller's session; the caller owns the transaction, so a
state change, its `payment_logs` row and its outbox event commit together.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from database import DriverStatement, driver_execute, driver_statement
from deposits.indexes import next_index, take_statement
from deposits.taken import taken_by_a_payment
from infra.money import MAX_MICRO, format_amount, format_rate, from_micro, to_micro
from infra.times import db_now, iso, iso_sql
from infra.xpub import MAX_INDEX, DepositKey
from ledger.checkout import token_hash
from ledger.errors import Refused
from ledger.events import audit_values, emit_event, log_audit, log_event
from ledger.matching import REMAINING, WALLET_LOCK, candidate_filter, wallet_lock, wallet_lock_params
from ledger.records import PaymentRecord
from models import CANCELLED, ArchivedOrder, DepositAddress, Payment, PaymentLog, PaymentStatus

logger = logging.getLogger(__name__)

UNIQUE_STEP_MICRO = 100  # 0.0001 USDT


@dataclass(frozen=True)
class Price:
    """A payment priced in fiat: the price as asked and the rate that made its USDT amount, locked at creation."""

    amount: Decimal
    currency: str  # ISO 4217, upper case
    rate: Decimal  # units of the currency per 1 USDT
    source: str  # "fixed", or the sources whose quotes made the rate ("coingecko,kraken")
    at: datetime  # the oldest quote used


@dataclass(frozen=True)
class NewPayment:
    wallet_address: str | None  # None: a fresh address derived from DEPOSIT_XPUB (create_derived_payment)
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
    unique_max_steps: int = 100  # UNIQUE_AMOUNT_MAX_STEPS
    price: Price | None = None  # priced in fiat: `amount` is the price's USDT amount

    def tolerance_for(self, amount: Decimal) -> Decimal:
        """The payment's tolerance once its amount is known (`unique_amount` may have raised it)."""
        if self.underpayment_tolerance is not None:
            return self.underpayment_tolerance
        return min(self.default_tolerance, amount)


def request_fingerprint(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- creation ----------------------------------------------------------------------------------

# SQL, of a wallet's candidates: whether a new payment may not await what this one still awaits. A candidate that
# closed (expired, cancelled) with nothing received does not block its amount: it stays a candidate for late money,
# and a tie with a newer payment goes `ambiguous` (matching's rule 1), but abandoned checkouts never lock a price for
# the late window. `unique_amount` still steps around such a candidate while a step is free (`choose_amount`).
BLOCKS_ITS_AMOUNT = or_(Payment.status == PaymentStatus.pending, Payment.received_amount_usdt > 0)


def order_id_taken(order_id: Any) -> ColumnElement[bool]:
    """SQL: whether `order_id` (a value or a bind parameter) is taken: by a payment, or by one archived (its tombstone
    in `archived_orders` keeps it taken until it is restored)."""
    return or_(select(Payment.id).where(Payment.order_id == order_id).exists(),
               select(ArchivedOrder.order_id).where(ArchivedOrder.order_id == order_id).exists())


def refuse_if_archived(session: Session, order_id: str) -> None:
    """Refused (`archived`) when `order_id` belongs to an archived payment: a replay or a new create with it never
    makes a new payment."""
    if session.get(ArchivedOrder, order_id) is not None:
        raise Refused("archived", "The payment with this order_id was archived (db_manager.py archive); it is not "
                                  "kept here any more and its order_id cannot be used again.", "order_id")


def awaited_by(wallet: Any, now: Any, late_window: int, unique_amount: bool) -> ColumnElement[bool]:
    """SQL: the candidates of `wallet` whose remaining amount a new payment must not take: every candidate for a
    `unique_amount` request (its own amount is free only when no candidate awaits it), else the blocking ones."""
    candidates = candidate_filter(wallet, now, late_window)
    return candidates if unique_amount else and_(candidates, BLOCKS_ITS_AMOUNT)


def amounts_statement(late_window: int) -> Select[Any]:
    """The read under the wallet lock (parameters `wallet`, `order_id`, `low`, `high`); `lock_then_read_sql` keeps it
    compiled. Of the wallet's candidates it returns only the remaining amounts from `low` to `high`, the ones
    `choose_amount` can ask about, each with whether it blocks its amount: a merchant's single wallet with thousands
    of open payments still sends back a row or two, not one per payment."""
    one = select(literal(1).label("one")).subquery()
    taken = order_id_taken(bindparam("order_id", type_=String))
    amount_type = Payment.expected_amount_usdt.type
    return (
        select(func.now(), taken, REMAINING, BLOCKS_ITS_AMOUNT, taken_by_a_payment(bindparam("wallet", type_=String)))
        .select_from(one)
        .outerjoin(Payment, and_(candidate_filter(bindparam("wallet", type_=String), func.now(), late_window),
                                 REMAINING.between(bindparam("low", type_=amount_type),
                                                   bindparam("high", type_=amount_type))))
    )


def amounts_asked_about(requested: Decimal, max_steps: int) -> tuple[Decimal, Decimal]:
    """The remaining amounts `choose_amount` may look up for a request: the amount itself and the steps above it."""
    return requested, from_micro(min(MAX_MICRO, to_micro(requested) + max_steps * UNIQUE_STEP_MICRO))


@functools.lru_cache(maxsize=8)
def lock_then_read_sql(dialect: Dialect, late_window: int) -> DriverStatement:
    """The transaction's start, the wallet lock and the read under it as one message for the driver: one round
    trip. PostgreSQL runs the statements in order and, under READ COMMITTED, gives the read its own snapshot, taken
    once the lock is granted."""
    return driver_statement(amounts_statement(late_window), dialect,
                            prefix=f"BEGIN; {WALLET_LOCK.compile(dialect=dialect).string}; ")


def amounts_under_lock(
    connection: Connection, wallet_address: str, order_id: str, requested: Decimal, late_window: int,
    max_steps: int = 100,
) -> tuple[datetime, set[int], set[int], bool]:
    """Open a transaction on `connection` (`Database.statements`), take the wallet's lock, then read, in one round
    trip: the transaction's time, the remaining amounts of the wallet's candidates that `choose_amount` may ask
    about for `requested` (those that block their amount, and all), and whether a payment with `order_id` exists
    by now (a concurrent twin that won the lock). The transaction stays open, lock held. Refused (address_reserved)
    when the order_id is new and the wallet is another payment's derived deposit address."""
    statement = lock_then_read_sql(connection.dialect, late_window)
    low, high = amounts_asked_about(requested, max_steps)
    params = statement.params({**wallet_lock_params(wallet_address), "wallet": wallet_address, "order_id": order_id,
                               "low": low, "high": high})
    rows = driver_execute(connection, statement.sql, params)
    if rows[0][4] and not rows[0][1]:
        raise Refused("address_reserved", "This wallet_address is a deposit address derived for another payment; "
                                          "leave wallet_address out to get a fresh one.", "wallet_address")
    blocked, awaited = remaining_amounts((remaining, blocks) for _, _, remaining, blocks, _ in rows)
    return rows[0][0], blocked, awaited, bool(rows[0][1])


def remaining_amounts(candidates: Iterable[tuple[Decimal | None, bool]]) -> tuple[set[int], set[int]]:
    """(the remaining amounts some candidate blocks, every remaining amount awaited), in micro-USDT, from each
    candidate's remaining amount and whether it blocks it. Several candidates may await one amount (a payment
    cancelled with nothing received and a pending one): the amount is blocked when any of them blocks it, whatever
    order the rows come in."""
    blocked: set[int] = set()
    awaited: set[int] = set()
    for remaining, blocks in candidates:
        if remaining is None:  # the outer join's row when no candidate is in range
            continue
        awaited.add(to_micro(remaining))
        if blocks:
            blocked.add(to_micro(remaining))
    return blocked, awaited


def choose_amount(requested: Decimal, blocked: set[int], awaited: set[int], unique_amount: bool, max_steps: int
                  ) -> Decimal:
    """The amount a new payment awaits. `blocked`: remaining amounts of the wallet's candidates it may not take;
    `awaited`: those of every candidate (closed ones with nothing received too). Without `unique_amount` the amount
    asked for, unless blocked (Refused). With it, the smallest step of 0.0001 USDT from the amount up that no candidate
    awaits, else the smallest that none blocks (a tie with a closed payment then goes `ambiguous`, never to the
    wrong payment), else Refused."""
    micro = to_micro(requested)
    if not unique_amount:
        if micro in blocked:
            raise Refused(
                "amount_in_use",
                "Another open payment on this wallet already awaits this amount; "
                "send unique_amount: true to get a distinct amount.",
                "expected_amount_usdt",
            )
        return requested
    steps = [micro + step * UNIQUE_STEP_MICRO for step in range(max_steps + 1)
             if micro + step * UNIQUE_STEP_MICRO <= MAX_MICRO]
    for taken in (blocked | awaited, blocked):
        free = next((amount for amount in steps if amount not in taken), None)
        if free is not None:
            return requested if free == micro else from_micro(free)
    raise Refused(
        "amount_in_use",
        f"No free amount within {max_steps} steps of 0.0001 USDT above this one on this wallet.",
        "expected_amount_usdt",
    )


def find_by_order_id(session: Session, order_id: str) -> Payment | None:
    return session.scalars(select(Payment).where(Payment.order_id == order_id)).one_or_none()


def replay_or_conflict(existing: Payment, new: NewPayment) -> Payment:
    if existing.request_fingerprint != new.fingerprint:
        raise Refused(
            "order_id_conflict",
            "A payment with this order_id already exists with different details; use a new order_id.",
            "order_id",
        )
    return existing


def payment_values(new: NewPayment, amount: Decimal, checkout_key: str) -> dict[str, Any]:
    """A new payment's row, by model attribute, from the validated request: a new column is one more entry here.
    Its times (`created_at`, `expires_at`: the transaction's time and `expires_in_seconds` after it) are the
    database's, added by whichever statement writes it."""
    payment_id = uuid.uuid4()
    return {
        "id": payment_id,
        "order_id": new.order_id,
        "wallet_address": new.wallet_address,
        "expected_amount_usdt": amount,
        "requested_amount_usdt": new.amount,
        "received_amount_usdt": Decimal(0),
        "status": PaymentStatus.pending,
        "callback_url": new.callback_url,
        "meta": new.metadata,
        "request_fingerprint": new.fingerprint,
        "underpayment_tolerance_usdt": new.tolerance_for(amount),
        "return_url": new.return_url,
        "checkout_token_hash": token_hash(checkout_key, payment_id),
        **price_values(new.price),
        "address_index": None,  # a given address
        # the rest of what a payment shows, as a new one has it (its metadata is answered as the INSERT returns it)
        "failure_reason": None,
        "transaction_hash": None,
        "completed_at": None,
        "callback_attempts": 0,
        "callback_success": False,
        "paid_late": False,
    }


def price_values(price: Price | None) -> dict[str, Any]:
    """A payment's price columns: all None for one given in USDT."""
    return {"price_amount": price and price.amount, "price_currency": price and price.currency,
            "rate": price and price.rate, "rate_source": price and price.source, "rate_at": price and price.at}


@functools.lru_cache(maxsize=16)
def insert_statement(payment_keys: tuple[str, ...], audit_keys: tuple[str, ...]) -> Select[Any]:
    """INSERT the payment (parameters `p_<attribute>`) and its audit row (`a_<column>`, the payment's id taken from
    the first) in one statement, RETURNING the metadata as stored (JSONB's own form of the numbers the merchant
    sent, as every later read shows it). Built once per set of keys: building SQLAlchemy expressions costs more
    than executing a cached one."""
    stored = insert(Payment).values(
        {getattr(Payment, k): bindparam(f"p_{k}", type_=getattr(Payment, k).type) for k in payment_keys}
    ).returning(Payment.id, Payment.meta).cte("stored")
    return select(stored.c.meta).add_cte(audit_row_of(stored, audit_keys))


def audit_row_of(stored: Any, audit_keys: tuple[str, ...], metadata: Callable[[Any], Any] = lambda value: value
                 ) -> Any:
    """The CTE inserting the `created` audit row (parameters `a_<column>`) of the payment the CTE `stored` wrote;
    `metadata` may add to the row's metadata parameter in SQL."""
    logs = PaymentLog.__table__.c
    rest = [k for k in audit_keys if k != "payment_id"]

    def value(k: str) -> Any:
        given = bindparam(f"a_{k}", type_=logs[k].type)
        return metadata(given) if k == "event_metadata" else given

    return insert(PaymentLog).from_select(["payment_id", *rest], select(stored.c.id, *(value(k) for k in rest))
                                          ).cte("audit")


@functools.lru_cache(maxsize=16)
def insert_sql(dialect: Dialect, payment_keys: tuple[str, ...], audit_keys: tuple[str, ...]) -> DriverStatement:
    """`insert_statement` compiled once for the driver."""
    return driver_statement(insert_statement(payment_keys, audit_keys), dialect)


def insert_and_commit(connection: Connection, values: dict[str, Any], audit: dict[str, Any]) -> Any:
    """Store a payment and its audit row, then commit the transaction `amounts_under_lock` opened; returns the
    metadata as stored. The answer comes after the COMMIT, so the payment is durable (synchronous_commit)."""
    statement = insert_sql(connection.dialect, tuple(values), tuple(audit))
    stored = driver_execute(connection, statement.sql, statement.params(
        {**{f"p_{k}": v for k, v in values.items()}, **{f"a_{k}": v for k, v in audit.items()}}))
    driver_execute(connection, "COMMIT", {})
    return stored[0][0]


def creation_audit(values: dict[str, Any], new: NewPayment, expires_at: str | None) -> dict[str, Any]:
    """The `created` audit row of a payment about to be written (`expires_at`: None when the statement adds it)."""
    amount = values["expected_amount_usdt"]
    note = "" if amount == new.amount else f" (raised from {format_amount(new.amount)} to be unique)"
    price = new.price
    if price is not None:
        note += (f", priced {format_amount(price.amount)} {price.currency} at {format_rate(price.rate)} "
                 f"{price.currency} per USDT ({price.source}, {iso(price.at)})")
    return audit_values(
        values["id"],
        "created",
        f"payment created for {format_amount(amount)} USDT to {new.wallet_address}{note}",
        order_id=new.order_id,
        expected_amount_usdt=format_amount(amount),
        requested_amount_usdt=format_amount(new.amount),
        underpayment_tolerance_usdt=format_amount(values["underpayment_tolerance_usdt"]),
        **({} if expires_at is None else {"expires_at": expires_at}),
        **({} if price is None else {"price_amount": format_amount(price.amount), "price_currency": price.currency,
                                     "rate": format_rate(price.rate), "rate_source": price.source,
                                     "rate_at": iso(price.at)}),
    )


def lifetime_end(start: Any) -> Any:
    """SQL: `start` plus the parameter `lifetime_seconds`, in exact seconds (an interval's days are calendar days in
    the session's time zone: 23 or 25 hours across a DST change; the two-message path adds a timedelta)."""
    return start + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("lifetime_seconds", type_=Integer))


@functools.lru_cache(maxsize=16)
def insert_if_free_sql(dialect: Dialect, late_window: int, unique_amount: bool, payment_keys: tuple[str, ...],
                       audit_keys: tuple[str, ...]) -> DriverStatement:
    """The wallet's lock, then the payment and its audit row written only if its order_id is free, no candidate
    of the wallet awaits its amount (what `amounts_under_lock` and `choose_amount` decide for a request whose own
    amount is free) and the wallet is no payment's derived deposit address: one message for the driver. Sent in
    the driver's autocommit, the two statements are one implicit transaction, committed before the answer comes
    back (synchronous_commit); the lock comes first, in its own statement, so the INSERT's snapshot is taken under
    it.
    The payment's times are the transaction's; the audit row's `expires_at` is written by `times.iso_sql`."""
    now = func.now()
    binds = {k: bindparam(f"p_{k}", type_=getattr(Payment, k).type) for k in payment_keys}
    taken = order_id_taken(binds["order_id"])
    in_use = select(Payment.id).where(awaited_by(binds["wallet_address"], now, late_window, unique_amount),
                                      binds["expected_amount_usdt"] == REMAINING).exists()
    expires = lifetime_end(now)
    stored = insert(Payment).from_select(
        [*(getattr(Payment, k) for k in payment_keys), Payment.created_at, Payment.expires_at],
        select(*binds.values(), now, expires).where(~taken, ~in_use, ~taken_by_a_payment(binds["wallet_address"])),
    ).returning(Payment.id, Payment.created_at, Payment.expires_at, Payment.meta).cte("stored")
    with_expiry = func.jsonb_build_object("expires_at", iso_sql(stored.c.expires_at))
    audit_row = audit_row_of(stored, audit_keys,
                             lambda given: given.op("||", return_type=given.type)(with_expiry))
    statement = select(stored.c.created_at, stored.c.expires_at, stored.c.meta).add_cte(audit_row)
    return driver_statement(statement, dialect, prefix=f"{WALLET_LOCK.compile(dialect=dialect).string}; ")


def insert_if_free(connection: Connection, new: NewPayment, late_window: int, checkout_key: str
                   ) -> PaymentRecord | None:
    """The payment written in one round trip when its order_id is free and its amount is not in use on its wallet;
    None, having written nothing, otherwise (the caller then takes the path that says why, or picks an amount)."""
    values = payment_values(new, new.amount, checkout_key)
    audit = creation_audit(values, new, expires_at=None)
    statement = insert_if_free_sql(connection.dialect, late_window, new.unique_amount, tuple(values), tuple(audit))
    rows = driver_execute(connection, statement.sql, statement.params(
        {**wallet_lock_params(new.wallet_address), "lifetime_seconds": new.expires_in_seconds,
         **{f"p_{k}": v for k, v in values.items()}, **{f"a_{k}": v for k, v in audit.items()}}))
    if not rows:
        return None
    values["created_at"], values["expires_at"], values["meta"] = rows[0]
    log_audit(audit)
    return PaymentRecord.of(values)


def create_payment(connection: Connection, new: NewPayment, late_window: int, checkout_key: str, *,
                   refused: Exception | None = None) -> PaymentRecord | None:
    """Create a payment on `connection` (`Database.statements`): the payment as stored, or None when its order_id
    is already taken (the caller answers with that payment).

    The usual request (its order_id new, its amount free on its wallet, its callback address allowed) is written in
    one round trip (`insert_if_free`). Any other takes the path that says why: the transaction's start, the
    wallet's lock and the read under it (`amounts_under_lock`: under READ COMMITTED the read's snapshot is taken
    once the lock is granted, so it sees every payment committed before), then the write, then the commit. A twin
    on another wallet fails the INSERT on the unique order_id, and the caller answers with it as for any replay.
    `refused`, the verdict on the callback address, counts only for a new payment. On any error a transaction left
    open is rolled back by `Database.statements`. `checkout_key`: its database's (`CheckoutLinks.key`), which
    signs the payment's checkout token."""
    if refused is None:
        stored = insert_if_free(connection, new, late_window, checkout_key)
        if stored is not None:
            return stored
    now, blocked, awaited, order_taken = amounts_under_lock(connection, new.wallet_address, new.order_id, new.amount,
                                                            late_window, new.unique_max_steps)
    if order_taken:
        return None
    if refused is not None:
        raise refused
    amount = choose_amount(new.amount, blocked, awaited, new.unique_amount, new.unique_max_steps)
    values = {**payment_values(new, amount, checkout_key), "created_at": now,
              "expires_at": now + timedelta(seconds=new.expires_in_seconds)}
    audit = creation_audit(values, new, expires_at=iso(values["expires_at"]))
    values["meta"] = insert_and_commit(connection, values, audit)
    log_audit(audit)
    return PaymentRecord.of(values)


# --- creation on a derived address ---------------------------------------------------------------

DERIVED_WINDOW = 32  # addresses sent with a create: the index it takes is expected among them


@functools.lru_cache(maxsize=16)
def insert_derived_sql(dialect: Dialect, payment_keys: tuple[str, ...]) -> DriverStatement:
    """One statement, so one implicit transaction in the driver's autocommit, committed before the answer: the
    account's next index taken (`deposits.indexes`, only if the order_id is free), its address picked from the ones
    sent (parameters `d_first` and `d_addresses`, the addresses of `d_first`, `d_first` + 1, ...), the payment and
    its `created` audit row written unless some payment already uses that address (a given wallet_address may be
    one of the account's addresses), and the address's row in `deposit_addresses` either way (its payment's, or
    none when passed over). An index outside the addresses sent leaves the address NULL, which the payment's NOT
    NULL wallet_address refuses: the statement fails and gives its index back. Returns the index, its address and
    the payment's times and metadata (NULL when passed over); no row when the order_id was taken."""
    binds = {k: bindparam(f"p_{k}", type_=getattr(Payment, k).type) for k in payment_keys}
    order_taken = order_id_taken(binds["order_id"])
    taken = take_statement(~order_taken).cte("taken")
    position = cast(taken.c.idx - bindparam("d_first", type_=Integer), Integer)  # from 0; NULL outside
    addresses = bindparam("d_addresses", type_=JSONB)
    # (JSONB counts a negative position from the end: never used)
    chosen = select(taken.c.idx, case((position >= 0, addresses[position].astext)).label("address")).cte("chosen")
    now = func.now()
    used = select(Payment.id).where(Payment.wallet_address == chosen.c.address).exists()
    stored = insert(Payment).from_select(
        [*(getattr(Payment, k) for k in payment_keys), Payment.wallet_address, Payment.address_index,
         Payment.created_at, Payment.expires_at],
        select(*binds.values(), chosen.c.address, chosen.c.idx, now, lifetime_end(now)).where(~used),
    ).returning(Payment.id, Payment.created_at, Payment.expires_at, Payment.meta).cte("stored")
    message = func.concat(bindparam("m_head", type_=String), chosen.c.address, " (deposit address ",
                          cast(chosen.c.idx, String), ", derived from DEPOSIT_XPUB)")
    metadata = bindparam("a_event_metadata", type_=JSONB).op("||", return_type=JSONB)(func.jsonb_build_object(
        "address_index", chosen.c.idx, "expires_at", iso_sql(stored.c.expires_at)))
    audit = insert(PaymentLog).from_select(
        ["payment_id", "event_type", "message", "event_metadata"],
        select(stored.c.id, bindparam("a_event_type", type_=String), message, metadata).select_from(stored)
        .join(chosen, literal(True)),
    ).cte("audit")
    deposit = insert(DepositAddress).from_select(
        ["account", "address_index", "address", "payment_id"],
        select(bindparam("d_account", type_=String), chosen.c.idx, chosen.c.address,
               select(stored.c.id).scalar_subquery()),
    ).cte("deposit")
    statement = (select(chosen.c.idx, chosen.c.address, stored.c.created_at, stored.c.expires_at, stored.c.meta)
                 .select_from(chosen).outerjoin(stored, literal(True)).add_cte(audit).add_cte(deposit))
    return driver_statement(statement, dialect)


def is_outside_window(exc: IntegrityError) -> bool:
    """Whether a derived create failed because the index it took was not among the addresses it sent."""
    diag = getattr(exc.orig, "diag", None)
    return getattr(exc.orig, "pgcode", None) == "23502" and getattr(diag, "column_name", None) == "wallet_address"


def create_derived_payment(connection: Connection, new: NewPayment, key: DepositKey, checkout_key: str
                           ) -> PaymentRecord | None:
    """Create a payment on a fresh address of `key` (DEPOSIT_XPUB), on `connection` (`Database.statements`): the
    payment as stored, or None when its order_id is already taken (the caller answers with that payment; no index
    is taken). A twin that commits the same order_id meanwhile fails the INSERT (IntegrityError, the index given
    back), and the caller answers with it as for any replay.

    One round trip (`insert_derived_sql`): the index is taken, the address picked among the `DERIVED_WINDOW` ones
    sent (from the index this process expects next: `DepositKey.expected_index`), the payment written and
    committed. The account's count is locked for that one statement. When other processes took more indexes than
    the window holds, the statement fails, gives its index back, and is sent again from the count read then. The
    address is the payment's alone, so no amount check applies (`unique_amount` changes nothing): any amount that
    reaches it is this payment's. An address some payment already uses (a given wallet_address) is passed over,
    recorded as such, and the next index taken."""
    derived = replace(new, wallet_address="", unique_amount=False)
    first = key.expected_index
    while True:
        values = payment_values(derived, new.amount, checkout_key)
        del values["wallet_address"], values["address_index"]
        addresses = [address for _, address in key.addresses(first, DERIVED_WINDOW)]
        statement = insert_derived_sql(connection.dialect, tuple(values))
        try:
            rows = driver_execute(connection, statement.sql, statement.params({
                **{f"p_{k}": v for k, v in values.items()}, "d_account": key.account, "d_first": first,
                "d_addresses": addresses, "lifetime_seconds": new.expires_in_seconds, "a_event_type": "created",
                "m_head": f"payment created for {format_amount(new.amount)} USDT to ",
                "a_event_metadata": {"order_id": new.order_id, "expected_amount_usdt": format_amount(new.amount),
                                     "requested_amount_usdt": format_amount(new.amount),
                                     "underpayment_tolerance_usdt":
                                         format_amount(values["underpayment_tolerance_usdt"])}}))
        except IntegrityError as exc:
            if not is_outside_window(exc):
                raise
            first = next_index(connection, key.account)
            if first > MAX_INDEX:
                raise Refused("deposit_addresses_exhausted", "DEPOSIT_XPUB's account has no index left; configure "
                                                             "another account's xpub.") from None
            continue
        if not rows:
            return None
        index, address, created_at, expires_at, meta = rows[0]
        key.expected_index = max(key.expected_index, index + 1)
        if created_at is None:
            logger.warning("deposit address %d (%s) is already a given wallet_address of a payment: passed over",
                           index, address)
            first = index + 1
            continue
        values.update(wallet_address=address, address_index=index, created_at=created_at, expires_at=expires_at,
                      meta=meta)
        log_audit(audit_values(values["id"], "created", f"payment created for {format_amount(new.amount)} USDT to "
                                                        f"{address} (deposit address {index}, derived from "
                                                        "DEPOSIT_XPUB)"))
        return PaymentRecord.of(values)


def cancel_payment(session: Session, payment: Payment) -> Payment:
    wallet_lock(session, payment.wallet_address)
    session.refresh(payment, with_for_update=True)
    if payment.status != PaymentStatus.pending or payment.received_amount_usdt > 0:
        raise Refused(
            "not_cancellable",
            f"Only a pending payment that has received nothing can be cancelled; this one is {payment.status.value}"
            + (" and has received money." if payment.received_amount_usdt > 0 else "."),
        )
    payment.status = PaymentStatus.failed
    payment.failure_reason = CANCELLED
    payment.cancelled_at = db_now(session)
    log_event(session, payment.id, "cancelled", "payment cancelled by the merchant")
    emit_event(session, payment, "payment.cancelled")
    return payment


