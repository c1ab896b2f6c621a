"""A payment and its transfers as JSON: what a webhook carries and the API answers with. Money is a plain decimal
string, times are ISO 8601 in UTC.

Each object is one table of fields: its name, the JSON Schema /openapi.json states for it, and how it is read from
its row. The bodies are rendered from the tables and the document is generated from them (web/schemas.py adds the
API's own objects), so the two cannot drift."""
from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from infra.money import PLAIN_AMOUNT_PATTERN, format_amount, format_rate
from infra.times import iso, iso_ms
from ledger.checkout import links_of
from ledger.records import PaymentRecord, TransferRecord
from ledger.service_state import CHAIN_HEAD, read_state
from models import Payment, PaymentStatus, Transfer, UnconfirmedTransfer


@dataclass(frozen=True)
class Out:
    """One field of an answer: its name, its JSON Schema, and how it is read from the row (None: the caller gives
    it, as a payment's transfers)."""

    name: str
    schema: dict[str, Any]
    read: Callable[[Any], Any] | None


def render(fields: tuple[Out, ...], row: Any, **given: Any) -> dict[str, Any]:
    return {f.name: given[f.name] if f.read is None else f.read(row) for f in fields}


def object_schema(fields: tuple[Out, ...]) -> dict[str, Any]:
    return {"type": "object", "required": [f.name for f in fields], "properties": {f.name: f.schema for f in fields}}


def ref(name: str) -> dict[str, str]:
    """A reference to one of the document's schemas (named as in SCHEMAS)."""
    return {"$ref": f"#/components/schemas/{name}"}


def column(name: str, schema: dict[str, Any]) -> Out:
    """A field that is the row's attribute of the same name, as it is."""
    return Out(name, schema, attrgetter(name))


def key(name: str, schema: dict[str, Any]) -> Out:
    """A field that is the item of the same name of a dict the route computed."""
    return Out(name, schema, itemgetter(name))


def enum_schema(values: Any, *extra: Any) -> dict[str, Any]:
    return {"type": "string", "enum": [member.value for member in values] + list(extra)}


# What an event body may hold, so that none exceeds 64 KB: a payment's latest transfers; an unmatched transfer's
# newest open payments of its wallet.
EVENT_TRANSFERS_SHOWN = 50
OPEN_PAYMENTS_SHOWN = 20

