"""Hostile or broken answers the simulator cannot give: a block or receipt time far ahead of the accepted head, and a
body that is JSON the parser cannot take. A real HTTP upstream on 127.0.0.1 forwards to the simulator and
rewrites the answers it is told to (the simulator has no fault kind for these)."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from config import Config
from models import Transfer, WebhookEvent
from tests.conftest import WALLET, WALLET_B, create, get, pay
from tron_sim import Simulator

TEN_YEARS_MS = 10 * 365 * 86400 * 1000
Rewrite = Callable[[Any], bytes]


class TamperingUpstream:
    """Forwards every request to `target`; the next `count` answers to a path are rewritten by `rewrite`."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.rules: list[tuple[str, Rewrite, int]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def rewrite(self, path: str, rewrite: Rewrite, count: int = 1) -> None:
        with self.lock:
            self.rules.append((path, rewrite, count))

    def take(self, path: str) -> Rewrite | None:
        with self.lock:
            for i, (prefix, rewrite, count) in enumerate(self.rules):
                if path.startswith(prefix):
                    if count <= 1:
                        del self.rules[i]
                    else:
                        self.rules[i] = (prefix, rewrite, count - 1)
                    return rewrite
        return None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                answer = requests.request(self.command, upstream.target + self.path, data=body, timeout=5,
                                          headers={"Content-Type": self.headers.get("Content-Type", "")})
                content = answer.content
                rewrite = upstream.take(self.path.split("?")[0])
                if rewrite is not None:
                    content = rewrite(json.loads(content))
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

        return Handler


@pytest.fixture
def hostile(sim: Simulator) -> Iterator[TamperingUpstream]:
    proxy = TamperingUpstream(sim.url)
    yield proxy
    proxy.stop()


def shift_time(by_ms: int) -> Rewrite:
    """Every transaction info of the answer (a list, or one object) with its block time moved by `by_ms`."""

    def rewrite(body: Any) -> bytes:
        for info in body if isinstance(body, list) else [body]:
            if isinstance(info, dict) and "blockTimeStamp" in info:
                info["blockTimeStamp"] += by_ms
        return json.dumps(body).encode()

    return rewrite


def expired_events(db) -> int:  # type: ignore[no-untyped-def]
    with db.Session() as s:
        return s.scalar(select(func.count()).where(WebhookEvent.type == "payment.expired")) or 0


def test_one_block_answer_with_a_time_ten_years_ahead_expires_nothing(new_watcher, client, auth, db, sim, config,
                                                                       hostile) -> None:
    """A solid head ten years ahead is refused; the same lie in a gettransactioninfobyblocknum answer is not: its
    blockTimeStamp becomes the block cursor's time, never checked against the accepted head, and every pending
    payment expires, then every payment created later, at its first cycle."""
    cfg: Config = config.with_overrides(trongrid_api_url=hostile.url, watcher_strategy="blocks", trongrid_max_rps=500.0)
    watcher = new_watcher(cfg)
    a = create(client, auth, "5", expires_in_seconds=3600)
    b = create(client, auth, "6", wallet=WALLET_B, expires_in_seconds=3600)
    sim.mine(3)
    watcher.run_once()  # read up to the head: the next block is a mined one, with (mainnet-like) USDT traffic
    sim.mine(1)
    hostile.rewrite("/walletsolidity/gettransactioninfobyblocknum", shift_time(TEN_YEARS_MS))
    watcher.run_once()
    later = create(client, auth, "7", expires_in_seconds=3600)
    for _ in range(2):
        sim.mine(1)
        watcher.run_once()
    statuses = [get(client, auth, p)["status"] for p in (a, b, later)]
    with db.Session() as s:
        cursor = watcher.view.state(s, "block_cursor")
    assert statuses == ["pending"] * 3 and expired_events(db) == 0, (
        f"statuses {statuses}, block cursor time {cursor['timestamp']} vs the chain's {sim.state()['solid_timestamp']}")


