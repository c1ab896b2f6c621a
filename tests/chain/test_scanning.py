"""Both strategies against the real TronGrid's ways: nodes behind the others, a lagging index, lying heads, answers
that drip or never end, transfers that cannot be credited, listings without token info, several upstreams."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from chain import scanning
from chain.chain_view import ChainView
from infra.config import Config
from models import Payment, PaymentLog, RejectedTransfer, Transfer, WalletCursor, WebhookEvent
from tests.conftest import PAYER, WALLET, WALLET_B, create, events, get, log_types, pay
from tron_client import TronClient
from tron_sim import Simulator, random_address


def reading(config: Config, upstreams: str, strategy: str, **overrides: object) -> Config:
    """The test configuration reading `upstreams` with `strategy`, at a rate the simulator takes."""
    return config.with_overrides(trongrid_api_url=upstreams, watcher_strategy=strategy, trongrid_max_rps=500.0,
                                 **overrides)


def cursors_within_the_true_head(db, sim: Simulator, cfg: Config) -> None:
    """No cursor, and no accepted head, beyond what the chain really has solidified."""
    state = sim.state()
    view = ChainView(cfg)
    with db.Session() as s:
        head = view.accepted_head(s)
        block = view.state(s, "block_cursor")
        wallets = list(s.scalars(select(WalletCursor.last_checked_timestamp).where(WalletCursor.chain == view.chain)))
    assert head is None or (head.number <= state["solid_head"] and head.timestamp <= state["solid_timestamp"])
    assert block is None or (block["number"] <= state["solid_head"] and block["timestamp"] <= state["solid_timestamp"])
    assert all(ts <= state["solid_timestamp"] for ts in wallets)


# -- nodes behind the others ---------------------------------------------------------------------------------
def test_a_block_a_lagging_node_answers_empty_is_never_skipped(new_watcher, client, auth, db, sim, config):
    """A node that has not reached block N answers [] for it: the blocks strategy asks again, never moves past."""
    cfg = reading(config, sim.url, "blocks")
    watcher = new_watcher(cfg)
    p = create(client, auth, "6")
    watcher.run_once()
    tx = pay(sim, WALLET, 6_000_000)
    block = sim.tx_block(tx)
    sim.set_node_lag(1.0, 20, seed=1)  # every answer from a node 20 blocks behind
    for _ in range(3):
        watcher.run_once()
        with db.Session() as s:
            assert watcher.view.state(s, "block_cursor")["number"] < block
    assert get(client, auth, p)["status"] == "pending"
    sim.set_node_lag(0.3, 20, seed=2)  # a pool: most answers from nodes that are up to date
    for _ in range(10):
        watcher.run_once()
        if get(client, auth, p)["status"] == "completed":
            break
    assert get(client, auth, p)["status"] == "completed" and events(db, p) == ["payment.completed"]
    cursors_within_the_true_head(db, sim, cfg)


def test_an_empty_block_is_believed_only_when_getblockbynum_shows_it_empty(new_watcher, db, config):
    quiet = Simulator(block_interval=0, solidify_depth=2, usdt_noise_per_block=0, follow_clock=True)
    quiet.start()
    try:
        node = new_watcher(reading(config, quiet.url, "blocks"))
        head = quiet.mine(1)
        quiet.mine(2)  # solidified
        latest = quiet.state()["solid_timestamp"]
        assert node.blocks.read_block(head, latest) is not None and node.blocks.read_block(head, latest)[1] == []
        assert quiet.count("/walletsolidity/getblockbynum") >= 1  # [] was checked before it was believed
        quiet.set_node_lag(1.0, 20, seed=3)
        newest = quiet.mine(3)
        assert node.blocks.read_block(newest - 2, quiet.state()["solid_timestamp"]) is None  # not yet: a node behind
    finally:
        quiet.stop()


def test_a_receipt_a_lagging_node_does_not_have_is_asked_again(new_watcher, client, auth, db, sim, config):
    cfg = reading(config, sim.url, "account")
    watcher = new_watcher(cfg)
    p = create(client, auth, "2")
    pay(sim, WALLET, 2_000_000)
    sim.set_node_lag(1.0, 20, seed=4)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "pending"  # the listing shows it, every node asked lacks it
    sim.set_node_lag(0.3, 20, seed=5)
    for _ in range(5):
        watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"


# -- the /v1 index lags --------------------------------------------------------------------------------------
def test_a_transfer_the_index_lists_90s_late_is_credited_and_nothing_expires_early(new_watcher, client, auth, db,
                                                                                   sim, config):
    cfg = reading(config, sim.url, "account")
    watcher = new_watcher(cfg)
    sim.set_index_lag(90)
    paid = create(client, auth, "7", expires_in_seconds=60)
    quiet = create(client, auth, "8", wallet=WALLET_B, expires_in_seconds=60)
    watcher.run_once()
    pay(sim, WALLET, 7_000_000)  # mined before expiry
    sim.advance(45)
    for _ in range(30):  # chain time passes expiry; the index shows the transfer 90 s after its block
        sim.mine(5)
        watcher.run_once()
        assert get(client, auth, quiet)["status"] == "pending" or expired_after_its_time(db, quiet)
        if get(client, auth, quiet)["status"] == "expired" and get(client, auth, paid)["status"] == "completed":
            break
    got = get(client, auth, paid)
    assert got["status"] == "completed" and got["paid_late"] is False
    assert get(client, auth, quiet)["status"] == "expired" and expired_after_its_time(db, quiet)
    cursors_within_the_true_head(db, sim, cfg)


def expired_after_its_time(db, payment: dict) -> bool:
    """The payment expired on a read that had really reached its expiry in chain time."""
    with db.Session() as s:
        row = s.get(Payment, uuid.UUID(payment["id"]))
        log = s.scalars(select(PaymentLog).where(PaymentLog.payment_id == row.id,
                                                  PaymentLog.event_type == "expired")).one_or_none()
    return log is not None and log.event_metadata["read_up_to"] >= int(row.expires_at.timestamp() * 1000)


# -- lying heads ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lie, param", [("head_future", {}), ("head_ahead", {"blocks": 300})])
def test_a_lying_solid_head_is_refused_and_shown(new_watcher, client, auth, db, sim, config, strategy, lie, param):
    cfg = reading(config, sim.url, strategy, tron_block_seconds=3.0, upstream_clock_skew_seconds=600.0)
    watcher = new_watcher(cfg)
    p = create(client, auth, "9", expires_in_seconds=3600)
    other = create(client, auth, "4", wallet=WALLET_B)
    watcher.run_once()
    sim.set_fault(lie, count=3, **param)  # every answer of this cycle lies
    result = watcher.run_once()
    assert result.refused and "refused" in result.refused[0]
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and sim.url.split("//")[1] in health["watcher"]["last_error"]
    assert "ahead" in health["watcher"]["last_error"] or "jumped" in health["watcher"]["last_error"]
    assert WALLET not in str(health) and WALLET_B not in str(health)
    cursors_within_the_true_head(db, sim, cfg)
    assert get(client, auth, p)["status"] == "pending" and get(client, auth, other)["status"] == "pending"
    assert events(db, p) == [] and events(db, other) == []  # nothing expired by the lie
    pay(sim, WALLET, 9_000_000)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"
    assert client.get("/health").get_json()["status"] == "healthy"


# -- transfers that cannot be credited -----------------------------------------------------------------------
def test_an_amount_out_of_range_is_rejected_and_the_cycle_goes_on(client, auth, db, sim, watcher, strategy):
    p = create(client, auth, "5")
    huge = sim.transfer(WALLET, 10**30, from_=PAYER)  # fits a uint256, not NUMERIC(20,6)
    zero = sim.transfer(WALLET, 0, from_=PAYER)  # address-poisoning spam
    good = pay(sim, WALLET, 5_000_000)
    for _ in range(3):
        result = watcher.run_once()
        assert result is not None
    got = get(client, auth, p)
    assert got["status"] == "completed" and got["transaction_hash"] == good
    with db.Session() as s:
        rejected = {r.transaction_hash: r for r in s.scalars(select(RejectedTransfer))}
        stored = s.scalar(select(func.count()).select_from(Transfer))
    assert set(rejected) == {huge, zero} and stored == 1
    assert "above the largest" in rejected[huge].reason and rejected[huge].amount_raw == str(10**30)
    assert "zero amount" in rejected[zero].reason
    assert client.get("/stats").get_json()["rejected_transfers"] == 2
    with db.Session() as s:
        notes = list(s.scalars(select(PaymentLog.message).where(PaymentLog.event_type == "transfer_rejected")))
    assert len(notes) == 2  # once each, although the account overlap lists them again


@pytest.mark.parametrize("malformed", ["data", "short", "topics"])
def test_a_malformed_transfer_log_is_rejected_alone(client, auth, db, sim, watcher, malformed):
    p = create(client, auth, "3")
    bad = sim.transfer(WALLET, 3_000_000, from_=PAYER, malformed=malformed)
    good = sim.transaction([{"to": WALLET_B, "amount": 1_000_000, "from": PAYER}])
    create(client, auth, "1", wallet=WALLET_B)
    sim.solidify()
    watcher.run_once()
    with db.Session() as s:
        rows = s.scalars(select(RejectedTransfer).where(RejectedTransfer.transaction_hash == bad))
        reasons = [r.reason for r in rows]
        stored = list(s.scalars(select(Transfer.transaction_hash)))
    assert len(reasons) == 1 and reasons[0].startswith("malformed Transfer log")
    assert stored == [good] and get(client, auth, p)["status"] == "pending"


def test_a_listing_record_without_token_info_is_decided_by_its_receipt(new_watcher, client, auth, db, sim, config):
    cfg = reading(config, sim.url, "account")
    watcher = new_watcher(cfg)
    a = create(client, auth, "11")
    b = create(client, auth, "12", wallet=WALLET_B)
    tx = sim.transfer(WALLET, 11_000_000, from_=PAYER, index_token_info=False)
    sim.approve(PAYER, WALLET_B, 12_000_000)  # an Approval record is not money
    sim.solidify()
    watcher.run_once()
    assert get(client, auth, a)["status"] == "completed" and get(client, auth, a)["transaction_hash"] == tx
    assert get(client, auth, b)["status"] == "pending"
    sim.set_fault("blank_token_info", count=None)  # every record of a page without token info
    pay(sim, WALLET_B, 12_000_000)
    watcher.run_once()
    assert get(client, auth, b)["status"] == "completed"


# -- answers that never end ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["drip", "endless", "huge"])
def test_a_hostile_answer_costs_one_deadline_at_most(new_watcher, client, auth, db, sim, config, strategy, kind):
    cfg = reading(config, sim.url, strategy, trongrid_timeout_seconds=0.5)
    client_ = TronClient(cfg.trongrid_api_url, cfg.usdt_contract, max_rps=500.0, timeout=0.5, max_retries=1,
                         backoff_base=0.01, backoff_cap=0.02, max_bytes=1_000_000)
    watcher = new_watcher(cfg, client_)
    p = create(client, auth, "13")
    watcher.run_once()
    pay(sim, WALLET, 13_000_000)
    prefix = "/v1/accounts/" if strategy == "account" else "/walletsolidity/gettransactioninfobyblocknum"
    sim.set_fault(kind, count=1, path_prefix=prefix, seconds=0.2, size=5_000_000)
    started = time.monotonic()
    watcher.run_once()
    assert time.monotonic() - started < 0.5 * 2 + 1.0  # one deadline, one retry, the rest of the cycle
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"


# -- several upstreams ---------------------------------------------------------------------------------------
def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_calls_fail_over_to_the_next_upstream_and_health_names_the_failing_one(new_watcher, client, auth, sim,
                                                                               config, strategy):
    cfg = reading(config, f"{dead_url()},{sim.url}", strategy)
    watcher = new_watcher(cfg)
    p = create(client, auth, "14")
    pay(sim, WALLET, 14_000_000)
    watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"
    health = client.get("/health").get_json()
    states = {u["url"]: u["state"] for u in health["watcher"]["upstreams"]}
    assert list(states.values()) == ["failing", "ok"] and health["status"] == "degraded"


def test_auto_counts_only_upstreams_with_v1_and_the_node_serves_the_blocks(new_watcher, client, auth, db, sim, config):
    node = sim.replica(v1_api=False)  # the operator's own java-tron node, listed first
    cfg = reading(config, f"{node.url},{sim.url}", "auto")
    watcher = new_watcher(cfg)
    p = create(client, auth, "15")
    pay(sim, WALLET, 15_000_000)
    result = watcher.run_once()
    assert result.strategy == "account" and get(client, auth, p)["status"] == "completed"
    assert node.count("/v1/accounts/") == 0 and sim.count("/v1/accounts/") >= 1  # /v1 only where it exists
    assert node.count("/walletsolidity/getnowblock") >= 1  # the first upstream serves what it can


# -- one database transaction per chain transaction; a failed transaction is read once ----------------------

def test_a_crash_between_two_logs_of_one_transaction_loses_neither(new_watcher, client, auth, db, sim, config,
                                                                  monkeypatch):
    create(client, auth, "1.5")
    b = create(client, auth, "2.5")
    sim.transaction([{"to": WALLET, "amount": 1_500_000, "from": PAYER},
                     {"to": WALLET, "amount": 2_500_000, "from": PAYER}])
    sim.solidify()
    watcher = new_watcher(reading(config, sim.url, "account"))
    real = scanning.credit_transfer
    failures = []

    def crash_once_on_the_second_log(session, transfer, *rest):  # type: ignore[no-untyped-def]
        if transfer.log_index == 1 and not failures:
            failures.append(transfer)
            raise RuntimeError("the process dies between the two logs")
        return real(session, transfer, *rest)

    monkeypatch.setattr(scanning, "credit_transfer", crash_once_on_the_second_log)
    crashed = watcher.run_once()  # the cycle ends there, reported; the loop goes on
    assert crashed.errors == ["cycle failed: RuntimeError"]  # /health's words; the log has the exception's text
    watcher.run_once()
    with db.Session() as s:
        assert sorted(s.scalars(select(Transfer.log_index))) == [0, 1]
    assert get(client, auth, b)["status"] == "completed"



def test_a_failed_transaction_is_fetched_and_logged_once(new_watcher, client, auth, db, sim, config):
    watcher = new_watcher(reading(config, sim.url, "account"))
    p = create(client, auth, "4")
    pay(sim, WALLET, 4_000_000, reverted=True)
    for _ in range(4):  # the 60 s overlap lists it again every cycle
        watcher.run_once()
    assert log_types(client, auth, p).count("transfer_rejected") == 1
    assert sim.count("/walletsolidity/gettransactioninfobyid") == 1


# --- Request budgets: what one cycle sends to an upstream, counted by the upstream itself ---

def test_the_block_sweep_takes_at_most_a_fifth_of_the_budget_per_cycle(new_watcher, db, config: Config) -> None:
    """java-tron nodes only: the sweep re-reads the blocks of the last RECONCILE_INTERVAL_SECONDS, a fifth of the
    budget per cycle. 100 rps over 0.5 s is 50 requests a cycle, the sweep's share 10."""
    chain = Simulator(block_interval=0, solidify_depth=2, v1_api=False, follow_clock=True)
    chain.start()
    try:
        other = chain.replica(v1_api=False)  # the sweep's upstream: the scan prefers the first one
        cfg = config.with_overrides(trongrid_api_url=f"{chain.url},{other.url}", watcher_strategy="blocks",
                                    trongrid_max_rps=100.0, polling_interval_seconds=0.5,
                                    reconcile_interval_seconds=300.0, tron_block_seconds=3.0)
        watcher = new_watcher(cfg)
        sweep_budget = watcher.reconciler.blocks.budget()
        assert sweep_budget == 10
        before = other.count("/")
        result = watcher.run_once()
        sent = other.count("/") - before
        assert sent <= sweep_budget + 2, (
            f"the sweep sent {sent} requests in one cycle ({result.swept} blocks, {result.seconds:.2f}s for a "
            f"{cfg.polling_interval_seconds}s interval); its share is {sweep_budget}; the cycle reported "
            f"{result.sweep_requests} sweep requests")
    finally:
        chain.stop()


