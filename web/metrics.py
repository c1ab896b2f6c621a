"""Prometheus metrics: `GET /metrics` of the app.

Two kinds, so that the numbers are right whatever the number of processes:

- What is *stored* (payments by status, transfers credited or unmatched and how they were found, rejected
  transfers by reason, the webhook outbox, the watcher's last report) is read from the database at scrape time:
  one truth for every gunicorn worker, standalone watcher and host sharing the database, surviving restarts. Only
  the app's `/metrics` has these (`DatabaseCollector`), so they are not counted once per process.
- What *happens in a process* (upstream requests, retries and rate-limit pauses, webhook attempts, watcher cycles,
  detection latency, which process leads) is counted where it happens (infra/instruments.py), summed over a
  gunicorn's workers.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Blueprint, Response, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from infra.config import STRATEGIES, Config
from infra.instruments import PREFIX, exposition, process_collector, token_accepted
from infra.times import db_now
from ledger.service_state import WATCHER_STATUS, read_state
from ledger.stats import read_counts
from models import EventState, PaymentStatus, WebhookEvent
from rates.rule import Rate
from rates.store import rates_now, source_rows, wanted_currencies
from web.errors import ApiError
from web.health import upstream_health
from web.services import services

logger = logging.getLogger(__name__)

# --- what is stored, read at scrape time ----------------------------------------------------------

class DatabaseCollector(Collector):
    """Gauges and totals of what the database holds, read when Prometheus scrapes: the counts the database keeps
    (ledger/stats.py; rejected transfers by kind, a label per kind of reason, not per text, which names the
    amount or the decoding error), the oldest pending event by its index, the watcher's report."""

    def __init__(self, db: Any, config: Config | None = None) -> None:
        self.db = db
        self.config = config

    def describe(self) -> Iterable[Metric]:
        return []  # registered per scrape: no name check, and no query before the scrape

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_database_up", "1 when the database answered this scrape's queries.")
        try:
            families = self.read()
        except Exception as exc:  # the scrape still answers, saying the database is away
            logger.error("metrics: database unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def read(self) -> list[Metric]:
        with self.db.Session() as session:
            counted = read_counts(session)
            oldest = session.execute(
                select(func.extract("epoch", func.now() - func.min(WebhookEvent.created_at)))
                .where(WebhookEvent.state == EventState.pending)
            ).scalar()
            report = read_state(session, WATCHER_STATUS)
            rates = rate_families(session, self.config) if self.config is not None else []
        transfers = [(status, found_by, n) for (status, found_by), n in counted.rows("transfers")]
        rejected = [(kind, n) for (kind,), n in counted.rows("rejected_transfers")]
        return [*payment_families(counted.by("payments", PaymentStatus)), *transfer_families(transfers, rejected),
                *outbox_families(counted.by("webhook_events", EventState), oldest),
                *notification_families(counted.by("notifications", EventState)), *watcher_families(report), *rates]


def payment_families(counts: dict[str, int]) -> list[Metric]:
    by_status = GaugeMetricFamily(f"{PREFIX}_payments", "Payments by status.", labels=["status"])
    for status, n in counts.items():
        by_status.add_metric([status], n)
    created = CounterMetricFamily(f"{PREFIX}_payments_created", "Payments created (every status).")
    created.add_metric([], sum(counts.values()))
    return [by_status, created]


def transfer_families(transfers: Iterable[Any], rejected: Iterable[Any]) -> list[Metric]:
    # A gauge: an unmatched transfer becomes credited when an admin assigns it.
    stored = GaugeMetricFamily(
        f"{PREFIX}_transfers", "USDT transfers to watched wallets, by status (credited, unmatched) and by which read "
        "found them (scan, reconciliation).", labels=["status", "found_by"])
    for status, found_by, n in transfers:
        stored.add_metric([status, found_by], n)
    refused = CounterMetricFamily(f"{PREFIX}_transfers_rejected", "Transfers that cannot be credited, by reason.",
                                  labels=["reason"])
    for reason, n in rejected:
        refused.add_metric([reason], n)
    return [stored, refused]


def outbox_families(events: dict[str, int], oldest_pending_seconds: Any) -> list[Metric]:
    by_state = GaugeMetricFamily(f"{PREFIX}_webhook_events", "Webhook events by delivery state.", labels=["state"])
    for state, n in events.items():
        by_state.add_metric([state], n)
    depth = GaugeMetricFamily(f"{PREFIX}_webhook_outbox_depth", "Webhook events waiting for delivery (pending).")
    depth.add_metric([], events.get("pending", 0))
    age = GaugeMetricFamily(f"{PREFIX}_webhook_outbox_oldest_pending_age_seconds",
                            "Age of the oldest pending webhook event (0 when none is pending).")
    age.add_metric([], float(oldest_pending_seconds or 0))
    return [by_state, depth, age]


def notification_families(states: dict[str, int]) -> list[Metric]:
    """The operator notifications' outbox (notify/) by state: pending, delivered, failed."""
    by_state = GaugeMetricFamily(f"{PREFIX}_notifications", "Operator notifications by delivery state (one per "
                                 "event and NOTIFY_URLS target).", labels=["state"])
    for state in (EventState.pending, EventState.delivered, EventState.failed):
        by_state.add_metric([state.value], states.get(state.value, 0))
    return [by_state]


def watcher_families(report: dict[str, Any] | None) -> list[Metric]:
    """The leading watcher's last report (the one /health shows)."""
    report = report or {}
    now = time.time()
    strategy = GaugeMetricFamily(f"{PREFIX}_watcher_strategy", "1 for the strategy of the watcher's last cycle.",
                                 labels=["strategy"])
    for name in STRATEGIES[:2]:
        strategy.add_metric([name], 1 if report.get("strategy") == name else 0)
    families: list[Metric] = [strategy]
    last = report.get("last_cycle_finished")
    for name, help_text, value in (
        ("watcher_last_cycle_age_seconds", "Seconds since the last watcher cycle finished (absent before the first).",
         now - float(last) if last is not None else None),
        ("watcher_seconds_behind", "Chain time between the solid head and what every watched wallet was read up to.",
         report.get("seconds_behind")),
        ("watcher_blocks_behind", "Solidified blocks the blocks strategy has not read yet.",
         report.get("blocks_behind")),
        ("watcher_cycle_errors", "Errors of the last watcher cycle (it could not read everything).",
         report.get("errors")),
        ("watcher_set_aside_blocks", "Blocks set aside because their receipts stayed unreadable (transactions set "
         "aside are tron_usdt_transfers{status=\"set_aside\"}).", (report.get("set_aside") or {}).get("blocks")),
        ("watcher_head_blocks_above_solid", "Blocks between the solid head and the head read for detection.",
         report.get("blocks_above_solid")),
    ):
        family = GaugeMetricFamily(f"{PREFIX}_{name}", help_text)
        if value is not None:
            family.add_metric([], float(value))
        families.append(family)
    paused = GaugeMetricFamily(f"{PREFIX}_upstream_paused", "1 while a rate limit pauses the upstream's calls.",
                               labels=["upstream"])
    failing = GaugeMetricFamily(f"{PREFIX}_upstream_failing", "1 while the upstream's last call failed.",
                                labels=["upstream"])
    for upstream in report.get("upstreams") or []:
        state = upstream_health(upstream, now)["state"]
        paused.add_metric([upstream["url"]], 1 if state == "paused" else 0)
        failing.add_metric([upstream["url"]], 1 if state == "failing" else 0)
    return [*families, paused, failing]


def rate_families(session: Any, config: Config) -> list[Metric]:
    """Each currency's rate (asked for, or standing): its age and whether it is usable; each source's errors."""
    now = db_now(session)
    codes = wanted_currencies(session, config)
    age = GaugeMetricFamily(f"{PREFIX}_rate_age_seconds", "Age of the oldest quote a currency's rate would use now "
                            "(0 for a fixed rate; absent while it has no usable rate).", labels=["currency"])
    usable = GaugeMetricFamily(f"{PREFIX}_rate_available", "1 while the currency has a usable rate.",
                               labels=["currency"])
    for code, rate in rates_now(session, config, codes).items():
        usable.add_metric([code], 1 if isinstance(rate, Rate) else 0)
        if isinstance(rate, Rate):
            age.add_metric([code], max((now - rate.at).total_seconds(), 0.0))
    errors = CounterMetricFamily(f"{PREFIX}_rate_source_errors", "Failed requests and refused quotes of each rate "
                                 "source, over every process.", labels=["source"])
    records = source_rows(session)
    for name, _ in config.rate_sources:
        errors.add_metric([name], records[name].errors if name in records else 0)
    return [age, usable, errors]


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    shared = services()
    if not token_accepted(shared.config.metrics_token, request.headers.get("Authorization")):
        raise ApiError("unauthorized", "Send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'.",
                       status=401)
    body, content_type = exposition(process_collector(), DatabaseCollector(shared.db, shared.config),
                                    accept=request.headers.get("Accept"))
    return Response(body, mimetype=None, content_type=content_type)
