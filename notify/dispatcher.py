"""The notification dispatcher: delivers the notifications' outbox through Apprise, on its own threads, its own
retry schedule (`notify_retry_schedule`), deadline (`notify_timeout_seconds`) and number of senders
(`notify_workers`), so a target that hangs never holds up a webhook or the watcher.

Claimed with ``FOR UPDATE SKIP LOCKED`` and a lease, as webhook events are; at most `notify_workers - 1` attempts
to one target at a time in a process (one when there are two senders, the default), so a hanging target never
holds every sender. The lease covers the attempt's deadline (the child
process is ended then) and a margin, so no notification is claimed again while its attempt can still run; a
restart leaves the rows pending, and the lease of an interrupted attempt simply runs out.
"""
from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from database import Database
from infra import instruments
from infra.config import Config
from infra.notify_targets import NotifyTarget
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


class NotificationDispatcher:
    """A claimer thread and `notify_workers` sender threads (`start`), or `run_once()` for a single pass."""

    def __init__(self, db: Database, config: Config, *, poll_interval: float = 1.0,
                 lease_margin_seconds: float = LEASE_MARGIN_SECONDS) -> None:
        self.db, self.config = db, config
        self.settings = NotifySettings.of(config)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[-40:]
        self.poll_interval = poll_interval
        self.lease_seconds = config.notify_timeout_seconds + lease_margin_seconds
        self.workers = max(1, config.notify_workers)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self.per_target = max(1, self.workers - 1)
        self._in_flight: Counter[str] = Counter()  # target -> attempts queued or running here
        self._queue: queue.Queue[Claimed | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    # lifecycle

    def start(self) -> None:
        if self._threads or not self.settings.targets:
            return
        self._stop.clear()
        self._threads = [threading.Thread(target=self._claim_loop, name="notify-claimer", daemon=True)]
        self._threads += [threading.Thread(target=self._send_loop, name=f"notify-sender-{n}", daemon=True)
                          for n in range(self.workers)]
        for thread in self._threads:
            thread.start()
        logger.info("notification dispatcher started: %d target(s) (%s), %d senders", len(self.settings.targets),
                    ", ".join(t.scheme for t in self.settings.targets), self.workers)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; an attempt under way ends by its deadline, and an unfinished one's lease runs out."""
        if not self._threads:
            return
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        claimer, senders = self._threads[0], self._threads[1:]
        claimer.join(max(0.0, deadline - time.monotonic()))
        for _ in senders:
            self._queue.put(None)
        for thread in senders:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def notify(self) -> None:
        """Look for due notifications now rather than at the next poll."""
        self._wake.set()

    def run_once(self, limit: int = 100) -> int:
        """Claim and send due notifications one by one on this thread, each at most once per call; returns the
        attempts made."""
        attempted: list[int] = []
        while len(attempted) < limit:
            claimed = self.claim(1, exclude=attempted)
            if not claimed:
                break
            self.deliver(claimed[0])
            attempted.append(claimed[0].seq)
        return len(attempted)

    # claiming

    def claim(self, limit: int, busy: Sequence[str] = (), exclude: Sequence[int] = ()) -> list[Claimed]:
        token = f"{self.worker_id}:{secrets.token_hex(6)}"
        with self.db.transaction() as session:
            rows = claim_due(session, limit, self.lease_seconds, token, busy, exclude)
        return [Claimed(r.seq, r.id, r.event_type, r.target, r.scheme, r.title, r.body, token) for r in rows]

    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                claimed = self._claim_for_free_targets()
            except Exception:  # the database may be briefly unreachable; try again next poll
                logger.exception("claiming notifications failed")
                claimed = []
            if not claimed:
                self._wake.wait(self.poll_interval)

    def _claim_for_free_targets(self) -> list[Claimed]:
        with self._lock:
            free = self.workers - sum(self._in_flight.values())
            busy = sorted(t for t, n in self._in_flight.items() if n >= self.per_target)
        if free <= 0 or self._stop.is_set():
            return []
        claimed = self.claim(free, busy)
        taken, surplus = [], []
        with self._lock:
            for item in claimed:
                full = self._in_flight[item.target] >= self.per_target
                (surplus if full else taken).append(item)
                if not full:
                    self._in_flight[item.target] += 1
        if surplus:  # more rows of one target than its share: they wait for the next claim
            with self.db.transaction() as session:
                release(session, [item.seq for item in surplus], surplus[0].lease)
        for item in taken:
            self._queue.put(item)
        return taken

    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.deliver(item)
            except Exception:  # recorded nowhere: the lease runs out and another attempt follows
                logger.exception("notification %s (%s) failed", item.id, item.event_type)
            finally:
                with self._lock:
                    self._in_flight[item.target] -= 1
                    if self._in_flight[item.target] <= 0:
                        del self._in_flight[item.target]
                self._wake.set()

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
