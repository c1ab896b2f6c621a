"""A rate-limit answer names its own pause: an absurd one must not break /health nor the watcher's report."""
from __future__ import annotations

import time
from datetime import datetime

import pytest

from config import Config
from tests.conftest import create
from tron_client import PAUSE_CAP_SECONDS
from tron_sim import Simulator


@pytest.mark.parametrize("retry_after", [1e20, float("inf")], ids=["1e20", "inf"])
def test_an_absurd_retry_after_is_reported_not_fatal(new_watcher, client, auth, db, sim: Simulator, config: Config,
                                                     retry_after: float) -> None:
    """`Retry-After: 100000000000000000000` pauses the upstream until a date no datetime holds, and /health answers
    500 from then on (a load balancer takes the instance out); `Retry-After: inf` makes every report fail to store
    (PostgreSQL's json has no Infinity), so /health keeps showing the last cycle before the pause as healthy. Both
    pauses are forever for a single upstream, until a restart."""
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=500.0)
    watcher = new_watcher(cfg)
    create(client, auth, "5")
    watcher.run_once()
    sim.set_fault("503", count=1, retry_after=retry_after)
    try:
        watcher.run_once()
    except Exception as exc:
        pytest.fail(f"the cycle's report failed: {type(exc).__name__}: {str(exc)[:120]}")
    health = client.get("/health")
    assert health.status_code == 200, health.get_json()
    body = health.get_json()
    assert body["status"] == "degraded" and "503" in body["watcher"]["last_error"], body["watcher"]
    if retry_after == 1e20:  # a number: believed up to the longest pause any answer can impose, an hour
        upstream = body["watcher"]["upstreams"][0]
        paused_until = datetime.fromisoformat(upstream["paused_until"].replace("Z", "+00:00")).timestamp()
        assert upstream["state"] == "paused" and paused_until <= time.time() + PAUSE_CAP_SECONDS + 5
    # "inf" is no number of seconds nor an HTTP date: the header is ignored, the usual short pause applies
