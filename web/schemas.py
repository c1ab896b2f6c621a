"""What the API answers with and webhooks carry: payments, their transfers, audit log rows, webhook events and the
operator counters, as JSON objects. Money is a plain decimal string, times are ISO 8601 in UTC.

Each object is one table of fields: its name, the JSON Schema /openapi.json states for it, and how it is read from
its row. The answers are rendered from the tables and the document is generated from them, so the two cannot
drift."""
from __future__ import annotations

import functools
import json
import uuid
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter, itemgetter
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Enum, Row, Select, bindparam, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from checkout import checkout_key, checkout_url
from database import DriverStatement, driver_execute, driver_statement
from models import (
    CANCELLED,
    UNMATCHED_REASONS,
    WEBHOOK_EVENT_TYPES,
    EventState,
    Payment,
    PaymentLog,
    PaymentStatus,
    Transfer,
    TransferStatus,
    WebhookEvent,
    as_attributes,
)
from money import PLAIN_AMOUNT_PATTERN, format_amount
from times import iso, iso_ms


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


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null (a named schema stays one named type in a generated client)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _optional_id(value: uuid.UUID | None) -> str | None:
    return str(value) if value else None


def shortfall(payment: Payment) -> Decimal:
    """What a payment counted as fully paid (completed, or paid late) lacks of its amount, under its tolerance."""
    if payment.status != PaymentStatus.completed and not payment.paid_late:
        return Decimal(0)
    return max(Decimal(payment.expected_amount_usdt) - Decimal(payment.received_amount_usdt), Decimal(0))


TRANSFER = (
    column("transaction_hash", STRING),
    column("log_index", INTEGER),
    Out("from", STRING, attrgetter("from_address")),
    Out("to", STRING, attrgetter("to_address")),
    Out("amount_usdt", AMOUNT, lambda t: format_amount(t.amount_usdt)),
    column("block_number", INTEGER),
    Out("block_timestamp", TIME, lambda t: iso_ms(t.block_timestamp)),
    Out("status", ref("TransferStatus"), lambda t: t.status.value),
    Out("payment_id", {"type": ["string", "null"], "format": "uuid"}, lambda t: _optional_id(t.payment_id)),
    Out("reason", {**nullable(ref("UnmatchedReason")), "description": "why the transfer is unmatched; null once "
                                                                      "credited"},
        lambda t: t.reason),
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
)
# A payment as an unmatched transfer's event names it: no metadata, no transfers.
PAYMENT_SUMMARY = tuple(f for f in PAYMENT if f.name in (
    "id", "order_id", "expected_amount_usdt", "received_amount_usdt", "status"))
LOG = (
    column("id", INTEGER),
    column("event_type", STRING),
    column("message", STRING),
    Out("metadata", {"type": ["object", "null"]}, attrgetter("event_metadata")),
    Out("created_at", TIME, lambda e: iso(e.created_at)),
)


def _next_attempt(event: WebhookEvent) -> str | None:
    return iso(event.next_attempt_at) if event.state == EventState.pending else None


# What an event's `data` holds, by its type: the payment; the unmatched transfer with the wallet's newest open
# payments and their count; the assigned transfer and its payment; a test webhook's note.
TRANSFER_UNMATCHED = {
    "type": "object", "required": [*(f.name for f in TRANSFER), "open_payments", "open_payments_count"],
    "description": "transfer.unmatched: the transfer as /transfers lists it, and the wallet's open payments",
    "properties": {
        **{f.name: f.schema for f in TRANSFER},
        "open_payments": {"type": "array", "items": ref("PaymentSummary"), "maxItems": OPEN_PAYMENTS_SHOWN,
                          "description": f"the wallet's {OPEN_PAYMENTS_SHOWN} newest open payments"},
        "open_payments_count": {**INTEGER, "description": "how many open payments the wallet had"}}}
TRANSFER_ASSIGNED = {"type": "object", "required": ["transfer", "payment"],
                     "properties": {"transfer": ref("Transfer"), "payment": ref("Payment")}}
WEBHOOK_TEST = {"type": "object", "required": ["message", "url"],
                "properties": {"message": STRING, "url": STRING}}
