"""The service's TronGrid / java-tron HTTP client, over one or several upstreams.

* :class:`Upstream` is one endpoint (TronGrid, or an operator's java-tron node): its own token bucket (never more
  than ``max_rps`` requests per second), its own rate-limit pause, its own failure state and ``/v1`` probe. The
  ``TRON-PRO-API-KEY`` header goes to TronGrid's own hosts only, never to another upstream.
* :class:`TronClient` makes the calls the watcher needs over a list of upstreams, in order of preference: an
  upstream that fails (after its retries) or pauses for a rate limit hands the call to the next one. Views of
  the same upstreams in another order (:meth:`TronClient.rotated`) let a second reader prefer another upstream.
* Each attempt has a total deadline (connect, headers and the whole body) and a body size cap; past either it is
  a failure like a timeout. Timeouts, connection errors and 5xx are retried with full-jitter backoff; 429 and 503
  (TronGrid's rate-limit answers), a 403 or an HTTP 200 naming a rate limit pause that upstream for the time the
  answer names (``Retry-After``, "suspended for N s"), the daily quota until UTC midnight (capped).
* HTTP 200 with ``{"Error": ...}`` or a body that is not JSON raises :class:`TronBadResponse` (retried once).
* :class:`AnswerReader` reads the answers; a malformed USDT ``Transfer`` log is rejected alone
  (:class:`RejectedLog`), never the whole answer.

Amounts are integers of the token's smallest unit (micro-USDT for USDT), never floats.
"""
from __future__ import annotations

import calendar
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

import metrics
from addresses import TRANSFER_TOPIC, AddressError, from_hex, is_valid_address, to_hex20
from logging_setup import FailureLog
from outbound import (
    BoundedResponse,
    DeadlineExceeded,
    ResponseTooLarge,
    bounded_request,
    deadline_session,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

PAGE_LIMIT = 200
API_KEY_HEADER = "TRON-PRO-API-KEY"
TRONGRID_DOMAIN = "trongrid.io"
# The largest answer read from an upstream. A mainnet block's receipts are a few MB at most; anything far larger
# is an upstream gone wrong, and reading it whole would take the process's memory with it.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
PAUSE_CAP_SECONDS = 3600.0  # the longest pause any rate-limit answer can impose
FAILURE_COOLDOWN_SECONDS = 30.0  # a failing upstream is asked last for this long, then first again
_SUSPENDED = re.compile(r"suspended for\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
_RATE_LIMIT = re.compile(r"frequency limit|suspended for|allowed_rps|rate limit|lack of computing resources",
                         re.IGNORECASE)
_DAILY = re.compile(r"exceed the user daily usage", re.IGNORECASE)
_TX_ID = re.compile(r"^[0-9a-fA-F]{64}$")
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_WORD_HEX = 64  # a log's data word: one uint256


# -- errors ----------------------------------------------------------------------------------------
class TronError(Exception):
    """Base class of every error of this client. Its text may quote what an upstream answered (for the service's
    log); `public` says the same in the service's own words only, for what anyone may read (/health): an upstream
    may echo its URL, and the API key some providers put in the path with it."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message


def public_error(exc: BaseException) -> str:
    """An error as /health may show it: in the service's own words, nothing an upstream wrote."""
    return exc.public if isinstance(exc, TronError) else type(exc).__name__


class TronRateLimited(TronError):
    """Upstream rate limit: the upstream is paused for ``retry_after`` more seconds."""

    def __init__(self, message: str, retry_after: float, *, public: str | None = None) -> None:
        super().__init__(message, public=public)
        self.retry_after = retry_after


class TronUnavailable(TronError):
    """Timeouts, connection errors, oversized answers or 5xx, still failing after the retries."""


class TronBadResponse(TronError):
    """An answer that cannot be used: HTTP 200 with ``{"Error": ...}``, not JSON, wrong shape, or a 4xx."""

    def __init__(self, message: str, status_code: int | None = None, *, public: str | None = None) -> None:
        super().__init__(message, public=public)
        self.status_code = status_code


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trc20Transfer:
    """One record of the TRC20 list (no block number, no log index there).

    ``token_address``, ``amount`` or the addresses are None when the record lacks them (TronGrid sometimes lists
    ``token_info: {}``): such a record is decided by its transaction's receipt."""

    transaction_id: str
    from_address: str | None
    to_address: str | None
    amount: int | None  # micro-USDT
    block_timestamp: int  # ms
    token_address: str | None

    @property
    def complete(self) -> bool:
        return None not in (self.from_address, self.to_address, self.amount, self.token_address)


@dataclass(frozen=True)
class TransferLog:
    """One ``Transfer`` log of the configured USDT contract, read from a transaction's receipt."""

    transaction_hash: str
    log_index: int  # position in the tx info's ``log`` list
    from_address: str
    to_address: str
    amount: int  # micro-USDT
    block_number: int
    block_timestamp: int  # ms


@dataclass(frozen=True)
class RejectedLog:
    """A log of the USDT contract with the Transfer topic that cannot be read as a transfer, and why."""

    transaction_hash: str
    log_index: int
    reason: str
    to_address: str | None
    amount_raw: str | None
    block_number: int
    block_timestamp: int


@dataclass(frozen=True)
class TxInfo:
    transaction_hash: str
    block_number: int
    block_timestamp: int
    success: bool  # receipt.result == "SUCCESS" and no top-level "result": "FAILED"
    transfers: tuple[TransferLog, ...]
    rejected: tuple[RejectedLog, ...] = ()


@dataclass(frozen=True)
class BlockRef:
    number: int
    timestamp: int  # ms


@dataclass(frozen=True)
class BlockHeader:
    number: int
    timestamp: int  # ms
    transaction_count: int


# -- small pure helpers ----------------------------------------------------------------------------
def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)) seconds."""
    return rand() * min(cap, base * (2 ** attempt))


def parse_suspension(message: str) -> float | None:
    """Seconds from TronGrid's "... the query server is suspended for 30s", or None."""
    match = _SUSPENDED.search(message)
    return float(match.group(1)) if match else None


