"""Injected upstream faults: rate limits, errors, slowness and misbehaving filters.

Rate-limit texts are TronGrid's (TronGrid docs, see the captures README): 429 or 403 with
``{"Error": "The key exceeds the frequency limit(15), and the query server is suspended for 30s"}``;
an over-quota key: 403 with ``Exceed the user daily usage``.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass

RESPONSE_KINDS = ("429", "403_suspended", "403_daily", "500", "503", "error_200", "not_json")
BEHAVIOUR_KINDS = ("ignore_contract_filter", "hide_unconfirmed_flag")
FAULT_KINDS = RESPONSE_KINDS + ("slow",) + BEHAVIOUR_KINDS


@dataclass
class Fault:
    kind: str
    remaining: int | None  # None: until cleared
    seconds: float | None = None
    path_prefix: str | None = None

    def matches(self, path: str) -> bool:
        return self.path_prefix is None or path.startswith(self.path_prefix)


@dataclass(frozen=True)
class CannedResponse:
    status: int
    body: bytes
    content_type: str = "application/json"


def format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def suspended_message(seconds: float) -> str:
    return ("The key exceeds the frequency limit(15), and the query server is suspended for "
            f"{format_seconds(seconds)}s")


DAILY_MESSAGE = "Exceed the user daily usage (100000), the maximum query frequency is 1 time per second"


def canned_response(fault: Fault) -> CannedResponse:
    seconds = 1.0 if fault.seconds is None else fault.seconds
    kind = fault.kind
    if kind == "429":
        return _error_json(429, suspended_message(seconds))
    if kind == "403_suspended":
        return _error_json(403, suspended_message(seconds))
    if kind == "403_daily":
        return _error_json(403, DAILY_MESSAGE)
    if kind == "500":
        return _error_json(500, "Internal Server Error")
    if kind == "503":
        return CannedResponse(503, b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
                              "text/html")
    if kind == "error_200":
        return _error_json(200, "class org.tron.core.exception.StoreException : simulated node error")
    if kind == "not_json":
        return CannedResponse(200, b"<html><head><title>Maintenance</title></head><body>Be right back</body></html>",
                              "text/html")
    raise ValueError(f"{kind} is not a response fault")


def _error_json(status: int, message: str) -> CannedResponse:
    return CannedResponse(status, json.dumps({"Error": message}).encode())


class FaultBook:
    """The active faults; each request consumes the faults that apply to it (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, kind: str, count: int | None = 1, *, seconds: float | None = None,
            path_prefix: str | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 or None")
        if seconds is not None and seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._faults.append(Fault(kind, count, seconds, path_prefix))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[dict[str, object]]:
        with self._lock:
            return [{"kind": f.kind, "count": f.remaining, "seconds": f.seconds, "path_prefix": f.path_prefix}
                    for f in self._faults]

    def take_delay(self, path: str) -> float:
        """Total seconds of ``slow`` faults that apply to this request."""
        with self._lock:
            taken = self._take(path, ("slow",), first_only=False)
        return sum(1.0 if f.seconds is None else f.seconds for f in taken)

    def take_response(self, path: str) -> CannedResponse | None:
        with self._lock:
            taken = self._take(path, RESPONSE_KINDS, first_only=True)
        return canned_response(taken[0]) if taken else None

    def take_behaviours(self, path: str) -> set[str]:
        with self._lock:
            return {f.kind for f in self._take(path, BEHAVIOUR_KINDS, first_only=False)}

    def _take(self, path: str, kinds: tuple[str, ...], *, first_only: bool) -> list[Fault]:
        taken: list[Fault] = []
        for fault in list(self._faults):
            if fault.kind not in kinds or not fault.matches(path):
                continue
            taken.append(fault)
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            if first_only:
                break
        return taken
