"""The rates in the database, shared by every process: each source's latest quote per currency, each source's
schedule (its next fetch, claimed by one process at a time) and record, and the currencies requests asked for.

Every function takes the caller's session; the caller owns the transaction."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from infra.config import MAX_RATE_CURRENCIES, Config
from infra.money import format_rate
from infra.notify_targets import RATE_UNAVAILABLE
from infra.times import db_now, iso
from ledger.events import log_event
from models import RateCurrency, RateQuote, RateSource
from notify.outbox import queue_notification
from rates.rule import NoRate, Quote, Rate, choose_rate

logger = logging.getLogger(__name__)

DEFAULT_CURRENCIES = ("USD", "EUR", "CNY")  # always asked for
# A currency a request asked for stays asked for this long after the last such request (then its row is kept, for
# its outage record, but no source is asked for it).
ASKED_FOR_SECONDS = 7 * 86400
# /health's window: a currency asked for in the last hour with no usable rate makes the service degraded.
RECENTLY_ASKED_SECONDS = 3600
ASK_NOTED_SECONDS = 60  # how often a currency's last request is written
# Taken while a new currency is added, so that processes adding several at once keep to MAX_RATE_CURRENCIES.
CURRENCIES_LOCK_ID = 0x7472_6F6E_0025


# --- the sources' schedules --------------------------------------------------------------------------------

def claim_fetch(session: Session, name: str, refresh_seconds: float) -> bool:
    """Whether this process fetches source `name` now: True for one process only each time the source is due (its
    next fetch moved `refresh_seconds` on in the same statement); never while a rate limit pauses it."""
    session.execute(insert(RateSource).values(name=name).on_conflict_do_nothing(index_elements=["name"]))
    claimed = session.execute(
        update(RateSource)
        .where(RateSource.name == name, RateSource.next_fetch_at <= func.now(),
               or_(RateSource.paused_until.is_(None), RateSource.paused_until <= func.now()))
        .values(next_fetch_at=func.now() + timedelta(seconds=refresh_seconds), last_attempt_at=func.now())
        .returning(RateSource.name)
    ).first()
    return claimed is not None


def record_fetch(session: Session, name: str, errors: int, last_error: str | None, pause_seconds: float | None,
                 success: bool) -> None:
    """What a fetch of source `name` came to: its errors (failed requests and refused quotes), its last error,
    a rate limit's pause, whether it brought any quote."""
    values: dict[str, Any] = {"errors": RateSource.errors + errors}
    if last_error is not None:
        values["last_error"] = last_error[:500]
    if success:
        values["last_success_at"] = func.now()
    if pause_seconds is not None:
        values["paused_until"] = func.now() + timedelta(seconds=pause_seconds)
    session.execute(update(RateSource).where(RateSource.name == name).values(values))


def save_quotes(session: Session, name: str, quotes: dict[str, tuple[Decimal, datetime]]) -> None:
    """Store source `name`'s latest quotes (each currency's replaces the one before)."""
    if not quotes:
        return
    statement = insert(RateQuote).values([
        {"source": name, "currency": code, "rate": rate, "quoted_at": quoted_at, "fetched_at": func.now()}
        for code, (rate, quoted_at) in quotes.items()])
    session.execute(statement.on_conflict_do_update(
        index_elements=["source", "currency"],
        set_={"rate": statement.excluded.rate, "quoted_at": statement.excluded.quoted_at,
              "fetched_at": statement.excluded.fetched_at}))


def source_rows(session: Session) -> dict[str, RateSource]:
    return {row.name: row for row in session.scalars(select(RateSource))}


# --- the currencies asked for -------------------------------------------------------------------------------

def standing_currencies(config: Config) -> tuple[str, ...]:
    """What is always asked for: USD, EUR, CNY and FIXED_RATES' currencies."""
    return tuple(dict.fromkeys((*DEFAULT_CURRENCIES, *(code for code, _ in config.fixed_rates))))


