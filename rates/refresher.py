"""The background refresh of the quotes: every RATE_REFRESH_SECONDS per source, by one process at a time.

Every process that runs it (each app process, the standalone watcher) looks every few seconds for a source whose
fetch is due and claims it in the database (`store.claim_fetch`, a row lease: the claim moves the source's next fetch
on in the same statement), so however many processes and hosts run, each source is asked once per interval. The
fetch runs outside any transaction, with the outbound rules of every other call (a total deadline, a size cap, a
pause on 429 and its Retry-After); the quotes are stored, and read by every process from the database. No request
waits for a source."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests

from database import Database
from infra.config import Config
from infra.logging_setup import FailureLog
from infra.outbound import bounded_request, deadline_session, parse_retry_after
from rates.sources import MAX_ANSWER_BYTES, SOURCES, AnswerError, Reading, parse_json
from rates.store import claim_fetch, end_outages, record_fetch, save_quotes, wanted_currencies

logger = logging.getLogger(__name__)

LOOK_SECONDS = 5.0  # how often a process looks for a due source (at most; less with a shorter refresh interval)


@dataclass
class Fetch:
    """What one fetch of a source brought."""

    quotes: Reading = field(default_factory=Reading)
    errors: list[str] = field(default_factory=list)
    pause_seconds: float | None = None


def fetch_source(http: requests.Session, name: str, base_url: str, codes: tuple[str, ...], timeout: float,
                 default_pause: float) -> Fetch:
    """Ask source `name` at `base_url` for `codes` (those it covers): every request the adapter makes, stopped by a
    rate limit. Never raises for what the network or the provider does."""
    source = SOURCES[name]
    result = Fetch()
    for ask in source.asks(codes):
        url = base_url.rstrip("/") + ask.path
        try:
            answer = bounded_request(http, "GET", url, params=dict(ask.params), deadline=timeout,
                                     max_bytes=MAX_ANSWER_BYTES, headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            result.errors.append(f"{ask.path}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if answer.status_code == 429:
            pause = parse_retry_after(answer.headers.get("Retry-After"))
            result.pause_seconds = max(pause if pause is not None else default_pause, 1.0)
            result.errors.append(f"rate limited (429); paused {result.pause_seconds:g} s")
            break
        if not answer.ok:
            result.errors.append(f"{ask.path}: HTTP {answer.status_code}")
            continue
        try:
            reading = source.read(parse_json(answer.content), ask, datetime.now(UTC))
        except AnswerError as exc:
            result.errors.append(f"{ask.path}: {exc}")
            continue
        result.quotes.quotes.update(reading.quotes)
        result.errors.extend(reading.refused)
    return result


class RateRefresher:
    """The refresh loop of one process: `run_once` is one pass (tests call it); `start` runs passes on a thread."""

    def __init__(self, db: Database, config: Config) -> None:
        self.db, self.config = db, config
        self.http = deadline_session()
        self.look_seconds = min(LOOK_SECONDS, config.rate_refresh_seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = {name: FailureLog(logger, f"rate source {name}") for name, _ in config.rate_sources}
        self.pass_failures = FailureLog(logger, "rate refresh")

    def run_once(self) -> list[str]:
        """Fetch every source that is due and that this process claims; close the outages that ended. Returns the
        sources fetched."""
        sources = dict(self.config.rate_sources)
        with self.db.transaction() as session:
            wanted = wanted_currencies(session, self.config)
            claimed = [name for name in sources if claim_fetch(session, name, self.config.rate_refresh_seconds)]
        for name in claimed:
            codes = tuple(code for code in wanted if code in SOURCES[name].covers)
            fetched = fetch_source(self.http, name, sources[name], codes, self.config.rate_timeout_seconds,
                                   self.config.rate_refresh_seconds) if codes else Fetch()
            with self.db.transaction() as session:
                save_quotes(session, name, fetched.quotes.quotes)
                record_fetch(session, name, len(fetched.errors), fetched.errors[-1] if fetched.errors else None,
                             fetched.pause_seconds, success=bool(fetched.quotes.quotes))
            if fetched.errors:
                self.failures[name].failed("; ".join(fetched.errors)[:500])
            else:
                self.failures[name].succeeded()
        with self.db.transaction() as session:
            end_outages(session, self.config)
        return claimed

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
                self.pass_failures.succeeded()
            except Exception as exc:  # a database hiccup: the next pass tries again
                self.pass_failures.failed(exc, exc_info=True)
            if self._stop.wait(self.look_seconds):
                return

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="rate-refresher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.http.close()


def start_refresher(db: Database, config: Config) -> RateRefresher | None:
    """This process's refresher, started; None when no rate source is configured (fixed rates only)."""
    if not config.rate_sources:
        return None
    refresher = RateRefresher(db, config)
    refresher.start()
    return refresher
