"""The dashboard's pages: the overview, payments (list, search, one payment with its buttons), transfers (assign),
events (retry), rates and API keys. Each action goes through the function the API or the CLI uses, and writes its
audit row naming the admin (console.audit) in the same transaction."""
from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Response, redirect, request
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from console.audit import record_action
from console.totals import last_days
from infra.addresses import is_valid_address
from infra.money import format_amount
from ledger import matching
from ledger.payments import cancel_payment
from ledger.service_state import WATCHER_STATUS, read_state
from ledger.stats import read_counts
from models import EventState, Payment, PaymentLog, PaymentStatus, Transfer, TransferStatus, WebhookEvent
from rates.store import rates_report, unavailable_recently_asked
from web import validation as v
from web.admin.chart import chart_svg
from web.admin.common import HOME, admin, page, problem, safe_next, text_field
from web.api import load_payment, notify_dispatchers, retry_any_event, retry_payment_event
from web.auth import ApiKeyError, create_api_key, list_api_keys, revoke_api_key
from web.errors import ApiError
from web.health import watcher_health
from web.pages import catalogue
from web.paging import Keyset, number_key
from web.schemas import PAYMENTS, TRANSFERS
from web.services import services

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
EVENTS = Keyset((number_key(WebhookEvent.seq),), newest_first=True)
TX_HASH = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
EXPLORERS = {"mainnet": "https://tronscan.org/#/transaction/", "nile": "https://nile.tronscan.org/#/transaction/",
             "shasta": "https://shasta.tronscan.org/#/transaction/"}
WEBHOOK_LOG_TYPES = ("webhook_attempt", "webhook_delivered", "webhook_failed")


def explorer() -> str | None:
    """The block explorer's transaction link prefix of the configured network (none for the sandbox's chain)."""
    return EXPLORERS.get(services().config.tron_network)


# --- overview ------------------------------------------------------------------------------------------------

def overview() -> Response:
    svc = services()
    with svc.db.Session() as session:
        counted = read_counts(session)
        payments = counted.by("payments", PaymentStatus)
        webhooks = counted.by("webhook_events", EventState)
        transfers = counted.by("transfers", TransferStatus)
        report = read_state(session, WATCHER_STATUS)
        unpriced = unavailable_recently_asked(session, svc.config)
        days = last_days(session, datetime.now(UTC).date())
    watcher, degraded = watcher_health(report, svc.config.polling_interval_seconds)
    return page("admin/overview.html", health="degraded" if degraded or unpriced else "healthy", watcher=watcher,
                network=svc.config.tron_network, payments=payments, total=sum(payments.values()), webhooks=webhooks,
                transfers=transfers, days=days, chart=chart_svg(days, catalogue()),
                credited_total=format_amount(sum((d.usdt for d in days), start=0)),
                created_total=sum(d.payments for d in days), fmt=format_amount)


# --- payments ------------------------------------------------------------------------------------------------

def day_arg(name: str) -> date | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError("invalid_date", catalogue()["admin_bad_date"], name) from None


def search(query: Select[Any], q: str) -> Select[Any]:
    """By transaction hash (a transfer credited to the payment), by address, or by order id, as the text looks."""
    if TX_HASH.fullmatch(q):
        tx = q.lower().removeprefix("0x")
        return query.where(Payment.id.in_(select(Transfer.payment_id).where(Transfer.transaction_hash == tx)))
    if is_valid_address(q):
        return query.where(Payment.wallet_address == q)
    return query.where(Payment.order_id == q)


def payments_query() -> tuple[Select[Any], dict[str, Any]]:
    status = request.args.get("status") or ""
    if status and status not in PaymentStatus.__members__:
        raise ApiError("invalid_status", catalogue()["admin_bad_status"], "status")
    start, end, q = day_arg("from"), day_arg("to"), text_field(request.args.get("q"), 128)
    query = select(Payment)
    if status:
        query = query.where(Payment.status == PaymentStatus(status))
    if start:
        query = query.where(Payment.created_at >= datetime(start.year, start.month, start.day, tzinfo=UTC))
    if end and end < date.max:
        query = query.where(Payment.created_at < datetime(end.year, end.month, end.day, tzinfo=UTC)
                            + timedelta(days=1))
    if q:
        query = search(query, q)
    return query, {"status": status, "from": start.isoformat() if start else "", "to": end.isoformat() if end else "",
                   "q": q}


