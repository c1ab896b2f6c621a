"""Per-request cost of the hot routes, counted rather than timed, so a busy machine does not change it.

    .venv/bin/python -m bench.profile_api                  # 2,000 creates, 2,000 reads, 200 pages of the list
    .venv/bin/python -m bench.profile_api --requests 200 --cprofile create

The app runs in this process (Flask's test client, the production code path below the HTTP server) on a
fresh database, reached through a small TCP relay on 127.0.0.1 that counts the protocol messages the client
sends: each simple-query message ('Q') is one round trip to PostgreSQL (BEGIN, COMMIT and the pool's
pre-ping included, which SQLAlchemy's events do not see). Reported per request: round trips, SQL statements
(SQLAlchemy's `before_cursor_execute`), pool checkouts, Python function calls (cProfile) and this thread's CPU
time (`time.thread_time`: the CPU the request cost in Python, not the wait for PostgreSQL; still somewhat
sensitive to a busy machine's caches, so it is a median)."""
from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import pstats
import selectors
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url

from bench.common import DEFAULT_PG, BenchDatabase

API_KEY = "tum_profile_key_0123456789abcdef"


class CountingRelay:
    """Forwards TCP connections from 127.0.0.1:<port> to PostgreSQL and counts the client's query messages."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.queries = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        pending = b""
        started = False  # the startup message has no type byte
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(0.2):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    if key.fileobj is client:
                        pending += data
                        pending, started = self._count(pending, started)
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def _count(self, buffer: bytes, started: bool) -> tuple[bytes, bool]:
        while True:
            if not started:
                if len(buffer) < 4:
                    return buffer, started
                (length,) = struct.unpack("!I", buffer[:4])
                if len(buffer) < length:
                    return buffer, started
                (code,) = struct.unpack("!I", buffer[4:8])
                # SSLRequest / GSSENCRequest come before the startup message proper
                buffer, started = buffer[length:], code not in (80877103, 80877104)
                continue
            if len(buffer) < 5:
                return buffer, started
            kind = buffer[:1]
            (length,) = struct.unpack("!I", buffer[1:5])
            if len(buffer) < 1 + length:
                return buffer, started
            if kind in (b"Q", b"S"):  # a simple query; Sync ends an extended-protocol exchange
                with self._lock:
                    self.queries += 1
            buffer = buffer[1 + length:]

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


class Counters:
    def __init__(self, engine: Any, relay: CountingRelay) -> None:
        self.relay = relay
        self.statements = 0
        self.checkouts = 0
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine.pool, "checkout", self._checkout)

    def _statement(self, *args: Any) -> None:
        self.statements += 1

    def _checkout(self, *args: Any) -> None:
        self.checkouts += 1

    def snapshot(self) -> tuple[int, int, int]:
        return self.relay.queries, self.statements, self.checkouts


def measure(name: str, requests: int, call: Callable[[int], None], counters: Counters,
            profile: bool) -> dict[str, Any]:
    for i in range(min(50, requests)):  # warm-up: pool, caches, first-use imports
        call(-1 - i)
    cpu: list[float] = []
    before = counters.snapshot()
    for i in range(requests):
        started = time.thread_time()
        call(i)
        cpu.append(time.thread_time() - started)
    after = counters.snapshot()
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(requests):
        call(requests + i)
    profiler.disable()
    stats = pstats.Stats(profiler)
    if profile:
        stats.sort_stats("cumulative").print_stats(40)
    per = [round((a - b) / requests, 2) for a, b in zip(after, before, strict=True)]
    return {"route": name, "requests": requests, "round_trips": per[0], "sql_statements": per[1],
            "pool_checkouts": per[2], "python_calls": round(stats.total_calls / requests),  # type: ignore[attr-defined]
            "python_cpu_ms_median": round(1000 * statistics.median(cpu), 3)}


def run(pg_url: str, requests: int, profile: str | None) -> list[dict[str, Any]]:
    from app import create_app
    from database import Database
    from infra.config import Config
    from tron_sim import random_address

    bench_db = BenchDatabase(pg_url, "profile")
    relay = None
    db = None
    try:
        bench_db.migrate()
        url = make_url(bench_db.url)
        relay = CountingRelay((url.host or "127.0.0.1", url.port or 5432))
        db = Database(url.set(host="127.0.0.1", port=relay.port).update_query_dict(
            {"sslmode": "disable", "gssencmode": "disable"}).render_as_string(hide_password=False))
        counters = Counters(db.engine, relay)
        config = Config(database_url=db.url, api_keys=(API_KEY,), watcher_enabled=False, allow_private_callbacks=True)
        client = create_app(config, database=db).test_client()
        auth = {"Authorization": f"Bearer {API_KEY}"}
        wallets = [random_address() for _ in range(100)]
        ids: list[str] = []

        serial = itertools.count()

        def create(_: int) -> None:
            i = next(serial)
            amount = f"{100 + i % 1000}.{i % 10**6:06d}"
            body = {"wallet_address": wallets[i % len(wallets)], "expected_amount_usdt": amount,
                    "order_id": f"profile-{i}", "callback_url": "http://127.0.0.1:9/hook",
                    "metadata": {"customer": str(i)}}
            answer = client.post("/payments", json=body, headers=auth)
            assert answer.status_code == 201, answer.get_data(as_text=True)
            ids.append(answer.get_json()["id"])

        def read(i: int) -> None:
            answer = client.get(f"/payments/{ids[abs(i) % len(ids)]}", headers=auth)
            assert answer.status_code == 200, answer.get_data(as_text=True)

        def list_page(i: int) -> None:
            answer = client.get("/payments?limit=50", headers=auth)
            assert answer.status_code == 200 and len(answer.get_json()["payments"]) == 50, answer.status_code

        return [measure("POST /payments", requests, create, counters, profile == "create"),
                measure("GET /payments/<id>", requests, read, counters, profile == "get"),
                measure("GET /payments?limit=50", max(1, requests // 10), list_page, counters, profile == "list")]
    finally:
        if db is not None:
            db.dispose()
        if relay is not None:
            relay.close()
        bench_db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_api", description=__doc__.split("\n")[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a PostgreSQL server (superuser); default %(default)s")
    parser.add_argument("--requests", type=int, default=2000, help="requests per route")
    parser.add_argument("--cprofile", choices=("create", "get", "list"), help="also print the route's cProfile top 40")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    rows = run(args.pg_url, args.requests, args.cprofile)
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
