"""Deadlines for blocking socket work: one watchdog per process for "this socket must be done by T".

A call registers every socket it uses with a `Deadline`; one daemon thread per process (the watchdog, started on
first use, and again in a forked child) shuts those sockets down when the deadline passes, so a blocked connect,
send or recv returns at once. Outbound HTTP (infra/outbound.py) and the database (`database.py` registers libpq's
socket) share it.

The watchdog shuts down a duplicate of each socket's file descriptor: shutdown acts on the
connection, not the descriptor, so the original (plain or TLS-wrapped, even while urllib3 swaps
the plain socket for its TLS wrapper) returns at once, the SSL object is never touched, and a
descriptor number closed and reused meanwhile can never be hit.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class Deadline:
    """A moment (monotonic clock) by which every socket registered here must be done.

    At that moment the watchdog shuts the sockets down. `finish()` ends the watch: it must be
    called once the work is over (a `with watchdog_deadline(...)` block does it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: dict[int, socket.socket] = {}  # socket inode -> our duplicate of it
        self._fired = False
        self._done = False

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        """The deadline has passed (whether or not the watchdog has acted yet)."""
        return self._fired or time.monotonic() >= self.at

    @property
    def fired(self) -> bool:
        """The watchdog has shut the registered sockets down."""
        return self._fired

    @property
    def done(self) -> bool:
        return self._done

    def watch_fd(self, fd: int) -> None:
        """Shut the socket behind `fd` down at the deadline (at once if it has passed)."""
        if fd < 0:
            return
        try:
            inode = os.fstat(fd).st_ino
        except OSError:
            return
        with self._lock:
            if self._done or inode in self._watched:
                return
            duplicate = _duplicate(fd)
            if duplicate is None:
                return
            self._watched[inode] = duplicate
            if self._fired:
                _shut_down(duplicate)

    def watch(self, sock: socket.socket) -> None:
        try:
            fd = sock.fileno()
        except (OSError, ValueError):
            return
        self.watch_fd(fd)

    def fire(self) -> None:
        """Called by the watchdog at the deadline."""
        with self._lock:
            if self._done:
                return
            self._fired = True
            # Under the lock: finish() cannot close a duplicate while it is being shut down.
            for duplicate in self._watched.values():
                _shut_down(duplicate)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            watched, self._watched = self._watched, {}
        for duplicate in watched.values():
            duplicate.close()


def _duplicate(fd: int) -> socket.socket | None:
    """A socket object of our own on a duplicate of `fd`, or None when `fd` is no (open) socket."""
    try:
        copy = os.dup(fd)
    except OSError:
        return None
    try:
        return socket.socket(fileno=copy)
    except OSError:  # not a socket: nothing a shutdown could unblock
        os.close(copy)
        return None


def _shut_down(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed or never connected: nothing is blocked on it
        pass


class Watchdog:
    """One daemon thread and a heap of deadlines; it fires each deadline when its time comes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._compact_at = 1024

    def start(self, seconds: float) -> Deadline:
        deadline = Deadline(seconds)
        with self._wakeup:
            self._compact()
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0][2] is deadline:
                self._wakeup.notify()
        return deadline

    def _compact(self) -> None:
        """Drop finished deadlines once the heap grows: most calls end long before their deadline."""
        if len(self._heap) < self._compact_at:
            return
        self._heap = [entry for entry in self._heap if not entry[2].done]
        heapq.heapify(self._heap)
        self._compact_at = max(1024, 2 * len(self._heap))

    def _run(self) -> None:
        while True:
            with self._wakeup:
                due = self._pop_due()
                if not due:
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wakeup.wait(wait)
                    continue
            for deadline in due:
                try:
                    deadline.fire()
                except Exception:  # never let one deadline stop the watchdog
                    logger.exception("deadline watchdog could not shut a socket down")

    def _pop_due(self) -> list[Deadline]:
        now = time.monotonic()
        due = []
        while self._heap and self._heap[0][0] <= now:
            deadline = heapq.heappop(self._heap)[2]
            if not deadline.done:
                due.append(deadline)
        return due


_watchdog = Watchdog()


def _new_watchdog_after_fork() -> None:
    """A forked child (a gunicorn worker) has no watchdog thread: it starts its own on first use."""
    global _watchdog
    _watchdog = Watchdog()


os.register_at_fork(after_in_child=_new_watchdog_after_fork)


def start_deadline(seconds: float) -> Deadline:
    """A new deadline `seconds` from now, watched by this process's watchdog; call `finish()` after."""
    return _watchdog.start(seconds)


@contextmanager
def watchdog_deadline(seconds: float) -> Iterator[Deadline]:
    deadline = start_deadline(seconds)
    try:
        yield deadline
    finally:
        deadline.finish()


# --- the deadline of the HTTP call this thread is making ---------------------------------------

_calls = threading.local()


def current_call_deadline() -> Deadline | None:
    return getattr(_calls, "deadline", None)


@contextmanager
def call_deadline(deadline: Deadline) -> Iterator[None]:
    previous = current_call_deadline()
    _calls.deadline = deadline
    try:
        yield
    finally:
        _calls.deadline = previous


