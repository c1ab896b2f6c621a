"""The day's requests: what the reading costs at the settings, each upstream's daily quota, and what /health says."""
from __future__ import annotations

import time

from chain.quota import requests_per_day
from chain.upstream import Upstream
from infra.config import Config, load_config
from tron_client import TronClient, make_client
from watcher import Strategies
from web.health import watcher_health

USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"


def test_the_defaults_fit_a_free_key() -> None:
    defaults = Config()
    assert defaults.polling_interval_seconds == 3 and defaults.detect_unconfirmed
    # the solid head and the head each cycle, one receipt list per block: 3 requests per 3 s block
    assert requests_per_day(defaults, "blocks", 1_000_000) == 86_400 < 100_000
    assert requests_per_day(defaults.with_overrides(detect_unconfirmed=False), "blocks", 5) == 57_600
    # the account strategy: a listing per wallet per cycle, plus the heads and blocks for detection
    assert requests_per_day(defaults, "account", 1) > 100_000


def test_a_quota_on_trongrid_hosts_unless_set() -> None:
    assert Upstream("https://api.trongrid.io").daily_quota == 100_000
    assert Upstream("http://10.0.0.5:8090").daily_quota is None
    config = load_config({"TRONGRID_API_URL": "https://api.trongrid.io,http://10.0.0.5:8090",
                          "TRONGRID_DAILY_QUOTA": "500000"})
    assert [u.daily_quota for u in make_client(config).upstreams] == [500_000, 500_000]


def test_the_quota_spreads_the_day() -> None:
    upstream = Upstream("http://127.0.0.1:9", daily_quota=96_000)  # 1,000 in hand, then about 1.1 a second
    bucket = upstream._daily
    assert bucket is not None and round(bucket.capacity) == 1_000
    assert bucket.rate == (96_000 - 1_000) / 86_400
    waits = [bucket.reserve() for _ in range(1_001)]
    assert max(waits[:1_000]) == 0 and waits[-1] > 0.5  # past what is in hand: spaced at the day's rate


def test_auto_reads_blocks_under_a_quota_and_health_says_when_the_settings_need_more() -> None:
    client = TronClient("https://api.trongrid.io", USDT)
    client.upstreams[0].has_v1 = True
    strategies = Strategies(None, Config(), client, None, None)  # type: ignore[arg-type]
    assert strategies.choose(1) == "blocks"  # with detection, account costs more a day whatever the wallets
    lifted = TronClient("http://10.0.0.5:8090", USDT)
    lifted.upstreams[0].has_v1 = True
    assert Strategies(None, Config(), lifted, None, None).choose(1) == "account"  # type: ignore[arg-type]
    report = {"last_cycle_finished": time.time(), "seconds_behind": 0, "errors": 0,
              "daily_requests": {"estimated": 172_800, "quota": 100_000, "over_quota": True}}
    body, degraded = watcher_health(report, 3.0)
    assert degraded and body["daily_requests"]["over_quota"]
    assert not watcher_health({**report, "daily_requests": {"estimated": 86_400, "quota": 100_000,
                                                            "over_quota": False}}, 3.0)[1]