def seconds_until_utc_midnight(now: float) -> float:
    """Seconds from ``now`` (unix time) to the next 00:00 UTC, when TronGrid's daily quota is assumed to reset."""
    day = time.gmtime(now)
    midnight = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)) + 86400
    return midnight - now


def is_rate_limit_message(status: int, message: str) -> bool:
    return status in (429, 503) or bool(_RATE_LIMIT.search(message) or _DAILY.search(message))


def is_trongrid_host(url: str) -> bool:
    """Whether ``url`` is one of TronGrid's own hosts: the only ones that are sent the API key."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host == TRONGRID_DOMAIN or host.endswith("." + TRONGRID_DOMAIN)


def display_url(url: str) -> str:
    """``scheme://host[:port]`` of an upstream: what logs and /health name (no credentials, no path)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts of at most ``capacity``; thread-safe.

    Each caller reserves a token under the lock and sleeps outside it until its token is due, so concurrent
    callers are spaced out instead of all waking at once.
    """

    def __init__(self, rate: float, capacity: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.capacity = max(1.0, capacity)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._updated = clock()

    def reserve(self) -> float:
        """Take a token; the seconds to wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)


# -- one upstream ----------------------------------------------------------------------------------
class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, error: TronError, *, bad_response: bool = False, final: bool = False) -> None:
        """`final`: not worth another attempt on this upstream (a full deadline was spent already)."""
        super().__init__(str(error))
        self.error = error
        self.bad_response = bad_response
        self.final = final


