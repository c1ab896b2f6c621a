"""Fixtures of the rates' tests: the providers' stand-ins and a configuration that asks them."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from infra.config import Config
from rates.refresher import RateRefresher
from tests.rates.stand_ins import Providers, serve


@pytest.fixture
def providers() -> Iterator[Providers]:
    yield from serve(Providers())


@pytest.fixture
def rates_config(config: Config, providers: Providers) -> Config:
    return config.with_overrides(rate_sources=(("coingecko", providers.url), ("kraken", providers.url)),
                                 rate_timeout_seconds=2.0)


@pytest.fixture
def refresh(db, rates_config):  # type: ignore[no-untyped-def]
    """One refresh pass now, every source made due first (as if RATE_REFRESH_SECONDS had passed)."""
    refresher = RateRefresher(db, rates_config)

    def run() -> list[str]:
        make_due(db)
        return refresher.run_once()

    yield run
    refresher.stop()


def make_due(db) -> None:  # type: ignore[no-untyped-def]
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE rate_sources SET next_fetch_at = now() - interval '1 second'"))


def age_quotes(db, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Every stored quote made `seconds` older (instead of waiting)."""
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE rate_quotes SET quoted_at = quoted_at - make_interval(secs => :s)"), {"s": seconds})


@pytest.fixture
def rates_client(rates_config, db):  # type: ignore[no-untyped-def]
    """The app's test client, asking the stand-ins (no background thread: tests refresh with `refresh`)."""
    from app import create_app

    return create_app(rates_config, database=db).test_client()
