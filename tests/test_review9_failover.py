"""Failover from an upstream that does not answer: it costs one deadline, not the retries of every call."""
from __future__ import annotations

import time

from config import Config
from tests.conftest import WALLET, create, get, pay
from tron_client import TronClient
from tron_sim import Simulator, random_address

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
