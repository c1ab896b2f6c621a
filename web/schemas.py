"""What the API answers with besides a payment and its transfers (ledger/serialize.py, which webhooks carry too):
audit log rows, webhook events and the operator counters, and the document's named types. The answers are rendered
from the tables and /openapi.json is generated from them, so the two cannot drift."""
from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, Enum, Select, bindparam, select
from sqlalchemy.engine import Dialect

from database import DriverStatement, driver_execute, driver_statement
from infra.times import iso
from ledger.checkout import CheckoutLinks
from ledger.records import PaymentRecord, TransferRecord
from ledger.serialize import (
    AMOUNT,
    INTEGER,
    NUMBER,
    OPEN_PAYMENTS_SHOWN,
    OPTIONAL_STRING,
    OPTIONAL_TIME,
    PAYMENT,
    PAYMENT_SUMMARY,
    STRING,
    TIME,
    TRANSFER,
    Out,
    column,
    enum_schema,
    key,
    optional_id,
    payment_to_dict,
    ref,
    render,
)
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
)

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
        lambda e: optional_id(e.payment_id)),
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
# A deposit address taken by a payment (GET /addresses); received_usdt is given by the route.
DEPOSIT_ADDRESS = (
    Out("index", {**INTEGER, "minimum": 0, "description": "its index: the xpub's child 0/index"},
        attrgetter("address_index")),
    column("address", STRING),
    Out("payment_id", {"type": ["string", "null"], "format": "uuid"}, lambda a: optional_id(a.payment_id)),
    Out("received_usdt", {**AMOUNT, "description": "USDT every transfer seen to it brought, credited to its payment "
                                                   "or not (late money included)"}, None),
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
           "Stats": STATS, "Health": HEALTH, "DepositAddress": DEPOSIT_ADDRESS}


def log_to_dict(entry: PaymentLog) -> dict[str, Any]:
    return render(LOG, entry)


def event_to_dict(event: WebhookEvent) -> dict[str, Any]:
    return render(EVENT, event)


@functools.cache
def payment_by_id_statement() -> Select[Any]:
    """A payment (parameter `id`) and its credited transfers in one query: the columns of `PaymentRecord`, then
    those of `TransferRecord` (null without a transfer); built once."""
    return (
        select(*(getattr(Payment, name) for name in PaymentRecord._fields),
               *(getattr(Transfer, name) for name in TransferRecord._fields))
        .select_from(Payment).outerjoin(Transfer, Transfer.payment_id == Payment.id)
        .where(Payment.id == bindparam("id"))
        .order_by(Transfer.block_timestamp, Transfer.id)
    )


Processor = Callable[[Any], Any] | None


@functools.lru_cache(maxsize=4)
def payment_by_id_sql(dialect: Dialect) -> tuple[DriverStatement, list[Processor]]:
    """`payment_by_id_statement` compiled once for the driver, with each column's result processor. Only the enum
    columns need one: psycopg2, as SQLAlchemy sets it up, already gives UUIDs, Decimals, aware datetimes and JSON
    as Python values."""
    statement = payment_by_id_statement()
    processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) if isinstance(c.type, Enum) else None
                  for c in statement.selected_columns]
    return driver_statement(statement, dialect), processors


def payment_by_id(connection: Connection, payment_id: uuid.UUID, links: CheckoutLinks) -> dict[str, Any] | None:
    """The payment as the API shows it, read in one round trip without the ORM or a Result object (Database's
    driver statements, the one helper of the two hot paths); None if there is none."""
    statement, processors = payment_by_id_sql(connection.dialect)
    raw = driver_execute(connection, statement.sql, statement.params({"id": payment_id}))
    if not raw:
        return None
    rows = [[p(v) if p else v for p, v in zip(processors, values, strict=True)] for values in raw]
    cut = len(PaymentRecord._fields)
    payment = PaymentRecord(*rows[0][:cut])
    transfers = [TransferRecord(*row[cut:]) for row in rows if row[cut] is not None]
    return payment_to_dict(payment, transfers, links.url(links.key(connection), payment.id))
