"""The day's requests: what the watcher's reading costs at the current settings, against TRONGRID_DAILY_QUOTA.

A free TronGrid key allows 100,000 requests a day (about 1.16 a second). The cheapest complete reading of every
block with detection on is the head (``getnowblock``), one receipt list per block and the solid head per cycle: a
block read above the solid head is not read again once it solidifies (chain/head.py). At the defaults (a cycle per
3 s block) that is 3 requests a cycle, 86,400 a day; the reconciliation takes what is left of the quota. Each
upstream's own token bucket (chain/upstream.py) keeps any 24 hours under its quota whatever happens; this estimate
tells the operator, through /health, when the settings need more than that (a paid key or an own node).
"""
from __future__ import annotations

from typing import Any

from infra.config import Config
from tron_client import TronClient

DAY = 86_400


def requests_per_day(config: Config, strategy: str, wallets: int) -> int:
    """What the scan and detection cost a day at these settings, before retries and the reconciliation."""
    cycles = DAY / config.polling_interval_seconds
    blocks = DAY / max(config.tron_block_seconds, config.polling_interval_seconds / 100)
    detect = config.detect_unconfirmed
    if strategy == "blocks":
        # the solid head each cycle, one receipt list a block; with detection the head too, and solidified blocks
        # come from what was read above the solid head
        per_day = cycles * (2 if detect else 1) + blocks
    else:
        # the solid head, the index's watermark and a listing per wallet each cycle (a receipt per new transfer is
        # not counted); detection reads the head and each block's receipts as above
        per_day = cycles * (2 + wallets) + ((cycles + blocks) if detect else 0)
    return int(per_day)


class DailyRequests:
    """The estimate /health shows, against the smallest quota of the scan's upstreams."""

    def __init__(self, config: Config, client: TronClient) -> None:
        self.config, self.client = config, client
        self.waited = 0.0  # the upstreams' quota waits as the last report saw them

    def quota(self) -> int | None:
        quotas = [u.daily_quota for u in self.client.upstreams if u.daily_quota is not None]
        return min(quotas) if quotas else None

    def report(self, strategy: str, wallets: int) -> dict[str, Any]:
        """The estimate against the quota, and whether calls had to wait for the quota since the last report (the
        estimate leaves out retries, claims and catching up: a real day can cost more)."""
        needed, quota = requests_per_day(self.config, strategy, wallets), self.quota()
        waited = sum(u.quota_waited_seconds for u in self.client.upstreams)
        throttled, self.waited = waited > self.waited, waited
        return {"estimated": needed, "quota": quota, "over_quota": quota is not None and needed > quota,
                "throttled": throttled}

    def reconcile_per_cycle(self, strategy: str, wallets: int) -> float | None:
        """What the quota leaves the reconciliation each cycle (None: no quota)."""
        quota = self.quota()
        if quota is None:
            return None
        left = quota - requests_per_day(self.config, strategy, wallets)
        return max(0.0, left * self.config.polling_interval_seconds / DAY)
