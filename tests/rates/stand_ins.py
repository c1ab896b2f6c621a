"""Stand-ins for the fiat rate providers on 127.0.0.1: a real HTTP server answering CoinGecko's
`/api/v3/simple/price` and Kraken's `/0/public/Ticker` in the shapes their documentation shows (tests/data/README.md,
"Fiat rate sources"), with quotes the test changes and faults it scripts."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COINGECKO_PATH = "/api/v3/simple/price"
KRAKEN_PATH = "/0/public/Ticker"


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the answer starts


@dataclass
class Providers:
    """`coingecko`: each lower-case vs_currency's number as the JSON text to send (so NaN, -1 or "7.2" can be sent);
    `kraken`: each code's last trade price (a string, as Kraken writes prices). `down[path]`: the reply every request
    to that path gets until removed; `script(path, ...)`: the next replies, once each."""

    coingecko: dict[str, str] = field(default_factory=lambda: {"usd": "1.0003", "eur": "0.9212", "cny": "7.2415"})
    coingecko_updated: int | None = None  # tether.last_updated_at; None: now
    kraken: dict[str, str] = field(default_factory=lambda: {"USD": "1.00010", "EUR": "0.92150", "GBP": "0.78770"})
    down: dict[str, Reply] = field(default_factory=dict)
    scripted: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, path: str, *replies: Reply) -> None:
        self.scripted.setdefault(path, []).extend(replies)

    def asked(self, path: str) -> list[dict[str, list[str]]]:
        with self._lock:
            return [query for p, query in self.requests if p == path]

    def answer(self, path: str, query: dict[str, list[str]]) -> Reply:
        with self._lock:
            self.requests.append((path, query))
            if path in self.down:
                return self.down[path]
            if self.scripted.get(path):
                return self.scripted[path].pop(0)
        if path == COINGECKO_PATH:
            return self.coingecko_answer(query)
        if path == KRAKEN_PATH:
            return self.kraken_answer(query)
        return Reply(404, b'{"error":"not found"}')

    def coingecko_answer(self, query: dict[str, list[str]]) -> Reply:
        if query.get("ids") != ["tether"] or query.get("include_last_updated_at") != ["true"]:
            return Reply(400, b'{"error":"unexpected query"}')
        wanted = query.get("vs_currencies", [""])[0].split(",")
        numbers = [f'"{code}":{self.coingecko[code]}' for code in wanted if code in self.coingecko]
        updated = self.coingecko_updated if self.coingecko_updated is not None else int(time.time())
        return Reply(200, ('{"tether":{' + ",".join([*numbers, f'"last_updated_at":{updated}']) + "}}").encode())

    def kraken_answer(self, query: dict[str, list[str]]) -> Reply:
        pair = query.get("pair", [""])[0]
        code = pair[4:] if pair.startswith("USDT") else ""
        if code not in self.kraken:
            return Reply(200, b'{"error":["EQuery:Unknown asset pair"]}')
        price = self.kraken[code]
        name = "USDTZUSD" if code == "USD" else pair  # Kraken names the USD pair by its legacy asset code
        ticker = {"a": [price, "12028", "12028.000"], "b": [price, "50000", "50000.000"], "c": [price, "120.00000000"],
                  "v": ["1835221.6", "2674127.8"], "p": [price, price], "t": [1522, 2489], "l": [price, price],
                  "h": [price, price], "o": price}
        return Reply(200, json.dumps({"error": [], "result": {name: ticker}}).encode())


def serve(providers: Providers) -> Iterator[Providers]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            parts = urlsplit(self.path)
            reply = providers.answer(parts.path, parse_qs(parts.query))
            time.sleep(reply.delay)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                if name != "Content-Type":
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    providers.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield providers
    finally:
        server.shutdown()
        server.server_close()
