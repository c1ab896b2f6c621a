"""Outbound calls with a total deadline and a size cap; one watchdog for "this socket must be done by T".

A per-read socket timeout does not bound a call: a peer that sends one byte a second never
trips it. Here a call registers every socket it uses with a `Deadline` (infra/deadlines.py), whose
watchdog shuts them down when it passes, so a blocked connect, send or recv returns at once and the
call reports `DeadlineExceeded`. Name resolution cannot be interrupted through a socket: it runs on a
short-lived daemon thread and is waited for no longer than the deadline.

* `bounded_request(session, method, url, deadline=..., max_bytes=...)`: one HTTP call, finished
  (DNS, connect, TLS, send, status line, headers, whole body) within `deadline` seconds, its body
  at most `max_bytes` after decompression; the answer is an immutable `BoundedResponse`.
* `deadline_session()`: a requests session whose connections take part (upstream calls);
  `ssrf.guarded_session()` is the same session with an address-checking `SocketOpener`.
* `parse_retry_after(value)`: how long an answer's `Retry-After` asks to wait (upstreams and webhook
  receivers alike).
"""
from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from infra.deadlines import Deadline, call_deadline, current_call_deadline, watchdog_deadline
from infra.urls import parse_ip

logger = logging.getLogger(__name__)

Resolver = Callable[..., Sequence[tuple[Any, ...]]]

READ_CHUNK = 16 * 1024
# Concurrent name lookups per process: a resolver that hangs holds a slot until it answers,
# so a burst of hung lookups cannot pile up threads without bound.
MAX_PARALLEL_LOOKUPS = 32
# Only encodings decoded (and size-capped) here are asked for.
ACCEPT_ENCODING = "gzip, deflate"
# A compressed body may be a little larger than what it decodes to (framing, stored blocks).
RAW_SLACK_BYTES = 1024
# The longest wait a Retry-After is believed for: a day (a receiver or upstream asking for more is
# asked again after a day, or the schedule goes on).
RETRY_AFTER_CAP_SECONDS = 86400.0
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # ASCII only: "²".isdigit() is true, float() refuses it


class DeadlineExceeded(requests.Timeout):
    """The call did not finish within its total deadline."""


class ResponseTooLarge(requests.RequestException):
    """The answer's body is larger than the caller accepts."""


# --- name resolution and connecting ------------------------------------------------------------

_lookup_slots = threading.BoundedSemaphore(MAX_PARALLEL_LOOKUPS)