class Upstream:
    """One TronGrid or java-tron HTTP endpoint with its own rate limit, pause and failure state."""

    def __init__(self, url: str, *, api_key: str | None = None, max_rps: float = 10.0, timeout: float = 15.0,
                 max_retries: int = 3, session: requests.Session | None = None, burst: float = 1.0,
                 backoff_base: float = 0.5, backoff_cap: float = 8.0, rate_limit_pause: float = 5.0,
                 daily_limit_pause_cap: float = 3600.0, max_bytes: int = MAX_ANSWER_BYTES, name: str | None = None
                 ) -> None:
        """``burst`` is the token bucket's size (1 = requests evenly spaced, so never more than ``max_rps`` in any
        one-second window); ``rate_limit_pause`` is the first pause for a rate limit that names no duration
        (doubling while they repeat, up to 300 s); a daily-quota answer pauses until the next UTC midnight, capped
        at ``daily_limit_pause_cap`` seconds, so the quota is probed again at most hourly. ``name``: what logs,
        /health and /metrics call it (default: its scheme, host and port; never its path, where a key may be)."""
        self.url = url.rstrip("/")
        self.name = name or display_url(self.url)
        # What logs and /health call it: "TronGrid https://api.trongrid.io" or "upstream http://10.0.0.5:8090".
        self.label = f"{'TronGrid' if is_trongrid_host(self.url) else 'upstream'} {self.name}"
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rate_limit_pause = rate_limit_pause
        self.daily_limit_pause_cap = daily_limit_pause_cap
        self.max_bytes = max_bytes
        self.session = session or deadline_session()
        self.session.headers.setdefault("Accept", "application/json")
        self.sends_api_key = bool(api_key) and is_trongrid_host(self.url)
        if self.sends_api_key:
            self.session.headers[API_KEY_HEADER] = api_key  # type: ignore[assignment]
        self.request_count = 0
        self._limiter = TokenBucket(max_rps, burst)
        self._lock = threading.Lock()
        self._paused_until: float | None = None
        self._pause_reason = self._pause_public = ""
        self._rate_limit_streak = 0
        self._failing_until = 0.0
        self.last_error: str | None = None
        self.has_v1: bool | None = None  # learnt by TronClient.has_v1_api
        self.failures = FailureLog(logger, f"upstream {self.name}")  # when it starts, reminders, when it ends

    # -- state ------------------------------------------------------------------------------------
    @property
    def paused_until(self) -> float | None:
        """Unix time until which calls to this upstream are paused by a rate limit, or None."""
        with self._lock:
            if self._paused_until is not None and self._paused_until <= time.time():
                self._paused_until = None
            return self._paused_until

    @property
    def failing(self) -> bool:
        """The last call failed (after its retries) and no call has succeeded since."""
        return self.last_error is not None

    def usable(self) -> bool:
        """Neither paused nor in the cool-down after a failure: worth asking first."""
        return self.paused_until is None and time.monotonic() >= self._failing_until

    def state(self) -> dict[str, Any]:
        """This upstream as /health shows it."""
        paused = self.paused_until
        status = "paused" if paused is not None else "failing" if self.failing else "ok"
        return {"url": self.name, "state": status, "paused_until": paused, "last_error": self.last_error,
                "v1_api": self.has_v1}

    def _succeeded(self) -> None:
        with self._lock:
            self._rate_limit_streak = 0
        self.failures.succeeded()
        self.last_error = None
        self._failing_until = 0.0

    def _failed(self, error: TronError) -> None:
        if not isinstance(error, TronRateLimited):  # a pause is logged once by _pause_for
            self.failures.failed(error)
        self.last_error = error.public
        if not isinstance(error, TronRateLimited):
            self._failing_until = time.monotonic() + FAILURE_COOLDOWN_SECONDS

    # -- requests ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None,
                allow_404: bool = False, on_sent: Callable[[], None] | None = None) -> Any:
        """Send with rate limiting and retries; the decoded JSON (None for an allowed 404). `on_sent` is called for
        every request actually sent (retries included), for the caller's own request budget."""
        attempt = 0
        bad_retried = False
        while True:
            try:
                body = self._attempt(method, path, params, json_body, allow_404, on_sent)
            except _Retry as retry:
                if attempt >= self.max_retries or retry.final or (retry.bad_response and bad_retried):
                    self._failed(retry.error)
                    raise retry.error from retry.__cause__
                bad_retried = bad_retried or retry.bad_response
                metrics.upstream_retry(self.name, endpoint_name(path))
                delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap)
                logger.debug("%s %s %s failed (%s), retry %d in %.2fs", self.name, method, path, retry.error,
                             attempt + 1, delay)
                attempt += 1
                time.sleep(delay)
            except TronError as exc:
                self._failed(exc)
                raise
            else:
                self._succeeded()
                return body

    def _attempt(self, method: str, path: str, params: dict[str, Any] | None, json_body: Any,
                 allow_404: bool, on_sent: Callable[[], None] | None) -> Any:
        self._raise_if_paused()
        self._limiter.acquire()
        self._raise_if_paused()
        with self._lock:
            self.request_count += 1
        if on_sent is not None:
            on_sent()
        answer = self._send(method, path, params, json_body)
        return self._handle(answer, path, allow_404)

    def _send(self, method: str, path: str, params: dict[str, Any] | None, json_body: Any) -> BoundedResponse:
        """One HTTP exchange within the total deadline and the size cap; failures are retried."""
        endpoint = endpoint_name(path)
        what = f"{self.label} ({endpoint})"
        try:
            answer = bounded_request(self.session, method, self.url + path, deadline=self.timeout,
                                     max_bytes=self.max_bytes, params=params, json=json_body, allow_redirects=False)
        except ResponseTooLarge as exc:
            metrics.upstream_request(self.name, endpoint, "too_large")
            raise _Retry(TronUnavailable(f"{what} answered over the {self.max_bytes}-byte cap")) from exc
        except DeadlineExceeded as exc:
            metrics.upstream_request(self.name, endpoint, "timeout")
            # A whole deadline is gone: the next upstream, or the next cycle, rather than another one here.
            raise _Retry(TronUnavailable(f"{what} gave no complete answer within {self.timeout:g}s"),
                         final=True) from exc
        except requests.RequestException as exc:
            metrics.upstream_request(self.name, endpoint, "unreachable")
            raise _Retry(TronUnavailable(f"{what} unreachable: {transport_reason(exc)}")) from exc
        metrics.upstream_request(self.name, endpoint, answer.status_code)
        return answer

    def _handle(self, answer: BoundedResponse, path: str, allow_404: bool) -> Any:
        status = answer.status_code
        text = answer.text
        what = f"{self.label} ({endpoint_name(path)})"
        if status in (429, 503) or (status == 403 and is_rate_limit_message(status, text)):
            self._pause_for(answer, text)
        if status >= 500:
            raise _Retry(TronUnavailable(f"{what}: HTTP {status}"))
        if status == 404 and allow_404:
            return None
        if status >= 400:
            raise TronBadResponse(f"{what}: HTTP {status}: {readable(text)[:200]}", status,
                                  public=f"{what}: HTTP {status}")
        try:
            body = json.loads(answer.content)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than any real answer
            raise _Retry(TronBadResponse(f"{what}: answer is not usable JSON: {readable(text)[:100]!r}", status,
                                         public=f"{what}: answer is not usable JSON"), bad_response=True) from None
        if isinstance(body, dict) and "Error" in body:
            message = str(body["Error"])
            if is_rate_limit_message(status, message):
                self._pause_for(answer, message)
            raise _Retry(TronBadResponse(f"{what}: {message[:200]}", status, public=f"{what}: answered an error"),
                         bad_response=True)
        return body

    # -- rate-limit pause -------------------------------------------------------------------------
    def _raise_if_paused(self) -> None:
        """While paused, every call fails at once with the answer that caused the pause (one stable text, so
        the trouble is logged when it starts, not on every call)."""
        until = self.paused_until
        if until is not None:
            raise TronRateLimited(self._pause_reason, until - time.time(), public=self._pause_public)

    def _pause_for(self, answer: BoundedResponse, message: str) -> None:
        """Pause every call to this upstream and raise TronRateLimited."""
        now = time.time()
        reason = f"{self.label}: rate limit (HTTP {answer.status_code}: {readable(message)[:160] or 'no text'})"
        public = f"{self.label}: rate limit (HTTP {answer.status_code})"
        with self._lock:
            seconds = self._pause_seconds(answer, message, now)
            self._paused_until = max(self._paused_until or 0.0, now + seconds)
            self._pause_reason, self._pause_public = reason, public
            self._rate_limit_streak += 1
        metrics.upstream_paused(self.name, seconds)
        logger.warning("%s; pausing its calls for %.1fs", reason, seconds)
        raise TronRateLimited(reason, seconds, public=public)

    def _pause_seconds(self, answer: BoundedResponse, message: str, now: float) -> float:
        """How long the answer asks to wait, at most PAUSE_CAP_SECONDS (an upstream's word is not believed for
        longer: it is asked again after that)."""
        if _DAILY.search(message):
            return min(self.daily_limit_pause_cap, seconds_until_utc_midnight(now))
        asked = parse_suspension(message)
        if asked is None:
            asked = parse_retry_after(answer.headers.get("Retry-After"))
        if asked is None:
            asked = min(300.0, self.rate_limit_pause * (2 ** self._rate_limit_streak))
        return min(asked, PAUSE_CAP_SECONDS)


