"""What the API answers with besides a payment and its transfers (ledger/serialize.py, which webhooks carry too):
audit log rows, webhook events and the operator counters, and the document's named types. The answers are rendered
from the tables and /openapi.json is generated from them, so the two cannot drift."""
from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Enum,
    Integer,
    Select,
    Text,
    bindparam,
    cast,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Dialect

from database import DriverStatement, driver_execute, driver_statement
from infra.notify_targets import NOTIFIABLE_EVENTS
from infra.times import iso
from ledger.checkout import CheckoutLinks
from ledger.records import PaymentRecord, TransferRecord, UnconfirmedRecord
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
    UNCONFIRMED,
    Out,
    column,
    enum_schema,
    key,
    nullable,
    optional_id,
    payment_to_dict,
    ref,
    render,
)
from ledger.service_state import CHAIN_HEAD
from models import (
    CANCELLED,
    UNMATCHED_REASONS,
    UNREADABLE,
    WEBHOOK_EVENT_TYPES,
    DepositAddress,
    EventState,
    Notification,
    Payment,
    PaymentLog,
    PaymentStatus,
    ServiceState,
    Transfer,
    TransferStatus,
    UnconfirmedTransfer,
    WebhookEvent,
)
from rates.rule import REASONS as RATE_REASONS
from web.paging import Keyset, number_key, time_key, uuid_key

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
NOTIFICATION = (
    column("id", STRING),
    column("event_type", ref("NotificationType")),
    Out("payment_id", {"type": ["string", "null"], "format": "uuid", "description": "null for operator events and "
        "account-level events"}, lambda n: optional_id(n.payment_id)),
    Out("target", {"type": "string", "description": "the NOTIFY_URLS target as scheme:fingerprint (the first 8 hex "
                   "digits of its URL's SHA-256); never the URL, which holds its service's secret"},
        lambda n: f"{n.scheme}:{n.target[:8]}"),
    column("title", STRING),
    column("body", STRING),
    Out("created_at", TIME, lambda n: iso(n.created_at)),
    Out("state", {"type": "string", "enum": ["pending", "delivered", "failed"]}, lambda n: n.state.value),
    column("attempts", INTEGER),
    Out("next_attempt_at", OPTIONAL_TIME, lambda n: iso(n.next_attempt_at) if n.state == EventState.pending
        else None),
    column("last_error", OPTIONAL_STRING),
    Out("delivered_at", OPTIONAL_TIME, lambda n: iso(n.delivered_at)),
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
    key("rates", {"type": ["object", "null"], "required": ["unavailable"],
                  "properties": {"unavailable": {"type": "array", "items": STRING}},
                  "description": "unavailable: the currencies asked for in the last hour with no usable rate now "
                                 "(the service is degraded while there is one); null when the database is "
                                 "unreachable"}),
)
# GET /rates (rates.store.rates_report).
OPTIONAL_NUMBER = {"type": ["number", "null"]}
CURRENCY_RATE = (
    key("currency", STRING),
    key("rate", {**OPTIONAL_STRING, "description": "units of the currency per 1 USDT; null when there is no rate"}),
    key("rate_source", {**OPTIONAL_STRING, "description": "\"fixed\", or the sources whose quotes made the rate"}),
    key("rate_at", {**OPTIONAL_TIME, "description": "the time of the oldest quote used"}),
    key("age_seconds", OPTIONAL_NUMBER),
    key("reason", {**nullable(ref("RateReason")), "description": "why there is no rate; null when there is one"}),
    key("message", OPTIONAL_STRING),
)
SOURCE_QUOTE = (key("currency", STRING), key("rate", STRING), key("quoted_at", TIME), key("fetched_at", TIME),
                key("age_seconds", NUMBER))