EVENT = (
    column("id", STRING),
    column("type", ref("EventType")),
    Out("payment_id", {"type": ["string", "null"], "format": "uuid",
                       "description": "null for account-level events and test webhooks"},
        lambda e: _optional_id(e.payment_id)),
    Out("created_at", TIME, lambda e: iso(e.created_at)),
    Out("state", ref("EventState"), lambda e: e.state.value),
    column("attempts", INTEGER),
    Out("next_attempt_at", OPTIONAL_TIME, _next_attempt),
    column("last_status_code", {"type": ["integer", "null"]}),
    column("last_error", OPTIONAL_STRING),
    Out("delivered_at", OPTIONAL_TIME, lambda e: iso(e.delivered_at)),
    # What was sent: for a payment's event, the payment when it happened.
    Out("data", {"anyOf": [ref("Payment"), ref("TransferUnmatched"), ref("TransferAssigned"), ref("WebhookTestData")]},
        lambda e: json.loads(e.body).get("data")),
)
STATS = tuple(key(name, INTEGER) for name in (
    "total_payments", "pending_payments", "completed_payments", "failed_payments", "expired_payments",
)) + (key("uptime_seconds", NUMBER), key("polling_interval", NUMBER), key("network", STRING)) + tuple(
    key(name, INTEGER) for name in (
        "unmatched_transfers", "reconciled_transfers", "rejected_transfers", "webhooks_pending", "webhooks_failed",
    ))