def upstream_names(urls: Sequence[str]) -> list[str]:
    """What each upstream is called: its scheme, host and port, followed by its position in the list (#1, #2, ...)
    where several share them (two paths, or two keys, on one provider), so /health and /metrics tell them apart."""
    shown = [display_url(u.strip().rstrip("/")) for u in urls]
    return [f"{name} #{position}" if shown.count(name) > 1 else name for position, name in enumerate(shown, 1)]


def transport_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words: "connection refused", "name does not resolve", ..."""
    text = str(exc).lower()
    for needle, reason in (("refused", "connection refused"), ("name or service", "name does not resolve"),
                           ("resolve", "name does not resolve"), ("reset", "connection reset"),
                           ("timed out", "connection timed out"), ("unreachable", "network unreachable"),
                           ("ssl", "TLS failed"), ("remote end closed", "connection closed")):
        if needle in text:
            return reason
    return type(exc).__name__


def readable(text: str) -> str:
    """An answer's text as a person reads it in a log or /health: an HTML page by its title, else its first line."""
    stripped = text.strip()
    if stripped.startswith("<"):
        title = _TITLE.search(stripped)
        return title.group(1).strip() if title else "an HTML page"
    return stripped.splitlines()[0] if stripped else ""


def endpoint_name(path: str) -> str:
    """What a request asked, without the wallet it was about: "TRC20 listing", "getnowblock", ..."""
    if path.startswith("/v1/accounts/"):
        return "TRC20 listing"
    if path.startswith("/v1/contracts/"):
        return "event index"
    return path.rstrip("/").rsplit("/", 1)[-1] or path


