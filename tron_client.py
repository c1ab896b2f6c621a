"""The service's TronGrid / java-tron HTTP client.

* one ``requests.Session``, a timeout on every call, ``TRON-PRO-API-KEY`` when a key is configured;
* a client-side token bucket: never more than ``max_rps`` requests per second (thread-safe, blocks the caller);
* retries with exponential backoff and full jitter on timeouts, connection errors and 5xx (never on 4xx);
* TronGrid rate limits (429, or 403 saying "frequency limit" / "suspended for N s" / "Exceed the user daily
  usage") pause every call of this client until the limit is over: the call that met the limit, and every call
  made while paused, raises :class:`TronRateLimited` at once, without sending anything;
* HTTP 200 with ``{"Error": ...}`` or a body that is not JSON raises :class:`TronBadResponse` (retried once).

Amounts are integers of the token's smallest unit (micro-USDT for USDT), never floats.
"""
from __future__ import annotations

import calendar
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from addresses import AddressError, from_hex, is_valid_address, to_hex20

logger = logging.getLogger(__name__)

TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
PAGE_LIMIT = 200
API_KEY_HEADER = "TRON-PRO-API-KEY"
_SUSPENDED = re.compile(r"suspended for\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
_FREQUENCY = re.compile(r"frequency limit|suspended for", re.IGNORECASE)
_DAILY = re.compile(r"exceed the user daily usage", re.IGNORECASE)
_TX_ID = re.compile(r"^[0-9a-fA-F]{64}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")


# -- errors ----------------------------------------------------------------------------------------
class TronError(Exception):
    """Base class of every error of this client."""


class TronRateLimited(TronError):
    """Upstream rate limit: this client is paused for ``retry_after`` more seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TronUnavailable(TronError):
    """Timeouts, connection errors or 5xx, still failing after the retries."""


class TronBadResponse(TronError):
    """An answer that cannot be used: HTTP 200 with ``{"Error": ...}``, not JSON, wrong shape, or a 4xx."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trc20Transfer:
    """One record of the TRC20 list (no block number, no log index there)."""

    transaction_id: str
    from_address: str
    to_address: str
    amount: int  # micro-USDT
    block_timestamp: int  # ms
    token_address: str


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
class TxInfo:
    transaction_hash: str
    block_number: int
    block_timestamp: int
    success: bool  # receipt.result == "SUCCESS" and no top-level "result": "FAILED"
    transfers: tuple[TransferLog, ...]


@dataclass(frozen=True)
class BlockRef:
    number: int
    timestamp: int  # ms


# -- small pure helpers ----------------------------------------------------------------------------
def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)) seconds."""
    return rand() * min(cap, base * (2 ** attempt))


def parse_suspension(message: str) -> float | None:
    """Seconds from TronGrid's "... the query server is suspended for 30s", or None."""
    match = _SUSPENDED.search(message)
    return float(match.group(1)) if match else None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header given in seconds (HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def seconds_until_utc_midnight(now: float) -> float:
    """Seconds from ``now`` (unix time) to the next 00:00 UTC, when TronGrid's daily quota is assumed to reset."""
    day = time.gmtime(now)
    midnight = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0)) + 86400
    return midnight - now


def is_rate_limit_message(status: int, message: str) -> bool:
    return status == 429 or bool(_FREQUENCY.search(message) or _DAILY.search(message))


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


