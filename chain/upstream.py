"""One TRON upstream (TronGrid, or an operator's java-tron node): its own token bucket (never more than ``max_rps``
requests per second), its own rate-limit pause, its own failure state and ``/v1`` probe. The ``TRON-PRO-API-KEY``
header goes to TronGrid's own hosts only, never to another upstream. Each attempt has a total deadline (connect,
headers and the whole body) and a body size cap; past either it is a failure like a timeout. Timeouts, connection
errors and 5xx are retried with full-jitter backoff; 429 and 503 (TronGrid's rate-limit answers), a 403 or an HTTP
200 naming a rate limit pause the upstream for the time the answer names (``Retry-After``, "suspended for N s"),
the daily quota until UTC midnight (capped). HTTP 200 with ``{"Error": ...}`` or a body that is not JSON raises
`TronBadResponse` (retried once)."""
from __future__ import annotations

import calendar
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from chain.answers import TronBadResponse, TronError, TronRateLimited, TronUnavailable
from infra import instruments
from infra.logging_setup import FailureLog
from infra.outbound import (
    BoundedResponse,
    DeadlineExceeded,
    ResponseTooLarge,
    bounded_request,
    deadline_session,
    parse_retry_after,
)

logger = logging.getLogger(__name__)

API_KEY_HEADER = "TRON-PRO-API-KEY"
TRONGRID_DOMAIN = "trongrid.io"
# The largest answer read from an upstream. A mainnet block's receipts are a few MB at most; anything far larger
# is an upstream gone wrong, and reading it whole would take the process's memory with it.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
PAUSE_CAP_SECONDS = 3600.0  # the longest pause any rate-limit answer can impose
FAILURE_COOLDOWN_SECONDS = 30.0  # a failing upstream is asked last for this long, then first again
_SUSPENDED = re.compile(r"suspended for\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
TRONGRID_FREE_DAILY_QUOTA = 100_000  # requests a day of a free TronGrid key
_RATE_LIMIT = re.compile(r"frequency limit|suspended for|allowed_rps|rate limit|lack of computing resources",
                         re.IGNORECASE)
_DAILY = re.compile(r"exceed the user daily usage", re.IGNORECASE)
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


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
                 daily_limit_pause_cap: float = 3600.0, max_bytes: int = MAX_ANSWER_BYTES, name: str | None = None,
                 daily_quota: int | None = None) -> None:
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
        # TRONGRID_DAILY_QUOTA (TronGrid's free 100,000 on its hosts unless set): spread over the day, a quarter
        # hour's worth in hand, so that no 24 hours hold more requests than the quota.
        self.daily_quota = daily_quota if daily_quota is not None else (
            TRONGRID_FREE_DAILY_QUOTA if is_trongrid_host(self.url) else None)
        self._daily: TokenBucket | None = None
        self.quota_waited_seconds = 0.0  # how long calls have waited for the daily quota, in all
        if self.daily_quota is not None:
            in_hand = self.daily_quota / 96
            self._daily = TokenBucket((self.daily_quota - in_hand) / 86400, in_hand)
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
                "v1_api": self.has_v1, "daily_quota": self.daily_quota,
                "quota_waited_seconds": round(self.quota_waited_seconds, 3)}

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
                instruments.upstream_retry(self.name, endpoint_name(path))
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
        if self._daily is not None:
            wait = self._daily.reserve()
            if wait > 0:  # the day's quota is spent ahead of its pace: this call waits for its share
                with self._lock:
                    self.quota_waited_seconds += wait
                time.sleep(wait)
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
            instruments.upstream_request(self.name, endpoint, "too_large")
            raise _Retry(TronUnavailable(f"{what} answered over the {self.max_bytes}-byte cap")) from exc
        except DeadlineExceeded as exc:
            instruments.upstream_request(self.name, endpoint, "timeout")
            # A whole deadline is gone: the next upstream, or the next cycle, rather than another one here.
            raise _Retry(TronUnavailable(f"{what} gave no complete answer within {self.timeout:g}s"),
                         final=True) from exc
        except requests.RequestException as exc:
            instruments.upstream_request(self.name, endpoint, "unreachable")
            raise _Retry(TronUnavailable(f"{what} unreachable: {transport_reason(exc)}")) from exc
        instruments.upstream_request(self.name, endpoint, answer.status_code)
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
        instruments.upstream_paused(self.name, seconds)
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
