"""Prometheus metrics: `GET /metrics` of the app, and the standalone watcher's own on WATCHER_METRICS_PORT.

Two kinds, so that the numbers are right whatever the number of processes:

- What is *stored* (payments by status, transfers credited or unmatched and how they were found, rejected
  transfers by reason, the webhook outbox, the watcher's last report) is read from the database at scrape time:
  one truth for every gunicorn worker, standalone watcher and host sharing the database, surviving restarts. Only
  the app's `/metrics` has these (`DatabaseCollector`), so they are not counted once per process.
- What *happens in a process* (upstream requests, retries and rate-limit pauses, webhook attempts, watcher cycles,
  detection latency, which process leads) is counted by prometheus_client in the process. Under gunicorn
  (gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR, a directory per run under .data, emptied at start) each worker
  writes its values to files there and `/metrics` sums them over the workers, live and exited.

No label names a wallet, a payment or a transaction: their number has no bound.
"""
from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from flask import Blueprint, Response, current_app, request
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from errors import ApiError

logger = logging.getLogger(__name__)

PREFIX = "tron_usdt"
disable_created_metrics()  # a `_created` series per counter doubles the output for nothing an alert uses
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# --- what happens in a process -------------------------------------------------------------------

UPSTREAM_REQUESTS = Counter(
    f"{PREFIX}_upstream_requests_total", "Requests sent to TronGrid / java-tron upstreams, by what they asked "
    "(endpoint) and the HTTP status or the transport failure (timeout, unreachable, too_large).",
    ["upstream", "endpoint", "status"])
UPSTREAM_RETRIES = Counter(
    f"{PREFIX}_upstream_retries_total", "Upstream requests sent again after a failed attempt.",
    ["upstream", "endpoint"])
UPSTREAM_PAUSES = Counter(
    f"{PREFIX}_upstream_rate_limit_pauses_total", "Rate-limit answers that paused an upstream's calls.", ["upstream"])
UPSTREAM_PAUSE_SECONDS = Counter(
    f"{PREFIX}_upstream_rate_limit_pause_seconds_total", "Seconds of pause the rate-limit answers imposed.",
    ["upstream"])
WEBHOOK_ATTEMPTS = Counter(
    f"{PREFIX}_webhook_attempts_total", "Webhook delivery attempts recorded, by outcome: delivered, retrying "
    "(failed, another attempt is scheduled) or failed (no attempt left, or 410).", ["outcome"])