def test_receipts_of_money_that_stays_unmatched_stop_at_the_cycle_budget(new_watcher, client, auth, db, sim,
                                                                         config: Config) -> None:
    """Address poisoning sends zero-amount "transfers" to any busy wallet. Receipts for money that would stay
    unmatched are fetched only while the cycle's budget lasts (docs/watcher.md, the `account` strategy): 50 rps over
    0.2 s is 10 requests a cycle, whatever lands on one wallet."""
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="account", trongrid_max_rps=50.0,
                                polling_interval_seconds=0.2)
    watcher = new_watcher(cfg)
    create(client, auth, "5")
    create(client, auth, "6")  # two open payments: spam matches neither
    for _ in range(30):
        sim.transfer(WALLET, 0, from_=random_address())
    sim.solidify()
    budget = int(cfg.trongrid_max_rps * cfg.polling_interval_seconds)
    before = sim.count("/")
    result = watcher.run_once()
    sent = sim.count("/") - before
    receipts = sim.count("/walletsolidity/gettransactioninfobyid")
    # head, watermark, listing and the sweep's listing besides the budget
    assert sent <= budget + 4, (f"one cycle sent {sent} requests ({receipts} receipts) for a budget of {budget}, "
                                f"in {result.seconds:.2f}s for a {cfg.polling_interval_seconds}s interval")


