"""What the watcher's last report says of its health: the watcher block of `/health`, and each upstream's state
(which `/metrics` shows too)."""
from __future__ import annotations

import time
from typing import Any

from infra.times import iso_unix


def upstream_health(upstream: dict[str, Any], now: float) -> dict[str, Any]:
    """An upstream as the last cycle left it; a pause that has run out since is over."""
    paused = upstream.get("paused_until")
    paused = paused if paused is not None and float(paused) > now else None
    state = "paused" if paused is not None else "failing" if upstream.get("state") == "failing" else "ok"
    return {**upstream, "state": state, "paused_until": iso_unix(paused)}


def watcher_health(report: dict[str, Any] | None, interval: float) -> tuple[dict[str, Any], bool]:
    """The watcher block of /health and whether it makes the service degraded."""
    if report is None:
        return {"running": False, "last_cycle_at": None}, True
    now = time.time()
    last = report.get("last_cycle_finished")
    behind = report.get("seconds_behind")
    stale = last is None or now - float(last) > 3 * interval
    failing = bool(report.get("errors"))  # the last cycle could not read everything it should have
    lagging = behind is not None and float(behind) > 3 * interval
    upstreams = [upstream_health(u, now) for u in report.get("upstreams") or []]
    upstream_trouble = any(u["state"] != "ok" for u in upstreams)
    refused = report.get("refused") or []
    reconciliation = dict(report.get("reconciliation") or {})
    completed = reconciliation.pop("last_complete_pass_at", None)
    reconciliation["last_complete_pass_at"] = iso_unix(completed)
    reconciliation["last_complete_pass_age_seconds"] = round(now - completed, 1) if completed else None
    paused = report.get("paused_until")
    set_aside = report.get("set_aside") or {"records": 0, "blocks": 0}
    body = {
        "running": not stale,
        "network": report.get("network"),
        "strategy": report.get("strategy"),
        "last_cycle_at": iso_unix(last),
        "last_cycle_seconds": report.get("last_cycle_seconds"),
        "seconds_behind": behind,
        "blocks_behind": report.get("blocks_behind"),
        "upstream_paused_until": iso_unix(paused) if paused is not None and float(paused) > now else None,
        "last_error": report.get("last_error"),
        "refused_answers": refused,
        "upstreams": upstreams,
        "reconciliation": reconciliation,
        "detect_unconfirmed": report.get("detect_unconfirmed"),
        "head_blocks_above_solid": report.get("blocks_above_solid"),
        "set_aside": set_aside,
        "daily_requests": report.get("daily_requests"),
    }
    is_paused = body["upstream_paused_until"] is not None
    unreadable = bool(set_aside.get("records") or set_aside.get("blocks"))
    daily = report.get("daily_requests") or {}
    over_quota = bool(daily.get("over_quota") or daily.get("throttled"))
    return body, (stale or lagging or failing or upstream_trouble or is_paused or bool(refused) or unreadable
                  or over_quota)
