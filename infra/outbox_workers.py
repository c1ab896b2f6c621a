"""The threads that deliver an outbox (webhook events, operator notifications): a claimer that leases due items while
senders are free, and `workers` sender threads, at most `workers - 1` of them on one receiver at a time, so one slow
or hanging receiver never occupies them all. `run_once()` delivers on the caller's thread instead (tests, tools).

What an outbox is, how its items are claimed, released and sent, is its dispatcher's: a subclass gives `claim`,
`release`, `deliver` and `receiver`. Sessions never cross threads: each call opens its own.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

logger = logging.getLogger(__name__)


class Leased(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=Leased)


class OutboxWorkers(ABC, Generic[Item]):
    """A claimer thread plus `workers` sender threads (`start`), or `run_once()`."""

    name = "outbox"  # the threads' names and the log lines say it

    def __init__(self, workers: int, poll_interval: float) -> None:
        self.workers = max(1, workers)
        self.per_receiver = max(1, self.workers - 1)
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()  # receiver -> items being sent or queued
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    # what a dispatcher gives

    @abstractmethod
    def claim(self, limit: int, exclude: Sequence[int] = (), busy: Sequence[str] = ()) -> list[Item]:
        """Lease up to `limit` due items, none in `exclude` (sequence numbers) nor for a receiver in `busy`."""

    @abstractmethod
    def release(self, items: Sequence[Item]) -> None:
        """Give leases back unused, so the items can be claimed again at once."""

    @abstractmethod
    def deliver(self, item: Item) -> Any:
        """One attempt, recorded."""

    @abstractmethod
    def receiver(self, item: Item) -> str:
        """Whom the item goes to: no more than `per_receiver` of the senders work for one at a time."""

    # lifecycle

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._threads = [threading.Thread(target=self._claim_loop, name=f"{self.name}-claimer", daemon=True)]
        self._threads += [threading.Thread(target=self._send_loop, name=f"{self.name}-sender-{n}", daemon=True)
                          for n in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; senders finish their current attempt (unfinished leases simply expire)."""
        if not self._threads:
            return
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        claimer, senders = self._threads[0], self._threads[1:]
        claimer.join(max(0.0, deadline - time.monotonic()))
        for _ in senders:  # after the claimer: items it queued are still sent
            self._queue.put(None)
        for thread in senders:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def notify(self) -> None:
        """Look for due items now instead of at the next poll (e.g. right after one was written)."""
        self._wake.set()

    def run_once(self, limit: int = 100) -> int:
        """Claim and deliver due items one by one on this thread, each at most once per call; returns the attempts
        made."""
        attempted: list[int] = []
        while len(attempted) < limit:
            claimed = self.claim(1, exclude=attempted)
            if not claimed:
                break
            self.deliver(claimed[0])
            attempted.append(claimed[0].seq)
        return len(attempted)

    # the threads

    def _claim_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                claimed = self._claim_for_free_senders()
            except Exception:  # the database may be briefly unreachable; try again next poll
                logger.exception("claiming %s items failed", self.name)
                claimed = []
            if not claimed:
                self._wake.wait(self.poll_interval)

    def _claim_for_free_senders(self) -> list[Item]:
        with self._lock:
            free = self.workers - sum(self._in_flight.values())
            busy = [receiver for receiver, n in self._in_flight.items() if n >= self.per_receiver]
        if free <= 0 or self._stop.is_set():
            return []
        taken, surplus = self._within_receiver_limit(self.claim(free, busy=busy))
        if surplus:
            self.release(surplus)
        for item in taken:
            self._queue.put(item)
        return taken

    def _within_receiver_limit(self, claimed: list[Item]) -> tuple[list[Item], list[Item]]:
        """(items to send, items over their receiver's share of the senders), counting the kept ones."""
        taken: list[Item] = []
        surplus: list[Item] = []
        with self._lock:
            for item in claimed:
                receiver = self.receiver(item)
                if self._in_flight[receiver] >= self.per_receiver:
                    surplus.append(item)
                    continue
                self._in_flight[receiver] += 1
                taken.append(item)
        return taken, surplus

    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.deliver(item)
            except Exception:  # recorded nowhere: the lease expires and another attempt follows
                logger.exception("%s delivery of %s failed", self.name, item.id)
            finally:
                receiver = self.receiver(item)
                with self._lock:
                    self._in_flight[receiver] -= 1
                    if self._in_flight[receiver] <= 0:
                        del self._in_flight[receiver]
                self._wake.set()
