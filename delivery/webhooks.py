"""The webhook dispatcher: delivers the outbox's events, signed, and retries them on the schedule.

Events are claimed from the outbox with ``FOR UPDATE SKIP LOCKED`` and a lease, sent on the
dispatcher's own threads (never the watcher's), and the outcome is recorded only while this
dispatcher still holds the lease. Only the oldest pending event of a payment is eligible, so a
payment's events arrive in order; account-level events go each on its own schedule, so one the
receiver refuses never holds up the others. A refused
(non-public) address at delivery is a failed attempt retried on the schedule: DNS may change
back, and the schedule ends it anyway.

Each attempt has a total deadline of WEBHOOK_TIMEOUT_SECONDS (DNS, connect, send, the whole
answer; `outbound.bounded_request`), cut shorter if less of its lease is left, so an attempt
always ends before its lease does and no event is claimed again while its attempt can still be
running. One receiver never occupies every sender: at most `senders - 1` attempts of a
dispatcher go to one receiver (scheme, host and port) at a time.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session
from urllib3.exceptions import NewConnectionError

from database import Database
from delivery.signing import get_signing_secrets, signature_header
from infra import instruments
from infra.config import Config
from infra.notify_targets import WEBHOOK_FAILED
from infra.outbound import BoundedResponse, Resolver, bounded_request, parse_retry_after
from infra.outbox_workers import OutboxWorkers
from infra.retry_schedule import next_delay
from infra.ssrf import PrivateCallbacks, blocked_reason, guarded_session
from infra.times import db_now, iso
from infra.urls import authority
from ledger.events import claim_due, log_event, release_leases, update_payment_summary
from models import TEST_EVENT_TYPE, EventState, Payment, WebhookEvent
from notify.messages import event_facts
from notify.outbox import queue_notification

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024
# A lease covers the attempt's deadline plus this margin for the database work around it. The
# attempt's deadline is also cut to end LEASE_SLACK_SECONDS before the lease does (watchdog latency).
LEASE_MARGIN_SECONDS = 30.0
LEASE_SLACK_SECONDS = 0.5
USER_AGENT = "tron-usdt-monitor-webhooks/1.0"
MAX_ERROR_CHARS = 500


def receiver_of(url: str) -> str:
    """Which receiver an event goes to: its URL's authority, as `events.claim_due` computes it too."""
    return authority(url).lower()


# --- one attempt -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimedEvent:
    seq: int
    id: str
    payment_id: uuid.UUID | None  # None: an account-level event or a test webhook
    type: str
    body: str
    callback_url: str
    lease: str  # this claim's token in leased_by: a later claim, even by this dispatcher, has another
    lease_ends: float = float("inf")  # time.monotonic() by which the lease has surely expired

    @property
    def receiver(self) -> str:
        return receiver_of(self.callback_url)


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: int
    retry_after: float | None = None
    response_excerpt: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def request_headers(event: ClaimedEvent, signing_secrets: list[str], timestamp: int) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(signing_secrets, event.id, timestamp, event.body),
    }


def describe_error(exc: BaseException, timeout: float) -> str:
    blocked = blocked_reason(exc)
    if blocked:
        return blocked if blocked.startswith("callback address refused") else f"callback address refused: {blocked}"
    if isinstance(exc, requests.Timeout):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed: {innermost_reason(exc)}"[:MAX_ERROR_CHARS]
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


