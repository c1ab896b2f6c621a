"""The simulator's HTTP layer: parse a request, ask the simulator for a :class:`Reply`, write it.

Besides plain answers it writes the hostile ones a client's deadline and size cap must survive: dripped one byte
at a time, chunked without end, or huge (streamed from one fixed buffer, so memory stays flat).
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20
CHUNK = 64 * 1024
_ZEROS = b"0" * CHUNK
ENDLESS_CHUNK = b'{"padding":"' + b"0" * 1000 + b'"},'


@dataclass(frozen=True)
class Reply:
    """What to write back. ``mode``: ``plain``, ``drip`` (one byte every ``seconds``), ``endless`` (a chunk every
    ``seconds``, never finished) or ``huge`` (``body`` padded to ``size`` bytes of valid JSON)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    mode: str = "plain"
    seconds: float = 0.0
    size: int = 0


RequestHandler = Callable[[str, str, dict[str, str], Any, str, "str | None"], Reply]


def huge_parts(body: bytes, size: int) -> tuple[bytes, int, bytes]:
    """(prefix, number of padding bytes, suffix): the real JSON answer with a padding string of ``size`` bytes in
    total (or the answer alone when it is already that big)."""
    if body.startswith(b"["):
        prefix, suffix = b'[{"padding":"', b'"}' + (b"]" if body.strip() == b"[]" else b"," + body[1:])
    else:
        prefix, suffix = b'{"padding":"', b'"}' if body.strip() == b"{}" else b'",' + body[1:]
    return prefix, max(0, size - len(prefix) - len(suffix)), suffix


def iter_padding(count: int) -> Iterator[bytes]:
    while count > 0:
        piece = min(count, CHUNK)
        yield _ZEROS if piece == CHUNK else _ZEROS[:piece]
        count -= piece


def handler_class(handle: RequestHandler, stopping: threading.Event) -> type[BaseHTTPRequestHandler]:
    """A request handler class serving ``handle``; streams stop when ``stopping`` is set."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tron-sim/1.0"
        disable_nagle_algorithm = True  # headers and body go in separate writes: avoid 40 ms delayed-ACK stalls

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            body = self._read_body()
            base_url = f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}"
            try:
                reply = handle(method, parts.path, params, body, base_url, self.headers.get("TRON-PRO-API-KEY"))
            except Exception:  # a simulator bug must not kill the connection silently
                logger.exception("simulator error on %s %s", method, self.path)
                reply = Reply(500, b'{"Error": "simulator error"}')
            try:
                self._write(reply)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.close_connection = True
                logger.debug("client went away during the answer to %s", self.path)

        def _read_body(self) -> Any:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            raw = self.rfile.read(length) if length else b""
            if not raw.strip():
                return None
            try:
                return json.loads(raw)
            except ValueError:
                return None

        def _headers(self, reply: Reply, length: int | None) -> None:
            extra = dict(reply.headers)
            self.log_request(reply.status)
            self.send_response_only(reply.status)
            self.send_header("Server", extra.pop("Server", self.version_string()))  # a fault may pose as a proxy
            self.send_header("Date", self.date_time_string())
            self.send_header("Content-Type", f"{reply.content_type}; charset=utf-8")
            for name, value in extra.items():
                self.send_header(name, value)
            if length is None:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(length))
            self.end_headers()

        def _write(self, reply: Reply) -> None:
            if reply.mode == "drip":
                self._drip(reply)
            elif reply.mode == "endless":
                self._endless(reply)
            elif reply.mode == "huge":
                self._huge(reply)
            else:
                self._headers(reply, len(reply.body))
                self.wfile.write(reply.body)

        def _drip(self, reply: Reply) -> None:
            self._headers(reply, len(reply.body))
            self.wfile.flush()
            for index in range(len(reply.body)):
                if stopping.wait(reply.seconds):
                    self.close_connection = True
                    return
                self.wfile.write(reply.body[index:index + 1])
                self.wfile.flush()

        def _endless(self, reply: Reply) -> None:
            self.close_connection = True
            self._headers(reply, None)
            self._chunk(b'{"data":[')
            while not stopping.wait(reply.seconds):
                self._chunk(ENDLESS_CHUNK)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _huge(self, reply: Reply) -> None:
            prefix, padding, suffix = huge_parts(reply.body, reply.size)
            self._headers(reply, len(prefix) + padding + len(suffix))
            self.wfile.write(prefix)
            for piece in iter_padding(padding):
                if stopping.is_set():
                    self.close_connection = True
                    return
                self.wfile.write(piece)
            self.wfile.write(suffix)

    return Handler
