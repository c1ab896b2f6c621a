"""The HTTP routes: payments, transfers and events for the merchant (API key), and the operator routes."""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import Select, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deposits.taken import received_by, taken_query
from infra.money import format_amount, format_rate
from infra.ssrf import check_callback_url
from infra.times import iso
from infra.urls import CallbackUrlError
from ledger.events import emit_test_event, find_event, queue_retry, requeue, retry_target
from ledger.payments import (
    NewPayment,
    Price,
    cancel_payment,
    create_derived_payment,
    create_payment,
    find_by_order_id,
    refuse_if_archived,
    replay_or_conflict,
    request_fingerprint,
)
from ledger.serialize import payment_to_dict, render, serialize_payment, transfer_to_dict
from ledger.service_state import WATCHER_STATUS, read_state
from ledger.stats import read_counts
from models import (
    FOUND_BY_RECONCILIATION,
    EventState,
    Notification,
    Payment,
    PaymentLog,
    PaymentStatus,
    Transfer,
    TransferStatus,
    WebhookEvent,
)
from rates.pricing import RateUnavailable, UnsupportedCurrency, price_in_usdt, rate_for_new_payment
from rates.rule import AmountTooLarge
from rates.store import rates_report, unavailable_recently_asked
from web import validation as v
from web.errors import ApiError
from web.health import watcher_health
from web.paging import limit_field
from web.schemas import (
    ADDRESSES,
    DEPOSIT_ADDRESS,
    EVENTS,
    HEALTH,
    NOTIFICATIONS,
    PAYMENTS,
    RATES,
    STATS,
    TRANSFERS,
    event_to_dict,
    log_to_dict,
    notification_to_dict,
    payment_by_id,
    payments_page,
)
from web.services import services

logger = logging.getLogger(__name__)

bp = Blueprint("api", __name__)

# Client-side bounds on the database work of one request (docs/production.md, "Connections, keys, deadlines").
# /health answers 503 within a few seconds when the database hangs; every other route gets a bound no healthy
# request comes near (they take milliseconds), so a hung database gives a 503, never a hang.
HEALTH_DB_DEADLINE_SECONDS = 3.0
API_DB_DEADLINE_SECONDS = 10.0
HEALTH_ENDPOINT = "api.health"