def resolve(resolver: Resolver, host: str, port: int, wait: float | None) -> list[tuple[Any, ...]]:
    """`resolver(host, port, 0, SOCK_STREAM)`, waited for at most `wait` seconds (TimeoutError after)."""
    if wait is None or parse_ip(host) is not None:  # an address needs no lookup: nothing can hang
        return list(resolver(host, port, 0, socket.SOCK_STREAM))
    started = time.monotonic()
    if not _lookup_slots.acquire(timeout=max(0.0, wait)):
        raise TimeoutError(f"resolving {host} did not start within {wait:g}s (too many lookups in progress)")
    answer: dict[str, Any] = {}
    finished = threading.Event()

    def lookup() -> None:
        try:
            answer["infos"] = list(resolver(host, port, 0, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the waiting caller
            answer["error"] = exc
        finally:
            _lookup_slots.release()
            finished.set()

    threading.Thread(target=lookup, name="dns-lookup", daemon=True).start()
    if not finished.wait(max(0.0, wait - (time.monotonic() - started))):
        raise TimeoutError(f"resolving {host} took longer than {wait:g}s")
    if "error" in answer:
        raise answer["error"]
    return answer["infos"]


class SocketOpener:
    """Resolves and connects for deadline connections. Subclasses check addresses (ssrf.AddressGuard)."""

    def __init__(self, resolver: Resolver = socket.getaddrinfo) -> None:
        self.resolver = resolver

    def addresses(self, host: str, port: int, wait: float | None) -> list[tuple[Any, ...]]:
        infos = resolve(self.resolver, host, port, wait)
        if not infos:
            raise OSError(f"{host} resolves to no address")
        return infos

    def check_peer(self, sock: socket.socket, host: str) -> None:
        """Refuse the connected socket (raise) if its peer is not acceptable; the default takes any."""

    def connect(self, host: str, port: int, timeout: float | None, options: Any) -> socket.socket:
        """A socket connected to an address of host:port, registered with the call's deadline first."""
        deadline = current_call_deadline()
        wait = timeout if deadline is None else deadline.remaining()
        error: OSError | None = None
        for family, socktype, proto, _, sockaddr in self.addresses(host.strip("[]"), port, wait):
            sock = socket.socket(family, socktype, proto)
            try:
                if deadline is not None:
                    deadline.watch(sock)
                for option in options or ():
                    sock.setsockopt(*option)
                sock.settimeout(_connect_timeout(timeout, deadline))
                sock.connect(sockaddr)
                self.check_peer(sock, host)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
                if deadline is not None and deadline.expired:
                    break
            except BaseException:
                sock.close()
                raise
        raise error or OSError(f"could not connect to {host}:{port}")

    def new_connection(self, conn: HTTPConnection) -> socket.socket:
        """`connect` for a urllib3 connection, failures as the exceptions urllib3 expects."""
        try:
            return self.connect(conn._dns_host, conn.port, conn.timeout, conn.socket_options)  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out: {exc}") from exc
        except OSError as exc:
            raise NewConnectionError(conn, f"failed to establish a new connection: {exc}") from exc


def _connect_timeout(timeout: Any, deadline: Deadline | None) -> float | None:
    limit = timeout if isinstance(timeout, (int, float)) else None
    if deadline is None:
        return limit
    remaining = max(0.001, deadline.remaining())
    return remaining if limit is None else min(limit, remaining)


def deadline_pool_classes(opener: SocketOpener) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections are opened by `opener` and watched by the call's deadline."""

    def watch_reused(conn: HTTPConnection) -> None:
        deadline = current_call_deadline()
        if deadline is not None and conn.sock is not None:
            deadline.watch(conn.sock)

    class DeadlineHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return opener.new_connection(self)

        def request(self, *args: Any, **kwargs: Any) -> None:
            watch_reused(self)  # a kept-alive connection from the pool: its socket is watched too
            super().request(*args, **kwargs)

    class DeadlineHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return opener.new_connection(self)

        def request(self, *args: Any, **kwargs: Any) -> None:
            watch_reused(self)
            super().request(*args, **kwargs)

    class DeadlineHTTPPool(HTTPConnectionPool):
        ConnectionCls = DeadlineHTTPConnection

    class DeadlineHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = DeadlineHTTPSConnection

    return {"http": DeadlineHTTPPool, "https": DeadlineHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """A requests adapter whose connections are made by a `SocketOpener` and watched by deadlines."""

    def __init__(self, opener: SocketOpener, **kwargs: Any) -> None:
        self.opener = opener
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = deadline_pool_classes(self.opener)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # A proxy's connections would be made outside the opener, unchecked and unwatched.
        raise requests.exceptions.InvalidProxyURL("proxies are not supported for deadline-bounded calls")


def deadline_session(opener: SocketOpener | None = None) -> requests.Session:
    """A requests session for `bounded_request`: no proxies or .netrc from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.headers["Accept-Encoding"] = ACCEPT_ENCODING
    adapter = DeadlineAdapter(opener or SocketOpener())
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --- the answer --------------------------------------------------------------------------------

def parse_retry_after(value: str | None, now: datetime | None = None,
                      cap: float = RETRY_AFTER_CAP_SECONDS) -> float | None:
    """Seconds a `Retry-After` header asks to wait: delta seconds (fractions allowed, as some servers send
    them) or an HTTP date (a past one is 0), at most `cap`; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), cap)


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive response headers (repeated headers joined with ", ")."""

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = {name.lower(): value for name, value in items.items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True)
class BoundedResponse:
    status_code: int
    headers: Headers
    content: bytes
    truncated: bool = False

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


class _Decoder:
    """Content-Encoding decoding that never produces more than it is asked for (no gzip bomb)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.strip().lower()
        if self.encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise requests.exceptions.ContentDecodingError(f"unsupported Content-Encoding {encoding!r}")
        self._zlib: Any = None
        self._first = True

    @property
    def identity(self) -> bool:
        return self.encoding in ("", "identity")

    def decode(self, data: bytes, limit: int) -> bytes:
        """Up to `limit` bytes decoded from `data` (reaching `limit` means there may be more)."""
        if self.identity:
            return data[:limit]
        try:
            return self._inflate(data, limit)
        except zlib.error as exc:
            raise requests.exceptions.ContentDecodingError(f"could not decode the {self.encoding} body: {exc}") from exc

    def _inflate(self, data: bytes, limit: int) -> bytes:
        if self._zlib is None:
            self._zlib = self._new_decompressor(data)
        out = self._zlib.decompress(data, limit)
        # Several gzip members follow each other: each needs a fresh decompressor.
        while self._zlib.eof and self._zlib.unused_data and len(out) < limit:
            rest = self._zlib.unused_data
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += self._zlib.decompress(rest, limit - len(out))
        return out

    def _new_decompressor(self, first: bytes) -> Any:
        if self.encoding != "deflate":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # "deflate" should be zlib-wrapped; some servers send raw deflate data.
        wrapped = len(first) >= 2 and (first[0] & 0x0F) == 8 and ((first[0] << 8) | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)


def _declared_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _read_body(response: requests.Response, max_bytes: int, truncate: bool) -> tuple[bytes, bool]:
    """The decoded body, at most `max_bytes`; (what was read, True) when cut short with `truncate`."""
    try:
        decoder = _Decoder(response.headers.get("content-encoding", ""))
    except requests.exceptions.ContentDecodingError:
        if not truncate:
            raise
        decoder = _Decoder("identity")  # an excerpt of the raw bytes is all the caller wants
    declared = _declared_length(response.headers)
    allowed = max_bytes if decoder.identity else max_bytes + RAW_SLACK_BYTES
    if declared is not None and declared > allowed and not truncate:
        raise ResponseTooLarge(f"the answer declares {declared} bytes; at most {max_bytes} are accepted")
    body = bytearray()
    raw_read = 0
    raw_cap = max_bytes + RAW_SLACK_BYTES
    while True:
        chunk = response.raw.read(READ_CHUNK, decode_content=False)
        if not chunk:
            return bytes(body), False
        raw_read += len(chunk)
        body += decoder.decode(chunk, max_bytes + 1 - len(body))
        if len(body) > max_bytes or raw_read > raw_cap:
            if truncate:
                return bytes(body[:max_bytes]), True
            raise ResponseTooLarge(f"the answer is larger than {max_bytes} bytes")


# What urllib3 and http.client raise while a body is read directly from the connection.
TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def bounded_request(
    session: requests.Session, method: str, url: str, *, deadline: float, max_bytes: int,
    truncate: bool = False, **kwargs: Any,
) -> BoundedResponse:
    """One HTTP call finished within `deadline` seconds in total, its body at most `max_bytes`.

    Raises DeadlineExceeded (a requests.Timeout) when the deadline passes at any stage,
    ResponseTooLarge when the (decompressed) body is over `max_bytes` (with `truncate=True` the
    first `max_bytes` are returned instead, `truncated` set), and requests' exceptions otherwise.
    `session` must come from `deadline_session()` (or `ssrf.guarded_session()`)."""
    if not isinstance(session.get_adapter(url), DeadlineAdapter):
        raise TypeError("bounded_request needs a session from outbound.deadline_session()")
    if deadline <= 0:
        raise DeadlineExceeded(f"no time left for {method} {url}")
    with watchdog_deadline(deadline) as watch, call_deadline(watch):
        try:
            response = session.request(method, url, stream=True, timeout=deadline, **kwargs)
            try:
                content, truncated = _read_body(response, max_bytes, truncate)
            finally:
                response.close()  # a fully read body has already gone back to the pool
        except ResponseTooLarge:
            raise
        except Exception as exc:
            # Whatever a shut-down socket made the libraries raise, the cause is the deadline.
            if watch.expired:
                raise DeadlineExceeded(f"{method} {url}: no complete answer within {deadline:g}s") from exc
            if isinstance(exc, requests.RequestException) or not isinstance(exc, TRANSPORT_ERRORS):
                raise
            raise requests.ConnectionError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        watch.finish()
        if watch.fired:
            # A shut-down socket reads as a clean end of file: http.client takes headers or a
            # body cut there for complete ones. Nothing read once the deadline fired is trusted.
            raise DeadlineExceeded(f"{method} {url}: no complete answer within {deadline:g}s")
    return BoundedResponse(response.status_code, Headers(response.headers), content, truncated)