STRING = {"type": "string"}
OPTIONAL_STRING = {"type": ["string", "null"]}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
NUMBER = {"type": "number"}
AMOUNT = {"type": "string", "pattern": PLAIN_AMOUNT_PATTERN, "examples": ["10.5"]}
TIME = {"type": "string", "format": "date-time"}
OPTIONAL_TIME = {"type": ["string", "null"], "format": "date-time"}
UUID = {"type": "string", "format": "uuid"}
RATE = {"type": "string", "pattern": r"^[0-9]+(?:\.[0-9]+)?$", "examples": ["7.2"]}  # a rate, plain decimal


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null (a named schema stays one named type in a generated client)."""
    return {"anyOf": [schema, {"type": "null"}]}


def optional_id(value: uuid.UUID | None) -> str | None:
    return str(value) if value else None


def shortfall(payment: Payment) -> Decimal:
    """What a payment counted as fully paid (completed, or paid late) lacks of its amount, under its tolerance."""
    if payment.status != PaymentStatus.completed and not payment.paid_late:
        return Decimal(0)
    return max(Decimal(payment.expected_amount_usdt) - Decimal(payment.received_amount_usdt), Decimal(0))


def optional_amount(value: Decimal | None) -> str | None:
    return None if value is None else format_amount(value)


SET_ASIDE_NOTE = "; null on a transfer set aside before its receipt could be read"
TRANSFER = (
    column("transaction_hash", STRING),
    column("log_index", {"type": ["integer", "null"], "description": "its position in the transaction's logs" +
                         SET_ASIDE_NOTE}),
    Out("from", {**OPTIONAL_STRING, "description": "the sender" + SET_ASIDE_NOTE}, attrgetter("from_address")),
    Out("to", STRING, attrgetter("to_address")),
    Out("amount_usdt", {**nullable(AMOUNT), "description": "the amount" + SET_ASIDE_NOTE},
        lambda t: optional_amount(t.amount_usdt)),
    column("block_number", {"type": ["integer", "null"], "description": "its block" + SET_ASIDE_NOTE}),
    Out("block_timestamp", TIME, lambda t: iso_ms(t.block_timestamp)),
    Out("status", ref("TransferStatus"), lambda t: t.status.value),
    Out("payment_id", {"type": ["string", "null"], "format": "uuid"}, lambda t: optional_id(t.payment_id)),
    Out("reason", {**nullable(ref("UnmatchedReason")), "description": "why the transfer is unmatched or set "
                                                                      "aside; null once credited"},
        lambda t: t.reason),
)
# Money seen in a block above the solid head, listed on the payment it is for: never a credit (contract §4).
UNCONFIRMED = (
    column("transaction_hash", STRING),
    column("log_index", INTEGER),
    Out("amount_usdt", AMOUNT, lambda t: format_amount(t.amount_usdt)),
    column("block_number", INTEGER),
    Out("confirmations", {**INTEGER, "description": "blocks from its own to the head, counting both"}, None),
)
PAYMENT = (
    Out("id", UUID, lambda p: str(p.id)),
    column("order_id", STRING),
    column("wallet_address", STRING),
    Out("expected_amount_usdt", AMOUNT, lambda p: format_amount(p.expected_amount_usdt)),
    Out("received_amount_usdt", AMOUNT, lambda p: format_amount(p.received_amount_usdt)),
    Out("status", ref("PaymentStatus"), lambda p: p.status.value),
    column("failure_reason", nullable(ref("FailureReason"))),
    column("transaction_hash", OPTIONAL_STRING),
    Out("transfers", {"type": "array", "items": ref("Transfer"),
                      "description": "the transfers credited to it, in chain order; in a webhook event its "
                                     f"{EVENT_TRANSFERS_SHOWN} latest"}, None),
    Out("transfers_count", {**INTEGER, "description": "how many transfers are credited to it"}, None),
    Out("created_at", TIME, lambda p: iso(p.created_at)),
    Out("expires_at", TIME, lambda p: iso(p.expires_at)),
    Out("completed_at", OPTIONAL_TIME, lambda p: iso(p.completed_at)),
    column("callback_url", STRING),
    column("callback_attempts", INTEGER),
    column("callback_success", BOOLEAN),
    column("paid_late", BOOLEAN),
    Out("metadata", {"type": "object"}, attrgetter("meta")),
    Out("checkout_url", {"type": "string", "format": "uri",
                         "description": "The hosted checkout page of this payment, for the payer"}, None),
    column("return_url", {"type": ["string", "null"]}),
    Out("underpayment_tolerance_usdt", AMOUNT, lambda p: format_amount(p.underpayment_tolerance_usdt)),
    Out("shortfall_usdt", AMOUNT, lambda p: format_amount(shortfall(p))),
    # Priced in fiat: the price and the rate locked at creation (all null for a payment given in USDT).
    Out("price_amount", {**nullable(AMOUNT), "description": "the price asked for, in price_currency"},
        lambda p: None if p.price_amount is None else format_amount(p.price_amount)),
    Out("price_currency", {"type": ["string", "null"], "pattern": "^[A-Z]{3}$", "description": "ISO 4217"},
        attrgetter("price_currency")),
    Out("rate", {**nullable(RATE), "description": "units of price_currency per 1 USDT, locked at creation"},
        lambda p: format_rate(p.rate)),
    Out("rate_source", {"type": ["string", "null"], "description": "\"fixed\" (FIXED_RATES), or the sources whose "
                                                                   "quotes made the rate, e.g. \"coingecko,kraken\""},
        attrgetter("rate_source")),
    Out("rate_at", {**OPTIONAL_TIME, "description": "the time of the oldest quote used"}, lambda p: iso(p.rate_at)),
    Out("unconfirmed_transfers", {"type": "array", "items": ref("UnconfirmedTransfer"), "description": (
        "money for this payment seen in blocks not solidified yet: not paid, ship nothing on it; it leaves this "
        "list once credited (then in transfers) or if its block never solidifies")}, None),
    Out("unconfirmed_amount_usdt", {**AMOUNT, "description": "the sum of unconfirmed_transfers (not received yet)"},
        None),
    column("address_index", {"type": ["integer", "null"], "minimum": 0,
                             "description": "the index of wallet_address when it was derived from the merchant's "
                                            "xpub (DEPOSIT_XPUB: its child 0/index); null for a given address"}),
)
# A payment as an unmatched transfer's event names it: no metadata, no transfers.
PAYMENT_SUMMARY = tuple(f for f in PAYMENT if f.name in (
    "id", "order_id", "expected_amount_usdt", "received_amount_usdt", "status"))


def transfer_to_dict(transfer: Transfer | TransferRecord) -> dict[str, Any]:
    return render(TRANSFER, transfer)


def confirmations(block_number: int, head_number: int | None) -> int:
    """Blocks from `block_number` to the head, counting both (1 while it is the head; at least 1)."""
    return max(1, (head_number if head_number is not None else block_number) - block_number + 1)


def payment_to_dict(payment: Payment | PaymentRecord, transfers: Sequence[Transfer | TransferRecord],
                    checkout_url: str, transfers_count: int | None = None, unconfirmed: Sequence[Any] = (),
                    head_number: int | None = None) -> dict[str, Any]:
    """`payment`: the ORM object or its typed record; the same for `transfers`, all of the payment's unless
    `transfers_count` says how many there are. `checkout_url`: its page (`CheckoutLinks.url`). `unconfirmed`: its
    transfers seen above the solid head (rows with the fields of UNCONFIRMED), `head_number` the chain's head."""
    return render(PAYMENT, payment, transfers=[transfer_to_dict(t) for t in transfers],
                  transfers_count=len(transfers) if transfers_count is None else transfers_count,
                  checkout_url=checkout_url,
                  unconfirmed_transfers=[render(UNCONFIRMED, u, confirmations=confirmations(u.block_number,
                                                                                             head_number))
                                         for u in unconfirmed],
                  unconfirmed_amount_usdt=format_amount(sum((Decimal(u.amount_usdt) for u in unconfirmed),
                                                            Decimal(0))))