# -- reading answers -------------------------------------------------------------------------------
class AnswerReader:
    """What the upstreams' answers say, read into the types above: TRC20 listing records, and transaction receipts
    with the USDT contract's ``Transfer`` logs picked out by contract address and topic (never by symbol)."""

    def __init__(self, usdt_contract: str) -> None:
        self.usdt_contract = usdt_contract
        self.usdt_hex20 = to_hex20(usdt_contract)

    def trc20_page(self, body: Any, wallet: str) -> list[Trc20Transfer]:
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise TronBadResponse("TRC20 list answer has no data list")
        if body.get("success") is False:
            raise TronBadResponse(f"TRC20 list answered success=false: {body.get('error')}",
                                  public="TRC20 list answered success=false")
        records = [self.trc20_record(item) for item in body["data"]]
        return [r for r in records if r is not None and r.to_address in (wallet, None)]

    def trc20_record(self, item: Any) -> Trc20Transfer | None:
        """The record, or None when it is surely not a USDT ``Transfer`` (other tokens, approvals, no usable tx
        id). Missing or malformed fields are left None for the receipt to decide."""
        if not isinstance(item, dict) or item.get("type", "Transfer") != "Transfer":
            return None
        try:
            tx_id = _tx_hash(item.get("transaction_id"))
            timestamp = _block_time(item.get("block_timestamp"))
        except (TypeError, ValueError):
            logger.warning("TRC20 listing record without a usable transaction id or time skipped: %.200r", item)
            return None
        token = item.get("token_info")
        token_address = token.get("address") if isinstance(token, dict) else None
        if token_address is not None and token_address != self.usdt_contract:
            return None
        return Trc20Transfer(transaction_id=tx_id, from_address=_optional(_address, item.get("from")),
                             to_address=_optional(_address, item.get("to")),
                             amount=_optional(_amount, item.get("value")), block_timestamp=timestamp,
                             token_address=token_address)

    def tx_info(self, body: Any) -> TxInfo:
        try:
            tx_hash = _tx_hash(body["id"])
            block_number = _block_number(body["blockNumber"])
            block_timestamp = _block_time(body["blockTimeStamp"])
            receipt = body.get("receipt") or {}
            success = receipt.get("result") == "SUCCESS" and body.get("result") != "FAILED"
            logs = body.get("log") or []
            if not isinstance(logs, list):
                raise TypeError("log is not a list")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TronBadResponse(f"malformed transaction info: {exc!r}", public="malformed transaction info") from None
        transfers: list[TransferLog] = []
        rejected: list[RejectedLog] = []
        for index, entry in enumerate(logs):
            if not self.is_usdt_transfer(entry):
                continue
            try:
                transfers.append(self.decode_log(entry, index, tx_hash, block_number, block_timestamp))
            except ValueError as exc:
                rejected.append(RejectedLog(tx_hash, index, f"malformed Transfer log: {exc}",
                                            _log_recipient(entry), _log_amount_text(entry), block_number,
                                            block_timestamp))
        return TxInfo(tx_hash, block_number, block_timestamp, success, tuple(transfers), tuple(rejected))

    def is_usdt_transfer(self, entry: Any) -> bool:
        """A log emitted by the USDT contract whose first topic is Transfer (judged by contract, never symbol)."""
        if not isinstance(entry, dict):
            return False
        address = str(entry.get("address", "")).lower().removeprefix("0x")
        if address.startswith("41") and len(address) == 42:
            address = address[2:]
        topics = entry.get("topics")
        return (address == self.usdt_hex20 and isinstance(topics, list) and bool(topics)
                and str(topics[0]).lower() == TRANSFER_TOPIC)

    @staticmethod
    def decode_log(entry: dict[str, Any], index: int, tx_hash: str, block_number: int,
                    block_timestamp: int) -> TransferLog:
        topics = entry["topics"]
        if len(topics) != 3:
            raise ValueError(f"{len(topics)} topics instead of 3")
        data = str(entry.get("data", ""))
        if len(data) != _WORD_HEX or not _HEX.match(data):
            raise ValueError(f"data is not one 32-byte word: {data[:80]!r}")
        try:
            from_address, to_address = from_hex(str(topics[1])), from_hex(str(topics[2]))
        except AddressError as exc:
            raise ValueError(str(exc)) from None
        return TransferLog(tx_hash, index, from_address, to_address, int(data, 16), block_number, block_timestamp)


