"""What happens in a process, counted by prometheus_client where it happens (any layer may count), and the exposition
of one process's counts: the standalone watcher's own `/metrics` (`MetricsServer`), and the part of the app's that
comes from its processes (web/metrics.py adds what the database holds).

Under gunicorn (gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR, a directory per run under .data, emptied at start)
each worker writes its values to files there and `/metrics` sums them over the workers, live and exited.

No label names a wallet, a payment or a transaction: their number has no bound.
"""
from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder
from prometheus_client.registry import Collector

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
NOTIFICATION_ATTEMPTS = Counter(
    f"{PREFIX}_notification_attempts_total", "Operator notification attempts recorded, by outcome: delivered, "
    "retrying (failed, another attempt is scheduled) or failed (no attempt left).", ["outcome"])
CYCLE_SECONDS = Histogram(
    f"{PREFIX}_watcher_cycle_seconds", "Duration of the leading watcher's cycles.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120))
DETECTION_LATENCY = Histogram(
    f"{PREFIX}_detection_latency_seconds", "From a transfer's block becoming solidified to the transfer being "
    "credited to a payment by the watcher's scan.", buckets=(1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600))
UNCONFIRMED_LATENCY = Histogram(
    f"{PREFIX}_unconfirmed_detection_latency_seconds", "From a transfer's block time to the watcher announcing it, "
    "seen above the solid head (payment.detected).", buckets=(0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 30, 60))
SET_ASIDE = Counter(
    f"{PREFIX}_set_aside_total", "Listing records and blocks set aside because their receipts stayed unreadable for "
    "the bounded wait (listed, retried by the reconciliation, never lost).")
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


def notification_attempt(outcome: str) -> None:
    """One recorded notification attempt: delivered, retrying or failed (notify.dispatcher)."""
    NOTIFICATION_ATTEMPTS.labels(outcome).inc()


def detection_latency(block_timestamp_ms: int, head_timestamp_ms: int, head_accepted_at: float) -> None:
    """The transfer's block was solidified at the latest when the accepted solid head (at or above it) was, which
    is when the watcher asked for it less the head's age then; a block (head - block) older than the head became
    solid that much earlier. So the time since solidification is (head - block) + (now - accepted)."""
    seconds = (head_timestamp_ms - block_timestamp_ms) / 1000 + (time.time() - head_accepted_at)
    DETECTION_LATENCY.observe(max(0.0, seconds))


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