CYCLE_SECONDS = Histogram(
    f"{PREFIX}_watcher_cycle_seconds", "Duration of the leading watcher's cycles.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120))
DETECTION_LATENCY = Histogram(
    f"{PREFIX}_detection_latency_seconds", "From a transfer's block becoming solidified to the transfer being "
    "credited to a payment by the watcher's scan.", buckets=(1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600))
WATCHER_LEADER = Gauge(
    f"{PREFIX}_watcher_leader", "1 in the process whose watcher holds the leader lock (summed over a gunicorn's "
    "live workers).", multiprocess_mode="livesum")

WEBHOOK_OUTCOMES = {"webhook_delivered": "delivered", "webhook_attempt": "retrying", "webhook_failed": "failed"}


def upstream_request(upstream: str, endpoint: str, status: int | str) -> None:
    UPSTREAM_REQUESTS.labels(upstream, endpoint, str(status)).inc()


def upstream_retry(upstream: str, endpoint: str) -> None:
    UPSTREAM_RETRIES.labels(upstream, endpoint).inc()


def upstream_paused(upstream: str, seconds: float) -> None:
    UPSTREAM_PAUSES.labels(upstream).inc()
    UPSTREAM_PAUSE_SECONDS.labels(upstream).inc(max(0.0, seconds))


def webhook_attempt(log_type: str) -> None:
    """One recorded attempt, by the payment_logs type its outcome was logged as (webhooks.apply_outcome)."""
    WEBHOOK_ATTEMPTS.labels(WEBHOOK_OUTCOMES.get(log_type, "retrying")).inc()


def detection_latency(block_timestamp_ms: int, head_timestamp_ms: int, head_accepted_at: float) -> None:
    """The transfer's block was solidified at the latest when the accepted solid head (at or above it) was, which
    is when the watcher asked for it less the head's age then; a block (head - block) older than the head became
    solid that much earlier. So the time since solidification is (head - block) + (now - accepted)."""
    seconds = (head_timestamp_ms - block_timestamp_ms) / 1000 + (time.time() - head_accepted_at)
    DETECTION_LATENCY.observe(max(0.0, seconds))


# --- what is stored, read at scrape time ----------------------------------------------------------

# Kinds of rejected transfers by the start of the reason they were stored with (matching.unstorable,
# tron_client.AnswerReader): a label per kind, not per text (the text names the amount or the decoding error).
REJECTION_KINDS = (("a zero amount", "zero_amount"), ("an amount of", "amount_too_large"),
                   ("malformed", "malformed_log"))


class DatabaseCollector(Collector):
    """Gauges and totals of what the database holds, read when Prometheus scrapes: a few indexed aggregates."""

    def __init__(self, db: Any) -> None:
        self.db = db

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
        from models import EventState, Payment, RejectedTransfer, Transfer, WebhookEvent
        from service_state import WATCHER_STATUS, read_state
        from stats import count_by

        kind = case(*[(RejectedTransfer.reason.startswith(start), name) for start, name in REJECTION_KINDS],
                    else_="other")
        with self.db.Session() as session:
            payments = count_by(session, Payment.status)
            transfers = session.execute(
                select(Transfer.status, Transfer.found_by, func.count()).group_by(Transfer.status, Transfer.found_by)
            ).all()
            rejected = session.execute(select(kind, func.count()).group_by(kind)).all()
            events = count_by(session, WebhookEvent.state)
            oldest = session.execute(
                select(func.extract("epoch", func.now() - func.min(WebhookEvent.created_at)))
                .where(WebhookEvent.state == EventState.pending)
            ).scalar()
            report = read_state(session, WATCHER_STATUS)
        return [*payment_families(payments), *transfer_families(transfers, rejected),
                *outbox_families(events, oldest), *watcher_families(report)]


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
        stored.add_metric([status.value, found_by], n)
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


def watcher_families(report: dict[str, Any] | None) -> list[Metric]:
    """The leading watcher's last report (the one /health shows)."""
    from api import upstream_health
    from config import STRATEGIES

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


# --- exposition ------------------------------------------------------------------------------------

def process_collector() -> Collector:
    """This process's own metrics; under gunicorn, every worker's (PROMETHEUS_MULTIPROC_DIR)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition(*collectors: Collector, accept: str | None = None) -> tuple[bytes, str]:
    """The collectors' metrics and their content type: Prometheus's text format 0.0.4, or what the scraper's `Accept`
    asks for (text 1.0.0, OpenMetrics), as prometheus_client negotiates it."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def token_accepted(token: str | None, authorization: str | None) -> bool:
    """No token configured: open. Otherwise `Authorization: Bearer <token>`, compared in constant time."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    from app import services_of

    services = services_of(current_app)  # type: ignore[arg-type]
    if not token_accepted(services.config.metrics_token, request.headers.get("Authorization")):
        raise ApiError("unauthorized", "Send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'.",
                       status=401)
    body, content_type = exposition(process_collector(), DatabaseCollector(services.db),
                                    accept=request.headers.get("Accept"))
    return Response(body, mimetype=None, content_type=content_type)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass  # a scrape every few seconds is not worth a log line


def metrics_wsgi_app(token: str | None) -> Callable[..., Iterable[bytes]]:
    """The standalone watcher's /metrics: this process's metrics behind the same token."""

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found; the metrics are at /metrics\n"]
        if not token_accepted(token, environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'\n"]
        body, content_type = exposition(process_collector(), accept=environ.get("HTTP_ACCEPT"))
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return application


class MetricsServer:
    """`/metrics` on host:port in a daemon thread, until `stop`."""

    def __init__(self, host: str, port: int, token: str | None) -> None:
        self.server = make_server(host, port, metrics_wsgi_app(token), ThreadingWSGIServer, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> MetricsServer:
        self.thread.start()
        logger.info("watcher metrics on http://%s:%d/metrics", self.server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