RATE_SOURCE = (
    key("name", STRING),
    key("base_url", STRING),
    key("quotes", {"type": "array", "items": ref("SourceQuote"), "description": "its latest quote per currency"}),
    key("last_attempt_at", OPTIONAL_TIME),
    key("last_success_at", OPTIONAL_TIME),
    key("paused_until", {**OPTIONAL_TIME, "description": "set while a rate limit (429, Retry-After) pauses it"}),
    key("errors", {**INTEGER, "description": "failed requests and refused quotes so far"}),
    key("last_error", OPTIONAL_STRING),
)
RATES = (
    key("currencies", {"type": "array", "items": ref("CurrencyRate"),
                       "description": "USD, EUR, CNY, FIXED_RATES' and those requests asked for: the rate a new "
                                      "payment would get now, or why none"}),
    key("sources", {"type": "array", "items": ref("RateSource")}),
    key("max_age_seconds", NUMBER),
    key("max_deviation_percent", STRING),
    key("markup_percent", STRING),
    key("price_rounding_usdt", STRING),
    key("timestamp", TIME),
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
    "UnmatchedReason": {"type": "string", "enum": [*UNMATCHED_REASONS, UNREADABLE], "description": (
        "no_candidate: no open payment on the wallet at its block time; ambiguous: several open payments await "
        "exactly this amount (you decide); no_exact_match: several open payments, none awaits this amount; "
        "unreadable (status set_aside): no upstream gave its receipt within the bounded wait; asked again by the "
        "reconciliation and credited by the same rules once it is readable")},
    "EventState": enum_schema(EventState),
    "EventType": {"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)},
    "NotificationType": {"type": "string", "enum": list(NOTIFIABLE_EVENTS)},
    "RateReason": {"type": "string", "enum": list(RATE_REASONS), "description": (
        "no_quote: no source has quoted the currency yet; stale: every quote is older than RATE_MAX_AGE_SECONDS; "
        "sources_disagree: the fresh quotes differ by more than RATE_MAX_DEVIATION_PERCENT")},
}
# The event data that is no table of its own, by name.
EVENT_DATA = {"TransferUnmatched": TRANSFER_UNMATCHED, "TransferAssigned": TRANSFER_ASSIGNED,
              "WebhookTestData": WEBHOOK_TEST}
# Every object of the document: /openapi.json's components.
SCHEMAS = {"Transfer": TRANSFER, "UnconfirmedTransfer": UNCONFIRMED, "Payment": PAYMENT,
           "PaymentSummary": PAYMENT_SUMMARY, "Log": LOG, "Event": EVENT, "Stats": STATS, "Health": HEALTH,
           "CurrencyRate": CURRENCY_RATE, "SourceQuote": SOURCE_QUOTE, "RateSource": RATE_SOURCE, "Rates": RATES,
           "DepositAddress": DEPOSIT_ADDRESS, "Notification": NOTIFICATION}


def log_to_dict(entry: PaymentLog) -> dict[str, Any]:
    return render(LOG, entry)


def notification_to_dict(notification: Notification) -> dict[str, Any]:
    return render(NOTIFICATION, notification)


def event_to_dict(event: WebhookEvent) -> dict[str, Any]:
    return render(EVENT, event)


def payments_with_transfers(selection: ColumnElement[bool]) -> Select[Any]:
    """The payments `selection` picks, each with its credited transfers, one row per transfer (one with nulls
    for a payment without any): the columns of `PaymentRecord`, then those of `TransferRecord`, then the payment's
    unconfirmed transfers (a JSON list of UnconfirmedRecord's fields) and the chain's head as the watcher last
    accepted it. The caller orders it: a payment's rows together, its transfers in chain order."""
    unconfirmed = (
        select(func.coalesce(func.jsonb_agg(aggregate_order_by(
            func.jsonb_build_array(UnconfirmedTransfer.transaction_hash, UnconfirmedTransfer.log_index,
                                   cast(UnconfirmedTransfer.amount_usdt, Text), UnconfirmedTransfer.block_number),
            UnconfirmedTransfer.block_number, UnconfirmedTransfer.log_index)), literal_column("'[]'::jsonb")))
        .where(UnconfirmedTransfer.payment_id == Payment.id, UnconfirmedTransfer.cleared_at.is_(None))
        .scalar_subquery()
    )
    head = select(ServiceState.value).where(ServiceState.key == CHAIN_HEAD).scalar_subquery()
    return (
        select(*(getattr(Payment, name) for name in PaymentRecord._fields),
               *(getattr(Transfer, name) for name in TransferRecord._fields),
               unconfirmed.label("unconfirmed"), head.label("head"))
        .select_from(Payment).outerjoin(Transfer, Transfer.payment_id == Payment.id)
        .where(selection)
    )


Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class PaymentsQuery:
    """A statement of `payments_with_transfers`' shape compiled once for the driver, with each column's result
    processor. Only the enum columns need one: psycopg2, as SQLAlchemy sets it up, already gives UUIDs, Decimals,
    aware datetimes and JSON as Python values."""

    statement: DriverStatement
    processors: tuple[Processor, ...]

    @classmethod
    def compile(cls, statement: Select[Any], dialect: Dialect) -> PaymentsQuery:
        processors = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                           if isinstance(c.type, Enum) else None for c in statement.selected_columns)
        return cls(driver_statement(statement, dialect), processors)

    def answers(self, connection: Connection, params: dict[str, Any], links: CheckoutLinks, most: int | None = None
                ) -> tuple[list[PaymentRecord], list[dict[str, Any]]]:
        """Each payment the statement reads, in its order, and the answers of the first `most` of them (all by
        default: a page reads one payment past its end, to know whether another page follows, and answers none
        for it): one round trip, no ORM, no Result."""
        raw = driver_execute(connection, self.statement.sql, self.statement.params(params))
        cut, end = len(PaymentRecord._fields), len(PaymentRecord._fields) + len(TransferRecord._fields)
        payments: dict[Any, tuple[list[Any], list[TransferRecord]]] = {}
        for values in raw:
            row = [p(v) if p else v for p, v in zip(self.processors, values, strict=True)]
            _, transfers = payments.setdefault(row[0], (row, []))
            if row[cut] is not None:
                transfers.append(TransferRecord(*row[cut:end]))
        records = [PaymentRecord(*row[:cut]) for row, _ in payments.values()]
        if not records:
            return [], []
        key = links.key(connection)
        answers = []
        for payment, (row, transfers) in list(zip(records, payments.values(), strict=True))[:most]:
            unconfirmed, head = row[end:]
            answers.append(payment_to_dict(
                payment, transfers, links.url(key, payment.id),
                unconfirmed=[UnconfirmedRecord.of(item) for item in unconfirmed or ()],
                head_number=int(head["number"]) if head else None))
        return records, answers


