"""When the watcher's view of an upstream changes for good: `upstream.degraded` when an upstream that answered
stops (its calls failing, or paused by a rate limit), `upstream.recovered` when it answers again, each once per
transition and only once the new state has held for more than one polling interval (a single failed cycle, or a
single good one amid failures, announces nothing).

What was last announced of each upstream is kept in the database (service_state `upstreams_announced`), written in
the transaction of the announcement: a restart or a new leader neither repeats nor forgets one. How long a new
state has held is the leading watcher's own memory.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from infra.notify_targets import UPSTREAM_DEGRADED, UPSTREAM_RECOVERED
from ledger.events import log_event
from ledger.service_state import read_state, write_state
from notify.outbox import queue_notification

logger = logging.getLogger(__name__)

ANNOUNCED = "upstreams_announced"
OK = "ok"
DEGRADED = "degraded"


class UpstreamTransitions:
    """The upstreams' announced states and the changes waiting to have held long enough."""

    def __init__(self, hold_seconds: float) -> None:
        self.hold_seconds = hold_seconds
        self.changed_since: dict[str, tuple[str, float]] = {}  # url -> (new state, first seen at)

    def observe(self, session: Session, upstreams: list[dict[str, Any]], now: float) -> list[str]:
        """Announce the upstreams whose new state has held long enough (in the caller's transaction); returns the
        event types written."""
        announced: dict[str, str] = dict(read_state(session, ANNOUNCED, for_update=True) or {})
        written: list[str] = []
        for upstream in upstreams:
            url, state = upstream["url"], OK if upstream["state"] == OK else DEGRADED
            if announced.get(url, OK) == state:
                self.changed_since.pop(url, None)
                continue
            seen_state, since = self.changed_since.setdefault(url, (state, now))
            if seen_state != state:
                self.changed_since[url] = (state, now)
            elif now - since > self.hold_seconds:
                written.append(announce(session, upstream, state))
                announced[url] = state
                self.changed_since.pop(url, None)
        if written:
            write_state(session, ANNOUNCED, announced)
        return written


def announce(session: Session, upstream: dict[str, Any], state: str) -> str:
    event_type = UPSTREAM_DEGRADED if state == DEGRADED else UPSTREAM_RECOVERED
    facts = {"upstream": upstream["url"], "state": upstream["state"], "error": upstream.get("last_error")}
    what = f"{upstream['state']}: {upstream.get('last_error') or '-'}" if state == DEGRADED else "answers again"
    log_event(session, None, event_type.replace(".", "_"), f"upstream {upstream['url']} {what}",
              upstream=upstream["url"])
    queue_notification(session, event_type, facts)
    return event_type
