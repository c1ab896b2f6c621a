"""Injected upstream faults: rate limits, errors, slowness, hostile answers, head lies and listing oddities.

Every fault has a ``count`` (how many matching requests it affects; None: until cleared) and an optional
``path_prefix``. The real texts and where they come from:

* ``429``: ``{"Error": "The key exceeds the frequency limit(15), and the query server is suspended for 27 s"}``:
  TronGrid's documented text (developers.tron.network, "Rate Limits"), with the space before ``s`` that its
  answers carry today (the ``allowed_rps`` text below has it too). On ``/v1/...`` TronGrid wraps it as
  ``{"Success": false, "Error": ..., "StatusCode": 429}`` (same page, "v1 interface").
* ``429_allowed_rps``: ``request rate exceeded the allowed_rps(3), and the query server is suspended for 5 s``
  (iexbase/tron-api issue 171 quotes it with ``allowed_rps(10)``; keyless TronGrid).
* ``403_suspended``: the documented 403 for requests without a key, spelled as documented: ``... suspended for
  30s`` (TronGrid docs).
* ``403_daily``: ``Exceed the user daily usage (100000), the maximum query frequency is 1 time per second``
  (the text tronpy's ``HTTPProvider`` looks for on a 403).
* ``503``: TronGrid's rate-limit answer, an openresty HTML page (tronprotocol/tronweb issue 237: "503 means you
  exceeded the TRONGRID request limits"; tronprotocol/trident issue 98: ``server=openresty``,
  ``content-type=text/html``).
* ``lack_of_resources``: java-tron's non-blocking rate limiter, HTTP 200 with
  ``{"Error":"class java.lang.IllegalAccessException : lack of computing resources"}`` (java-tron
  ``RateLimiterServlet``; documentation-en ``api/http/index.md``).
* ``500``, ``error_200`` (a node exception as HTTP 200 ``{"Error": ...}``), ``not_json`` (an HTML page).

``retry_after`` (seconds) adds a ``Retry-After`` header to any of these, so both variants can be tested.

Hostile answers, for a client's deadline and size cap: ``drip`` (the real answer, one byte every ``seconds``,
default 1), ``endless`` (a chunked answer that never ends; a chunk every ``seconds``, default 0.05, until the
client goes away), ``huge`` (a valid JSON answer of ``size`` bytes, default 50 MB, streamed from a fixed buffer).
``slow`` delays the answer by ``seconds``.

Head lies (one-shot with the default ``count`` of 1), on ``getnowblock`` (``/wallet`` and ``/walletsolidity``):
``head_future`` (the real head, its timestamp ``seconds`` ahead, default ten years), ``head_ahead`` /
``head_behind`` (a head ``blocks`` ahead / behind, default 300, number, id and timestamp consistent).

Listing behaviours, on ``/v1``: ``ignore_contract_filter``, ``hide_unconfirmed_flag`` (only_confirmed ignored),
``blank_token_info`` (every record's ``token_info`` is ``{}``, as seen in TRON-US/trongrid-js issue 41).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

RESPONSE_KINDS = ("429", "429_allowed_rps", "403_suspended", "403_daily", "500", "503", "error_200",
                  "lack_of_resources", "not_json")
STREAM_KINDS = ("drip", "endless", "huge")
HEAD_KINDS = ("head_future", "head_ahead", "head_behind")
BEHAVIOUR_KINDS = ("ignore_contract_filter", "hide_unconfirmed_flag", "blank_token_info")
FAULT_KINDS = RESPONSE_KINDS + ("slow",) + STREAM_KINDS + HEAD_KINDS + BEHAVIOUR_KINDS

TEN_YEARS_SECONDS = 10 * 365 * 86400
DEFAULT_SECONDS = {"drip": 1.0, "endless": 0.05, "head_future": float(TEN_YEARS_SECONDS), "slow": 1.0}
DEFAULT_HEAD_BLOCKS = 300
DEFAULT_HUGE_SIZE = 50 * 1024 * 1024
MIN_HUGE_SIZE = 1024
DAILY_MESSAGE = "Exceed the user daily usage (100000), the maximum query frequency is 1 time per second"
LACK_OF_RESOURCES = "class java.lang.IllegalAccessException : lack of computing resources"
MAINTENANCE_PAGE = b"<html><head><title>Maintenance</title></head><body>Be right back</body></html>"
OPENRESTY_503 = (b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
                 b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
                 b"<hr><center>openresty</center>\r\n</body>\r\n</html>\r\n")


@dataclass
class Fault:
    kind: str
    remaining: int | None  # None: until cleared
    seconds: float | None = None
    path_prefix: str | None = None
    blocks: int | None = None
    size: int | None = None
    retry_after: float | None = None

    def matches(self, path: str) -> bool:
        if self.kind in HEAD_KINDS and not path.rstrip("/").endswith("/getnowblock"):
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)

    def duration(self) -> float:
        return DEFAULT_SECONDS.get(self.kind, 1.0) if self.seconds is None else self.seconds

    def head_blocks(self) -> int:
        return DEFAULT_HEAD_BLOCKS if self.blocks is None else self.blocks

    def huge_size(self) -> int:
        return DEFAULT_HUGE_SIZE if self.size is None else self.size

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": self.remaining, "seconds": self.seconds, "path_prefix": self.path_prefix,
                "blocks": self.blocks, "size": self.size, "retry_after": self.retry_after}


@dataclass(frozen=True)
class CannedResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def suspended_message(seconds: float, spaced: bool = True) -> str:
    unit = " s" if spaced else "s"
    return ("The key exceeds the frequency limit(15), and the query server is suspended for "
            f"{format_seconds(seconds)}{unit}")


def allowed_rps_message(seconds: float) -> str:
    return ("request rate exceeded the allowed_rps(3), and the query server is suspended for "
            f"{format_seconds(seconds)} s")


def canned_response(fault: Fault, path: str) -> CannedResponse:
    seconds = 1.0 if fault.seconds is None else fault.seconds
    headers: tuple[tuple[str, str], ...] = ()
    if fault.retry_after is not None:
        headers = (("Retry-After", format_seconds(fault.retry_after)),)
    v1 = path.startswith("/v1/")
    kind = fault.kind
    if kind == "429":
        response = _error_json(429, suspended_message(seconds), v1)
    elif kind == "429_allowed_rps":
        response = _error_json(429, allowed_rps_message(seconds), v1)
    elif kind == "403_suspended":
        response = _error_json(403, suspended_message(seconds, spaced=False), v1)
    elif kind == "403_daily":
        response = _error_json(403, DAILY_MESSAGE, v1)
    elif kind == "500":
        response = _error_json(500, "Internal Server Error", False)
    elif kind == "503":
        response = CannedResponse(503, OPENRESTY_503, "text/html", (("Server", "openresty"),))
    elif kind == "error_200":
        response = _error_json(200, "class org.tron.core.exception.StoreException : simulated node error", False)
    elif kind == "lack_of_resources":
        response = _error_json(200, LACK_OF_RESOURCES, False)
    elif kind == "not_json":
        response = CannedResponse(200, MAINTENANCE_PAGE, "text/html")
    else:
        raise ValueError(f"{kind} is not a response fault")
    return CannedResponse(response.status, response.body, response.content_type, response.headers + headers)


def _error_json(status: int, message: str, v1: bool) -> CannedResponse:
    payload: dict[str, Any] = {"Success": False, "Error": message, "StatusCode": status} if v1 else {"Error": message}
    return CannedResponse(status, json.dumps(payload).encode())


def _check_number(name: str, value: object, minimum: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{name} must be a number >= {format_seconds(minimum)}")


class FaultBook:
    """The active faults; each request consumes the faults that apply to it (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, kind: str, count: int | None = 1, *, seconds: float | None = None, path_prefix: str | None = None,
            blocks: int | None = None, size: int | None = None, retry_after: float | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if count is not None and (type(count) is not int or count < 1):
            raise ValueError("count must be an integer >= 1, or None")
        _check_number("seconds", seconds, 0)
        _check_number("retry_after", retry_after, 0)
        if blocks is not None and (type(blocks) is not int or blocks < 1):
            raise ValueError("blocks must be an integer >= 1")
        if size is not None and (type(size) is not int or size < MIN_HUGE_SIZE):
            raise ValueError(f"size must be an integer >= {MIN_HUGE_SIZE}")
        if path_prefix is not None and not isinstance(path_prefix, str):
            raise ValueError("path_prefix must be a string")
        with self._lock:
            self._faults.append(Fault(kind, count, seconds, path_prefix, blocks, size, retry_after))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.describe() for f in self._faults]

    def take_delay(self, path: str) -> float:
        """Total seconds of ``slow`` faults that apply to this request."""
        with self._lock:
            taken = self._take(path, ("slow",), first_only=False)
        return sum(f.duration() for f in taken)

    def take_response(self, path: str) -> CannedResponse | None:
        with self._lock:
            taken = self._take(path, RESPONSE_KINDS, first_only=True)
        return canned_response(taken[0], path) if taken else None

    def take_stream(self, path: str) -> Fault | None:
        with self._lock:
            taken = self._take(path, STREAM_KINDS, first_only=True)
        return taken[0] if taken else None

    def take_head(self, path: str) -> Fault | None:
        with self._lock:
            taken = self._take(path, HEAD_KINDS, first_only=True)
        return taken[0] if taken else None

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