def test_empty_blocks_do_not_double_the_blocks_scan_budget(new_watcher, db, config: Config) -> None:
    """On a chain with empty blocks (Nile, Shasta, the sandbox) each block costs two requests ([] and the
    getblockbynum cross-check). The catch-up still sends one interval's budget per cycle, not twice that."""
    quiet = Simulator(block_interval=0, solidify_depth=2, v1_api=False, usdt_noise_per_block=0, follow_clock=True)
    quiet.start()
    try:
        cfg = config.with_overrides(trongrid_api_url=quiet.url, watcher_strategy="blocks", trongrid_max_rps=500.0,
                                    polling_interval_seconds=0.2)
        watcher = new_watcher(cfg)
        watcher.run_once()  # the block cursor is placed at the head
        quiet.mine(150)  # the watcher was away for 150 (empty) blocks
        budget = int(cfg.trongrid_max_rps * cfg.polling_interval_seconds)
        before = quiet.count("/")
        result = watcher.run_once()
        sent = quiet.count("/") - before
        assert sent <= budget + 1, f"one cycle sent {sent} requests ({result.blocks} blocks) for a budget of {budget}"
    finally:
        quiet.stop()


def test_the_cycle_reports_every_request_it_sent(new_watcher, db, sim, config: Config) -> None:
    """CycleResult.requests (the watcher's log line, and what metrics will count) is what the upstream received."""
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=500.0,
                                polling_interval_seconds=0.2)
    watcher = new_watcher(cfg)
    watcher.run_once()
    sim.mine(10)
    before = sim.count("/")
    result = watcher.run_once()
    assert result.requests == sim.count("/") - before, (result.requests, sim.count("/") - before)