def payments() -> Response:
    q = text_field(request.args.get("q"), 128)
    if v.payment_uuid(q) is not None:
        return redirect(f"{HOME}/payments/{q}", 303)  # type: ignore[return-value]
    query, filters = payments_query()
    cursor = PAYMENTS.cursor(request.args.get("cursor") or None)
    with services().db.Session() as session:
        found = PAYMENTS.page(session, query, PAGE_SIZE, cursor)
    more = {k: value for k, value in filters.items() if value}
    return page("admin/payments.html", rows=found.rows, filters=filters, statuses=list(PaymentStatus.__members__),
                next_cursor=found.next_cursor, more=more, fmt=format_amount)


def attempts_of(session: Session, payment_id: uuid.UUID) -> list[PaymentLog]:
    return list(session.scalars(select(PaymentLog).where(
        PaymentLog.payment_id == payment_id, PaymentLog.event_type.in_(WEBHOOK_LOG_TYPES)).order_by(PaymentLog.id)))


def payment(payment_id: str) -> Response:
    with services().db.Session() as session:
        found = load_payment(session, payment_id)
        transfers = list(session.scalars(select(Transfer).where(Transfer.payment_id == found.id)
                                         .order_by(Transfer.block_number, Transfer.log_index)))
        logs = list(session.scalars(select(PaymentLog).where(PaymentLog.payment_id == found.id)
                                    .order_by(PaymentLog.id)))
        events = list(session.scalars(select(WebhookEvent).where(WebhookEvent.payment_id == found.id)
                                      .order_by(WebhookEvent.seq)))
        session.expunge_all()
    attempts = [entry for entry in logs if entry.event_type in WEBHOOK_LOG_TYPES]
    cancellable = found.status == PaymentStatus.pending and found.received_amount_usdt == 0
    return page("admin/payment.html", p=found, transfers=transfers, logs=logs, events=events, attempts=attempts,
                cancellable=cancellable, explorer=explorer(), fmt=format_amount, done=request.args.get("done"))


def retry_payment(payment_id: str) -> Response:
    with services().db.transaction() as session:
        found = load_payment(session, payment_id, for_update=True)
        event_id = retry_payment_event(session, found)
        record_action(session, admin().admin_name, "webhook_retry", f"queued event {event_id} again", found.id,
                      event_id=event_id)
    notify_dispatchers()
    return redirect(f"{HOME}/payments/{payment_id}?done=retried", 303)  # type: ignore[return-value]


def cancel(payment_id: str) -> Response:
    with services().db.transaction() as session:
        found = cancel_payment(session, load_payment(session, payment_id))
        record_action(session, admin().admin_name, "cancel", "cancelled the payment", found.id)
    notify_dispatchers()
    return redirect(f"{HOME}/payments/{payment_id}?done=cancelled", 303)  # type: ignore[return-value]


# --- transfers -----------------------------------------------------------------------------------------------

def transfers() -> Response:
    status = request.args.get("status") or TransferStatus.unmatched.value
    if status not in (TransferStatus.unmatched.value, TransferStatus.set_aside.value):
        raise ApiError("invalid_status", catalogue()["admin_bad_status"], "status")
    cursor = TRANSFERS.cursor(request.args.get("cursor") or None)
    with services().db.Session() as session:
        found = TRANSFERS.page(session, select(Transfer).where(Transfer.status == TransferStatus(status)),
                               PAGE_SIZE, cursor)
    return page("admin/transfers.html", rows=found.rows, shown=status, next_cursor=found.next_cursor,
                explorer=explorer(), fmt=format_amount, error=None)