def test_one_receipt_with_a_time_ten_years_ahead_expires_no_payment(new_watcher, client, auth, db,
                                                                                      sim, config, hostile) -> None:
    """The account strategy takes a receipt's blockTimeStamp as the transfer's chain time: expire_due runs up to it
    on the wallet (payment.expired for both payments, the other one an hour early), and the money then finds no
    candidate and is not stored (here the sweep of the same cycle, with a true receipt, reopens the paid one)."""
    cfg: Config = config.with_overrides(trongrid_api_url=hostile.url, watcher_strategy="account",
                                        trongrid_max_rps=500.0)
    watcher = new_watcher(cfg)
    paid = create(client, auth, "5", expires_in_seconds=3600)
    other = create(client, auth, "6", expires_in_seconds=3600)  # same wallet, its payer still has an hour
    tx = pay(sim, WALLET, 5_000_000)
    hostile.rewrite("/walletsolidity/gettransactioninfobyid", shift_time(TEN_YEARS_MS))
    watcher.run_once()
    with db.Session() as s:
        stored = s.scalar(select(func.count()).select_from(Transfer).where(Transfer.transaction_hash == tx))
    statuses = [get(client, auth, p)["status"] for p in (paid, other)]
    assert expired_events(db) == 0, f"{expired_events(db)} payment.expired sent; statuses {statuses}, stored {stored}"
    assert statuses in (["pending", "pending"], ["completed", "pending"]), (statuses, stored)


def test_a_block_time_beyond_any_date_does_not_halt_every_cycle(new_watcher, client, auth, db, sim, config,
                                                                 hostile) -> None:
    """A blockTimeStamp no datetime can hold: the block cursor stores it, then every cycle dies in expire_due (an
    OSError, not a TronError) after its scan, forever: nothing expires again, no report, no reconciliation."""
    cfg: Config = config.with_overrides(trongrid_api_url=hostile.url, watcher_strategy="blocks", trongrid_max_rps=500.0)
    watcher = new_watcher(cfg)
    due = create(client, auth, "8", expires_in_seconds=60)
    sim.mine(3)
    watcher.run_once()
    sim.mine(1)
    hostile.rewrite("/walletsolidity/gettransactioninfobyblocknum", shift_time(10**20))
    failures = []
    for step in range(3):
        if step == 1:
            sim.advance(120)  # chain time passes the payment's expiry
            sim.mine(3)
        try:
            watcher.run_once()
        except Exception as exc:  # run_forever logs it and starts the next cycle, which fails the same way
            failures.append(type(exc).__name__)
    assert not failures and get(client, auth, due)["status"] == "expired", (failures, get(client, auth, due)["status"])


def test_an_answer_the_json_parser_cannot_take_hands_over_to_the_next_upstream(new_watcher, client, auth, db, sim,
                                                                                config, hostile) -> None:
    """A deeply nested body (RecursionError, not ValueError) escapes the client as a non-TronError: no failover to
    the healthy second upstream, the cycle dies, nothing is reported."""
    cfg: Config = config.with_overrides(trongrid_api_url=f"{hostile.url},{sim.replica().url}",
                                        watcher_strategy="blocks", trongrid_max_rps=500.0)
    watcher = new_watcher(cfg)
    p = create(client, auth, "9")
    watcher.run_once()
    hostile.rewrite("/walletsolidity/getnowblock", lambda _: b"[" * 100_000 + b"]" * 100_000, count=100)
    pay(sim, WALLET, 9_000_000)
    try:
        watcher.run_once()
    except Exception as exc:
        pytest.fail(f"the cycle died with {type(exc).__name__} instead of failing over to the other upstream")
    assert get(client, auth, p)["status"] == "completed"
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and hostile.url.split("//")[1] in str(health["watcher"]["upstreams"])



def test_health_names_the_upstream_whose_answers_end_every_cycle(new_watcher, client, auth, db, sim, config,
                                                                  hostile) -> None:
    """The same answer from the only upstream: every cycle dies before its report, and /health shows a stopped
    watcher with an empty last_error instead of a running one naming the failing upstream."""
    cfg: Config = config.with_overrides(trongrid_api_url=hostile.url, watcher_strategy="blocks", trongrid_max_rps=500.0,
                                        polling_interval_seconds=0.2)
    watcher = new_watcher(cfg)
    create(client, auth, "9")
    watcher.run_once()
    hostile.rewrite("/walletsolidity/getnowblock", lambda _: b"[" * 100_000 + b"]" * 100_000, count=10**6)
    watcher.start()
    time.sleep(1.5)  # seven intervals
    health = client.get("/health").get_json()
    watcher.stop()
    report = health["watcher"]
    assert report["running"] and hostile.url.split("//")[1] in str(report["last_error"]), report