# --- Failover from an upstream that does not answer: it costs one deadline, not the retries of every call ---

INTERVAL = 1.0
TIMEOUT = 0.3  # TRONGRID_TIMEOUT_SECONDS, far below the interval here (the defaults: 15 s against 10 s)


def test_an_unresponsive_first_upstream_holds_no_cycle_longer_than_an_interval(new_watcher, client, auth, db,
                                                                               sim: Simulator, config: Config,
                                                                               strategy: str) -> None:
    """The operator's first upstream stops answering (a host gone, a firewall dropping packets): every request to
    it ends at the deadline. The second one is healthy. With the production retry count (3) each call first spends
    (1 + 3) deadlines on the first upstream, and the /v1 probe of an upstream never probed yet is repeated, retries
    included, before every /v1 call (every wallet's listing)."""
    silent = sim.replica()
    silent.set_fault("slow", count=None, seconds=5.0)  # accepts, never answers in time
    cfg = config.with_overrides(trongrid_api_url=f"{silent.url},{sim.url}", watcher_strategy=strategy,
                                trongrid_max_rps=500.0, polling_interval_seconds=INTERVAL,
                                trongrid_timeout_seconds=TIMEOUT)
    upstreams = TronClient(cfg.trongrid_api_url, cfg.usdt_contract, max_rps=500.0, timeout=TIMEOUT, max_retries=3,
                           backoff_base=0.01, backoff_cap=0.02)
    watcher = new_watcher(cfg, upstreams)
    payments = [create(client, auth, "3", wallet=w) for w in [WALLET] + [random_address() for _ in range(2)]]
    pay(sim, WALLET, 3_000_000)
    durations = []
    for _ in range(2):
        started = time.monotonic()
        watcher.run_once()
        durations.append(round(time.monotonic() - started, 2))
    assert get(client, auth, payments[0])["status"] == "completed"
    assert max(durations) <= INTERVAL, f"cycles took {durations}s with a {INTERVAL}s interval and a {TIMEOUT}s deadline"