def wanted_currencies(session: Session, config: Config) -> tuple[str, ...]:
    """The currencies the sources are asked for: the standing ones, then those requests asked for lately (most
    recent first), MAX_RATE_CURRENCIES at most."""
    standing = standing_currencies(config)
    asked = session.scalars(
        select(RateCurrency.currency)
        .where(RateCurrency.last_asked_at > func.now() - timedelta(seconds=ASKED_FOR_SECONDS),
               RateCurrency.currency.not_in(standing))
        .order_by(RateCurrency.last_asked_at.desc(), RateCurrency.currency)
        .limit(max(0, MAX_RATE_CURRENCIES - len(standing)))
    ).all()
    return (*standing, *asked)


def note_asked(session: Session, config: Config, code: str) -> bool:
    """Record that a request asked for `code` (at most once a minute per currency: a read otherwise); False when it
    is new and MAX_RATE_CURRENCIES are already asked for. A new currency makes every source due now, so its first
    quote comes at the next refresh of any process."""
    asked = session.execute(select(RateCurrency.last_asked_at < func.now() - timedelta(seconds=ASK_NOTED_SECONDS))
                            .where(RateCurrency.currency == code)).first()
    if asked is not None:
        if asked[0]:
            session.execute(update(RateCurrency).where(RateCurrency.currency == code).values(last_asked_at=func.now()))
        return True
    session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": CURRENCIES_LOCK_ID})
    standing = standing_currencies(config)
    if code not in standing and code not in wanted_currencies(session, config) \
            and len(wanted_currencies(session, config)) >= MAX_RATE_CURRENCIES:
        return False
    session.execute(insert(RateCurrency).values(currency=code).on_conflict_do_update(
        index_elements=["currency"], set_={"last_asked_at": func.now()}))
    if code not in standing:
        session.execute(update(RateSource).values(next_fetch_at=func.now()))
    return True


def recently_asked(session: Session) -> list[str]:
    """The currencies requests asked for within RECENTLY_ASKED_SECONDS."""
    return list(session.scalars(select(RateCurrency.currency).where(
        RateCurrency.last_asked_at > func.now() - timedelta(seconds=RECENTLY_ASKED_SECONDS))
        .order_by(RateCurrency.currency)))


# --- the rates --------------------------------------------------------------------------------------------

def latest_quotes(session: Session, config: Config, codes: Iterable[str]) -> dict[str, list[Quote]]:
    """The latest quote of each configured source for each of `codes` (a source no longer configured counts not)."""
    wanted = list(codes)
    result: dict[str, list[Quote]] = {code: [] for code in wanted}
    names = [name for name, _ in config.rate_sources]
    if not wanted or not names:
        return result
    for row in session.scalars(select(RateQuote).where(RateQuote.currency.in_(wanted), RateQuote.source.in_(names))
                               .order_by(RateQuote.source)):
        result[row.currency].append(Quote(row.source, row.currency, Decimal(row.rate), row.quoted_at))
    return result


def rates_now(session: Session, config: Config, codes: Iterable[str]) -> dict[str, Rate | NoRate]:
    """Each currency's rate (or why none), by the rule, at the database's time."""
    now = db_now(session)
    fixed = dict(config.fixed_rates)
    quotes = latest_quotes(session, config, [code for code in codes if code not in fixed])
    return {code: choose_rate(code, fixed.get(code), quotes.get(code, []), now, config.rate_max_age_seconds,
                              config.rate_max_deviation_percent)
            for code in codes}