def head_number(session: Session) -> int | None:
    """The chain's head as the watcher last accepted it (None before it has)."""
    head = read_state(session, CHAIN_HEAD)
    return int(head["number"]) if head else None


def open_unconfirmed(session: Session, payment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """Each payment's transfers seen above the solid head and not final yet, in chain order."""
    result: dict[uuid.UUID, list[Any]] = {pid: [] for pid in payment_ids}
    if not payment_ids:
        return result
    for row in session.scalars(select(UnconfirmedTransfer).where(
            UnconfirmedTransfer.payment_id.in_(list(payment_ids)), UnconfirmedTransfer.cleared_at.is_(None))
            .order_by(UnconfirmedTransfer.block_number, UnconfirmedTransfer.log_index)):
        result[row.payment_id].append(row)
    return result


def payment_summary(payment: Payment) -> dict[str, Any]:
    return render(PAYMENT_SUMMARY, payment)


def credited_transfers(session: Session, payment_ids: list[uuid.UUID], latest: int | None = None
                       ) -> dict[uuid.UUID, list[Transfer]]:
    """Each payment's credited transfers in chain order: all of them, or its `latest` ones."""
    result: dict[uuid.UUID, list[Transfer]] = {pid: [] for pid in payment_ids}
    if not payment_ids:
        return result
    query = select(Transfer).where(Transfer.payment_id.in_(payment_ids))
    if latest is not None:
        newest_first = func.row_number().over(partition_by=Transfer.payment_id,
                                              order_by=(Transfer.block_timestamp.desc(), Transfer.id.desc()))
        ranked = select(Transfer.id, newest_first.label("rank")).where(Transfer.payment_id.in_(payment_ids)).subquery()
        query = query.where(Transfer.id.in_(select(ranked.c.id).where(ranked.c.rank <= latest)))
    for row in session.scalars(query.order_by(Transfer.block_timestamp, Transfer.id)):
        result[row.payment_id].append(row)  # type: ignore[index]
    return result


def transfer_count(session: Session, payment_id: uuid.UUID) -> int:
    return session.scalar(select(func.count()).where(Transfer.payment_id == payment_id)) or 0


def serialize_payment(session: Session, payment: Payment, latest: int | None = None) -> dict[str, Any]:
    """The payment as the API shows it, through the ORM session of the request that changed it: all its credited
    transfers, or its `latest` ones and their count."""
    transfers = credited_transfers(session, [payment.id], latest)[payment.id]
    count = None if latest is None or len(transfers) < latest else transfer_count(session, payment.id)
    unconfirmed = open_unconfirmed(session, [payment.id])[payment.id]
    links = links_of(session)
    return payment_to_dict(payment, transfers, links.url(links.key(session), payment.id), count, unconfirmed,
                           head_number(session) if unconfirmed else None)


def payment_for_event(session: Session, payment: Payment) -> dict[str, Any]:
    """The payment as a webhook event carries it: its EVENT_TRANSFERS_SHOWN latest transfers and their count, so
    no event body grows with the transfers a payment receives (64 KB at most)."""
    return serialize_payment(session, payment, EVENT_TRANSFERS_SHOWN)