@functools.lru_cache(maxsize=4)
def payment_by_id_query(dialect: Dialect) -> PaymentsQuery:
    """A payment (parameter `id`) and its credited transfers, built and compiled once."""
    statement = payments_with_transfers(Payment.id == bindparam("id")).order_by(Transfer.block_timestamp, Transfer.id)
    return PaymentsQuery.compile(statement, dialect)


def payment_by_id(connection: Connection, payment_id: uuid.UUID, links: CheckoutLinks) -> dict[str, Any] | None:
    """The payment as the API shows it, read in one round trip (Database's driver statements, the one helper of
    the hot paths); None if there is none."""
    _, answers = payment_by_id_query(connection.dialect).answers(connection, {"id": payment_id}, links)
    return answers[0] if answers else None


# The API's lists, each in its order (GET /events oldest first, for a consumer that follows it; /addresses in the
# order indexes were given), and the filters GET /payments offers, each a column equal to the value given.
PAYMENTS = Keyset((time_key(Payment.created_at), uuid_key(Payment.id)), newest_first=True)
TRANSFERS = Keyset((number_key(Transfer.id),), newest_first=True)
EVENTS = Keyset((number_key(WebhookEvent.seq),))
NOTIFICATIONS = Keyset((number_key(Notification.seq),), newest_first=True)
ADDRESSES = Keyset((number_key(DepositAddress.id),))
PAYMENT_FILTERS = ("status", "wallet_address", "order_id")


@functools.lru_cache(maxsize=64)
def payments_page_query(dialect: Dialect, filters: tuple[str, ...], after: bool) -> PaymentsQuery:
    """A page of GET /payments (parameters: each filter's by its name, `after_0` and `after_1` the sort key it
    follows when `after`, `limit` the rows to read) and the page's payments' transfers, in one statement; one
    compiled statement per set of filters given."""
    page = select(Payment.id)
    for name in filters:
        page = page.where(getattr(Payment, name) == bindparam(name))
    if after:
        page = page.where(PAYMENTS.after(tuple(bindparam(f"after_{i}", type_=part.column.type)
                                               for i, part in enumerate(PAYMENTS.parts))))
    page = page.order_by(*PAYMENTS.order()).limit(bindparam("limit", type_=Integer))
    statement = payments_with_transfers(Payment.id.in_(page.scalar_subquery())).order_by(
        *PAYMENTS.order(), Transfer.block_timestamp, Transfer.id)
    return PaymentsQuery.compile(statement, dialect)


def payments_page(connection: Connection, given: dict[str, Any], links: CheckoutLinks) -> dict[str, Any]:
    """GET /payments' answer: the page of up to `given["limit"]` payments matching the filters `given` (an empty
    one is no filter) after `given["cursor"]`, each as the API shows it, and the next page's cursor; one round
    trip."""
    filters = tuple(name for name in PAYMENT_FILTERS if given.get(name))
    limit, after = given["limit"], given.get("cursor")
    params: dict[str, Any] = {name: given[name] for name in filters}
    params["limit"] = limit + 1
    if after is not None:
        params.update({f"after_{i}": value for i, value in enumerate(after)})
    records, answers = payments_page_query(connection.dialect, filters, after is not None).answers(
        connection, params, links, most=limit)
    return {"payments": answers, "next_cursor": PAYMENTS.page_of(records, limit, after).next_cursor}