def innermost_reason(exc: requests.RequestException) -> str:
    """urllib3's reason without the pool/connection preamble ("[Errno 111] Connection refused")."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, NewConnectionError):
        return str(reason).split("): ", 1)[-1]
    return str(reason or exc)


def response_error(response: BoundedResponse) -> str | None:
    code = response.status_code
    if 200 <= code < 300:
        return None
    if 300 <= code < 400:
        return f"HTTP {code}: redirects are not followed (Location: {response.headers.get('location', '-')})"
    return f"HTTP {code}"


def send_attempt(
    http: requests.Session, event: ClaimedEvent, signing_secrets: list[str], timeout: float
) -> AttemptResult:
    """POST the stored body once, all within `timeout` seconds; never raises for HTTP or network failures."""
    headers = request_headers(event, signing_secrets, int(time.time()))
    started = time.monotonic()
    try:
        response = bounded_request(
            http, "POST", event.callback_url, deadline=timeout, max_bytes=MAX_RESPONSE_BYTES, truncate=True,
            data=event.body.encode("utf-8"), headers=headers, allow_redirects=False,
        )
    except requests.RequestException as exc:
        return AttemptResult(None, describe_error(exc, timeout), elapsed_ms(started))
    code = response.status_code
    retry_after = parse_retry_after(response.headers.get("retry-after")) if code in (429, 503) else None
    excerpt = None if response.ok else response.content[:256].decode("utf-8", "replace")
    return AttemptResult(code, response_error(response), elapsed_ms(started), retry_after, excerpt)


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# --- recording an outcome ----------------------------------------------------------------------

def apply_outcome(event: WebhookEvent, result: AttemptResult, schedule: Sequence[float], now: datetime) -> str:
    """Update the event for one attempt; returns the payment_logs event type."""
    event.attempts += 1
    event.schedule_position += 1
    event.last_status_code = result.status_code
    event.last_error = result.error
    event.lease_until = None
    event.leased_by = None
    if result.ok:
        event.state, event.delivered_at = EventState.delivered, now
        return "webhook_delivered"
    delay = None if result.status_code == 410 else next_delay(schedule, event.schedule_position, result.retry_after)
    if delay is None:
        event.state = EventState.failed
        return "webhook_failed"
    event.next_attempt_at = now + timedelta(seconds=delay)
    return "webhook_attempt"


def outcome_text(event: WebhookEvent, result: AttemptResult, now: datetime) -> str:
    what = f"HTTP {result.status_code}" if result.error is None else result.error
    if event.state == EventState.delivered:
        return f"delivered ({what})"
    if event.state == EventState.failed:
        reason = "410 Gone stops this event" if result.status_code == 410 else "retry schedule exhausted"
        return f"{what}; failed: {reason}"
    return f"{what}; next attempt in {(event.next_attempt_at - now).total_seconds():.0f}s"


def failure_facts(event: WebhookEvent, result: AttemptResult) -> dict[str, Any]:
    """What the operator's `webhook.failed` notification says: the event, its order and page, and why in a few
    words (an HTTP status, or the kind of error: never the receiver's address)."""
    facts = event_facts(event.type, json.loads(event.body).get("data") or {})
    why = f"HTTP {result.status_code}" if result.status_code is not None else (result.error or "").split(":")[0]
    return {"order_id": facts.get("order_id"), "link": facts.get("link"), "webhook_type": event.type,
            "event_id": event.id, "attempts": event.attempts, "error": why}


def attempt_metadata(event_id: str, attempt: int | None, result: AttemptResult) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "event_id": event_id, "attempt": attempt, "status_code": result.status_code,
        "error": result.error, "duration_ms": result.duration_ms,
    }
    if result.response_excerpt:
        meta["response_excerpt"] = result.response_excerpt
    return meta


# --- sending one attempt -----------------------------------------------------------------------

class Sender:
    """Sends one attempt of a claimed event, signed, within what is left of its lease, and records the outcome
    while the lease still holds. Each thread keeps its own HTTP session."""

    def __init__(self, db: Database, config: Config, worker_id: str, resolver: Resolver, lease_slack: float,
                 private_callbacks: PrivateCallbacks) -> None:
        self.db, self.config, self.worker_id = db, config, worker_id
        self.resolver = resolver
        self.private_callbacks = private_callbacks
        self.lease_slack = lease_slack
        self._local = threading.local()

    def http(self, url: str) -> requests.Session:
        """One guarded requests session per thread (sessions are not shared across threads); the sandbox's own
        inbox is reached on this machine (`private_callbacks`, which the composition root sets)."""
        allow_private = self.private_callbacks.allows(url)
        sessions = self._local.__dict__.setdefault("http", {})
        if allow_private not in sessions:
            sessions[allow_private] = guarded_session(allow_private=allow_private, resolver=self.resolver)
        return sessions[allow_private]

    def deliver(self, event: ClaimedEvent) -> AttemptResult | None:
        """One attempt for a claimed event, recorded in one transaction; None when too little of the
        lease was left to send (the lease then runs out and the event is claimed again)."""
        with self.db.transaction() as session:
            signing = get_signing_secrets(session, self.config)
        budget = min(self.config.webhook_timeout_seconds, event.lease_ends - self.lease_slack - time.monotonic())
        if budget <= 0:
            logger.warning("webhook %s (payment %s): its lease ran out before sending; it will be sent again",
                           event.id, event.payment_id)
            return None
        result = send_attempt(self.http(event.callback_url), event, signing, budget)
        self.record(event, result)
        return result

    def record(self, claimed: ClaimedEvent, result: AttemptResult) -> bool:
        """Store the outcome if we still hold the lease; False when another dispatcher took it over."""
        with self.db.transaction() as session:
            # Lock order payment -> event, as the API's manual retry does, so the two cannot deadlock.
            if claimed.payment_id is not None and session.execute(
                select(Payment.id).where(Payment.id == claimed.payment_id).with_for_update()
            ).scalar_one_or_none() is None:
                logger.warning("webhook %s: payment %s was deleted meanwhile", claimed.id, claimed.payment_id)
                return False
            event = session.scalars(
                select(WebhookEvent)
                .where(WebhookEvent.seq == claimed.seq, WebhookEvent.leased_by == claimed.lease)
                .with_for_update()
            ).one_or_none()
            if event is None:
                self._log_stale(session, claimed, result)
                return False
            now = db_now(session)
            log_type = apply_outcome(event, result, self.config.webhook_retry_schedule, now)
            update_payment_summary(session, event)
            message = f"{event.type} event {event.id} attempt {event.attempts}: {outcome_text(event, result, now)}"
            meta = attempt_metadata(event.id, event.attempts, result)
            meta["next_attempt_at"] = iso(event.next_attempt_at) if event.state == EventState.pending else None
            log_event(session, event.payment_id, log_type, message, **meta)
            if log_type == "webhook_failed" and event.type != TEST_EVENT_TYPE:
                queue_notification(session, WEBHOOK_FAILED, failure_facts(event, result), event.payment_id)
        instruments.webhook_attempt(log_type)
        return True

    def _log_stale(self, session: Session, claimed: ClaimedEvent, result: AttemptResult) -> None:
        logger.warning("webhook %s: lease lost to another dispatcher; outcome not recorded", claimed.id)
        message = (
            f"{claimed.type} event {claimed.id}: an attempt by {self.worker_id} ended after its lease was taken "
            f"over ({result.error or f'HTTP {result.status_code}'}); outcome not recorded"
        )
        log_event(session, claimed.payment_id, "webhook_attempt", message, stale=True,
                  **attempt_metadata(claimed.id, None, result))