# --- hostile or broken answers the simulator cannot give, through a rewriting upstream ---

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


# --- The account strategy's watermark: expiry must wait until the listing that was read has shown the money ---

def test_the_watermark_and_the_listing_come_from_the_same_upstream(new_watcher, client, auth, db, sim: Simulator,
                                                                   config: Config) -> None:
    """Two TronGrid upstreams, the second one's index five minutes late. The first answers the watermark, then fails
    the listing (HTTP 500 after the retries): the listing is read from the second, and the cursor and expiry move
    to the first one's watermark over a listing that has not reached it."""
    late = sim.replica()
    late.set_index_lag(300)
    cfg = config.with_overrides(trongrid_api_url=f"{sim.url},{late.url}", watcher_strategy="account",
                                trongrid_max_rps=500.0)
    watcher = new_watcher(cfg)
    p = create(client, auth, "12", expires_in_seconds=60)
    pay(sim, WALLET, 12_000_000)  # mined at once, well before expires_at
    sim.advance(200)
    sim.mine(3)  # chain time is past expires_at: the payment is paid, on time
    sim.set_fault("500", count=3, path_prefix="/v1/accounts/")  # the first upstream fails this cycle's listing
    watcher.run_once()
    assert "payment.expired" not in events(db, p), (events(db, p), get(client, auth, p)["status"])