# -- the client over its upstreams -----------------------------------------------------------------
class TronClient:
    """TronGrid (``/v1``) and java-tron (``/wallet``, ``/walletsolidity``) calls the watcher needs, with failover
    over its upstreams in order of preference."""

    def __init__(self, api_url: str | Sequence[str], usdt_contract: str, api_key: str | None = None,
                 max_rps: float = 10.0, timeout: float = 15.0, max_retries: int = 3,
                 session: requests.Session | None = None, *, upstreams: Sequence[Upstream] | None = None,
                 **upstream_options: Any) -> None:
        """``api_url``: one URL, several comma-separated, or a sequence. Each becomes an :class:`Upstream` with
        ``max_rps``, ``timeout``, ``max_retries`` and ``upstream_options`` (see :class:`Upstream`)."""
        if not is_valid_address(usdt_contract):
            raise ValueError(f"usdt_contract is not a TRON address: {usdt_contract!r}")
        self.usdt_contract = usdt_contract
        self.read = AnswerReader(usdt_contract)
        if upstreams is None:
            urls = [u.strip() for u in api_url.split(",")] if isinstance(api_url, str) else list(api_url)
            urls = [u for u in urls if u]
            if not urls:
                raise ValueError("at least one upstream URL is needed")
            upstreams = [Upstream(url, api_key=api_key, max_rps=max_rps, timeout=timeout, max_retries=max_retries,
                                  session=session if len(urls) == 1 else None, name=name, **upstream_options)
                         for url, name in zip(urls, upstream_names(urls), strict=True)]
        self.upstreams: list[Upstream] = list(upstreams)
        self.request_count = 0  # requests sent through this view (and the views `only` made of it)
        self._count_lock = threading.Lock()
        self.parent: TronClient | None = None

    # -- views ------------------------------------------------------------------------------------
    def rotated(self, by: int = 1) -> TronClient:
        """The same upstreams (shared limits and pauses), another one first: for a second, independent look. It
        counts its own requests."""
        shift = by % len(self.upstreams)
        return TronClient("", self.usdt_contract, upstreams=self.upstreams[shift:] + self.upstreams[:shift])

    def only(self, upstream: Upstream) -> TronClient:
        """A view that asks this one upstream only; its requests count for this view too (one budget)."""
        view = TronClient("", self.usdt_contract, upstreams=[upstream])
        view.parent = self
        return view

    @property
    def paused_until(self) -> float | None:
        """While every upstream is paused: when the first comes back. None otherwise."""
        pauses = [u.paused_until for u in self.upstreams]
        return None if any(p is None for p in pauses) else min(p for p in pauses if p is not None)

    def states(self) -> list[dict[str, Any]]:
        return [u.state() for u in self.upstreams]

    # -- public calls ---------------------------------------------------------------------------
    def list_trc20_transfers(self, wallet: str, min_timestamp: int, max_pages: int | None = None
                             ) -> list[Trc20Transfer]:
        """Solidified USDT transfers *to* ``wallet`` with block_timestamp >= ``min_timestamp``, oldest first.

        Follows ``meta.fingerprint`` until it is absent (or ``max_pages`` pages were read: the result is then
        the oldest part, and the caller continues from its last timestamp, deduplicating by tx id). All pages come
        from one upstream. Records without token information are kept (``complete`` False): their receipt
        decides them.
        """
        if not is_valid_address(wallet):
            raise ValueError(f"not a TRON address: {wallet!r}")
        params: dict[str, Any] = {
            "only_confirmed": "true", "only_to": "true", "contract_address": self.usdt_contract,
            "min_timestamp": int(min_timestamp), "order_by": "block_timestamp,asc", "limit": PAGE_LIMIT,
        }
        path = f"/v1/accounts/{wallet}/transactions/trc20"

        def read(upstream: Upstream) -> list[Trc20Transfer]:
            transfers: list[Trc20Transfer] = []
            seen: set[str] = set()
            page_params, pages = params, 0
            while max_pages is None or pages < max_pages:
                body = self._send(upstream, "GET", path, params=page_params)
                pages += 1
                transfers.extend(self.read.trc20_page(body, wallet))
                fingerprint = _next_fingerprint(body)
                if fingerprint is None or not body.get("data"):
                    break
                if fingerprint in seen:
                    raise TronBadResponse(f"{upstream.name}: TRC20 listing repeated the fingerprint {fingerprint!r}",
                                          public=f"{upstream.name}: TRC20 listing repeated a page's fingerprint")
                seen.add(fingerprint)
                page_params = {**params, "fingerprint": fingerprint}
            return transfers

        return self._failover(read, need_v1=True)

    def index_watermark(self) -> int | None:
        """The block time (ms) of the newest confirmed USDT Transfer the ``/v1`` event index lists: how far the
        index has demonstrably reached (USDT moves in every mainnet block). None when it lists none."""
        body = self._call("GET", f"/v1/contracts/{self.usdt_contract}/events", need_v1=True, params={
            "event_name": "Transfer", "only_confirmed": "true", "order_by": "block_timestamp,desc", "limit": 1})
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise TronBadResponse("event index answer has no data list")
        if not body["data"]:
            return None
        try:
            return _block_time(body["data"][0]["block_timestamp"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TronBadResponse(f"event index record has no block_timestamp: {exc!r}",
                                  public="event index record has no block_timestamp") from None

    def get_transaction_info(self, tx_id: str) -> TxInfo | None:
        """The solidified transaction's info, or None when the node answers ``{}`` (unknown to it, or not
        solidified there yet: a node behind the others answers so too)."""
        if not _TX_ID.match(tx_id):
            raise ValueError(f"not a transaction id: {tx_id!r}")
        body = self._call("POST", "/walletsolidity/gettransactioninfobyid", json_body={"value": tx_id})
        if not isinstance(body, dict):
            raise TronBadResponse("gettransactioninfobyid did not answer an object")
        return self.read.tx_info(body) if body else None

    def get_solid_head(self) -> BlockRef:
        body = self._call("POST", "/walletsolidity/getnowblock", json_body={})
        header = _block_header(body)
        if header is None:
            raise TronBadResponse("getnowblock answer has no block header")
        return BlockRef(header.number, header.timestamp)

    def get_block(self, num: int) -> BlockHeader | None:
        """Solidified block ``num``'s header and transaction count, or None when the node answers ``{}`` (it
        has not reached that block)."""
        body = self._call("POST", "/walletsolidity/getblockbynum", json_body={"num": int(num)})
        if body == {}:
            return None
        header = _block_header(body)
        if header is None or header.number != num:
            raise TronBadResponse(f"getblockbynum {num} answered another or no block")
        return header

    def get_block_infos(self, num: int) -> list[TxInfo]:
        """Infos of every transaction of solidified block ``num``. ``[]`` means an empty block OR a node that has
        not reached it: only :meth:`get_block` can tell which."""
        body = self._call("POST", "/walletsolidity/gettransactioninfobyblocknum", json_body={"num": int(num)})
        if body == {}:
            return []
        if not isinstance(body, list):
            raise TronBadResponse("gettransactioninfobyblocknum did not answer a list")
        infos = [self.read.tx_info(item) for item in body]
        if any(info.block_number != num for info in infos):
            raise TronBadResponse(f"gettransactioninfobyblocknum {num} answered transactions of another block")
        return infos

    def has_v1_api(self) -> bool:
        """Whether any upstream serves TronGrid's ``/v1`` API (a 404 means a bare java-tron node). Learnt once per
        upstream; an upstream that cannot be asked now counts as without, until it can."""
        return any(self._probe_v1(u) is True for u in self.upstreams)

    # -- failover ---------------------------------------------------------------------------------
    def _probe_v1(self, upstream: Upstream) -> bool | None:
        """Whether this upstream serves /v1; None while it cannot be asked (it is failing or paused: it is not asked
        again before its cool-down ends)."""
        if upstream.has_v1 is None and upstream.usable():
            try:
                body = self._send(upstream, "GET", f"/v1/contracts/{self.usdt_contract}/events",
                                  params={"limit": 1, "only_confirmed": "true"}, allow_404=True)
            except TronError:
                return None
            upstream.has_v1 = body is not None
        return upstream.has_v1

    def ordered_upstreams(self, need_v1: bool = False) -> list[Upstream]:
        """Usable upstreams first, in order of preference; paused or cooling-down ones after them. With
        `need_v1`, those known to lack /v1 are left out (one that could not be asked yet is tried: its call
        then fails as the probe did)."""
        probe = need_v1 and len(self.upstreams) > 1  # a single upstream is simply asked
        candidates = [u for u in self.upstreams if not probe or self._probe_v1(u) is not False]
        return sorted(candidates, key=lambda u: not u.usable())

    def _failover(self, read: Callable[[Upstream], Any], *, need_v1: bool = False) -> Any:
        errors: list[TronError] = []
        for upstream in self.ordered_upstreams(need_v1):
            try:
                return read(upstream)
            except TronError as exc:
                errors.append(exc)
        if not errors:
            raise TronBadResponse("no upstream serves TronGrid's /v1 API")
        if all(isinstance(e, TronRateLimited) for e in errors):
            raise min(errors, key=lambda e: e.retry_after)  # type: ignore[attr-defined]
        raise next(e for e in errors if not isinstance(e, TronRateLimited))

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None,
              need_v1: bool = False) -> Any:
        return self._failover(lambda u: self._send(u, method, path, params=params, json_body=json_body),
                              need_v1=need_v1)

    def _send(self, upstream: Upstream, method: str, path: str, **kwargs: Any) -> Any:
        return upstream.request(method, path, on_sent=self._count, **kwargs)

    def _count(self) -> None:
        with self._count_lock:
            self.request_count += 1
        if self.parent is not None:
            self.parent._count()


def _block_header(body: Any) -> BlockHeader | None:
    try:
        raw = body["block_header"]["raw_data"]
        transactions = body.get("transactions") or []
        return BlockHeader(_block_number(raw["number"]), _block_time(raw["timestamp"]), len(transactions))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _log_recipient(entry: Any) -> str | None:
    try:
        return from_hex(str(entry["topics"][2]))
    except (KeyError, IndexError, TypeError, AddressError):
        return None


def _log_amount_text(entry: Any) -> str | None:
    data = str(entry.get("data", "")) if isinstance(entry, dict) else ""
    return str(int(data, 16)) if data and _HEX.match(data) and len(data) <= 2 * _WORD_HEX else None


def _next_fingerprint(body: dict[str, Any]) -> str | None:
    meta = body.get("meta")
    fingerprint = meta.get("fingerprint") if isinstance(meta, dict) else None
    return fingerprint if isinstance(fingerprint, str) and fingerprint else None


MAX_BLOCK_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: beyond it no date can hold the value
MAX_BLOCK_NUMBER = 2**53  # JSON's exact integers


def _block_time(value: Any) -> int:
    """A block time in ms: an answer carrying one that no date can hold is malformed (its other lies are the
    watcher's to refuse, against the accepted head)."""
    ms = _int(value)
    if not 0 < ms <= MAX_BLOCK_TIME_MS:
        raise ValueError(f"not a block time: {value!r}")
    return ms


def _block_number(value: Any) -> int:
    number = _int(value)
    if not 0 <= number < MAX_BLOCK_NUMBER:
        raise ValueError(f"not a block number: {value!r}")
    return number


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"not an integer: {value!r}")
    return int(value)


def _amount(value: Any) -> int:
    """A TRC20 ``value``: a decimal string of the smallest unit (an int is accepted; a float never)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if type(value) is int and value >= 0:
        return value
    raise ValueError(f"not a token amount: {value!r}")


def _optional(parse: Callable[[Any], Any], value: Any) -> Any:
    try:
        return parse(value)
    except (TypeError, ValueError):
        return None


def _tx_hash(value: Any) -> str:
    if not isinstance(value, str) or not _TX_ID.match(value):
        raise ValueError(f"not a transaction id: {value!r}")
    return value.lower()


def _address(value: Any) -> str:
    if not is_valid_address(value):
        raise ValueError(f"not a TRON address: {value!r}")
    return value