HEALTH = (
    key("status", {"enum": ["healthy", "degraded", "unhealthy"]}),
    key("timestamp", TIME),
    key("network", STRING),
    key("active_payments", {"type": ["integer", "null"]}),
    key("total_payments", {"type": ["integer", "null"]}),
    key("database", {"enum": ["connected", "disconnected"]}),
    key("watcher", {"type": ["object", "null"],
                    "description": "strategy, last cycle, seconds and blocks behind, last_error, refused_answers, "
                                   "each upstream's state and pause, and the reconciliation's last complete pass"}),
)
SANDBOX_TRANSFER = (
    column("transaction_hash", STRING),
    Out("from", STRING, attrgetter("from_address")),
    Out("to", STRING, attrgetter("to_address")),
    column("contract", STRING),
    Out("token", {"enum": ["usdt", "fake"]}, None),
    Out("amount_usdt", AMOUNT, lambda t: format_amount(t.amount_usdt)),
    column("reverted", BOOLEAN),
    Out("sent_at", TIME, lambda t: iso_ms(t.sent_at_ms)),
)
SANDBOX_DELIVERY = (
    column("id", INTEGER),
    column("webhook_id", STRING),
    column("type", STRING),
    Out("payment_id", {"type": ["string", "null"], "format": "uuid"}, lambda d: _optional_id(d.payment_id)),
    Out("webhook_timestamp", TIME, lambda d: iso_ms(d.webhook_timestamp * 1000)),
    Out("received_at", TIME, lambda d: iso(d.received_at)),
    Out("signature_verified", BOOLEAN, lambda d: True),
    Out("event", {"type": "object", "description": "the webhook's body as it arrived"}, lambda d: json.loads(d.body)),
)
# The document's named enumerations: one type each in a generated client.
ENUMS = {
    "PaymentStatus": enum_schema(PaymentStatus),
    "FailureReason": {"type": "string", "enum": [CANCELLED],
                      "description": "cancelled: the merchant cancelled the payment"},
    "TransferStatus": enum_schema(TransferStatus),
    "UnmatchedReason": {"type": "string", "enum": list(UNMATCHED_REASONS), "description": (
        "no_candidate: no open payment on the wallet at its block time; ambiguous: several open payments await "
        "exactly this amount (you decide); no_exact_match: several open payments, none awaits this amount")},
    "EventState": enum_schema(EventState),
    "EventType": {"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)},
}
# The event data that is no table of its own, by name.
EVENT_DATA = {"TransferUnmatched": TRANSFER_UNMATCHED, "TransferAssigned": TRANSFER_ASSIGNED,
              "WebhookTestData": WEBHOOK_TEST}
# Every object of the document: /openapi.json's components.
SCHEMAS = {"Transfer": TRANSFER, "Payment": PAYMENT, "PaymentSummary": PAYMENT_SUMMARY, "Log": LOG, "Event": EVENT,
           "Stats": STATS, "Health": HEALTH,
           "SandboxTransfer": SANDBOX_TRANSFER, "SandboxDelivery": SANDBOX_DELIVERY}


def transfer_to_dict(transfer: Transfer | SimpleNamespace) -> dict[str, Any]:
    return render(TRANSFER, transfer)


def payment_to_dict(payment: Payment | Row[Any], transfers: Sequence[Transfer | SimpleNamespace],
                    key: str, transfers_count: int | None = None) -> dict[str, Any]:
    """`payment`: the ORM object, or a Core row with its attribute names (models.as_attributes); the same for
    `transfers`, all of the payment's unless `transfers_count` says how many there are. `key`: its database's
    checkout key, which signs its checkout_url."""
    return render(PAYMENT, payment, transfers=[transfer_to_dict(t) for t in transfers],
                  transfers_count=len(transfers) if transfers_count is None else transfers_count,
                  checkout_url=checkout_url(key, payment.id))


def payment_summary(payment: Payment) -> dict[str, Any]:
    return render(PAYMENT_SUMMARY, payment)


def log_to_dict(entry: PaymentLog) -> dict[str, Any]:
    return render(LOG, entry)


def event_to_dict(event: WebhookEvent) -> dict[str, Any]:
    return render(EVENT, event)


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


def serialize_payments(session: Session, payments: list[Payment]) -> list[dict[str, Any]]:
    transfers = credited_transfers(session, [p.id for p in payments])
    key = checkout_key(session)
    return [payment_to_dict(p, transfers[p.id], key) for p in payments]


def serialize_payment(session: Session, payment: Payment) -> dict[str, Any]:
    return serialize_payments(session, [payment])[0]


def payment_for_event(session: Session, payment: Payment) -> dict[str, Any]:
    """The payment as a webhook event carries it: its EVENT_TRANSFERS_SHOWN latest transfers and their count, so
    no event body grows with the transfers a payment receives (64 KB at most)."""
    transfers = credited_transfers(session, [payment.id], EVENT_TRANSFERS_SHOWN)[payment.id]
    count = len(transfers) if len(transfers) < EVENT_TRANSFERS_SHOWN else transfer_count(session, payment.id)
    return payment_to_dict(payment, transfers, checkout_key(session), count)


TRANSFER_PREFIX = "transfer_"


@functools.cache
def payment_by_id_statement() -> Select[Any]:
    """A payment (parameter `id`) and its credited transfers in one query, Core rows named by attribute; built
    once."""
    payments, transfers = Payment.__table__, Transfer.__table__
    return (
        select(*as_attributes(Payment, payments), *as_attributes(Transfer, transfers, TRANSFER_PREFIX))
        .select_from(payments.outerjoin(transfers, transfers.c.payment_id == payments.c.id))
        .where(payments.c.id == bindparam("id"))
        .order_by(transfers.c.block_timestamp, transfers.c.id)
    )


Processor = Callable[[Any], Any] | None


@functools.lru_cache(maxsize=4)
def payment_by_id_sql(dialect: Dialect) -> tuple[DriverStatement, type, list[Processor]]:
    """`payment_by_id_statement` compiled once for the driver, with its row type (attribute names) and each
    column's result processor. Only the enum columns need one: psycopg2, as SQLAlchemy sets it up, already gives
    UUIDs, Decimals, aware datetimes and JSON as Python values."""
    statement = payment_by_id_statement()
    columns = list(statement.selected_columns)
    processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) if isinstance(c.type, Enum) else None
                  for c in columns]
    row_type = namedtuple("PaymentRow", [c.key for c in columns])  # type: ignore[misc]
    return driver_statement(statement, dialect), row_type, processors


def payment_by_id(connection: Connection, payment_id: uuid.UUID) -> dict[str, Any] | None:
    """The payment as the API shows it, read in one round trip without the ORM or a Result object; None if there is
    none."""
    statement, row_type, processors = payment_by_id_sql(connection.dialect)
    raw = driver_execute(connection, statement.sql, statement.params({"id": payment_id}))
    if not raw:
        return None
    rows = [row_type(*(p(v) if p else v for p, v in zip(processors, values, strict=True))) for values in raw]
    cut = len(TRANSFER_PREFIX)
    transfers = [
        SimpleNamespace(**{name[cut:]: value for name, value in row._asdict().items() if name[:cut] == TRANSFER_PREFIX})
        for row in rows if row.transfer_id is not None
    ]
    return payment_to_dict(rows[0], transfers, checkout_key(connection))