def announce_outage(session: Session, missing: NoRate) -> bool:
    """The operator event `rate.unavailable` for `missing`'s currency, once per outage (until `end_outages` sees a
    usable rate again): an audit log row about no payment, and the operator's notification when NOTIFY_EVENTS names
    it. True if this call wrote it."""
    started = session.execute(
        update(RateCurrency).where(RateCurrency.currency == missing.currency, RateCurrency.unavailable_since.is_(None))
        .values(unavailable_since=func.now()).returning(RateCurrency.currency)).first()
    if started is None:
        return False
    log_event(session, None, RATE_UNAVAILABLE, f"no usable rate for {missing.currency}: {missing.message}",
              currency=missing.currency, reason=missing.reason)
    queue_notification(session, RATE_UNAVAILABLE, {"currency": missing.currency, "reason": missing.reason})
    logger.warning("rate unavailable for %s (%s): %s", missing.currency, missing.reason, missing.message)
    return True


def end_outages(session: Session, config: Config) -> list[str]:
    """Close the outage of each currency that has a usable rate again; returns them."""
    out = list(session.scalars(select(RateCurrency.currency).where(RateCurrency.unavailable_since.is_not(None))))
    if not out:
        return []
    usable = [code for code, rate in rates_now(session, config, out).items() if isinstance(rate, Rate)]
    if usable:
        session.execute(update(RateCurrency).where(RateCurrency.currency.in_(usable))
                        .values(unavailable_since=None))
        logger.info("rates usable again for %s", ", ".join(usable))
    return usable


def quote_rows(session: Session, config: Config) -> list[RateQuote]:
    names = [name for name, _ in config.rate_sources]
    return list(session.scalars(select(RateQuote).where(RateQuote.source.in_(names))
                                .order_by(RateQuote.source, RateQuote.currency)))


def describe_rate(rate: Rate | NoRate, now: datetime) -> dict[str, Any]:
    """A currency's rate as GET /rates and `db_manager.py rates` show it."""
    if isinstance(rate, NoRate):
        return {"currency": rate.currency, "rate": None, "rate_source": None, "rate_at": None, "age_seconds": None,
                "reason": rate.reason, "message": rate.message}
    return {"currency": rate.currency, "rate": format_rate(rate.rate), "rate_source": rate.source,
            "rate_at": iso(rate.at), "age_seconds": round(max((now - rate.at).total_seconds(), 0.0), 3),
            "reason": None, "message": None}


def rates_report(session: Session, config: Config) -> dict[str, Any]:
    """What GET /rates and `db_manager.py rates` show: the rate each currency asked for would get now (or why none),
    each configured source's latest quotes with their age and its record, and the settings that shape a price."""
    now = db_now(session)
    codes = wanted_currencies(session, config)
    rates = rates_now(session, config, codes)
    quotes: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in config.rate_sources}
    for row in quote_rows(session, config):
        quotes[row.source].append({"currency": row.currency, "rate": format_rate(row.rate),
                                   "quoted_at": iso(row.quoted_at), "fetched_at": iso(row.fetched_at),
                                   "age_seconds": round(max((now - row.quoted_at).total_seconds(), 0.0), 3)})
    records = source_rows(session)
    sources = []
    for name, base_url in config.rate_sources:
        record = records.get(name)
        paused = record.paused_until if record is not None and record.paused_until and record.paused_until > now \
            else None
        sources.append({"name": name, "base_url": base_url, "quotes": quotes[name],
                        "last_attempt_at": iso(record.last_attempt_at) if record else None,
                        "last_success_at": iso(record.last_success_at) if record else None,
                        "paused_until": iso(paused), "errors": record.errors if record else 0,
                        "last_error": record.last_error if record else None})
    return {"currencies": [describe_rate(rates[code], now) for code in codes], "sources": sources,
            "max_age_seconds": config.rate_max_age_seconds,
            "max_deviation_percent": format_rate(config.rate_max_deviation_percent),
            "markup_percent": format_rate(config.rate_markup_percent),
            "price_rounding_usdt": format_rate(config.price_rounding_usdt),
            "timestamp": iso(now)}


def unavailable_recently_asked(session: Session, config: Config) -> list[str]:
    """The currencies asked for within the last hour that have no usable rate now (/health is degraded then)."""
    asked = recently_asked(session)
    return [code for code, rate in rates_now(session, config, asked).items() if isinstance(rate, NoRate)]
