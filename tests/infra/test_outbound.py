"""outbound.bounded_request against real misbehaving HTTP servers on 127.0.0.1."""
from __future__ import annotations

import gzip
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.deadlines import start_deadline
from infra.outbound import (
    DeadlineExceeded,
    ResponseTooLarge,
    SocketOpener,
    bounded_request,
    deadline_session,
    parse_retry_after,
)

MARGIN = 0.5  # how much later than its deadline a call may return on a busy machine
Handler = Callable[[socket.socket], None]


class ScriptedServer:
    """A TCP server on 127.0.0.1 running `handler` on its own thread for every connection."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.open_sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open_sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.handler(conn)
        except (OSError, ssl.SSLError):
            pass  # the client gave up: what these servers are for

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        with self.lock:
            for conn in self.open_sockets:
                try:
                    conn.close()
                except OSError:
                    pass


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        servers.append(ScriptedServer(handler, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def read_request(conn: socket.socket) -> bytes:
    """The request head and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        body += conn.recv(4096)
    return head


def drip(conn: socket.socket, data: bytes, every: float) -> None:
    for byte in data:
        conn.sendall(bytes([byte]))
        time.sleep(every)


def answer(status: str = "200 OK", body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    """A keep-alive server answering every request on a connection the same way."""

    def handle(conn: socket.socket) -> None:
        while read_request(conn):
            fields = {"Content-Length": str(len(body)), **(headers or {})}
            head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
            conn.sendall(head.encode() + body)

    return handle


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        result: Any = call()
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        result = exc
    return result, time.monotonic() - started


# --- answers within the limits -----------------------------------------------------------------

def test_a_normal_answer_is_read_whole_and_immutable(serve) -> None:
    server = serve(answer(body=b'{"ok": true}', headers={"Content-Type": "application/json", "X-Thing": "a"}))
    response = bounded_request(deadline_session(), "GET", server.url(), deadline=2, max_bytes=100)
    assert response.status_code == 200 and response.ok and not response.truncated
    assert response.json() == {"ok": True} and response.content == b'{"ok": true}'
    assert response.headers["x-thing"] == "a" and response.headers["X-THING"] == "a" and "X-Thing" in response.headers
    with pytest.raises(AttributeError):
        response.status_code = 500  # type: ignore[misc]
    with pytest.raises(TypeError):
        response.headers["x-thing"] = "b"  # type: ignore[index]


def test_kept_alive_connections_are_reused_between_calls(serve) -> None:
    server = serve(answer(body=b"hi"))
    session = deadline_session()
    for _ in range(3):
        assert bounded_request(session, "GET", server.url(), deadline=2, max_bytes=10).content == b"hi"
    assert server.connections == 1


def test_a_gzip_body_is_decoded(serve) -> None:
    server = serve(answer(body=gzip.compress(b"x" * 5000), headers={"Content-Encoding": "gzip"}))
    response = bounded_request(deadline_session(), "GET", server.url(), deadline=2, max_bytes=5000)
    assert response.content == b"x" * 5000


@pytest.mark.parametrize("wrapped", [True, False])
def test_a_deflate_body_is_decoded_zlib_wrapped_or_raw(serve, wrapped: bool) -> None:
    compressor = zlib.compressobj(wbits=zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    body = compressor.compress(b"abc" * 1000) + compressor.flush()
    server = serve(answer(body=body, headers={"Content-Encoding": "deflate"}))
    assert bounded_request(deadline_session(), "GET", server.url(), deadline=2, max_bytes=3000).content == b"abc" * 1000


def test_a_plain_requests_session_is_refused() -> None:
    with pytest.raises(TypeError):
        bounded_request(requests.Session(), "GET", "http://127.0.0.1:9/", deadline=1, max_bytes=10)


# --- the total deadline at every stage ---------------------------------------------------------

def assert_deadline_kept(call: Callable[[], Any], deadline: float) -> None:
    result, took = timed(call)
    assert isinstance(result, DeadlineExceeded), result
    assert isinstance(result, requests.Timeout)
    assert deadline - 0.05 <= took < deadline + MARGIN, took


def get_from(server: ScriptedServer, max_bytes: int) -> Callable[[], object]:
    """A GET of `server` with a one-second deadline and this size cap."""
    return lambda: bounded_request(deadline_session(), "GET", server.url(), deadline=1, max_bytes=max_bytes)


def test_status_line_and_headers_dripped_a_byte_at_a_time(serve) -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        drip(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: " + b"y" * 1000 + b"\r\n\r\nok", 0.05)

    assert_deadline_kept(get_from(serve(handle), max_bytes=100), 1)


def test_a_body_dripped_a_byte_at_a_time(serve) -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        drip(conn, b"z" * 1000, 0.05)

    assert_deadline_kept(get_from(serve(handle), max_bytes=10_000), 1)


def test_an_endless_slow_chunked_body(serve) -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            conn.sendall(b"1\r\na\r\n")
            time.sleep(0.02)

    assert_deadline_kept(get_from(serve(handle), max_bytes=1_000_000), 1)


def test_a_server_that_never_reads_the_request_body(serve) -> None:
    """Sending blocks once the socket buffers are full: the deadline ends that too."""

    def handle(conn: socket.socket) -> None:
        time.sleep(5)

    server = serve(handle)
    payload = b"p" * 50_000_000
    assert_deadline_kept(lambda: bounded_request(deadline_session(), "POST", server.url(), deadline=1,
                                                 max_bytes=100, data=payload), 1)


def test_a_connect_that_never_completes() -> None:
    """A listener whose backlog is full drops SYNs: connect() would block for minutes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        while True:  # fill the accept queue until a connect really hangs
            filler = socket.socket()
            filler.settimeout(0.3)
            fillers.append(filler)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        assert_deadline_kept(lambda: bounded_request(deadline_session(), "GET", f"http://127.0.0.1:{port}/",
                                                     deadline=1, max_bytes=100), 1)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_a_name_lookup_that_hangs(serve) -> None:
    server = serve(answer(body=b"late"))
    release = threading.Event()

    def hanging_resolver(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        release.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    session = deadline_session(SocketOpener(resolver=hanging_resolver))
    try:
        assert_deadline_kept(lambda: bounded_request(session, "GET", f"http://slow.example:{server.port}/",
                                                     deadline=1, max_bytes=100), 1)
    finally:
        release.set()


def test_many_calls_at_once_each_keep_their_own_deadline(serve) -> None:
    def slow(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        drip(conn, b"s" * 100, 0.1)

    slow_server = serve(slow)
    fast_server = serve(answer(body=b"fast"))
    results: dict[str, list[tuple[Any, float]]] = {"slow": [], "fast": []}
    lock = threading.Lock()

    def call(kind: str, url: str, deadline: float) -> None:
        outcome = timed(lambda: bounded_request(deadline_session(), "GET", url, deadline=deadline, max_bytes=1000))
        with lock:
            results[kind].append((outcome, deadline))

    threads = [threading.Thread(target=call, args=("slow", slow_server.url(), 0.5 + (n % 5) * 0.2))
               for n in range(25)]
    threads += [threading.Thread(target=call, args=("fast", fast_server.url(), 3)) for _ in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results["slow"]) == 25 and len(results["fast"]) == 25
    for (result, took), deadline in results["slow"]:
        assert isinstance(result, DeadlineExceeded) and took < deadline + MARGIN, (result, took, deadline)
    for (result, _took), _ in results["fast"]:
        assert not isinstance(result, Exception) and result.content == b"fast", result


def test_no_connection_stays_in_the_pool_after_an_expired_call(serve) -> None:
    stalled = threading.Event()

    def handle(conn: socket.socket) -> None:
        while read_request(conn):
            if not stalled.is_set():
                stalled.set()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")  # 7 bytes never come
                time.sleep(3)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    server = serve(handle)
    session = deadline_session()
    assert_deadline_kept(lambda: bounded_request(session, "GET", server.url(), deadline=0.5, max_bytes=100), 0.5)
    response = bounded_request(session, "GET", server.url(), deadline=2, max_bytes=100)
    assert response.content == b"ok" and server.connections == 2  # a fresh connection, not the cut one


# --- the size cap ------------------------------------------------------------------------------

def test_a_declared_length_over_the_cap_fails_before_reading(serve) -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n")
        time.sleep(5)  # the body never comes: reading it would run into the deadline

    server = serve(handle)
    result, took = timed(lambda: bounded_request(deadline_session(), "GET", server.url(), deadline=3,
                                                 max_bytes=1000))
    assert isinstance(result, ResponseTooLarge) and isinstance(result, requests.RequestException)
    assert took < 1


def test_an_endless_fast_chunked_body_is_cut_at_the_cap(serve) -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"400\r\n" + b"c" * 1024 + b"\r\n"
        while True:
            conn.sendall(chunk)

    server = serve(handle)
    result, took = timed(lambda: bounded_request(deadline_session(), "GET", server.url(), deadline=5,
                                                 max_bytes=100_000))
    assert isinstance(result, ResponseTooLarge) and took < 2


def test_a_body_without_length_over_the_cap(serve) -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"b" * 3_000_000)
        conn.close()

    server = serve(handle)
    with pytest.raises(ResponseTooLarge):
        bounded_request(deadline_session(), "GET", server.url(), deadline=5, max_bytes=100_000)


def test_decompressed_size_counts_no_gzip_bomb(serve) -> None:
    bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=9)
    assert len(bomb) < 300_000
    server = serve(answer(body=bomb, headers={"Content-Encoding": "gzip"}))
    result, took = timed(lambda: bounded_request(deadline_session(), "GET", server.url(), deadline=5,
                                                 max_bytes=1_000_000))
    assert isinstance(result, ResponseTooLarge) and took < 2


def test_truncate_returns_the_first_bytes_and_says_so(serve) -> None:
    server = serve(answer(status="500 Internal Server Error", body=b"e" * 200_000))
    response = bounded_request(deadline_session(), "GET", server.url(), deadline=2, max_bytes=1000, truncate=True)
    assert response.status_code == 500 and response.truncated and response.content == b"e" * 1000
    bomb = serve(answer(body=gzip.compress(b"\0" * 50_000_000), headers={"Content-Encoding": "gzip"}))
    response = bounded_request(deadline_session(), "GET", bomb.url(), deadline=2, max_bytes=1000, truncate=True)
    assert response.truncated and response.content == b"\0" * 1000


# --- https -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_https_answers_are_read_and_verified(serve, certificate) -> None:
    server = serve(answer(body=b"secure"), tls=server_tls(certificate))
    response = bounded_request(deadline_session(), "GET", server.url(scheme="https"), deadline=3, max_bytes=100,
                               verify=str(certificate[0]))
    assert response.content == b"secure"
    with pytest.raises(requests.exceptions.SSLError):  # not trusted without the certificate
        bounded_request(deadline_session(), "GET", server.url(scheme="https"), deadline=3, max_bytes=100)


def test_https_body_dripped_a_byte_at_a_time(serve, certificate) -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        drip(conn, b"t" * 1000, 0.05)

    server = serve(handle, tls=server_tls(certificate))
    assert_deadline_kept(lambda: bounded_request(deadline_session(), "GET", server.url(scheme="https"), deadline=1,
                                                 max_bytes=10_000, verify=str(certificate[0])), 1)


def test_a_tls_handshake_dripped_a_byte_at_a_time(serve, certificate) -> None:
    """A proxy passes the server's handshake on byte by byte: no single read ever times out."""
    server = serve(answer(body=b"never"), tls=server_tls(certificate))

    def dripping_proxy(client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", server.port))

        def forward_requests() -> None:
            while data := client.recv(4096):
                upstream.sendall(data)

        threading.Thread(target=forward_requests, daemon=True).start()
        while data := upstream.recv(1):
            client.sendall(data)
            time.sleep(0.01)

    proxy = serve(dripping_proxy)
    assert_deadline_kept(lambda: bounded_request(deadline_session(), "GET", proxy.url(scheme="https"), deadline=1,
                                                 max_bytes=100, verify=str(certificate[0])), 1)


def test_a_tls_handshake_that_never_finishes(serve) -> None:
    """TCP is accepted, the server never says a word: the deadline ends the handshake."""
    server = serve(lambda conn: time.sleep(5))
    assert_deadline_kept(lambda: bounded_request(deadline_session(), "GET", server.url(scheme="https"), deadline=1,
                                                 max_bytes=100), 1)


# --- the watchdog itself -----------------------------------------------------------------------

def test_a_deadline_shuts_down_a_blocked_recv_and_leaves_finished_sockets_alone() -> None:
    left, right = socket.socketpair()
    other_left, other_right = socket.socketpair()
    try:
        deadline = start_deadline(0.3)
        deadline.watch(left)
        done = start_deadline(0.3)
        done.watch(other_left)
        done.finish()  # finished in time: never shut down
        started = time.monotonic()
        assert left.recv(10) == b""  # blocked until the watchdog shut the socket down
        assert 0.25 <= time.monotonic() - started < 0.3 + MARGIN
        assert deadline.expired
        deadline.finish()
        time.sleep(0.1)
        other_right.sendall(b"still here")
        assert other_left.recv(10) == b"still here"
    finally:
        for sock in (left, right, other_left, other_right):
            sock.close()


def test_a_socket_watched_after_its_deadline_is_shut_down_at_once() -> None:
    left, right = socket.socketpair()
    try:
        deadline = start_deadline(0.05)
        time.sleep(0.2)
        deadline.watch(left)
        left.settimeout(2)
        assert left.recv(10) == b""
        deadline.finish()
    finally:
        left.close()
        right.close()


# --- Retry-After ----------------------------------------------------------------------------------

def test_retry_after_in_seconds_or_as_an_http_date_capped_at_a_day() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 0.5 ") == 0.5  # some upstreams send fractions
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:30 GMT", now) == 90
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date gone by: no wait
    assert parse_retry_after("9999999") == 86400
    assert parse_retry_after("inf") is None and parse_retry_after("-5") is None and parse_retry_after("\u00b2") is None
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("") is None