# -- the client ------------------------------------------------------------------------------------
class _Retry(Exception):
    """Internal: this attempt failed in a way worth retrying."""

    def __init__(self, error: TronError, *, bad_response: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.bad_response = bad_response


class TronClient:
    """TronGrid (``/v1``) and java-tron (``/wallet``, ``/walletsolidity``) calls the watcher needs."""

    def __init__(self, api_url: str, usdt_contract: str, api_key: str | None = None, max_rps: float = 10.0,
                 timeout: float = 10.0, max_retries: int = 3, session: requests.Session | None = None, *,
                 burst: float = 1.0, backoff_base: float = 0.5, backoff_cap: float = 8.0,
                 rate_limit_pause: float = 5.0, daily_limit_pause_cap: float = 3600.0) -> None:
        """``burst`` is the token bucket's size (1 = requests evenly spaced, so never more than ``max_rps`` in
        any one-second window); ``rate_limit_pause`` is the first pause for a rate limit that names no duration
        (doubling while they repeat, up to 300 s); a daily-quota answer pauses until the next UTC midnight,
        capped at ``daily_limit_pause_cap`` seconds, so the quota is probed again at most hourly."""
        if not is_valid_address(usdt_contract):
            raise ValueError(f"usdt_contract is not a TRON address: {usdt_contract!r}")
        self.api_url = api_url.rstrip("/")
        self.usdt_contract = usdt_contract
        self.usdt_hex20 = to_hex20(usdt_contract)
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rate_limit_pause = rate_limit_pause
        self.daily_limit_pause_cap = daily_limit_pause_cap
        self.session = session or requests.Session()
        self.session.headers.setdefault("Accept", "application/json")
        if api_key:
            self.session.headers[API_KEY_HEADER] = api_key
        self.request_count = 0
        self._limiter = TokenBucket(max_rps, burst)
        self._lock = threading.Lock()
        self._paused_until: float | None = None
        self._rate_limit_streak = 0
        self._has_v1: bool | None = None

    # -- public calls ---------------------------------------------------------------------------
    def list_trc20_transfers(self, wallet: str, min_timestamp: int, max_pages: int | None = None
                             ) -> list[Trc20Transfer]:
        """Solidified USDT transfers *to* ``wallet`` with block_timestamp >= ``min_timestamp``, oldest first.

        Follows ``meta.fingerprint`` until it is absent (or ``max_pages`` pages were read: the result is then
        the oldest part, and the caller continues from its last timestamp, deduplicating by tx id).
        """
        if not is_valid_address(wallet):
            raise ValueError(f"not a TRON address: {wallet!r}")
        params: dict[str, Any] = {
            "only_confirmed": "true", "only_to": "true", "contract_address": self.usdt_contract,
            "min_timestamp": int(min_timestamp), "order_by": "block_timestamp,asc", "limit": PAGE_LIMIT,
        }
        path = f"/v1/accounts/{wallet}/transactions/trc20"
        transfers: list[Trc20Transfer] = []
        seen_fingerprints: set[str] = set()
        pages = 0
        while max_pages is None or pages < max_pages:
            body = self._request("GET", path, params=params)
            pages += 1
            transfers.extend(self._parse_trc20_page(body, wallet))
            fingerprint = _next_fingerprint(body)
            if fingerprint is None or not body.get("data"):
                break
            if fingerprint in seen_fingerprints:
                raise TronBadResponse(f"TronGrid repeated the fingerprint {fingerprint!r}")
            seen_fingerprints.add(fingerprint)
            params = {**params, "fingerprint": fingerprint}
        return transfers

    def get_transaction_info(self, tx_id: str) -> TxInfo | None:
        """The solidified transaction's info, or None when java-tron answers ``{}`` (unknown or not solid yet)."""
        if not _TX_ID.match(tx_id):
            raise ValueError(f"not a transaction id: {tx_id!r}")
        body = self._request("POST", "/walletsolidity/gettransactioninfobyid", json_body={"value": tx_id})
        if not isinstance(body, dict):
            raise TronBadResponse("gettransactioninfobyid did not answer an object")
        return self._parse_tx_info(body) if body else None

    def get_solid_head(self) -> BlockRef:
        body = self._request("POST", "/walletsolidity/getnowblock", json_body={})
        try:
            raw = body["block_header"]["raw_data"]
            return BlockRef(_int(raw["number"]), _int(raw["timestamp"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TronBadResponse(f"getnowblock answer has no block header: {exc}") from None

    def get_block_infos(self, num: int) -> list[TxInfo]:
        """Infos of every transaction of solidified block ``num`` (``[]`` when empty or not solidified)."""
        body = self._request("POST", "/walletsolidity/gettransactioninfobyblocknum", json_body={"num": int(num)})
        if body == {}:
            return []
        if not isinstance(body, list):
            raise TronBadResponse("gettransactioninfobyblocknum did not answer a list")
        return [self._parse_tx_info(item) for item in body]

    def has_v1_api(self) -> bool:
        """Whether the upstream is TronGrid (serves ``/v1``); a 404 means a bare java-tron node. Cached."""
        if self._has_v1 is None:
            body = self._request("GET", f"/v1/accounts/{self.usdt_contract}/transactions/trc20",
                                 params={"limit": 1, "only_confirmed": "true"}, allow_404=True)
            self._has_v1 = body is not None
        return self._has_v1

    @property
    def paused_until(self) -> float | None:
        """Unix time until which upstream calls are paused by a rate limit, or None."""
        with self._lock:
            if self._paused_until is not None and self._paused_until <= time.time():
                self._paused_until = None
            return self._paused_until

    # -- parsing --------------------------------------------------------------------------------
    def _parse_trc20_page(self, body: Any, wallet: str) -> list[Trc20Transfer]:
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise TronBadResponse("TRC20 list answer has no data list")
        if body.get("success") is False:
            raise TronBadResponse(f"TRC20 list answered success=false: {body.get('error')}")
        records = [self._parse_trc20_record(item) for item in body["data"]]
        kept = [r for r in records if r is not None and r.to_address == wallet]
        if len(kept) != len(records):
            logger.debug("dropped %d TRC20 records not for USDT to %s", len(records) - len(kept), wallet)
        return kept

    def _parse_trc20_record(self, item: Any) -> Trc20Transfer | None:
        """The record, or None when it is not a USDT ``Transfer`` (other tokens, approvals)."""
        try:
            token_address = item["token_info"]["address"]
            if token_address != self.usdt_contract or item.get("type", "Transfer") != "Transfer":
                return None
            return Trc20Transfer(
                transaction_id=_tx_hash(item["transaction_id"]),
                from_address=_address(item["from"]),
                to_address=_address(item["to"]),
                amount=_amount(item["value"]),
                block_timestamp=_int(item["block_timestamp"]),
                token_address=token_address,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TronBadResponse(f"malformed TRC20 record: {exc!r}") from None

    def _parse_tx_info(self, body: Any) -> TxInfo:
        try:
            tx_hash = _tx_hash(body["id"])
            block_number = _int(body["blockNumber"])
            block_timestamp = _int(body["blockTimeStamp"])
            receipt = body.get("receipt") or {}
            success = receipt.get("result") == "SUCCESS" and body.get("result") != "FAILED"
            logs = body.get("log") or []
            transfers = tuple(
                log for index, entry in enumerate(logs)
                if (log := self._decode_log(entry, index, tx_hash, block_number, block_timestamp)) is not None
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TronBadResponse(f"malformed transaction info: {exc!r}") from None
        return TxInfo(tx_hash, block_number, block_timestamp, success, transfers)

    def _decode_log(self, entry: dict[str, Any], index: int, tx_hash: str, block_number: int,
                    block_timestamp: int) -> TransferLog | None:
        """A USDT Transfer log (contract address, Transfer topic, 3 topics), or None for any other log."""
        address = str(entry.get("address", "")).lower().removeprefix("0x")
        if address.startswith("41") and len(address) == 42:
            address = address[2:]
        topics = entry.get("topics") or []
        if address != self.usdt_hex20 or len(topics) != 3 or str(topics[0]).lower() != TRANSFER_TOPIC:
            return None
        data = str(entry.get("data", ""))
        if not data or not _HEX.match(data):
            raise ValueError(f"Transfer log data is not hex: {data!r}")
        try:
            from_address, to_address = from_hex(topics[1]), from_hex(topics[2])
        except AddressError as exc:
            raise ValueError(str(exc)) from None
        return TransferLog(tx_hash, index, from_address, to_address, int(data, 16), block_number, block_timestamp)

    # -- transport ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 json_body: Any = None, allow_404: bool = False) -> Any:
        """Send with rate limiting and retries; the decoded JSON (None for an allowed 404)."""
        attempt = 0
        bad_retried = False
        while True:
            try:
                return self._attempt(method, path, params, json_body, allow_404)
            except _Retry as retry:
                if attempt >= self.max_retries or (retry.bad_response and bad_retried):
                    raise retry.error from retry.__cause__
                bad_retried = bad_retried or retry.bad_response
                delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap)
                logger.warning("TRON %s %s failed (%s), retry %d in %.2fs", method, path, retry.error,
                               attempt + 1, delay)
                attempt += 1
                time.sleep(delay)

    def _attempt(self, method: str, path: str, params: dict[str, Any] | None, json_body: Any,
                 allow_404: bool) -> Any:
        self._raise_if_paused()
        self._limiter.acquire()
        self._raise_if_paused()
        with self._lock:
            self.request_count += 1
        try:
            response = self.session.request(method, self.api_url + path, params=params, json=json_body,
                                            timeout=self.timeout)
        except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retry(TronUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}")) from exc
        return self._handle_response(response, path, allow_404)

    def _handle_response(self, response: requests.Response, path: str, allow_404: bool) -> Any:
        status = response.status_code
        text = response.text
        if status in (429, 403) and is_rate_limit_message(status, text):
            self._pause_for(response, text)
        if status >= 500:
            raise _Retry(TronUnavailable(f"{path}: HTTP {status}"))
        if status == 404 and allow_404:
            return None
        if status >= 400:
            raise TronBadResponse(f"{path}: HTTP {status}: {text[:200]}", status)
        try:
            body = response.json()
        except ValueError:
            raise _Retry(TronBadResponse(f"{path}: answer is not JSON: {text[:100]!r}", status),
                         bad_response=True) from None
        if isinstance(body, dict) and "Error" in body:
            message = str(body["Error"])
            if is_rate_limit_message(status, message):
                self._pause_for(response, message)
            raise _Retry(TronBadResponse(f"{path}: {message[:200]}", status), bad_response=True)
        with self._lock:
            self._rate_limit_streak = 0
        return body

    # -- rate-limit pause -----------------------------------------------------------------------
    def _raise_if_paused(self) -> None:
        until = self.paused_until
        if until is not None:
            raise TronRateLimited(f"TronGrid rate limit, paused until {until:.0f}", until - time.time())

    def _pause_for(self, response: requests.Response, message: str) -> None:
        """Pause every call of this client and raise TronRateLimited."""
        now = time.time()
        with self._lock:
            seconds = self._pause_seconds(response, message, now)
            until = now + seconds
            self._paused_until = max(self._paused_until or 0.0, until)
            self._rate_limit_streak += 1
        logger.warning("TronGrid rate limit (HTTP %d: %s); pausing upstream calls for %.1fs",
                       response.status_code, message[:120], seconds)
        raise TronRateLimited(f"TronGrid rate limit: {message[:200]}", seconds)

    def _pause_seconds(self, response: requests.Response, message: str, now: float) -> float:
        if _DAILY.search(message):
            return min(self.daily_limit_pause_cap, seconds_until_utc_midnight(now))
        suspended = parse_suspension(message)
        if suspended is not None:
            return suspended
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is not None:
            return retry_after
        return min(300.0, self.rate_limit_pause * (2 ** self._rate_limit_streak))


def _next_fingerprint(body: dict[str, Any]) -> str | None:
    meta = body.get("meta")
    fingerprint = meta.get("fingerprint") if isinstance(meta, dict) else None
    return fingerprint if isinstance(fingerprint, str) and fingerprint else None


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


def _tx_hash(value: Any) -> str:
    if not isinstance(value, str) or not _TX_ID.match(value):
        raise ValueError(f"not a transaction id: {value!r}")
    return value.lower()


def _address(value: Any) -> str:
    if not is_valid_address(value):
        raise ValueError(f"not a TRON address: {value!r}")
    return value