def assign(transfer_id: str) -> Response:
    """Credit an unmatched transfer to a payment: `db_manager.py assign-transfer`'s function, then the audit row."""
    pid = v.payment_uuid(text_field(request.form.get("payment_id"), 64))
    number = v.ascii_number(transfer_id, v.MAX_BIGINT)
    if pid is None or number is None:
        return problem(400, catalogue()["admin_bad_payment_id"])
    config = services().config
    try:
        with services().db.transaction() as session:
            transfer = session.get(Transfer, number)
            if transfer is None or transfer.log_index is None:
                return problem(404, catalogue()["admin_no_transfer"])
            ref = f"{transfer.transaction_hash}:{transfer.log_index}"
            matching.assign_transfer(session, transfer.transaction_hash, transfer.log_index, pid,
                                     config.late_payment_window_seconds, config.merchant_webhook_url)
            record_action(session, admin().admin_name, "assign", f"assigned transfer {ref} to this payment", pid,
                          transaction_hash=transfer.transaction_hash, log_index=transfer.log_index)
    except matching.AssignError as exc:
        return problem(409, str(exc))
    notify_dispatchers()
    return redirect(f"{HOME}/payments/{pid}?done=assigned", 303)  # type: ignore[return-value]


# --- events --------------------------------------------------------------------------------------------------

def events() -> Response:
    state = request.args.get("state") or ""
    if state and state not in EventState.__members__:
        raise ApiError("invalid_state", catalogue()["admin_bad_status"], "state")
    query = select(WebhookEvent)
    if state:
        query = query.where(WebhookEvent.state == EventState(state))
    cursor = EVENTS.cursor(request.args.get("cursor") or None)
    with services().db.Session() as session:
        found = EVENTS.page(session, query, PAGE_SIZE, cursor)
    return page("admin/events.html", rows=found.rows, state=state, states=list(EventState.__members__),
                next_cursor=found.next_cursor, done=request.args.get("done"))


def retry_event(event_id: str) -> Response:
    with services().db.transaction() as session:
        event = retry_any_event(session, event_id)
        record_action(session, admin().admin_name, "webhook_retry", f"queued event {event.id} again",
                      event.payment_id, event_id=event.id)
    notify_dispatchers()
    back = safe_next(request.form.get("back")) if request.form.get("back") else f"{HOME}/events"
    return redirect(back + ("&" if "?" in back else "?") + "done=retried", 303)  # type: ignore[return-value]


# --- rates ---------------------------------------------------------------------------------------------------

def rates() -> Response:
    svc = services()
    with svc.db.Session() as session:
        report = rates_report(session, svc.config)
    return page("admin/rates.html", report=report)


# --- API keys ------------------------------------------------------------------------------------------------

def keys_page(created: str | None = None, error: str | None = None, status: int = 200) -> Response:
    with services().db.Session() as session:
        rows = list_api_keys(session)
    return page("admin/keys.html", status, rows=rows, created=created, error=error,
                configured=len(services().config.api_keys))


def keys() -> Response:
    return keys_page()


def create_key() -> Response:
    name = text_field(request.form.get("name"), 128) or None
    with services().db.transaction() as session:
        made = create_api_key(session, name)
        record_action(session, admin().admin_name, "api_key_created", f"created API key {made.prefix}",
                      prefix=made.prefix)
    return keys_page(created=made.key)  # shown once: this answer is not stored or cached


def revoke_key() -> Response:
    prefix = text_field(request.form.get("prefix"), 64)
    try:
        with services().db.transaction() as session:
            revoke_api_key(session, prefix)
            record_action(session, admin().admin_name, "api_key_revoked", f"revoked API key {prefix}", prefix=prefix)
    except ApiKeyError as exc:
        return keys_page(error=str(exc), status=409)
    return redirect(f"{HOME}/keys", 303)  # type: ignore[return-value]


ROUTES = (
    ("", "overview", overview, ("GET",)),
    ("/payments", "payments", payments, ("GET",)),
    ("/payments/<payment_id>", "payment", payment, ("GET",)),
    ("/payments/<payment_id>/retry", "retry_payment", retry_payment, ("POST",)),
    ("/payments/<payment_id>/cancel", "cancel", cancel, ("POST",)),
    ("/transfers", "transfers", transfers, ("GET",)),
    ("/transfers/<transfer_id>/assign", "assign", assign, ("POST",)),
    ("/events", "events", events, ("GET",)),
    ("/events/<event_id>/retry", "retry_event", retry_event, ("POST",)),
    ("/rates", "rates", rates, ("GET",)),
    ("/keys", "keys", keys, ("GET",)),
    ("/keys", "create_key", create_key, ("POST",)),
    ("/keys/revoke", "revoke_key", revoke_key, ("POST",)),
)