def test_a_transfer_indexed_out_of_order_after_expiry_reopens_its_payment(new_watcher, client, auth, db,
                                                                           sim: Simulator, config: Config) -> None:
    """The index lists one transaction 90 s after its block while later blocks' USDT events are listed at once
    (out-of-order indexing, `delay_in_index`). Paid ten seconds before expiry, the payment expires when the
    watermark (the newest event listed) passes expiry plus the overlap: the watermark shows how far the index
    reached, not that it left nothing out. The money is not lost: the sweep finds it, and since it was mined before
    the expiry took effect the payment is reopened and completes, as if it had not expired (docs/watcher.md)."""
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="account", trongrid_max_rps=500.0,
                                reconcile_interval_seconds=1.0)
    watcher = new_watcher(cfg)
    p = create(client, auth, "13", expires_in_seconds=60)
    created = int(datetime.fromisoformat(p["created_at"]).timestamp() * 1000)
    expires = int(datetime.fromisoformat(p["expires_at"]).timestamp() * 1000)
    sim.advance((expires - 12_000 - sim.state()["head_timestamp"]) / 1000 - 3)
    tx = sim.transfer(WALLET, 13_000_000, from_=PAYER)
    sim.delay_in_index(tx, 90)
    sim.solidify()
    mined = sim.chain.txs[tx].block_timestamp
    # the next solid block: two minutes after creation, before the index lists the transfer (mined + 90 s)
    sim.advance((created + 122_000 - sim.state()["head_timestamp"]) / 1000 - 3)
    sim.mine(3)
    solid = sim.state()["solid_timestamp"]
    assert created <= mined < expires and expires + 60_000 <= solid < mined + 90_000, (created, mined, expires, solid)
    watcher.run_once()
    sim.mine(40)  # two more minutes: the index lists it now
    for _ in range(4):
        time.sleep(0.4)  # a new pass of the sweep is due every second here
        watcher.run_once()
    assert get(client, auth, p)["status"] == "completed"
    assert events(db, p) == ["payment.expired", "payment.completed"], events(db, p)
    assert "reopened" in [e["event_type"] for e in client.get(f"/payments/{p['id']}/logs", headers=auth)
                          .get_json()["logs"]]