def require_api_key(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError("unauthorized", "Send your API key as 'Authorization: Bearer <key>'.", status=401)
        svc = services()
        if not svc.key_cache.is_valid(svc.db.Session, key.strip(), svc.config.api_keys):
            raise ApiError("unauthorized", "This API key is unknown or revoked.", status=401)
        return view(*args, **kwargs)

    return wrapper


# --- request bodies: size first, then media type, then JSON ---------------------------------------

def read_capped_body(limit: int) -> bytes:
    """The whole request body, refused (413) past `limit` bytes, whether its length is declared or
    it is chunked (counted while it is read; never cut at the limit and parsed as if whole)."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise ApiError("payload_too_large", v.BODY_TOO_LARGE, status=413)
        return request.get_data(cache=True)
    if not request.environ.get("wsgi.input_terminated"):
        return b""  # neither a length nor a server-delimited stream: HTTP says there is no body
    stream = request.environ["wsgi.input"]
    data = bytearray()
    while len(data) <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise ApiError("payload_too_large", v.BODY_TOO_LARGE, status=413)
    return bytes(data)


@bp.before_request
def check_request_body() -> None:
    """Every API route: 413 for a body over MAX_BODY_BYTES (checked first), 415 for a non-empty body that
    is not declared `application/json` (UTF-8). Routes meant for browser forms would opt out here."""
    raw = read_capped_body(current_app.config["MAX_CONTENT_LENGTH"])
    if raw and not v.is_json_media_type(request.headers.get("Content-Type")):
        raise ApiError("unsupported_media_type",
                       "Send the request body as JSON with 'Content-Type: application/json' (UTF-8).", status=415)
    g.raw_body = raw


def json_body() -> dict[str, Any]:
    return v.require_object(v.parse_json_body(g.raw_body))


def no_fields_body() -> None:
    """A route whose body is optional and has no fields: nothing, or an empty JSON object."""
    if not g.raw_body:
        return
    body = json_body()
    if body:
        name = sorted(body)[0]
        raise ApiError("unknown_field", f"Unknown field {name[:40]!r}: this call takes no fields.", name[:128])


# --- payments ----------------------------------------------------------------------------------

# Fields added to POST /payments after requests were first fingerprinted: in the fingerprint only when sent, so a
# request made before them still replays.
FINGERPRINTED_WHEN_SENT = ("return_url", "underpayment_tolerance_usdt", "expected_amount_usdt", "price_amount",
                           "price_currency")


def one_way_to_price(given: dict[str, Any]) -> None:
    """Exactly one of expected_amount_usdt, or price_amount with price_currency."""
    usdt, price, code = (given[name] is not None for name in ("expected_amount_usdt", "price_amount",
                                                              "price_currency"))
    if usdt and (price or code):
        raise ApiError("conflicting_fields", "Send either expected_amount_usdt or price_amount with price_currency, "
                                             "not both.", "price_amount" if price else "price_currency")
    if not usdt and not price and not code:
        raise ApiError("missing_field", "Send expected_amount_usdt, or price_amount with price_currency.",
                       "expected_amount_usdt")
    if price != code:
        missing = "price_currency" if price else "price_amount"
        raise ApiError("missing_field", "price_amount and price_currency go together: send both.", missing)


def check_tolerance(tolerance: Any, amount: Any) -> None:
    if tolerance is not None and tolerance > amount:
        raise ApiError("invalid_amount", "underpayment_tolerance_usdt must not exceed expected_amount_usdt"
                       + (" (the price's USDT amount)." if amount is not None else "."), "underpayment_tolerance_usdt")


def parse_new_payment(body: dict[str, Any]) -> NewPayment:
    """The request as a new payment; one priced in fiat has no amount yet (`priced` gives it)."""
    given = v.read_body(v.CREATE_PAYMENT, body)
    one_way_to_price(given)
    expires = given["expires_in_seconds"]
    tolerance = given["underpayment_tolerance_usdt"]
    if given["expected_amount_usdt"] is not None:
        check_tolerance(tolerance, given["expected_amount_usdt"])
    # What identifies a replay: the request as read, the amounts in their one written form, the lifetime as asked
    # (a price as sent, not its USDT amount: a replay answers the payment with the rate it was created with).
    read = {name: value for name, value in given.items() if name not in FINGERPRINTED_WHEN_SENT or value is not None}
    amounts = {name: format_amount(given[name]) for name in ("expected_amount_usdt", "underpayment_tolerance_usdt",
                                                             "price_amount") if given[name] is not None}
    fingerprint = request_fingerprint({**read, **amounts})
    config = services().config
    if given["wallet_address"] is None and config.deposit_key is None:
        raise ApiError("missing_field", "wallet_address is required (this service derives no deposit addresses: "
                                        "DEPOSIT_XPUB is unset).", "wallet_address")
    return NewPayment(given["wallet_address"], given["expected_amount_usdt"], given["order_id"], given["callback_url"],
                      expires if expires is not None else config.payment_ttl_seconds, given["metadata"],
                      given["unique_amount"], fingerprint, underpayment_tolerance=tolerance,
                      default_tolerance=config.underpayment_tolerance_usdt, return_url=given["return_url"],
                      unique_max_steps=config.unique_amount_max_steps,
                      # the price as asked; its rate, source and time are read by `priced`, before anything is stored
                      price=None if given["price_amount"] is None else
                      Price(given["price_amount"], given["price_currency"], Decimal(0), "", datetime.now(UTC)))


def priced(new: NewPayment) -> NewPayment:
    """A request priced in fiat with its USDT amount and its rate, read now from the database (never from a source):
    400 unsupported_currency, 503 rate_unavailable (nothing stored), 400 when the amount is too large."""
    asked = new.price
    if asked is None:
        return new
    svc = services()
    try:
        rate = rate_for_new_payment(svc.db, svc.config, asked.currency)
        amount = price_in_usdt(svc.config, asked.amount, rate)
    except UnsupportedCurrency as exc:
        raise ApiError("unsupported_currency", str(exc), "price_currency") from None
    except RateUnavailable as exc:
        raise ApiError("rate_unavailable", str(exc), status=503) from None
    except AmountTooLarge:
        raise ApiError("invalid_amount", f"price_amount at {format_rate(rate.rate)} {rate.currency} per USDT is more "
                                         "USDT than a payment may await.", "price_amount") from None
    check_tolerance(new.underpayment_tolerance, amount)
    return replace(new, amount=amount, price=replace(asked, rate=rate.rate, source=rate.source, at=rate.at))


def check_callback_address(url: str, field: str = "callback_url") -> None:
    try:
        check_callback_url(url, allow_private=services().private_callbacks.allows(url))
    except CallbackUrlError as exc:
        raise ApiError(f"invalid_{field}", f"{field} is not allowed: {exc}", field) from None


@bp.post("/payments")
@require_api_key
def create() -> Any:
    new = parse_new_payment(json_body())
    db = services().db
    if new.price is not None:
        # A replay answers with the payment and the rate it was created with, whatever the rates are now.
        with db.Session() as session:
            existing = find_by_order_id(session, new.order_id)
            if existing is not None:
                return replay(session, existing, new)
            refuse_if_archived(session, new.order_id)
        new = priced(new)
    # The callback's DNS answer is awaited before any connection is taken; its verdict counts only
    # for a new payment (a replay answers with the existing one whatever DNS says now).
    try:
        check_callback_address(new.callback_url)
        refused = None
    except ApiError as exc:
        refused = exc
    taken: IntegrityError | None = None
    try:
        # One connection: the pre-ping and one message for the usual create, more for one refused there
        # (Database.statements, payments.create_payment).
        links = services().links
        with db.statements() as connection:
            key = links.key(connection)
            if new.wallet_address is None:  # a fresh address derived from DEPOSIT_XPUB
                payment = (create_derived_payment(connection, new, services().config.deposit_key, key)
                           if refused is None else None)
            else:
                payment = create_payment(connection, new, services().config.late_payment_window_seconds, key,
                                         refused=refused)
            # a new payment has no transfers yet: no query for them
            body = payment_to_dict(payment, [], links.url(key, payment.id)) if payment is not None else None
    except IntegrityError as exc:  # a concurrent request with the same order_id committed first
        taken, body = exc, None
    if body is None:  # the order_id is taken: a replay, or a conflict
        with db.Session() as session:
            existing = find_by_order_id(session, new.order_id)
            if existing is None:
                refuse_if_archived(session, new.order_id)
            if existing is None and refused is not None:  # a new derived-address payment to a refused callback
                raise refused
            if existing is None:  # another unique value failed
                raise taken or RuntimeError(f"order_id {new.order_id!r} was taken, then not found")
            return replay(session, existing, new)
    return jsonify(body), 201


def replay(session: Session, existing: Payment, new: NewPayment) -> Any:
    payment = replay_or_conflict(existing, new)
    return jsonify(serialize_payment(session, payment)), 200


def load_payment(session: Session, payment_id: str, *, for_update: bool = False) -> Payment:
    pid = v.payment_uuid(payment_id)
    payment = session.get(Payment, pid, with_for_update=for_update) if pid else None
    if payment is None:
        raise ApiError("payment_not_found", "No payment has this id.", status=404)
    return payment


@bp.get("/payments/<payment_id>")
@require_api_key
def get_payment(payment_id: str) -> Any:
    pid = v.payment_uuid(payment_id)
    # The most frequent merchant call: one connection, one query, no ORM objects.
    with services().db.statements() as connection:
        body = payment_by_id(connection, pid, services().links) if pid else None
    if body is None:
        raise ApiError("payment_not_found", "No payment has this id.", status=404)
    return jsonify(body)


# The query parameters of each list, checked in this order; /openapi.json states them from here.
CURSOR_DESCRIPTION = "Exactly a next_cursor value returned by this endpoint (anything else is a 400)"
PAYMENTS_QUERY = (
    limit_field(),
    v.enum_field("status", PaymentStatus, "Filter by status"),
    PAYMENTS.field("cursor", CURSOR_DESCRIPTION),
    v.filter_field("wallet_address", "Filter by wallet"),
    v.filter_field("order_id", "Filter by order id"),
)
TRANSFERS_QUERY = (
    limit_field(),
    v.enum_field("status", TransferStatus, "Filter by status"),
    TRANSFERS.field("cursor", CURSOR_DESCRIPTION),
    v.filter_field("wallet_address", "Filter by recipient"),
)


def notification_state(value: str | None) -> EventState | None:
    if value is None:
        return None
    if value not in ("pending", "delivered", "failed"):
        raise ApiError("invalid_state", "state must be pending, delivered or failed.", "state")
    return EventState(value)


def event_payment_id(value: str | None) -> Any:
    if value is None:
        return None
    pid = v.payment_uuid(value)
    if pid is None:
        raise ApiError("invalid_payment_id", "payment_id must be a payment's UUID.", "payment_id")
    return pid


EVENTS_QUERY = (
    limit_field(),
    EVENTS.field("after", "Exactly a next_cursor value returned by /events (anything else is a 400)"),
    v.Field("payment_id", v.UUID_SCHEMA, event_payment_id, description="Only this payment's events"),
)


NOTIFICATIONS_QUERY = (
    limit_field(),
    v.Field("state", {"type": "string", "enum": ["pending", "delivered", "failed"]}, notification_state,
            description="Filter by delivery state"),
    NOTIFICATIONS.field("cursor", CURSOR_DESCRIPTION),
)


def filtered(query: Select[Any], given: dict[str, Any], **columns: Any) -> Select[Any]:
    """`query` narrowed to the rows whose column equals each filter given (an empty filter is no filter)."""
    for name, column in columns.items():
        if given[name]:
            query = query.where(column == given[name])
    return query


@bp.get("/payments")
@require_api_key
def list_payments() -> Any:
    given = v.read_fields(PAYMENTS_QUERY, request.args)
    # A merchant's and the console's polling path: one connection, one query, no ORM objects.
    with services().db.statements() as connection:
        return jsonify(payments_page(connection, given, services().links))


@bp.post("/payments/<payment_id>/cancel")
@require_api_key
def cancel(payment_id: str) -> Any:
    no_fields_body()
    with services().db.transaction() as session:
        payment = cancel_payment(session, load_payment(session, payment_id))
        body = serialize_payment(session, payment)
    return jsonify(body)


@bp.get("/payments/<payment_id>/logs")
@require_api_key
def payment_logs(payment_id: str) -> Any:
    with services().db.Session() as session:
        payment = load_payment(session, payment_id)
        logs = session.scalars(
            select(PaymentLog).where(PaymentLog.payment_id == payment.id).order_by(PaymentLog.id)
        )
        return jsonify({"logs": [log_to_dict(e) for e in logs]})


@bp.post("/payments/<payment_id>/callback/retry")
@require_api_key
def retry_callback(payment_id: str) -> Any:
    no_fields_body()
    with services().db.transaction() as session:
        event_id = retry_payment_event(session, load_payment(session, payment_id, for_update=True))
    notify_dispatchers()
    return jsonify({"queued": True, "event_id": event_id}), 202


def retry_payment_event(session: Session, payment: Payment) -> str:
    """Queue the payment's latest event again (the payment locked by the caller); its id. 409 without one."""
    event = queue_retry(session, payment)
    if event is None:
        raise ApiError("no_event", "This payment has no webhook event yet; nothing to send again.", status=409)
    return event.id


# --- transfers and events ----------------------------------------------------------------------

@bp.get("/transfers")
@require_api_key
def list_transfers() -> Any:
    given = v.read_fields(TRANSFERS_QUERY, request.args)
    query = filtered(select(Transfer), given, status=Transfer.status, wallet_address=Transfer.to_address)
    with services().db.Session() as session:
        page = TRANSFERS.page(session, query, given["limit"], given["cursor"])
    return jsonify({"transfers": [transfer_to_dict(t) for t in page.rows], "next_cursor": page.next_cursor})


# --- deposit addresses -------------------------------------------------------------------------


def received_filter(value: str | None) -> bool:
    return v.one_of(value, ("true", "false"), "received") == "true"


ADDRESSES_QUERY = (
    limit_field(),
    ADDRESSES.field("cursor", CURSOR_DESCRIPTION),
    v.Field("received", {"type": "string", "enum": ["true", "false"]}, received_filter,
            description="true: only the addresses some transfer reached"),
)


@bp.get("/addresses")
@require_api_key
def list_addresses() -> Any:
    given = v.read_fields(ADDRESSES_QUERY, request.args)
    with services().db.Session() as session:
        page = ADDRESSES.page(session, taken_query(given["received"]), given["limit"], given["cursor"])
        received = received_by(session, [row.address for row in page.rows])
    return jsonify({"addresses": [render(DEPOSIT_ADDRESS, row, received_usdt=format_amount(received[row.address]))
                                  for row in page.rows], "next_cursor": page.next_cursor})


@bp.get("/events")
@require_api_key
def list_events() -> Any:
    given = v.read_fields(EVENTS_QUERY, request.args)
    query = select(WebhookEvent)
    if given["payment_id"] is not None:
        query = query.where(WebhookEvent.payment_id == given["payment_id"])
    with services().db.Session() as session:
        page = EVENTS.page(session, query, given["limit"], given["after"])
    events = [event_to_dict(e) for e in page.rows]
    # next_cursor ends (null) on the last page, as every list's does; resume_cursor stays, so a merchant polls on.
    return jsonify({"events": events, "next_cursor": page.next_cursor, "has_more": page.has_more,
                    "resume_cursor": page.position})


@bp.get("/notifications")
@require_api_key
def list_notifications() -> Any:
    """The operator notifications (NOTIFY_URLS), newest first: one per event and target, with its delivery state;
    a target is shown as its scheme and fingerprint, never its URL."""
    given = v.read_fields(NOTIFICATIONS_QUERY, request.args)
    query = filtered(select(Notification), given, state=Notification.state)
    with services().db.Session() as session:
        page = NOTIFICATIONS.page(session, query, given["limit"], given["cursor"])
    return jsonify({"notifications": [notification_to_dict(n) for n in page.rows], "next_cursor": page.next_cursor})


@bp.post("/events/<event_id>/retry")
@require_api_key
def retry_event(event_id: str) -> Any:
    no_fields_body()
    with services().db.transaction() as session:
        retry_any_event(session, event_id)
    notify_dispatchers()
    return jsonify({"queued": True, "event_id": event_id}), 202


def retry_any_event(session: Session, event_id: str) -> WebhookEvent:
    """Queue an event again (same id), an account-level one to MERCHANT_WEBHOOK_URL as set now: 404 for an unknown
    id, 409 for an account-level event without a target."""
    wanted = v.event_id(event_id)
    event = find_event(session, wanted) if wanted is not None else None
    if event is None:
        raise ApiError("event_not_found", "No webhook event has this id.", status=404)
    url = retry_target(event, services().config.merchant_webhook_url)
    if url is None:
        raise ApiError("no_webhook_target", "This account-level event has no target: set MERCHANT_WEBHOOK_URL, "
                                            "then retry it.", status=409)
    return requeue(session, event, url)


# --- test webhooks -----------------------------------------------------------------------------

@bp.post("/webhooks/test")
@require_api_key
def test_webhook() -> Any:
    given = v.read_body(v.WEBHOOK_TEST, json_body() if g.raw_body else {})
    url = given["url"] or services().config.merchant_webhook_url
    if url is None:
        raise ApiError("missing_field", "Send url, or set MERCHANT_WEBHOOK_URL to test that one.", "url")
    check_callback_address(url, "url")
    with services().db.transaction() as session:
        event_id = emit_test_event(session, url).id
    notify_dispatchers()
    return jsonify({"queued": True, "event_id": event_id, "url": url}), 202


def notify_dispatchers() -> None:
    """Wake this process's webhook dispatcher, so a queued event goes out now rather than at its next poll."""
    services().wake_dispatcher()


# --- operator routes ---------------------------------------------------------------------------

@bp.get("/health")
def health() -> Any:
    svc = services()
    now = iso(datetime.now(UTC))
    try:
        with svc.db.Session() as session:
            session.execute(text("SELECT 1"))
            counts = read_counts(session).by("payments", PaymentStatus)
            report = read_state(session, WATCHER_STATUS)
            unpriced = unavailable_recently_asked(session, svc.config)
    except Exception as exc:  # any failure to reach the database means unhealthy
        logger.error("health check: database unreachable: %s", exc)
        down = {"status": "unhealthy", "timestamp": now, "network": svc.config.tron_network, "database": "disconnected",
                "active_payments": None, "total_payments": None, "watcher": None, "rates": None}
        return jsonify(render(HEALTH, down)), 503
    watcher, degraded = watcher_health(report, svc.config.polling_interval_seconds)
    up = {"status": "degraded" if degraded or unpriced else "healthy", "timestamp": now,
          "network": svc.config.tron_network, "active_payments": counts["pending"],
          "total_payments": sum(counts.values()), "database": "connected", "watcher": watcher,
          "rates": {"unavailable": unpriced}}
    return jsonify(render(HEALTH, up))


@bp.get("/rates")
@require_api_key
def rates() -> Any:
    """The rates a payment priced in fiat would get now, each source's latest quotes and record (read from the
    database: no source is asked)."""
    svc = services()
    with svc.db.Session() as session:
        return jsonify(render(RATES, rates_report(session, svc.config)))


@bp.get("/stats")
def stats() -> Any:
    svc = services()
    with svc.db.Session() as session:
        counted = read_counts(session)
    counts = counted.by("payments", PaymentStatus)
    webhook_counts = counted.by("webhook_events", EventState)
    values = {
        "total_payments": sum(counts.values()),
        **{f"{status}_payments": n for status, n in counts.items()},
        "uptime_seconds": round(time.time() - svc.started_at, 3),
        "polling_interval": svc.config.polling_interval_seconds,
        "network": svc.config.tron_network,
        "unmatched_transfers": counted.by("transfers", TransferStatus)[TransferStatus.unmatched.value],
        "reconciled_transfers": sum(n for (_, found_by), n in counted.rows("transfers")
                                    if found_by == FOUND_BY_RECONCILIATION),
        "rejected_transfers": sum(n for _, n in counted.rows("rejected_transfers")),
        "webhooks_pending": webhook_counts[EventState.pending.value],
        "webhooks_failed": webhook_counts[EventState.failed.value],
    }
    return jsonify(render(STATS, values))