# --- the dispatcher: claiming, and the sender threads -------------------------------------------

def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[-64:]


class WebhookDispatcher(OutboxWorkers[ClaimedEvent]):
    """Delivers outbox events: a claimer thread plus `webhook_workers` sender threads, or `run_once()`."""

    name = "webhook"

    def __init__(
        self,
        db: Database,
        config: Config,
        *,
        worker_id: str | None = None,
        resolver: Resolver = socket.getaddrinfo,
        poll_interval: float = 1.0,
        lease_margin_seconds: float = LEASE_MARGIN_SECONDS,
        private_callbacks: PrivateCallbacks | None = None,
    ) -> None:
        super().__init__(config.webhook_workers, poll_interval)
        self.db, self.config = db, config
        self.private_callbacks = private_callbacks or PrivateCallbacks(config.allow_private_callbacks)
        self.worker_id = (worker_id or default_worker_id())[:64]
        self.lease_seconds = config.webhook_timeout_seconds + lease_margin_seconds
        self.lease_slack = min(LEASE_SLACK_SECONDS, lease_margin_seconds / 2)
        self.sender = Sender(db, config, self.worker_id, resolver, self.lease_slack, self.private_callbacks)

    def start(self) -> None:
        if not self._threads:
            super().start()
            logger.info("webhook dispatcher %s started with %d senders", self.worker_id, self.workers)

    def stop(self, timeout: float = 10.0) -> None:
        if self._threads:
            super().stop(timeout)
            logger.info("webhook dispatcher %s stopped", self.worker_id)

    def deliver(self, event: ClaimedEvent) -> AttemptResult | None:
        return self.sender.deliver(event)

    def receiver(self, event: ClaimedEvent) -> str:
        return event.receiver

    def claim(self, limit: int, exclude: Sequence[int] = (), busy: Sequence[str] = ()) -> list[ClaimedEvent]:
        """Lease up to `limit` due events (the oldest pending one of each payment) to this dispatcher,
        none for a receiver in `busy`."""
        token = f"{self.worker_id[-50:]}:{secrets.token_hex(6)}"
        # Taken before the claim: the lease, counted from the database's clock inside the claim,
        # surely lasts until lease_ends on this clock.
        lease_ends = time.monotonic() + self.lease_seconds
        with self.db.transaction() as session:
            rows = claim_due(session, limit, self.lease_seconds, token, exclude, busy)
        return [ClaimedEvent(r.seq, r.id, r.payment_id, r.type, r.body, r.callback_url, token, lease_ends)
                for r in rows]

    def release(self, events: Sequence[ClaimedEvent]) -> None:
        """Give leases back unused, so the events can be claimed again at once."""
        if not events:
            return
        with self.db.transaction() as session:
            for token in {e.lease for e in events}:
                seqs = [e.seq for e in events if e.lease == token]
                release_leases(session, seqs, token)
