"""The notification dispatcher: delivers the notifications' outbox through Apprise, on its own threads, its own
retry schedule (`notify_retry_schedule`), deadline (`notify_timeout_seconds`) and number of senders
(`notify_workers`), so a target that hangs never holds up a webhook or the watcher.

Claimed with ``FOR UPDATE SKIP LOCKED`` and a lease, as webhook events are, and sent by the same threads
(`infra.outbox_workers`): at most `notify_workers - 1` attempts to one target at a time in a process (one with two
senders, the default), so a hanging target never holds every sender. The lease covers the attempt's deadline (the
child process is ended then) and a margin, so no notification is claimed again while its attempt can still run; a
restart leaves the rows pending, and the lease of an interrupted attempt simply runs out.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from database import Database
from infra import instruments
from infra.config import Config
from infra.notify_targets import NotifyTarget
from infra.outbox_workers import OutboxWorkers
from infra.retry_schedule import next_delay
from infra.times import db_now
from notify.outbox import NotifySettings, apply_attempt, claim_due, leased, release
from notify.sending import SendResult, send_once

logger = logging.getLogger(__name__)

LEASE_MARGIN_SECONDS = 30.0
GONE = "its target is no longer in NOTIFY_URLS"


@dataclass(frozen=True)
class Claimed:
    seq: int
    id: str
    event_type: str
    target: str  # the target's fingerprint
    scheme: str
    title: str
    body: str
    lease: str


class NotificationDispatcher(OutboxWorkers[Claimed]):
    """A claimer and `notify_workers` sender threads (`start`), or `run_once()`. Started without NOTIFY_URLS too: a
    notification still pending from when a target was set then fails ("no longer in NOTIFY_URLS"), never waits on."""

    name = "notify"

    def __init__(self, db: Database, config: Config, *, poll_interval: float = 1.0,
                 lease_margin_seconds: float = LEASE_MARGIN_SECONDS) -> None:
        super().__init__(config.notify_workers, poll_interval)
        self.db, self.config = db, config
        self.settings = NotifySettings.of(config)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[-40:]
        self.lease_seconds = config.notify_timeout_seconds + lease_margin_seconds

    def start(self) -> None:
        if self._threads:
            return
        super().start()
        logger.info("notification dispatcher started: %d target(s) (%s), %d senders", len(self.settings.targets),
                    ", ".join(t.scheme for t in self.settings.targets), self.workers)

    def receiver(self, item: Claimed) -> str:
        return item.target

    def claim(self, limit: int, exclude: Sequence[int] = (), busy: Sequence[str] = ()) -> list[Claimed]:
        token = f"{self.worker_id}:{secrets.token_hex(6)}"
        with self.db.transaction() as session:
            rows = claim_due(session, limit, self.lease_seconds, token, busy, exclude)
        return [Claimed(r.seq, r.id, r.event_type, r.target, r.scheme, r.title, r.body, token) for r in rows]

    def release(self, items: Sequence[Claimed]) -> None:
        with self.db.transaction() as session:
            for token in {item.lease for item in items}:
                release(session, [item.seq for item in items if item.lease == token], token)

    # sending

    def deliver(self, item: Claimed) -> SendResult:
        """One attempt, recorded in one transaction while the lease holds."""
        target = self.settings.target(item.target)
        if target is None:
            result = SendResult(False, GONE, 0)
        else:
            result = send_once(target, item.title, item.body, self.config.notify_timeout_seconds)
        self.record(item, target, result)
        return result

    def record(self, item: Claimed, target: NotifyTarget | None, result: SendResult) -> None:
        with self.db.transaction() as session:
            row = leased(session, item.seq, item.lease)
            if row is None:
                logger.warning("notification %s: lease lost; outcome not recorded", item.id)
                return
            delay = None if target is None else next_delay(self.config.notify_retry_schedule, row.attempts + 1, None)
            apply_attempt(row, result.ok, result.error, delay, db_now(session))
            state, attempts = row.state.value, row.attempts
        outcome = "delivered" if result.ok else "failed" if state == "failed" else "retrying"
        instruments.notification_attempt(outcome)
        log = logger.info if result.ok else logger.warning
        log("notification %s (%s) to %s: attempt %d %s in %d ms%s", item.id, item.event_type, item.scheme,
            attempts, outcome, result.duration_ms, "" if result.ok else f": {result.error}")
