"""A database that stops answering (frozen server, hung host) gives 503s within the deadlines, never
a hang. Frozen through a TCP proxy on 127.0.0.1 that stops forwarding: the kernel keeps accepting
and acknowledging, nothing comes back, exactly as with a SIGSTOPped PostgreSQL."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import create_app
from database import Database, database_deadline
from tests.conftest import accept_forever
from web.api import HEALTH_DB_DEADLINE_SECONDS

MARGIN = 1.0


class FreezableProxy:
    """Forwards TCP to the test PostgreSQL until frozen; frozen, it reads but passes nothing on and
    leaves new connections waiting, until thawed."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target  # (host, port), or the path of a Unix socket
        self.thawed = threading.Event()
        self.thawed.set()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=accept_forever, args=(self.listener, self._connect), daemon=True).start()

    def freeze(self) -> None:
        self.thawed.clear()

    def thaw(self) -> None:
        self.thawed.set()

    def _connect(self, client: socket.socket) -> None:
        self.sockets.append(client)
        self.thawed.wait()
        try:
            if isinstance(self.target, str):
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.target)
            else:
                upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        self.sockets.append(upstream)
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.thawed.wait()
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.thaw()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def upstream_of(database_url: str) -> tuple[str, int] | str:
    """Where the test PostgreSQL listens: host and port, or its Unix socket (the embedded server)."""
    url = make_url(database_url)
    socket_dir = url.query.get("host") or (url.host if url.host and url.host.startswith("/") else None)
    if socket_dir:
        return str(Path(str(socket_dir)) / f".s.PGSQL.{url.port or 5432}")
    return (url.host or "127.0.0.1", url.port or 5432)


@pytest.fixture
def proxy(database_url: str, db: Database) -> Iterator[FreezableProxy]:
    with closing(FreezableProxy(upstream_of(database_url))) as server:
        yield server


@pytest.fixture
def proxied(database_url: str, proxy: FreezableProxy) -> Iterator[Database]:
    url = make_url(database_url)
    url = url.set(host="127.0.0.1", port=proxy.port, query={k: v for k, v in url.query.items() if k != "host"})
    database = Database(url.render_as_string(hide_password=False))
    yield database
    proxy.thaw()
    database.dispose()


def timed_get(client, path: str, **kwargs):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    response = client.get(path, **kwargs)
    return response, time.monotonic() - started


def test_health_and_the_api_answer_503_when_the_database_freezes(config, proxy, proxied, auth) -> None:
    app = create_app(config, database=proxied)
    # production: 10 s; shorter keeps the test quick (libpq's connect_timeout is at least 2 s)
    app.config["API_DB_DEADLINE_SECONDS"] = 2.0
    client = app.test_client()
    assert client.get("/health").status_code == 200  # the pool holds live connections now
    assert client.get("/payments", headers=auth).status_code == 200

    proxy.freeze()
    health, took = timed_get(client, "/health")  # pooled connection: pre-ping and statements hang
    assert health.status_code == 503 and health.get_json()["database"] == "disconnected"
    assert HEALTH_DB_DEADLINE_SECONDS - 0.1 <= took < HEALTH_DB_DEADLINE_SECONDS + MARGIN

    listing, took = timed_get(client, "/payments", headers=auth)
    assert listing.status_code == 503 and listing.get_json()["error"] == "database_unavailable"
    assert took < 2.0 + MARGIN
    started = time.monotonic()
    created = client.post("/payments", headers=auth, json={
        "wallet_address": "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx", "expected_amount_usdt": "1",
        "order_id": "frozen", "callback_url": "http://127.0.0.1:9/h"})
    assert created.status_code == 503 and time.monotonic() - started < 2.0 + MARGIN

    proxied.engine.dispose()  # no pooled connection left: a new one must be made, and hangs
    health, took = timed_get(client, "/health")
    assert health.status_code == 503 and took < HEALTH_DB_DEADLINE_SECONDS + MARGIN

    proxy.thaw()
    assert client.get("/health").status_code == 200  # recovered without a restart
    assert client.get("/payments", headers=auth).status_code == 200


def test_without_a_deadline_nothing_is_cut(proxied: Database) -> None:
    """Background work (watcher, dispatcher) runs without a deadline; a slow statement finishes."""
    with proxied.engine.connect() as conn:
        assert conn.execute(text("SELECT 1 FROM pg_sleep(0.3)")).scalar() == 1


def test_a_statement_longer_than_the_deadline_is_cut(proxied: Database) -> None:
    """Not only a frozen server: any statement still running at the deadline ends there."""
    started = time.monotonic()
    with pytest.raises(Exception) as caught, database_deadline(0.5), proxied.engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(5)"))
    assert time.monotonic() - started < 0.5 + MARGIN
    assert "closed" in str(caught.value) or "terminat" in str(caught.value)
    with proxied.engine.connect() as conn:  # the pool gives a working connection afterwards
        assert conn.execute(text("SELECT 1")).scalar() == 1
